"""The lever interface (amp_advisor/levers/): a lever registered here, in the test alone, reaches
the space, the search, a real trial, the tuner's recommendation and the snippets, with no other
file changed; and a lever with a one-time cost is weighed against the planned run."""

import contextlib
import dataclasses

import pytest
import torch

from amp_advisor import levers
from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.harness.measure import TrialRunner
from amp_advisor.harness.trial import Status, TrialSpec
from amp_advisor.recommendation import Recommendation
from amp_advisor.runtime import MixedPrecision
from amp_advisor.snippets import FORMATS, deepspeed_config
from amp_advisor.tuning.search import BayesStrategy
from amp_advisor.tuning.space import Candidate, SearchSpace, build_space
from tests.fakes import WORKLOADS, SyntheticWorker, fake_cpu_profile, run_tuner

INSTALLED: list[tuple[str, str]] = []
SCOPED: list[str] = []


class Doubler(levers.Lever):
    """A test lever: "x2" makes the model's output twice as large (so its loss differs from
    fp32's), and the synthetic machine trains 1.5x faster with it."""

    name = "toy"
    title = "toy lever"
    stage = levers.Stage.CHECKPOINT
    explore = "grid"

    def values(self, device):
        return (levers.OFF, "x2")

    def valid(self, device_type):
        return (levers.OFF, "x2")

    def applies(self, dtype):
        return dtype is not Dtype.FP16

    def install(self, model, value, device_type):
        INSTALLED.append((type(model).__name__, value))
        model.register_forward_hook(lambda module, args, out: out * 2)
        return model

    @contextlib.contextmanager
    def scope(self, value):
        SCOPED.append(value)
        yield

    def fragment(self, framework, value, device_type):
        return levers.Fragment(lines=[f"# toy lever {value} for {framework}"], config={"toy": value})

    def observe(self):
        return {"hooks": 1.0}


class Costly(Doubler):
    """A lever explored on the leaders with a one-time cost (a compile, simulated)."""

    name = "costly"
    title = "costly lever"
    stage = levers.Stage.COMPILE
    explore = "leaders"
    one_time_cost = True

    def values(self, device):
        return (levers.OFF, "fast", "faster")

    def valid(self, device_type):
        return (levers.OFF, "fast", "faster")

    def applies(self, dtype):
        return True


@pytest.fixture
def toy():
    lever = levers.register(Doubler())
    INSTALLED.clear()
    SCOPED.clear()
    yield lever
    levers.unregister(lever.name)


def others(name):
    """The registered levers but `name`: left out of a run that tests `name` alone."""
    return tuple(n for n in levers.names() if n != name)


@pytest.fixture
def costly():
    lever = levers.register(Costly())
    yield lever
    levers.unregister(lever.name)


def test_a_registered_lever_reaches_the_space_and_the_search(toy):
    space, _ = build_space(fake_cpu_profile(), batch_sizes=(8, 16))
    assert dict(space.levers)["toy"] == ("off", "x2")
    assert ("toy", ("off", "x2")) in space.dimensions()
    points = space.candidates()
    assert Candidate(Dtype.BF16, 8, levers=(("toy", "x2"),)) in points
    # the lever does not apply to fp16: its fp16 points carry no value, and are not doubled
    assert not any(c.levers for c in points if c.dtype is Dtype.FP16)
    assert len(points) == 2 * 2 * 2 + 2  # fp32 and bf16 x 2 batches x 2 values, fp16 x 2 batches
    strategy = BayesStrategy(space, seed=0, initial_points=len(points))
    asked = {strategy.ask() for _ in range(12)}
    assert any(c.levers == (("toy", "x2"),) for c in asked)
    assert SearchSpace.from_dict(space.to_dict()) == space
    doubled = Candidate(Dtype.BF16, 8, levers=(("toy", "x2"),))
    assert "toy=x2" in doubled.label and Candidate.from_dict(doubled.to_dict()) == doubled
    assert doubled.plain == Candidate(Dtype.BF16, 8) and doubled.fp32_twin == Candidate(Dtype.FP32, 8)


def test_a_registered_lever_is_installed_and_scoped_in_a_real_trial(toy):
    spec = TrialSpec(str(WORKLOADS / "tiny.py"), Dtype.BF16, 4, steps=2, warmup_steps=1, compare_steps=3,
                     levers={"toy": "x2"})
    result = TrialRunner().run(spec)
    assert result.status is Status.OK, result.error
    assert INSTALLED and INSTALLED[0][1] == "x2" and SCOPED == ["x2"]
    assert result.lever_stats == {"toy.hooks": 1.0}
    # the fp32 reference is eager fp32 without the lever: the doubled output moves the loss off it
    assert result.loss_rel_diff_vs_fp32 > 0.05
    assert TrialSpec.from_dict(spec.to_dict()) == spec
    assert not TrialSpec(str(WORKLOADS / "tiny.py"), Dtype.FP32, 4, levers={"toy": "x2"}).is_reference


def test_a_spec_a_recommendation_and_the_helper_refuse_an_unknown_lever_or_value(toy):
    with pytest.raises(BadInputError, match="unknown lever 'nope'"):
        TrialSpec("w", Dtype.BF16, 4, levers={"nope": "on"})
    with pytest.raises(BadInputError, match="not one of off, x2"):
        TrialSpec("w", Dtype.BF16, 4, levers={"toy": "x3"})
    with pytest.raises(BadInputError, match="does not apply to fp16"):
        TrialSpec("w", Dtype.FP16, 4, levers={"toy": "x2"})
    with pytest.raises(BadInputError, match="not one of"):
        MixedPrecision("bf16", "cpu", levers={"toy": "__import__('os')"})


def _recommendation(**changes):
    rec = Recommendation.from_dict({
        "schema_version": 5, "dtype": "bf16", "batch_size": 8, "grad_accumulation_steps": 1,
        "grad_scaler": {"enabled": False, "init_scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                        "growth_interval": 2000},
        "tf32": False, "device": "cpu", "hardware": {}, "measured": {"samples_per_s": 100.0},
        "levers": {"toy": "x2"}})
    return dataclasses.replace(rec, **changes)


def test_a_registered_lever_reaches_the_recommendation_the_helper_and_every_snippet(toy, tmp_path):
    rec = _recommendation()
    assert Recommendation.load(rec.save(tmp_path / "r.json"), check_hardware=False).levers == {"toy": "x2"}
    model = rec.prepare(torch.nn.Linear(2, 2), device_type="cpu")
    assert INSTALLED == [("Linear", "x2")]
    assert torch.allclose(model(torch.ones(1, 2)), 2 * torch.nn.functional.linear(torch.ones(1, 2), model.weight,
                                                                                  model.bias))
    for fmt in ("torch", "lightning", "accelerate", "hf-trainer"):
        assert f"# toy lever x2 for {fmt}" in FORMATS[fmt](rec), fmt
    assert deepspeed_config(rec)["toy"] == "x2"
    with pytest.raises(BadInputError, match="levers.toy"):
        Recommendation.from_dict({**rec.to_dict(), "levers": {"toy": "x9"}})


class LeverMachine(SyntheticWorker):
    """The synthetic machine, where a lever changes the speed: `gain[(name, value)]` x the rate,
    and a one-time cost of `cost_s` seconds in the first step."""

    def __init__(self, rates, gain, cost_s=0.0, **kw):
        super().__init__(rates, **kw)
        self.gain, self.cost_s = gain, cost_s

    def step_s(self, dtype, bs, accum=1):
        step = super().step_s(dtype, bs, accum)
        for pair in self._levers:
            step /= self.gain.get(pair, 1.0)
        return step

    def run(self, spec):
        self._levers = tuple(spec.levers)
        result = super().run(spec)
        if spec.levers and result.status is Status.OK and self.cost_s:
            result = result.with_updates(one_time_s=self.cost_s, one_time_warm_s=self.cost_s / 10)
        return result


def test_a_lever_on_the_leaders_is_tried_on_them_and_its_costlier_value_only_where_the_first_gained(
        costly, tmp_path):
    rates = {Dtype.FP32: 800.0, Dtype.BF16: 1000.0, Dtype.FP16: 100.0}
    machine = LeverMachine(rates, {("costly", "fast"): 1.4, ("costly", "faster"): 1.5}, cost_s=2.0)
    result, _ = run_tuner(tmp_path, machine, profile=fake_cpu_profile(), device="cpu", batch_sizes=(8, 16, 32),
                          skip_levers=others("costly"),
                          train_steps=10_000)
    tried = [s for s in machine.specs if s.levers]
    assert {dict(s.levers)["costly"] for s in tried} == {"fast", "faster"}
    assert {s.dtype for s in tried} <= {Dtype.FP32, Dtype.BF16}  # fp16, 10x behind, is not a leader
    assert all(s.abandon_after_s is None for s in tried)  # a first step holding a compile is never pruned
    rec = result.recommendation
    assert rec.levers == {"costly": "faster"} and rec.dtype is Dtype.BF16
    assert rec.measured.one_time_s == pytest.approx(2.0) and rec.measured.break_even_steps >= 1
    assert rec.measured.train_steps == 10_000 and "pays for itself after" in rec.why


def test_below_its_break_even_a_one_time_cost_is_not_recommended(costly, tmp_path):
    rates = {Dtype.FP32: 800.0, Dtype.BF16: 1000.0, Dtype.FP16: 100.0}
    machine = LeverMachine(rates, {("costly", "fast"): 1.1}, cost_s=60.0)
    result, _ = run_tuner(tmp_path, machine, profile=fake_cpu_profile(), device="cpu", batch_sizes=(8, 16, 32),
                          skip_levers=others("costly"),
                          train_steps=100)
    rec = result.recommendation
    assert rec.levers == {} and rec.dtype is Dtype.BF16
    assert "over the planned 100 steps (--train-steps)" in rec.why


def test_a_lever_that_slows_the_model_down_is_not_recommended_and_not_tried_further(costly, tmp_path):
    rates = {Dtype.FP32: 800.0, Dtype.BF16: 1000.0, Dtype.FP16: 100.0}
    machine = LeverMachine(rates, {("costly", "fast"): 0.8, ("costly", "faster"): 2.0}, cost_s=1.0)
    result, _ = run_tuner(tmp_path, machine, profile=fake_cpu_profile(), device="cpu", batch_sizes=(8, 16, 32),
                          skip_levers=others("costly"))
    assert not any(dict(s.levers).get("costly") == "faster" for s in machine.specs)
    assert result.recommendation.levers == {}


def test_the_report_shows_each_lever_against_the_same_configuration_without_it(costly, tmp_path):
    from amp_advisor.report import write_report

    rates = {Dtype.FP32: 800.0, Dtype.BF16: 1000.0, Dtype.FP16: 100.0}
    machine = LeverMachine(rates, {("costly", "fast"): 1.4, ("costly", "faster"): 1.5}, cost_s=2.0)
    result, store = run_tuner(tmp_path, machine, profile=fake_cpu_profile(), device="cpu", batch_sizes=(8, 16, 32),
                          skip_levers=others("costly"))
    store.write_state("complete", trials=result.trials_run, stopped_because=result.stopped_because,
                      wall_s=result.wall_s, notes=result.notes)
    result.recommendation.save(store.dir / "recommendation.json")
    markdown = write_report(store.dir).markdown.read_text()
    section = markdown.split("Levers: each against the same configuration without it")[1]
    assert "recommended: costly=faster" in section
    assert "costly lever" in section and "costly=fast" in section and "1.4" in section
