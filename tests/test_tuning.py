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
from amp_advisor.recommendation import Recommendation
from amp_advisor.tuning import tune
from amp_advisor.tuning.search import BayesStrategy, GridStrategy
from amp_advisor.tuning.space import Candidate, SearchSpace, build_space, parse_batch_sizes, seeded_init_scale
from amp_advisor.tuning.store import RunStore
from amp_advisor.tuning.tuner import Tuner, TuneSettings
from tests.fakes import GPU_RATES, WORKLOADS, SyntheticWorker, fake_h100_profile, run_tuner

H100 = fake_h100_profile()
CPU = probe("cpu").devices[0]


def test_space_from_the_probe():
    space, notes = build_space(CPU)
    assert Dtype.TF32 not in space.dtypes and any("tf32 left out" in n for n in notes)
    assert len(space.candidates()) == len(space.batch_sizes) * (2 + 3 * 3)  # fp32, bf16, fp16 x scaler grid
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
    with pytest.raises(BadInputError, match=">= 1"):
        parse_batch_sizes("0,8")


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
    result, store = run_tuner(tmp_path, SyntheticWorker(GPU_RATES), batch_sizes=(8, 16, 32, 64))
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
    rates = {Dtype.FP32: 1000.0, Dtype.TF32: 1000.0, Dtype.BF16: 2.0, Dtype.FP16: 2.0}  # like an AVX2 CPU
    worker = SyntheticWorker(rates)
    result, _ = run_tuner(tmp_path, worker, batch_sizes=(8, 16, 32, 64))
    slow = [s for s in worker.specs if s.dtype in (Dtype.BF16, Dtype.FP16)]
    assert len(slow) == 2 and all(s.batch_size == 8 for s in slow)  # one scout each, at the smallest batch
    assert result.recommendation.dtype in (Dtype.FP32, Dtype.TF32)
    assert "stopped early" in result.recommendation.why


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
        Tuner(TuneSettings(**settings), store, worker=SyntheticWorker(GPU_RATES, interrupt_after=4), device_profile=H100).run()
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
    assert len(csv) == 1 + len(records) and csv[0].startswith("trial,role,dtype,batch_size")


def test_bad_settings():
    with pytest.raises(BadInputError, match="--strategy 'random'"):
        TuneSettings(workload="x", device="cpu", strategy="random")
    with pytest.raises(BadInputError, match="max-trials must be > 0"):
        TuneSettings(workload="x", device="cpu", max_trials=0)


# ------------------------------------------------------------------------------- end to end, real


def test_tune_end_to_end_writes_a_loadable_recommendation(tmp_path):
    result = tune(WORKLOADS / "tiny.py", device="cpu", out=tmp_path / "run", batch_sizes=(8, 16), strategy="grid",
                  steps=3)
    run = tmp_path / "run"
    for name in ("recommendation.json", "trials.jsonl", "trials.csv", "run.json", "device.json", "report.md", "report.html"):
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
    assert proc.returncode == 130, err
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
