"""The tuner's decisions, with a fake worker and a synthetic machine (deterministic, fast),
and end to end through the real worker on this CPU."""

import json
import signal
import subprocess
import sys
import time

import pytest

from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.hardware import probe
from amp_advisor.lifecycle import tune
from amp_advisor.recommendation import Recommendation
from amp_advisor.tuning.record import Role
from amp_advisor.tuning.search import BayesStrategy, GridStrategy
from amp_advisor.tuning.space import Candidate, SearchSpace, build_space, parse_batch_sizes, seeded_init_scale
from amp_advisor.tuning.store import RunStore
from amp_advisor.tuning.tuner import Tuner, TuneSettings
from tests.fakes import (
    CPUINFO_AVX512_BF16,
    CPUINFO_EPYC_AVX2,
    CPUINFO_SAPPHIRE_RAPIDS,
    GPU_RATES,
    WORKLOADS,
    SyntheticWorker,
    fake_cpu_profile,
    fake_h100_profile,
    run_tuner,
)

H100 = fake_h100_profile()
CPU = probe("cpu").devices[0]


def test_space_from_the_probe():
    space, notes = build_space(CPU)
    assert Dtype.TF32 not in space.dtypes and any("tf32 left out" in n for n in notes)
    # the points that change speed: fp32, bf16, fp16 (at one scaler setting: the scaler is judged on numerics)
    assert len(space.candidates()) == len(space.batch_sizes) * 3
    gpu_space, _ = build_space(H100, global_batch=48)
    assert gpu_space.batch_sizes == (8, 16) and gpu_space.grad_accum(16) == 3


def test_init_scale_is_seeded_from_the_largest_gradient():
    assert seeded_init_scale(1.0) == 2.0**12  # 65504 / 8 = 8188 -> 2^12
    assert seeded_init_scale(1e-3) == 2.0**22
    assert seeded_init_scale(None) == 2.0**16 and seeded_init_scale(1e-30) == 2.0**24


def test_batch_size_lists_are_checked():
    assert parse_batch_sizes("64, 16,32") == (16, 32, 64)
    with pytest.raises(BadInputError, match="comma-separated integers"):
        parse_batch_sizes("16,big")
    with pytest.raises(BadInputError, match="between 1 and"):
        parse_batch_sizes("0,8")
    with pytest.raises(BadInputError, match="empty"):
        parse_batch_sizes(" , ")


def test_grid_asks_for_everything_and_bayes_is_reproducible():
    space = SearchSpace((Dtype.FP32, Dtype.BF16), (8, 16, 32), (2.0**16,), (2000,))
    grid = GridStrategy(space)
    asked = [grid.ask() for _ in range(6)]
    assert set(asked) == set(space.candidates()) and grid.ask() is None

    def sequence(seed):
        bayes, seen = BayesStrategy(space, seed=seed), []
        for _ in range(5):
            c = bayes.ask()
            seen.append(c)
            bayes.tell(c, c.batch_size * (10 if c.dtype is Dtype.BF16 else 1))
        return seen

    assert sequence(3) == sequence(3)


def test_on_a_fast_gpu_bf16_at_the_largest_batch_wins_and_fp32_is_the_twin(tmp_path):
    result, store = run_tuner(tmp_path, SyntheticWorker(GPU_RATES), batch_sizes=(8, 16, 32, 64), max_trials=10)
    rec = result.recommendation
    assert rec.dtype in (Dtype.BF16, Dtype.FP16) and rec.batch_size == 64
    assert rec.measured.speedup_vs_fp32 > 5
    assert any(r.role == "confirm" and r.candidate == Candidate(Dtype.FP32, 64) for r in result.records)
    assert len(list(store.records())) == result.trials_run  # every trial is on disk


def test_fp16_gets_a_stability_run_and_an_enabled_scaler(tmp_path):
    rates = {**GPU_RATES, Dtype.BF16: 2000.0}  # fp16 clearly fastest
    result, _ = run_tuner(tmp_path, SyntheticWorker(rates), batch_sizes=(16, 32), strategy="grid")
    rec = result.recommendation
    assert rec.dtype is Dtype.FP16 and rec.scaler.enabled and rec.scaler.init_scale > 0
    stability = [r for r in result.records if r.role == "stability"]
    assert stability and stability[0].result.spec.steps == 40
    assert "stability run" in rec.why


def test_out_of_memory_is_a_constraint_and_the_edge_is_bisected(tmp_path):
    worker = SyntheticWorker(GPU_RATES, oom_at={d: 64 for d in GPU_RATES})
    result, _ = run_tuner(tmp_path, worker, batch_sizes=(16, 32, 64, 128), strategy="grid")
    statuses = {(r.candidate.dtype, r.candidate.batch_size): r.result.status for r in result.records}
    assert ("bf16", 128) not in statuses or statuses[(Dtype.BF16, 128)] == "oom"
    assert result.recommendation.batch_size < 64  # never a batch that failed
    assert any(r.role == "bisect" and r.candidate.batch_size == 48 for r in result.records)


def test_global_batch_is_kept_with_gradient_accumulation(tmp_path):
    worker = SyntheticWorker(GPU_RATES)
    result, _ = run_tuner(tmp_path, worker, batch_sizes=(8, 16, 32), global_batch=64, strategy="grid")
    rec = result.recommendation
    assert rec.batch_size * rec.grad_accumulation_steps == 64
    assert all(s.batch_size * s.grad_accum == 64 for s in worker.specs)


def test_a_batch_whose_measured_peak_eats_the_safety_margin_is_not_recommended(tmp_path):
    worker = SyntheticWorker(GPU_RATES)  # peak = 1 GB + 0.1 GB per sample; the fake H100 has 80 GiB
    result, _ = run_tuner(tmp_path, worker, batch_sizes=(16, 32, 64, 800), strategy="grid")
    assert result.recommendation.batch_size < 800  # 81 GB measured > 80 GiB less 10%


def test_a_numerically_bad_dtype_is_not_recommended(tmp_path):
    worker = SyntheticWorker(GPU_RATES, loss_diff={Dtype.BF16: 0.3, Dtype.FP16: 0.3})
    result, _ = run_tuner(tmp_path, worker, batch_sizes=(16, 32), strategy="grid")
    assert result.recommendation.dtype is Dtype.TF32
    bad = [r for r in result.records if r.candidate.dtype is Dtype.BF16]
    assert bad and not bad[0].feasible and "loss differs from fp32 by 30.0%" in bad[0].why_not


def test_reduced_precision_must_beat_fp32_at_the_same_batch(tmp_path):
    rates = {Dtype.FP32: 1000.0, Dtype.TF32: 1005.0, Dtype.BF16: 1010.0, Dtype.FP16: 1010.0}
    result, _ = run_tuner(tmp_path, SyntheticWorker(rates), batch_sizes=(16, 32), strategy="grid")
    assert result.recommendation.dtype is Dtype.FP32
    assert any("fp32 recommended" in n for n in result.notes)


def test_a_dtype_clearly_slower_is_pruned_and_then_ruled_out(tmp_path):
    """On an AVX2-only CPU (the probe says bf16 and fp16 are not fast) one scout each settles it,
    and the explanation says what was stopped and why."""
    rates = {Dtype.FP32: 1000.0, Dtype.TF32: 1000.0, Dtype.BF16: 2.0, Dtype.FP16: 2.0}
    worker = SyntheticWorker(rates)
    result, _ = run_tuner(tmp_path, worker, fake_cpu_profile(CPUINFO_EPYC_AVX2), device="cpu",
                          batch_sizes=(8, 16, 32, 64))
    slow = [s for s in worker.specs if s.dtype in (Dtype.BF16, Dtype.FP16)]
    assert slow and len({s.dtype for s in slow}) == len(slow)  # at most one scout each
    assert result.recommendation.dtype is Dtype.FP32
    why = result.recommendation.why
    assert f"{slow[0].dtype} was stopped early at batch {slow[0].batch_size} (trial" in why
    assert "the first step took" in why
    assert "clearly slower (" not in why  # no verdict by default: what was pruned and why


def test_a_fast_dtype_is_ruled_out_only_after_a_second_pruned_trial(tmp_path):
    """The probe says bf16/fp16 are fast on an H100: one stalled first step is not a verdict on the
    dtype, a second one is."""
    rates = {Dtype.FP32: 1000.0, Dtype.TF32: 1000.0, Dtype.BF16: 2.0, Dtype.FP16: 2.0}
    worker = SyntheticWorker(rates)
    result, _ = run_tuner(tmp_path, worker, batch_sizes=(8, 16, 32, 64))
    tried = {d: [s for s in worker.specs if s.dtype is d] for d in (Dtype.BF16, Dtype.FP16)}
    assert all(1 <= len(t) <= 2 and all(s.abandon_after_s for s in t) for t in tried.values())
    for dtype in [d for d, t in tried.items() if len(t) == 2]:  # a second pruned trial rules the dtype out
        assert f"{dtype} was stopped early at batch" in result.recommendation.why
    assert result.recommendation.dtype in (Dtype.FP32, Dtype.TF32)


def test_a_stalled_trial_of_a_dtype_that_ran_cleanly_rules_out_only_itself(tmp_path):
    """A busy machine can stall one first step: fp32 at one size stopped early is no reason to
    drop fp32 (or to lose the best result, which sets every later trial's time limit)."""
    rates = {Dtype.FP32: 1000.0, Dtype.TF32: 1000.0, Dtype.BF16: 2.0, Dtype.FP16: 2.0}
    worker = SyntheticWorker(rates, stall={(Dtype.FP32, 16), (Dtype.TF32, 16)})
    result, _ = run_tuner(tmp_path, worker, batch_sizes=(8, 16, 32, 64))
    assert result.recommendation.dtype in (Dtype.FP32, Dtype.TF32)
    assert result.recommendation.batch_size != 16
    slow = [s for s in worker.specs if s.dtype in (Dtype.BF16, Dtype.FP16)]
    assert all(s.abandon_after_s for s in slow) and len(slow) == 2


def test_interrupted_then_resumed_without_repeating_trials(tmp_path):
    settings = dict(workload=str(WORKLOADS / "tiny.py"), device="cuda:0", batch_sizes=(8, 16, 32), strategy="grid")
    store = RunStore(tmp_path / "run")
    store.create(TuneSettings(**settings).to_dict())
    with pytest.raises(KeyboardInterrupt):
        Tuner(TuneSettings(**settings), store, worker=SyntheticWorker(GPU_RATES, interrupt_after=4),
              device_profile=H100).run()
    done = list(store.records())
    assert len(done) == 4
    second = SyntheticWorker(GPU_RATES)
    result = Tuner(TuneSettings(**settings), store, worker=second, device_profile=H100).run()
    searched = [r.candidate.canonical() for r in result.records if r.role == "search"]
    assert len(searched) == len(set(searched))  # nothing searched twice across the interruption
    assert len(second.specs) == len(result.records) - 4  # the resumed run ran only new trials
    assert result.records[:4] == done


def test_store_drops_a_torn_last_line_and_writes_csv(tmp_path):
    result, store = run_tuner(tmp_path, SyntheticWorker(GPU_RATES), batch_sizes=(16,), strategy="grid")
    with open(store.trials_file, "a") as f:
        f.write('{"number": 99, "role": "sea')  # a hard kill mid-write
    records = list(store.records())
    assert len(records) == result.trials_run
    csv = store.write_csv(records).read_text().splitlines()
    assert len(csv) == 1 + len(records) and csv[0].startswith("trial,role,round,dtype,batch_size")


def test_bad_settings():
    with pytest.raises(BadInputError, match="--strategy 'random'"):
        TuneSettings(workload="x", device="cpu", strategy="random")
    with pytest.raises(BadInputError, match="--max-trials 0: expected a number > 0"):
        TuneSettings(workload="x", device="cpu", max_trials=0)
    with pytest.raises(BadInputError, match=r"--time-budget 1000000000.0: .* \(at most a week\)"):
        TuneSettings(workload="x", device="cpu", time_budget_s=1e9)
    with pytest.raises(BadInputError, match="--steps True"):
        TuneSettings(workload="x", device="cpu", steps=True)


# ------------------------------------------------------------------------------- end to end, real


def test_tune_end_to_end_writes_a_loadable_recommendation(tmp_path):
    result = tune(WORKLOADS / "tiny.py", device="cpu", out=tmp_path / "run", batch_sizes=(8, 16), strategy="grid",
                  steps=3)
    run = tmp_path / "run"
    for name in ("recommendation.json", "trials.jsonl", "trials.csv", "run.json", "device.json", "report.md",
                 "report.html"):
        assert (run / name).exists()
    assert result.report is not None and result.report_error is None and len(result.report.plots) == 6
    info = json.loads((run / "run.json").read_text())
    assert info["state"] == "complete" and info["context"]["space"]["batch_sizes"] == [8, 16]
    lines = (run / "trials.jsonl").read_text().splitlines()
    assert len(lines) == result.trials_run
    rec = Recommendation.load(run)
    assert rec == result.recommendation and rec.device == "cpu"


def test_tune_survives_a_workload_that_runs_out_of_memory(tmp_path):
    result = tune(WORKLOADS / "oom_above_8.py", device="cpu", out=tmp_path / "run", batch_sizes=(4, 8, 16, 32),
                  strategy="grid", steps=3)
    assert any(r.result.status == "oom" for r in result.records)
    assert result.recommendation.batch_size <= 8


def test_tune_refuses_to_overwrite_a_run_and_resume_needs_one(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trials.jsonl").write_text("{}\n")
    with pytest.raises(BadInputError, match="already holds a run"):
        tune(WORKLOADS / "tiny.py", device="cpu", out=tmp_path / "run")
    with pytest.raises(BadInputError, match="no run to resume"):
        tune(out=tmp_path / "elsewhere", resume=True)


def test_sigterm_leaves_a_consistent_run_that_resumes(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "amp_advisor", "tune", str(WORKLOADS / "tiny.py"), "--device", "cpu",
           "--out", str(run), "--strategy", "grid", "--batch-sizes", "4,8,16,32", "--steps", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run / "trials.jsonl").exists() and len((run / "trials.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "continue with `amp-advisor tune --resume" in err
    assert json.loads((run / "run.json").read_text())["state"] == "interrupted"
    before = (run / "trials.jsonl").read_text().splitlines()

    resumed = subprocess.run([sys.executable, "-m", "amp_advisor", "tune", "--resume", "--out", str(run)],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = (run / "trials.jsonl").read_text().splitlines()
    assert after[: len(before)] == before
    searched = [json.dumps(json.loads(line)["candidate"], sort_keys=True) for line in after
                if json.loads(line)["role"] == "search"]
    assert len(searched) == len(set(searched))
    assert (run / "recommendation.json").exists()


# ------------------------------------------------------------ the decision, through the whole tuner


def test_the_recommendation_names_the_trials_it_rests_on_and_they_are_confirmation_rounds(tmp_path):
    result, store = run_tuner(tmp_path, SyntheticWorker(GPU_RATES), batch_sizes=(16, 32, 64))
    rec = result.recommendation
    by_number = {r.number: r for r in result.records}
    chosen = [by_number[n] for n in rec.trials("recommended")]
    assert chosen and all(r.role.value == "confirm" and r.candidate.batch_size == rec.batch_size for r in chosen)
    twin = [by_number[n] for n in rec.trials("fp32_same_batch")]
    assert twin and all(r.candidate.dtype is Dtype.FP32 and r.candidate.batch_size == rec.batch_size for r in twin)
    assert {r.round for r in twin} <= {r.round for r in chosen}  # measured in the same interleaved rounds
    assert rec.measured.speedup_vs_fp32 == pytest.approx(max(r.score for r in chosen) / max(r.score for r in twin))
    assert Recommendation.from_dict(json.loads(json.dumps(rec.to_dict()))).evidence == rec.evidence


def test_a_slow_period_during_the_first_trials_does_not_decide(tmp_path):
    """An AMX CPU where bf16 trains 1.7x faster than fp32, and the machine is 10x slower for the
    first five trials. bf16's best takes part in the rounds and wins; the inconsistent fp32
    measurement is rechecked; the drift of the reference configuration is reported."""
    rates = {Dtype.FP32: 125.0, Dtype.BF16: 210.0, Dtype.FP16: 60.0}
    worker = SyntheticWorker(rates, slow={i: 10.0 for i in range(5)})
    result, _ = run_tuner(tmp_path, worker, fake_cpu_profile(CPUINFO_SAPPHIRE_RAPIDS), device="cpu",
                          batch_sizes=(8, 16, 32, 64), strategy="grid")
    rec = result.recommendation
    assert rec.dtype is Dtype.BF16 and rec.measured.speedup_vs_fp32 > 1.5
    assert rec.machine_busy and "drifted" in rec.machine_busy


def test_one_noisy_trial_does_not_pick_the_batch_size(tmp_path):
    """The conv net on the AVX512-BF16 EPYC: bf16's throughput rises with the batch, but its first
    trials at the larger sizes ran in slow moments. The climb follows bf16 to the larger sizes,
    the leader's batch neighbours take part in the rounds, and the recommendation lands on the
    best batch."""
    bf16 = {8: 560.0, 16: 640.0, 32: 770.0, 64: 790.0}
    fp32 = {8: 370.0, 16: 430.0, 32: 450.0, 64: 470.0}
    rate_at = {**{(Dtype.BF16, b): r for b, r in bf16.items()}, **{(Dtype.FP32, b): r for b, r in fp32.items()}}
    worker = SyntheticWorker({Dtype.FP32: 470.0, Dtype.BF16: 790.0, Dtype.FP16: 20.0}, rate_at=rate_at,
                             slow_first={(Dtype.BF16, 16): 1.35, (Dtype.BF16, 32): 1.7, (Dtype.BF16, 64): 1.5})
    result, _ = run_tuner(tmp_path, worker, fake_cpu_profile(CPUINFO_AVX512_BF16), device="cpu",
                          batch_sizes=(8, 16, 32, 64))
    rec = result.recommendation
    assert rec.dtype is Dtype.BF16 and rec.batch_size in (32, 64)
    confirmed = {(r.candidate.dtype, r.candidate.batch_size) for r in result.records if r.role == "confirm"}
    assert {(Dtype.BF16, 32), (Dtype.BF16, 64)} <= confirmed  # the rounds decide the batch size


def test_neighbours_that_do_not_fit_are_rechecked(tmp_path):
    rates = {Dtype.FP32: 125.0, Dtype.BF16: 210.0, Dtype.FP16: 60.0}
    worker = SyntheticWorker(rates, slow={1: 12.0})  # the second trial ran while another job competed
    result, _ = run_tuner(tmp_path, worker, fake_cpu_profile(CPUINFO_SAPPHIRE_RAPIDS), device="cpu",
                          batch_sizes=(8, 16, 32, 64), strategy="grid", skip_levers=("compile",))
    slowed = result.records[1]
    rechecks = [r for r in result.records if r.role.value == "recheck"]
    assert [r.candidate for r in rechecks] == [slowed.candidate]
    assert rechecks[0].score > 5 * slowed.score


def test_an_oom_edge_under_a_global_batch_keeps_the_effective_batch(tmp_path):
    worker = SyntheticWorker(GPU_RATES, oom_at={d: 64 for d in GPU_RATES})
    result, _ = run_tuner(tmp_path, worker, batch_sizes=(8, 16, 32, 64), global_batch=64, strategy="grid")
    assert all(s.batch_size * s.grad_accum == 64 for s in worker.specs)  # no 48 x 1
    assert not [r for r in result.records if r.role.value == "bisect"]
    rec = result.recommendation
    assert rec.batch_size * rec.grad_accumulation_steps == 64 and rec.batch_size < 64


def test_an_oom_edge_under_a_global_batch_is_bisected_on_its_divisors(tmp_path):
    worker = SyntheticWorker(GPU_RATES, oom_at={d: 96 for d in GPU_RATES})
    result, _ = run_tuner(tmp_path, worker, batch_sizes=(16, 32, 96), global_batch=96, strategy="grid")
    bisects = [r for r in result.records if r.role.value == "bisect"]
    assert [r.candidate.batch_size for r in bisects] == [48] and bisects[0].result.spec.grad_accum == 2
    assert all(s.batch_size * s.grad_accum == 96 for s in worker.specs)


@pytest.mark.parametrize("profile, tf32_fast", [(H100, True), (fake_cpu_profile(CPUINFO_SAPPHIRE_RAPIDS), False)])
def test_what_is_recommended_is_what_was_measured_tf32(tmp_path, profile, tf32_fast):
    worker = SyntheticWorker(GPU_RATES)
    result, _ = run_tuner(tmp_path, worker, profile, device="cuda:0" if tf32_fast else "cpu",
                          batch_sizes=(16, 32), strategy="grid")
    for spec in worker.specs:
        assert spec.tf32 is (spec.dtype is Dtype.TF32 or (spec.dtype in (Dtype.BF16, Dtype.FP16) and tf32_fast))
    rec = result.recommendation
    assert rec.dtype is not Dtype.FP32
    measured = {r.result.tf32 for r in result.records if r.candidate.canonical().dtype is rec.dtype}
    assert measured == {rec.tf32}


def test_the_live_table_renders_on_a_terminal_and_never_counts_past_a_phase(tmp_path):
    """rich's own capture stands in for a terminal: the bar, every trial's row, the best marked."""
    import io

    from rich.console import Console

    from amp_advisor.console import TuneDisplay

    screen = io.StringIO()
    display = TuneDisplay(console=Console(file=screen, force_terminal=True, width=140, color_system=None))
    seen = []

    def on_event(event):
        display(event)
        seen.append((display.phase, display.done_in_phase, display.planned))

    result, _ = run_tuner(tmp_path, SyntheticWorker(GPU_RATES), batch_sizes=(16, 32, 64), on_event=on_event)
    display.stop()
    assert all(done <= planned for _, done, planned in seen)  # each phase plans its own trials
    assert "confirm" in {phase for phase, _, _ in seen}
    final = screen.getvalue().rsplit("\x1b[2K", 1)[-1]  # the last frame: the whole table stays
    assert "best so far" in final and "samples/s" in final and "budget" in final
    for record in result.records:
        assert f"{record.number:>2}   {record.role.value}" in final or f"{record.number}   {record.role.value}" in final
    assert "\x1b[" in screen.getvalue()  # drawn in place


def test_off_a_terminal_each_trial_is_one_plain_line(tmp_path):
    import io

    from rich.console import Console

    from amp_advisor.console import TuneDisplay

    log = io.StringIO()
    display = TuneDisplay(console=Console(file=log, force_terminal=False, width=100))
    result, _ = run_tuner(tmp_path, SyntheticWorker(GPU_RATES), batch_sizes=(16, 32), on_event=display)
    display.stop()
    lines = log.getvalue().splitlines()
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == len(result.records)
    assert "\x1b[" not in log.getvalue()
    first = result.records[0]
    assert trial_lines[0] == (f"trial 1 ({first.role.value}): {first.candidate.label}: ok, "
                              f"{first.result.samples_per_s:.1f} samples/s")


# ------------------------------------------------------------------- numerics repaired by islands
def test_a_dtype_that_fails_on_numerics_is_diagnosed_and_measured_with_islands(tmp_path):
    worker = SyntheticWorker(GPU_RATES, loss_diff={Dtype.FP16: 0.5, Dtype.BF16: 0.5},
                             culprit={Dtype.FP16: "encoder.attn"})
    result, store = run_tuner(tmp_path, worker, strategy="grid", batch_sizes=(32, 64))
    assert [s.dtype for s in worker.diagnosed] == [Dtype.BF16, Dtype.FP16]  # once per failing dtype
    repairs = [r for r in result.records if r.role is Role.REPAIR]
    assert [r.candidate.fp32_modules for r in repairs] == [("encoder.attn",)] and repairs[0].feasible
    rec = result.recommendation
    assert rec.dtype is Dtype.FP16 and rec.fp32_modules == ("encoder.attn",)
    assert "encoder.attn kept in fp32" in rec.why and "the islands cost" in rec.why
    assert any("found no module to keep in fp32" in n for n in result.notes)  # bf16's X-ray named none
    assert [d.dtype for d in store.diagnoses()] == [Dtype.FP16, Dtype.BF16]
    from amp_advisor.report import write_report

    files = write_report(store.dir)  # the report's X-ray section: the culprits, the advice, the chart
    text = files.markdown.read_text()
    assert "## Numerics X-ray" in text and "keep `encoder.attn` in fp32" in text
    assert (store.dir / "plots" / "xray.png").stat().st_size > 1000
    # a resumed run repairs nothing twice
    again = SyntheticWorker(GPU_RATES, loss_diff={Dtype.FP16: 0.5, Dtype.BF16: 0.5},
                            culprit={Dtype.FP16: "encoder.attn"})
    tuner = Tuner(TuneSettings(**{**store.settings(), "batch_sizes": (32, 64)}), store, worker=again,
                  device_profile=H100)
    tuner.run()
    assert again.diagnosed == []  # fp16 was repaired already; bf16's saved diagnosis is read back


def test_tune_repairs_a_real_fp16_overflow_with_the_islands_the_xray_advises(tmp_path):
    result = tune(WORKLOADS / "fp16_overflow.py", device="cpu", out=tmp_path / "run", batch_sizes=(8,),
                  strategy="grid", steps=3)
    repairs = [r for r in result.records if r.role is Role.REPAIR]
    assert [(r.candidate.dtype, r.candidate.fp32_modules) for r in repairs] == [(Dtype.FP16, ("first",))]
    assert repairs[0].feasible  # fp16 with `first` in fp32 keeps fp32's numerics
    assert (tmp_path / "run" / "diagnosis-fp16.json").exists()
    assert any("advises keeping first in fp32" in note for note in result.notes)
    rec = result.recommendation
    if rec.dtype is Dtype.FP16:  # where fp16 is fast (AMX-FP16, a GPU): it may win with its island
        assert rec.fp32_modules == ("first",) and "kept in fp32" in rec.why
    else:  # elsewhere the why says how fast the repaired fp16 was
        assert "+fp32[first]" in rec.why


def test_a_diverged_trial_is_saved_and_read_back_not_left_out(tmp_path):
    """Non-finite losses are written as null (JSON has no nan); reading them back must give the
    trial, with nan, not drop it as corrupt (a resumed run would repeat it, the report hide it)."""
    import math

    from amp_advisor.harness.trial import Status, TrialSpec, failed
    from amp_advisor.numerics import GradStats
    from amp_advisor.tuning.record import TrialRecord

    spec = TrialSpec(workload=str(WORKLOADS / "tiny.py"), dtype=Dtype.FP16, batch_size=8)
    result = failed(spec, Status.NONFINITE, "loss is nan at measured step 1").with_updates(
        losses=(1.0, math.nan, math.inf), fp32_losses=(1.0, 0.9), warmup_losses=(math.nan,),
        grad_stats=GradStats(1.0, 10, 0.0, 0.0, 0.0, math.inf, {0: 10}))
    store = RunStore(tmp_path / "run")
    store.create({"workload": spec.workload})
    store.append(TrialRecord(1, Role.SEARCH, Candidate(Dtype.FP16, 8, 1024.0, 100), result, False, "nonfinite"))
    records, problems = store.read_records()
    assert problems == [] and len(records) == 1
    back = records[0].result
    assert back.status is Status.NONFINITE and back.losses[0] == 1.0
    assert math.isnan(back.losses[1]) and math.isnan(back.losses[2]) and math.isnan(back.warmup_losses[0])
    assert math.isnan(back.grad_stats.max_abs)
