"""The real thing on this CPU: torchrun with 2 ranks (gloo, one thread each), the ranks started by
`--nproc-per-node`, two "nodes" on one machine, and faults on rank 1 only. Every test checks that
nothing it started is left running (each run is marked with an environment variable, and /proc
is searched for it afterwards)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from amp_advisor.harness.trial import TrialResult
from amp_advisor.recommendation import Recommendation
from tests.fakes import WORKLOADS

posix = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="searches /proc for leftover processes")
MARK = "AMP_ADVISOR_TEST_MARK"
SMALL = ["--batch-sizes", "16,32", "--steps", "3", "--time-budget", "300"]


def _env(mark: str, **extra: str) -> dict[str, str]:
    return {**os.environ, MARK: mark, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _marked(mark: str) -> list[int]:
    """Processes alive with the mark in their environment (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def _nothing_left(mark: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _marked(mark), f"processes left running: {_marked(mark)}"


def _torchrun(args: list[str], mark: str, nproc: int = 2, timeout: float = 400, **env: str):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "amp_advisor", *args]
    return subprocess.run(command, env=_env(mark, **env), capture_output=True, text=True, timeout=timeout)


def _trials(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines() if line.strip()]


@posix
@pytest.mark.parametrize("parallel", ["ddp", "fsdp2"])
def test_two_ranks_tune_and_rank_0_alone_writes_one_run(parallel, tmp_path):
    mark = uuid.uuid4().hex
    run = tmp_path / "run"
    proc = _torchrun(["tune", "--example", "mlp", "--parallel", parallel, "--out", str(run), "--max-trials", "4",
                      *SMALL], mark)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("\nrecommendation ") == 1  # rank 0 alone reports
    rec = Recommendation.load(run, check_hardware=False)
    assert rec.distributed.parallel == parallel and rec.distributed.world_size == 2
    assert rec.distributed.global_batch == 2 * rec.batch_size * rec.grad_accumulation_steps
    trials = _trials(run)
    assert all(len(t["result"]["ranks"]) == 2 for t in trials)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else written, by any rank
    report = (run / "report.md").read_text()
    assert "## Across ranks" in report and "(plots/ranks.png)" in report
    for t in trials:
        result = TrialResult.from_dict(t["result"])
        if result.step_time_s:  # a step is the slowest rank's, step by step: so its median is at
            # least every rank's own (an order statistic of an elementwise maximum), whatever the
            # machine's load; the old check (within 50% of the slowest median) was a timing
            # assertion, and with ranks slow in turn on a loaded machine it failed
            slowest = max(r.step_median_s for r in result.ranks)
            assert result.step_time_s.median >= slowest * (1 - 1e-9)
    _nothing_left(mark)


@posix
def test_bench_under_torchrun_measures_every_rank(tmp_path):
    mark = uuid.uuid4().hex
    proc = _torchrun(["bench", "--example", "mlp", "--dtype", "bf16", "--batch-size", "8", "--steps", "3",
                      "--parallel", "ddp", "--comm", "fp16", "--json"], mark)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = TrialResult.from_dict(json.loads(proc.stdout))  # rank 0's output alone: one document
    assert result.spec.comm == "fp16" and [r.rank for r in result.ranks] == [0, 1]
    assert result.loss_rel_diff_vs_fp32 is not None
    _nothing_left(mark)


@posix
def test_nproc_per_node_launches_through_torchs_launcher(tmp_path):
    mark = uuid.uuid4().hex
    proc = subprocess.run([sys.executable, "-m", "amp_advisor", "bench", "--example", "mlp", "--dtype", "fp32",
                           "--batch-size", "8", "--steps", "3", "--parallel", "fsdp2", "--nproc-per-node", "2",
                           "--json"], env=_env(mark), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = TrialResult.from_dict(json.loads(proc.stdout))
    assert result.spec.parallel == "fsdp2" and len(result.ranks) == 2
    _nothing_left(mark)


@posix
def test_two_nodes_on_one_machine_meet_through_a_c10d_rendezvous(tmp_path):
    mark = uuid.uuid4().hex
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"

    def node(rank: int) -> subprocess.Popen:
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   "--node_rank", str(rank), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                   "--rdzv_id", mark, "-m", "amp_advisor", "tune", "--example", "mlp", "--parallel", "ddp",
                   "--out", str(run), "--max-trials", "3", *SMALL]
        return subprocess.Popen(command, env=_env(mark), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    nodes = [node(0), node(1)]
    outputs = [n.communicate(timeout=400) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [o[1][-2000:] for o in outputs]
    assert sum(o[0].count("\nrecommendation ") for o in outputs) == 1
    rec = Recommendation.load(run, check_hardware=False)
    assert rec.distributed.world_size == 2
    _nothing_left(mark)


@posix
@pytest.mark.parametrize("fault, status", [("oom", "oom"), ("crash", "crash"), ("hang", "timeout")])
def test_a_fault_on_rank_1_is_recorded_once_with_the_rank_and_the_run_goes_on(fault, status, tmp_path):
    mark = uuid.uuid4().hex
    run = tmp_path / "run"
    proc = _torchrun(["tune", str(WORKLOADS / "rank_faults.py"), "--parallel", "ddp", "--out", str(run),
                      "--max-trials", "4", "--collective-timeout", "8", *SMALL], mark, AMP_FAULT=fault)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _trials(run)
    # a trial stopped early for its speed names no rank: under ddp every rank's first step is as slow
    faulty = [t["result"] for t in trials if t["result"]["status"] not in ("ok", "pruned")]
    assert all(t["result"]["failed_rank"] is None for t in trials if t["result"]["status"] == "pruned")
    assert faulty and faulty[0]["status"] == status and faulty[0]["failed_rank"] == 1
    assert faulty[0]["error"].startswith("rank 1")
    assert all(f["failed_rank"] == 1 and f["spec"]["batch_size"] >= 32 for f in faulty)
    first = next(t for t in trials if t["result"]["status"] not in ("ok", "pruned"))
    assert sum(1 for t in trials if t is first) == 1 and len({t["number"] for t in trials}) == len(trials)
    assert any(t["result"]["status"] == "ok" for t in trials[trials.index(first) + 1:])  # new workers ran trials
    rec = Recommendation.load(run, check_hardware=False)
    assert rec.batch_size < 32  # a batch that avoids it
    _nothing_left(mark)


@posix
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_torchrun_leaves_no_process_and_a_resumable_run(sig, tmp_path):
    mark = uuid.uuid4().hex
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "amp_advisor", "tune", str(WORKLOADS / "rank_faults.py"), "--parallel", "ddp", "--out", str(run),
               "--max-trials", "4", "--collective-timeout", "60", *SMALL]
    torchrun = subprocess.Popen(command, env=_env(mark, AMP_FAULT="hang"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "run.json").exists() and time.monotonic() < deadline:  # the baseline (bs 32) hangs on rank 1
        time.sleep(0.5)
    time.sleep(3)
    assert torchrun.poll() is None and len(_marked(mark)) >= 5  # torchrun, 2 ranks, 2 workers
    torchrun.send_signal(sig)
    torchrun.communicate(timeout=60)
    _nothing_left(mark, within_s=20)
    state = json.loads((run / "run.json").read_text())["state"]
    assert state == "interrupted"
    if sig is signal.SIGTERM:  # and --resume continues it under torchrun as on one process
        resumed = _torchrun(["tune", "--resume", "--out", str(run), "--parallel", "ddp"], mark)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads((run / "run.json").read_text())["state"] == "complete"
        assert Recommendation.load(run, check_hardware=False).distributed.world_size == 2
        _nothing_left(mark)
