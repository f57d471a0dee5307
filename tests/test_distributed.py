"""The distributed pieces one at a time, in this process: the policy facts, the search space
across ranks, merging every rank's result (which rank failed, the slowest rank's steps), the rank
environment, the runtime helper under DDP/FSDP2 (a 1-rank gloo group), the tuner over a synthetic
distributed worker, and the command line's refusals. torchrun itself: test_torchrun.py."""

import dataclasses
import socket

import pytest
from click.testing import CliRunner

from amp_advisor.cli import cli
from amp_advisor.distributed.env import RankEnv, rank_env
from amp_advisor.distributed.merge import RankOutcome, merge, needs_new_group
from amp_advisor.distributed.policy import Parallel, comms_for, dtype_rule
from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.harness.trial import Status, StepTimes, TrialResult, TrialSpec, failed, pruned_reason
from amp_advisor.tuning.space import Candidate, SearchSpace, build_space
from tests.fakes import SyntheticWorker, fake_h100_profile, run_tuner

H100 = fake_h100_profile()


# ------------------------------------------------------------------------------ policy, space
def test_bf16_compression_needs_nccl_and_fp16_is_ruled_out_under_fsdp2():
    assert comms_for(Parallel.DDP, "nccl")[0] == ("fp32", "fp16", "bf16")
    comms, notes = comms_for(Parallel.DDP, "gloo")
    assert comms == ("fp32", "fp16") and "needs the NCCL backend" in notes[0]
    assert "ShardedGradScaler" in dtype_rule(Parallel.FSDP2, Dtype.FP16)
    assert dtype_rule(Parallel.DDP, Dtype.FP16) is None


def test_the_space_multiplies_the_reduced_precisions_by_the_comms_and_keeps_fp32_in_fp32():
    space, notes = build_space(H100, batch_sizes=(8, 16), parallel=Parallel.FSDP2, world_size=4, backend="nccl")
    assert Dtype.FP16 not in space.dtypes and any("fp16 left out under fsdp2" in n for n in notes)
    by_dtype = {d: {c.comm for c in space.candidates() if c.dtype is d} for d in space.dtypes}
    assert by_dtype[Dtype.FP32] == {"fp32"} and by_dtype[Dtype.BF16] == {"fp32", "bf16"}
    assert Candidate(Dtype.FP32, 8, comm="bf16").canonical().comm == "fp32"
    assert Candidate(Dtype.BF16, 8, comm="bf16").fp32_twin == Candidate(Dtype.FP32, 8, comm="fp32")
    assert space.point(Dtype.BF16, 8).comm == "fp32"


def test_the_global_batch_counts_every_rank():
    space, _ = build_space(H100, batch_sizes=(8, 16, 32), global_batch=64, parallel=Parallel.DDP, world_size=4)
    assert space.batch_sizes == (8, 16) and space.grad_accum(8) == 2 and space.grad_accum(16) == 1
    with pytest.raises(BadInputError, match="across 4 ranks"):
        build_space(H100, batch_sizes=(32,), global_batch=64, parallel=Parallel.DDP, world_size=4)


def test_a_spec_names_a_comm_its_strategy_has():
    TrialSpec("m.py", Dtype.BF16, 8, parallel="ddp", comm="fp16")
    for kwargs, message in [({"parallel": "ddp", "comm": "int8"}, "comm 'int8'"),
                            ({"comm": "fp16"}, "needs a parallel strategy"),
                            ({"parallel": "zero3", "comm": "fp32"}, "parallel 'zero3'")]:
        with pytest.raises(BadInputError, match=message):
            TrialSpec("m.py", Dtype.BF16, 8, **kwargs)
    assert TrialSpec("m.py", Dtype.FP32, 8, parallel="ddp", comm="fp16").is_reference is False
    assert TrialSpec("m.py", Dtype.FP32, 8, parallel="ddp", comm="fp32").is_reference is True


# ------------------------------------------------------------------------------------ merge
SPEC = TrialSpec("m.py", Dtype.BF16, 8, steps=3, parallel="ddp", comm="fp16")


def ran(times, memory=100, status=Status.OK, wall=5.0, **extra):
    return TrialResult(SPEC, status, step_time_s=StepTimes(sorted(times)[1], 0.0, min(times), max(times),
                                                           tuple(times)),
                       samples_per_s=8 / sorted(times)[1], peak_memory_bytes=memory, wall_s=wall,
                       flops_per_step=1e9, peak_tflops=10.0, losses=(1.0, 0.9, 0.8), **extra)


def test_a_step_is_the_slowest_ranks_and_samples_count_every_rank():
    merged = merge(SPEC, [RankOutcome(0, ran([0.10, 0.10, 0.10])), RankOutcome(1, ran([0.12, 0.09, 0.20], 300))], 60)
    assert merged.status is Status.OK and merged.step_time_s.samples == (0.12, 0.10, 0.20)
    assert merged.samples_per_s == pytest.approx(2 * 8 / 0.12)
    assert merged.peak_memory_bytes == 300 and merged.flops_per_step == 2e9 and merged.peak_tflops == 20.0
    assert [r.step_median_s for r in merged.ranks] == [0.10, 0.12] and merged.failed_rank is None


def test_the_rank_whose_own_work_failed_is_named_once_not_the_ranks_waiting_for_it():
    oom = failed(SPEC, Status.OOM, "OutOfMemoryError: CUDA out of memory", wall_s=2.0)
    waiting = failed(SPEC, Status.ERROR, "RuntimeError: Connection reset by peer", comm_failure=True, wall_s=2.1)
    merged = merge(SPEC, [RankOutcome(0, waiting), RankOutcome(1, oom), RankOutcome(2, ran([0.1] * 3), aborted=True)],
                   60)
    assert merged.status is Status.OOM and merged.failed_rank == 1
    assert merged.error == "rank 1: OutOfMemoryError: CUDA out of memory"
    assert [r.status for r in merged.ranks] == [Status.ERROR, Status.OOM, Status.OK]
    assert needs_new_group([RankOutcome(0, waiting), RankOutcome(1, oom)])


def test_a_rank_still_running_when_the_others_gave_up_waiting_is_the_one_that_hung():
    waiting = failed(SPEC, Status.ERROR, "Timed out waiting 10000ms for recv", comm_failure=True, wall_s=12.0)
    stopped = failed(SPEC, Status.ERROR, "stopped: another rank of the trial failed", wall_s=13.0)
    merged = merge(SPEC, [RankOutcome(0, waiting), RankOutcome(1, stopped, aborted=True)], 10)
    assert merged.status is Status.TIMEOUT and merged.failed_rank == 1
    assert "rank 1 stopped making progress: rank 0 waited 10 s" in merged.error


def test_a_first_step_stopped_early_on_one_rank_is_the_trials_speed_not_that_ranks_fault():
    # rank 0 waits in the all-reduce for rank 1, so its allowance runs out first: a race, not a cause
    pruned = failed(SPEC, Status.PRUNED, pruned_reason(None, 2.0), wall_s=2.5)
    stopped = failed(SPEC, Status.ERROR, "stopped: another rank of the trial failed", wall_s=2.6)
    merged = merge(SPEC, [RankOutcome(0, pruned), RankOutcome(1, stopped, aborted=True)], 8)
    assert merged.status is Status.PRUNED and merged.failed_rank is None
    assert merged.error.startswith("stopped early: the first step had not finished") and "on rank 0" in merged.error
    assert needs_new_group([RankOutcome(0, pruned), RankOutcome(1, stopped, aborted=True)])
    # a rank whose own work failed is still the cause, whichever rank's allowance ran out first
    oom = failed(SPEC, Status.OOM, "OutOfMemoryError: CUDA out of memory", wall_s=2.7)
    merged = merge(SPEC, [RankOutcome(0, pruned), RankOutcome(1, oom)], 8)
    assert merged.status is Status.OOM and merged.failed_rank == 1


def test_a_non_finite_loss_on_any_rank_is_the_trials():
    bad = ran([0.1] * 3, status=Status.NONFINITE, error="loss is nan at measured step 2 of 3")
    merged = merge(SPEC, [RankOutcome(0, ran([0.1] * 3)), RankOutcome(1, bad)], 60)
    assert merged.status is Status.NONFINITE and merged.failed_rank == 1 and merged.error.startswith("rank 1: ")
    assert not needs_new_group([RankOutcome(0, ran([0.1] * 3)), RankOutcome(1, bad)])  # the group is intact


def test_the_merged_result_round_trips_through_json():
    import json

    merged = merge(SPEC, [RankOutcome(0, ran([0.1] * 3)), RankOutcome(1, ran([0.2] * 3))], 60)
    assert TrialResult.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged


# ---------------------------------------------------------------------------- rank environment
def test_the_rank_comes_from_torchruns_environment():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
           "TORCHELASTIC_RUN_ID": "job", "TORCHELASTIC_RESTART_COUNT": "2"}
    rank = RankEnv.from_environ(env)
    assert (rank.rank, rank.world_size, rank.local_rank, rank.run_id, rank.is_coordinator) == (3, 4, 1, "job.2", False)
    assert RankEnv.from_environ({}) is None
    with pytest.raises(BadInputError, match="malformed"):
        RankEnv.from_environ({**env, "RANK": "three"})


def test_parallel_needs_a_launcher_and_a_launcher_needs_parallel(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BadInputError, match="torchrun"):
        rank_env("ddp", "tune")
    assert rank_env(None, "tune") is None
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BadInputError, match="without --parallel"):
        rank_env(None, "tune")


@pytest.mark.parametrize("args, message", [
    (["tune", "--example", "mlp", "--nproc-per-node", "2"], "--nproc-per-node starts ranks for --parallel"),
    (["tune", "--example", "mlp", "--parallel", "zero"], "Invalid value for '--parallel'"),
    (["bench", "--example", "mlp", "--dtype", "bf16", "--batch-size", "8", "--nproc-per-node", "0",
      "--parallel", "ddp"], "Invalid value for '--nproc-per-node'"),
    (["tune", "--example", "mlp", "--parallel", "ddp", "--collective-timeout", "0"], "--collective-timeout"),
])
def test_bad_distributed_options_are_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_nproc_per_node_under_torchrun_is_refused(monkeypatch):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["tune", "--example", "mlp", "--parallel", "ddp", "--nproc-per-node", "2"])
    assert result.exit_code == 2 and "already a rank under torchrun" in result.output


# ----------------------------------------------------------------------- the tuner across ranks
class SyntheticRanks(SyntheticWorker):
    """A synthetic machine of `world` ranks: compressing the reduction speeds a step up by
    `comm_speedup[comm]`, and may cost numerics (`comm_loss_diff[comm]`)."""

    def __init__(self, rates, *, world=4, comm_speedup=None, comm_loss_diff=None, **kw):
        super().__init__(rates, **kw)
        self.world_size, self.comm_speedup, self.comm_loss_diff = world, comm_speedup or {}, comm_loss_diff or {}

    def run(self, spec):
        result = super().run(spec)
        if result.samples_per_s is None:
            return result
        factor = self.comm_speedup.get(spec.comm, 1.0)
        step = result.step_time_s.median / factor
        diff = self.comm_loss_diff.get(spec.comm)
        return dataclasses.replace(
            result, step_time_s=StepTimes(step, 0.0, step, step, (step,) * spec.steps),
            samples_per_s=self.world_size * spec.samples_per_step / step,
            loss_rel_diff_vs_fp32=diff if diff is not None and spec.compare_fp32 else result.loss_rel_diff_vs_fp32)


def test_the_tuner_searches_the_reduction_and_recommends_it_with_the_section(tmp_path):
    worker = SyntheticRanks({Dtype.FP32: 1000, Dtype.TF32: 2000, Dtype.BF16: 4000, Dtype.FP16: 4000},
                            comm_speedup={"bf16": 1.5})
    result, _ = run_tuner(tmp_path, worker, parallel="fsdp2", strategy="grid", batch_sizes=(8, 16))
    rec = result.recommendation
    assert all(s.parallel == "fsdp2" for s in worker.specs)
    assert rec.dtype is Dtype.BF16 and rec.distributed.comm == "bf16" and rec.distributed.world_size == 4
    assert rec.distributed.global_batch == 4 * rec.batch_size * rec.grad_accumulation_steps
    assert (rec.distributed.param_dtype, rec.distributed.reduce_dtype) == ("bf16", "bf16")


def test_a_reduction_that_hurts_the_numerics_is_not_recommended(tmp_path):
    worker = SyntheticRanks({Dtype.FP32: 1000, Dtype.TF32: 2000, Dtype.BF16: 4000, Dtype.FP16: 4000},
                            comm_speedup={"bf16": 1.5, "fp16": 1.5}, comm_loss_diff={"bf16": 0.3, "fp16": 0.3})
    result, _ = run_tuner(tmp_path, worker, parallel="ddp", strategy="grid", batch_sizes=(8, 16))
    assert result.recommendation.distributed.comm == "fp32"
    assert result.recommendation.distributed.comm_hook is None


# --------------------------------------------------------------- the runtime helper, one rank
@pytest.fixture
def one_rank_group(monkeypatch):
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    dist.init_process_group("gloo")
    yield
    dist.destroy_process_group()


def _train(amp, model, micro_steps):
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(micro_steps):
        with amp.autocast():
            loss = model(torch.randn(4, 8)).float().pow(2).mean()
        amp.backward(loss)
        amp.step(optimizer)


def test_mixed_precision_all_reduces_once_per_accumulation_under_ddp(one_rank_group):
    import torch
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from amp_advisor.runtime import MixedPrecision

    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)))
    calls = []

    def counting(state, bucket):
        calls.append(1)
        return default_hooks.allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting)
    amp = MixedPrecision("bf16", "cpu", grad_accumulation_steps=4, fp32_modules=["1"])
    amp.prepare(model)  # the islands resolve inside the wrapper
    _train(amp, model, 8)
    assert len(calls) == 2 and amp.islands == ["1"]
    stats = amp.stats(reduce=True)
    assert stats["ranks"]["world_size"] == 1 and stats["ranks"]["nonfinite_losses_sum"] == 0


def test_mixed_precision_drives_fsdp2s_gradient_sync(one_rank_group):
    import torch
    from torch.distributed.fsdp import fully_shard

    from amp_advisor.runtime import MixedPrecision

    model = fully_shard(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)))
    seen = []
    original = model.set_requires_gradient_sync
    model.set_requires_gradient_sync = lambda flag, **kw: (seen.append(flag), original(flag, **kw))
    amp = MixedPrecision("bf16", "cpu", grad_accumulation_steps=2)
    amp.prepare(model)
    _train(amp, model, 4)
    assert seen == [False, True, False, True]
    assert amp.stats()["steps"] == 2 and "ranks" not in amp.stats()


# ------------------------------------------------------------------ a launcher that goes away
class DictStore:
    """The three TCPStore calls the control channel makes, over a dict."""

    def __init__(self):
        self.data = {}

    def set(self, key, value):
        self.data[key] = value.encode() if isinstance(value, str) else value

    def get(self, key):
        return self.data[key]

    def check(self, keys):
        return all(k in self.data for k in keys)


def _rank0(store, world=2):
    from amp_advisor.distributed.ranks import Control, RankWorkers

    control = object.__new__(Control)
    control.env, control.store, control._seen = RankEnv(0, world, 0, "127.0.0.1", 1, "t"), store, {}
    workers = object.__new__(RankWorkers)
    workers.env, workers.control = control.env, control
    return workers


def test_a_launcher_whose_heartbeat_stops_ends_the_run_with_one_error(monkeypatch):
    import amp_advisor.distributed.ranks as ranks

    monkeypatch.setattr(ranks, "STALE_S", 0.5)
    store = DictStore()
    store.set("beat/1", "7")  # it beat once, then went quiet
    with pytest.raises(ranks.DistributedError, match="rank 1's launcher has not answered"):
        _rank0(store)._collect(3, lambda: False)


def test_a_launcher_that_keeps_beating_is_waited_for(monkeypatch):
    import threading
    import time

    import amp_advisor.distributed.ranks as ranks

    monkeypatch.setattr(ranks, "STALE_S", 0.5)
    store = DictStore()

    def slow_rank_1():  # busy for 3x STALE_S (a long trial), beating all along, then answers
        for count in range(15):
            store.set("beat/1", str(count))
            time.sleep(0.1)
        store.set("res/3/1", '{"error": null}')

    threading.Thread(target=slow_rank_1, daemon=True).start()
    assert _rank0(store)._collect(3, lambda: False) == {1: {"error": None}}


def test_a_rank_whose_coordinator_goes_silent_stops_saying_so(monkeypatch):
    import amp_advisor.distributed.ranks as ranks

    monkeypatch.setattr(ranks, "STALE_S", 0.5)
    store = DictStore()
    store.set("beat/0", "3")
    control = _rank0(store).control
    control.env = RankEnv(1, 2, 1, "127.0.0.1", 1, "t")  # seen from rank 1
    with pytest.raises(ranks.DistributedError, match="rank 0 has not been heard from"):
        ranks._wait_command(control, 4)
    store.set("cmd/4", '{"kind": "stop", "generation": 0}')
    assert ranks._wait_command(control, 4)["kind"] == "stop"


def test_resume_on_another_number_of_ranks_is_refused(tmp_path, monkeypatch):
    import json

    from amp_advisor.lifecycle import tune
    from amp_advisor.tuning.settings import TuneSettings
    from amp_advisor.tuning.store import RUN_SCHEMA_VERSION
    from tests.fakes import WORKLOADS

    run = tmp_path / "run"
    run.mkdir()
    settings = TuneSettings(str(WORKLOADS / "tiny.py"), "cpu", parallel="ddp").to_dict()
    space = SearchSpace((Dtype.FP32,), (8,), (2.0**16,), (2000,), comms=("fp32",), world_size=2).to_dict()
    (run / "run.json").write_text(json.dumps({"schema_version": RUN_SCHEMA_VERSION, "state": "interrupted",
                                              "settings": settings, "context": {"space": space}}))
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BadInputError, match="tuned on 2 ranks and this launch has 1"):
        tune(out=run, resume=True, parallel="ddp")
