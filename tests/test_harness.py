"""Trials through the real worker subprocess, on this machine's CPU."""

from pathlib import Path

import pytest

from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.hardware import probe
from amp_advisor.harness import worker as worker_module
from amp_advisor.harness.trial import TrialResult, TrialSpec
from amp_advisor.harness.worker import Worker
from amp_advisor.lifecycle import bench

WORKLOADS = Path(__file__).parent / "workloads"
FAST = dict(steps=6, warmup_steps=1)


def spec(name, dtype=Dtype.FP32, batch_size=8, **kw):
    return TrialSpec(str(WORKLOADS / f"{name}.py"), dtype, batch_size, **{**FAST, **kw})


@pytest.fixture(scope="module")
def worker():
    with Worker() as w:
        yield w


def test_a_trial_reports_every_measurement(worker):
    r = worker.run(spec("tiny", batch_size=16))
    assert r.status == "ok" and r.error is None
    t = r.step_time_s
    assert len(t.samples) == 6 and t.min <= t.median <= t.max and t.iqr >= 0
    assert r.samples_per_s == pytest.approx(16 / t.median)
    assert r.peak_memory_bytes is not None and r.peak_memory_bytes >= 0 and r.memory_method
    assert r.flops_per_step > 0 and r.tflops == pytest.approx(r.flops_per_step / t.median / 1e12)
    assert r.mfu is None and r.peak_tflops is None  # no peak data for CPUs
    assert len(r.losses) == 6 and r.loss_rel_diff_vs_fp32 == 0.0
    assert r.skipped_steps is None and r.final_loss_scale is None  # no GradScaler outside fp16
    assert r.grad_stats.elements == 32 * 64 + 64 + 64 * 4 + 4
    assert 0 <= r.loop_overhead_fraction < 1
    assert r.worker_pid is not None and r.wall_s > 0


def test_flops_match_the_model(worker):
    r = worker.run(spec("tiny", batch_size=16))
    first, second = 2 * 16 * 32 * 64, 2 * 16 * 64 * 4  # forward matmuls of the two layers
    # backward: weight and input gradients for the second layer, only the weight gradient for
    # the first (the data does not require grad)
    assert r.flops_per_step == first + second + 2 * second + first


def test_bf16_agrees_with_fp32_from_the_same_weights_and_batches(worker):
    r = worker.run(spec("tiny", Dtype.BF16))
    assert r.status == "ok"
    assert len(r.fp32_losses) == len(r.all_losses) == 7  # from step 0, the warm-up step included
    assert r.fp32_losses[0] == pytest.approx(r.all_losses[0], rel=0.05)  # same weights, same first batch
    assert 0 < r.loss_rel_diff_vs_fp32 < 0.05
    fast = probe("cpu").devices[0].dtypes[Dtype.BF16].fast  # AVX2-only CPUs emulate bf16; AVX512-BF16/AMX do not
    assert any("no fast path" in w for w in r.warnings) is not fast


def test_the_fp32_curve_is_trained_once_per_batch_size_and_matches_a_fresh_one():
    """An fp32 trial is the reference of its batch size; a later bf16 trial at that size reuses it
    (no fp32 reference steps), and gets the same curve as a worker that has to train it."""
    events = []
    with Worker(on_event=events.append) as w:
        w.run(spec("tiny", batch_size=4))
        events.clear()
        cached = w.run(spec("tiny", Dtype.BF16, batch_size=4, compare_steps=5))
        assert not [e for e in events if e.get("phase") == "fp32 reference"]
        events.clear()
        other_size = w.run(spec("tiny", Dtype.BF16, batch_size=2, compare_steps=5))
        assert len([e for e in events if e.get("phase") == "fp32 reference"]) == 5
    with Worker() as fresh:
        trained = fresh.run(spec("tiny", Dtype.BF16, batch_size=4, compare_steps=5))
    assert len(cached.fp32_losses) == 5 and cached.fp32_losses == trained.fp32_losses
    assert cached.loss_rel_diff_vs_fp32 == trained.loss_rel_diff_vs_fp32
    assert len(other_size.fp32_losses) == 5 and other_size.fp32_losses != cached.fp32_losses


def test_a_remeasurement_skips_the_gradient_pass_but_keeps_flops(worker):
    r = worker.run(spec("tiny", batch_size=16, grad_stats=False))
    assert r.status == "ok" and r.grad_stats is None and r.flops_per_step > 0


def test_fp16_uses_the_scaler_and_reports_its_state(worker):
    r = worker.run(spec("tiny", Dtype.FP16, init_scale=2.0**10, growth_interval=2))
    assert r.status == "ok" and r.skipped_steps == 0
    assert r.final_loss_scale == 2.0**13  # grew x2 every 2 steps over 6 steps
    assert r.grad_stats.scale == r.final_loss_scale


def test_an_absurd_init_scale_shows_up_as_skipped_steps(worker):
    r = worker.run(spec("tiny", Dtype.FP16, init_scale=2.0**40))
    assert r.skipped_steps > 0 and r.final_loss_scale < 2.0**40


def test_grad_accumulation_counts_samples_per_optimizer_step(worker):
    r = worker.run(spec("tiny", batch_size=4, grad_accum=3))
    assert r.status == "ok" and r.samples_per_s == pytest.approx(12 / r.step_time_s.median)


def test_default_loss_workload(worker):
    assert worker.run(spec("default_loss")).status == "ok"


def test_a_bug_in_the_users_code_is_an_error_result_with_the_line(worker):
    r = worker.run(spec("raises_in_step"))
    assert r.status == "error" and not r.bad_input
    assert "NameError" in r.error and "raises_in_step.py:7 in loss_fn" in r.error


def test_faults_are_results_and_the_next_trial_still_runs(worker):
    pid = worker.run(spec("tiny")).worker_pid

    oom = worker.run(spec("oom_above_8", batch_size=16))
    assert oom.status == "oom" and "DefaultCPUAllocator" in oom.error
    after = worker.run(spec("oom_above_8", batch_size=8))
    assert after.status == "ok" and after.worker_pid == pid  # an OOM does not cost the process

    hang = worker.run(spec("hang_on_third_step", timeout_s=8))
    assert hang.status == "timeout" and "exceeded its timeout of 8 s" in hang.error
    assert hang.wall_s < 20

    crash = worker.run(spec("abort_on_second_step"))
    assert crash.status == "crash" and "SIGABRT" in crash.error and "about to abort" in crash.error

    overflow = worker.run(spec("fp16_overflow", Dtype.FP16))
    assert overflow.status == "nonfinite" and "fp16 overflow" in overflow.error
    assert worker.run(spec("fp16_overflow", Dtype.BF16)).status == "ok"  # bf16 has the range

    last = worker.run(spec("tiny"))
    assert last.status == "ok" and last.worker_pid not in (None, pid)  # a replacement process


def test_without_a_timeout_a_hang_is_caught_by_the_progress_watchdog(monkeypatch):
    monkeypatch.setattr(worker_module, "HANG_GRACE_S", 3.0)
    with Worker() as w:
        r = w.run(spec("hang_on_third_step"))
    assert r.status == "timeout" and "no progress for" in r.error


def test_results_round_trip_through_json(worker):
    r = worker.run(spec("tiny", Dtype.FP16))
    assert TrialResult.from_dict(r.to_dict()) == r


@pytest.mark.parametrize(
    "workload, message",
    [
        ("missing_make_batch", "missing_make_batch.py: missing make_batch"),
        ("batch_is_a_string", "make_batch returned str"),
        ("loss_not_scalar", r"shape \(8, 4\); expected a scalar"),
        ("no_loss_anywhere", "define loss_fn"),
        ("syntax_error", "syntax_error.py:1: syntax error"),
    ],
)
def test_broken_workloads_are_bad_input_naming_the_file(worker, workload, message):
    with pytest.raises(BadInputError, match=message):
        bench(WORKLOADS / f"{workload}.py", dtype="fp32", batch_size=8, worker=worker, **FAST)


def test_a_dtype_the_device_cannot_run_is_bad_input(worker):
    with pytest.raises(BadInputError, match="tf32 cannot run on cpu: TF32 is a GPU tensor-core mode"):
        bench(WORKLOADS / "tiny.py", dtype="tf32", batch_size=8, device="cpu", worker=worker, **FAST)
    with pytest.raises(BadInputError, match="no CUDA device is usable here"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        bench(WORKLOADS / "tiny.py", dtype="fp32", batch_size=8, device="cuda", worker=worker, **FAST)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch-size must be >= 1, got 0"),
        (dict(batch_size=8, steps=0), "steps must be >= 1"),
        (dict(batch_size=8, init_scale=-1.0), "init-scale: expected a number > 0"),
        (dict(batch_size=8, dtype="fp8"), "fp8 cannot be trained"),
        (dict(batch_size=8, dtype="fp64"), "unknown dtype 'fp64'"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(worker, kwargs, message):
    with pytest.raises(BadInputError, match=message):
        bench(WORKLOADS / "tiny.py", worker=worker, **{"dtype": "fp32", **kwargs})


def test_model_or_example_exactly_one():
    with pytest.raises(BadInputError, match="exactly one"):
        bench(batch_size=8)
    with pytest.raises(BadInputError, match="exactly one"):
        bench(WORKLOADS / "tiny.py", example="mlp", batch_size=8)


def test_pruning_and_an_explicit_timeout_together(worker):
    # a trial that keeps pace is not cut short by the abandon limit once its first step is done
    ok = worker.run(spec("tiny", timeout_s=60, abandon_after_s=5.0, steps=4))
    assert ok.status == "ok", ok.error
    slow = worker.run(spec("tiny", timeout_s=60, abandon_after_s=1e-5))
    assert slow.status == "pruned" and "stopped early" in slow.error


def test_skipped_steps_count_the_measured_steps_only(worker):
    """A scale far too high overflows through the warm-up and settles there; the measured steps
    skip nothing, so skipped_steps is 0 even though the scale ended below init_scale."""
    r = worker.run(spec("tiny", Dtype.FP16, steps=4, warmup_steps=30, init_scale=2.0**40, compare_fp32=False))
    assert r.status == "ok"
    assert r.final_loss_scale < 2.0**40 and r.skipped_steps == 0


def test_a_dtype_without_a_fast_path_is_announced_before_its_first_step_and_timed_after_it():
    """An emulated dtype (bf16 on an AVX2-only CPU: a step 15-38x slower than fp32) says so before
    the first step, and after it how long the rest will take, not only in the final result."""
    slow = [d for d in (Dtype.BF16, Dtype.FP16) if not probe("cpu").devices[0].dtypes[d].fast]
    if not slow:
        pytest.skip("every reduced precision has a fast path on this CPU")
    events = []
    result = bench(str(WORKLOADS / "tiny.py"), dtype=slow[0], batch_size=4, device="cpu", steps=2, warmup_steps=1,
                   on_event=events.append)
    kinds = [(e.get("event"), e.get("phase")) for e in events]
    notices = [i for i, (kind, _) in enumerate(kinds) if kind == "notice"]
    first_step = kinds.index(("step", "warmup"))
    assert len(notices) == 2 and notices[0] < first_step < notices[1]
    assert "no fast path" in events[notices[0]]["text"]
    assert "the first step took" in events[notices[1]]["text"] and "the 2 steps left take about" in \
        events[notices[1]]["text"]
    assert result.status == "ok"


class _ExitingProcess:
    """A worker process that closed its output and exited with `code`, whose exit status the
    first poll() does not see yet (the race between the end of the stream and the reaping)."""

    def __init__(self, code: int) -> None:
        import io

        self.code, self.reaped, self.stdin = code, False, io.StringIO()

    def poll(self):
        return self.code if self.reaped else None

    def wait(self, timeout=None):
        self.reaped = True
        return self.code


def test_a_worker_whose_output_ended_has_exited_not_hung():
    """A workload calling os._exit(3) at import was once reported as "still importing after 0 s"
    when the worker's exit status was read a moment after its output stream ended: a process
    whose stream ended is waited for before it counts as running."""
    worker = Worker()
    worker.ready = {"event": "ready"}
    worker._proc = _ExitingProcess(3)
    assert worker.alive  # nothing ended yet: poll() says running
    worker._events.put(None)  # the end of its output stream
    why = worker.check("bad_os_exit.py", timeout_s=8)
    assert why is not None and "exited with code 3" in why and "still importing" not in why
