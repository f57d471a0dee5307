"""Nothing lost, nothing mixed: run-directory locking, workers that die with their parent,
--resume that does what it says, and checks that run before a run directory exists."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from amp_advisor.cli import cli
from amp_advisor.errors import BadInputError
from amp_advisor.lifecycle import _run
from amp_advisor.tuning.settings import TuneSettings
from amp_advisor.tuning.store import RunStore
from tests.fakes import GPU_RATES, WORKLOADS, SyntheticWorker, fake_h100_profile

posix = pytest.mark.skipif(os.name != "posix", reason="file locks and process groups as on Linux/macOS")

HOLD_LOCK = """
import sys, time
from pathlib import Path
from amp_advisor.tuning.store import RunStore
RunStore(Path(sys.argv[1])).lock()
print("locked", flush=True)
time.sleep(60)
"""


def _holder(directory):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@posix
def test_a_locked_run_directory_is_refused_naming_the_holder_and_freed_when_it_dies(tmp_path):
    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(BadInputError, match=f"in use by a running amp-advisor \\(pid {holder.pid}\\)"):
            RunStore(tmp_path / "run").lock()
    finally:
        holder.kill()
        holder.wait()
    store = RunStore(tmp_path / "run")
    store.lock()  # the kernel released the dead holder's lock: no stale lock
    store.unlock()


@posix
def test_resume_against_a_live_run_exits_2(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"schema_version": 1, "state": "running",
                                              "settings": TuneSettings("x.py", "cpu").to_dict()}))
    holder = _holder(run)
    try:
        result = CliRunner().invoke(cli, ["tune", "--resume", "--out", str(run)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2 and "in use by a running amp-advisor" in result.stderr


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


PARENT_WITH_A_HUNG_TRIAL = """
import sys, threading
from amp_advisor.harness.worker import Worker
from amp_advisor.harness.trial import TrialSpec
from amp_advisor.dtypes import Dtype
w = Worker()
w.spawn()
print(w.wait_ready()["pid"], flush=True)
spec = TrialSpec(workload=sys.argv[1], dtype=Dtype.FP32, batch_size=32, device="cpu", steps=3, warmup_steps=1)
w.run(spec)  # hangs at batch 32
"""


@posix
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_worker_dies_with_its_parent_even_mid_trial(sig):
    parent = subprocess.Popen([sys.executable, "-c", PARENT_WITH_A_HUNG_TRIAL, str(WORKLOADS / "hang_above_16.py")],
                              stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())
    time.sleep(2)  # the trial is under way (its model built, its loss hanging)
    assert _alive(worker_pid)
    parent.send_signal(sig)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker_pid), "the worker outlived its parent"


def _tiny_run(tmp_path, *extra):
    return CliRunner().invoke(cli, ["tune", str(WORKLOADS / "tiny.py"), "--device", "cpu",
                                    "--out", str(tmp_path / "run"),
                                    "--batch-sizes", "4,8", "--steps", "3", "--strategy", "grid", *extra])


def test_resume_of_a_complete_run_reruns_nothing_and_a_disagreeing_resume_is_refused(tmp_path):
    first = _tiny_run(tmp_path)
    assert first.exit_code == 0, first.output
    run = tmp_path / "run"
    before = (run / "trials.jsonl").read_text()
    again = CliRunner().invoke(cli, ["tune", "--resume", "--out", str(run), "--time-budget", "100"])
    assert again.exit_code == 0, again.output
    assert "already complete" in again.output and "recommendation" in again.output
    assert (run / "trials.jsonl").read_text() == before
    other = CliRunner().invoke(cli, ["tune", str(WORKLOADS / "fp16_overflow.py"), "--resume", "--out", str(run),
                                     "--strategy", "bayes", "--batch-sizes", "4,8,16"])
    assert other.exit_code == 2
    for part in ("the workload", "fp16_overflow.py", "--strategy bayes (the run: grid)", "--batch-sizes 4,8,16"):
        assert part in other.stderr
    assert (run / "trials.jsonl").read_text() == before


@pytest.mark.parametrize("args, message", [
    ([str(WORKLOADS / "missing_make_batch.py")], "missing make_batch"),
    ([str(WORKLOADS / "tiny.py"), "--steps", "0"], "--steps"),
    ([str(WORKLOADS / "tiny.py"), "--device", "cuda:7"], "--device cuda:7"),
    ([str(WORKLOADS / "tiny.py"), "--global-batch", "7", "--batch-sizes", "8,16"], "sizes that would: 1,7"),
    ([str(WORKLOADS / "tiny.py"), "--global-batch", "0"], "--global-batch must be >= 1"),
    ([str(WORKLOADS / "tiny.py"), "--batch-sizes", ""], "--batch-sizes '': empty"),
    ([str(WORKLOADS / "tiny.py"), "--time-budget", "1e9"], "at most a week"),
])
def test_bad_input_is_refused_before_the_run_directory_exists(tmp_path, args, message):
    if "cuda:7" in args:
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["tune", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_a_full_disk_is_one_line_naming_the_path_and_the_run_resumes(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "run")
    settings = TuneSettings(workload=str(WORKLOADS / "tiny.py"), device="cuda:0", batch_sizes=(16, 32),
                            strategy="grid")
    store.create(settings.to_dict())
    real_append, calls = RunStore.append, []

    def append(self, record):
        calls.append(record.number)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.trials_file))
        real_append(self, record)

    monkeypatch.setattr(RunStore, "append", append)
    with pytest.raises(BadInputError, match=r"trials.jsonl: No space left on device; the run is marked interrupted"):
        _run(store, settings, SyntheticWorker(GPU_RATES), fake_h100_profile(), None)
    assert store.run_info()["state"] == "interrupted"
    monkeypatch.setattr(RunStore, "append", real_append)
    result = _run(store, settings, SyntheticWorker(GPU_RATES), fake_h100_profile(), None)
    numbers = [r.number for r in store.records()]
    assert result.recommendation is not None and numbers == list(range(1, len(numbers) + 1))


def test_a_hung_first_step_costs_the_allowance_the_spec_gives_not_ten_minutes():
    from amp_advisor.dtypes import Dtype
    from amp_advisor.harness.trial import Status, TrialSpec
    from amp_advisor.harness.worker import Worker

    spec = TrialSpec(workload=str(WORKLOADS / "hang_above_16.py"), dtype=Dtype.FP32, batch_size=32, device="cpu",
                     steps=2, warmup_steps=1, first_step_timeout_s=3.0)
    with Worker() as worker:
        worker.wait_ready()
        started = time.monotonic()
        result = worker.run(spec)
    assert result.status is Status.TIMEOUT and time.monotonic() - started < 20
    assert "did not finish within the 3 s allowed" in result.error


def test_first_step_allowances_come_from_the_calibration_and_finished_trials(tmp_path):
    from amp_advisor.tuning.runner import FIRST_STEP_FACTOR, FIRST_STEP_FLOOR_S
    from amp_advisor.tuning.tuner import Tuner

    store = RunStore(tmp_path / "run")
    settings = TuneSettings(workload=str(WORKLOADS / "tiny.py"), device="cuda:0", batch_sizes=(16, 32, 64),
                            strategy="grid")
    store.create(settings.to_dict())
    worker = SyntheticWorker(GPU_RATES)
    Tuner(settings, store, worker=worker, device_profile=fake_h100_profile(), calibration=(16, 4.0)).run()
    first = worker.specs[0]
    assert first.first_step_timeout_s == pytest.approx(FIRST_STEP_FACTOR * 4.0 * first.batch_size / 16)
    assert all(s.first_step_timeout_s and s.first_step_timeout_s >= FIRST_STEP_FLOOR_S for s in worker.specs)


@posix
def test_closing_a_worker_mid_trial_kills_it_at_once_instead_of_waiting_for_it_to_exit():
    """Ctrl-C or SIGTERM during a hung trial: the worker will never read an exit command, so
    close() kills it rather than waiting its grace period."""
    import threading

    from amp_advisor.dtypes import Dtype
    from amp_advisor.harness.trial import TrialSpec
    from amp_advisor.harness.worker import Worker

    worker = Worker()
    pid = worker.wait_ready()["pid"]
    spec = TrialSpec(workload=str(WORKLOADS / "hang_above_16.py"), dtype=Dtype.FP32, batch_size=32, device="cpu",
                     steps=3, warmup_steps=1)
    trial = threading.Thread(target=worker.run, args=(spec,), daemon=True)
    trial.start()
    time.sleep(3)  # the model is built and its loss hangs
    started = time.monotonic()
    worker.close()
    assert time.monotonic() - started < 3 and not _alive(pid)
    trial.join(timeout=10)
