"""Issue 11's checks, repeated, as a table: two `tune` on one run directory at once; SIGTERM and
SIGKILL of `tune` and `bench` at random moments (during a normal trial, a hung one), then whether
any worker process outlives them and whether `--resume` finishes the run with no lost or
duplicated trial. Run alone (it loads both cores):

    python benchmarks/bench_safety.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "workloads" / "tiny.py"
HANG = ROOT / "tests" / "workloads" / "hang_above_16.py"
TUNE = [sys.executable, "-m", "amp_advisor", "tune", "--device", "cpu", "--steps", "3", "--strategy", "grid"]


def workers() -> set[int]:
    """Every live trial worker on this machine (its command line names the module)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"amp_advisor.harness.worker_process" in cmd and state != "Z":
                out.add(int(entry.name))
    return out


def numbers(run: Path) -> list[int]:
    path = run / "trials.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["number"] for line in path.read_text().splitlines() if line.strip()]


def concurrent(root: Path, repeat: int) -> None:
    print(f"1. two `tune` on one run directory at once, {repeat} times\n")
    print(f"{'try':>3s} {'exit codes':12s} {'refused in s':>12s} {'trials':>6s} {'duplicated':>10s}")
    for i in range(repeat):
        run = root / f"concurrent-{i}"
        cmd = TUNE + [str(TINY), "--out", str(run), "--batch-sizes", "4,8"]
        a = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        b = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        ended = {}
        while len(ended) < 2:
            for name, p in (("a", a), ("b", b)):
                if name not in ended and p.poll() is not None:
                    ended[name] = (p.returncode, time.monotonic() - started)
            time.sleep(0.05)
        codes = sorted(code for code, _ in ended.values())
        refused = min((t for code, t in ended.values() if code == 2), default=float("nan"))
        seen = numbers(run)
        print(f"{i + 1:3d} {str(codes):12s} {refused:12.1f} {len(seen):6d} {len(seen) - len(set(seen)):10d}")


def kills(root: Path, repeat: int) -> None:
    print(f"\n2. signals at random moments, {repeat} runs each; workers alive 5 s later; --resume after a tune\n")
    print(f"{'target':28s} {'signal':8s} {'at s':>5s} {'workers left':>12s} {'resume':>7s} {'trials':>6s} "
          f"{'duplicated':>10s}")
    rng = random.Random(0)
    cases = [("tune, normal trials", TINY, "4,8,16,32", "tune"), ("tune, a hung trial", HANG, "8,16,32", "tune"),
             ("bench, a hung trial", HANG, "32", "bench")]
    for label, workload, sizes, command in cases:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for i in range(repeat):
                run = root / f"kill-{command}-{sig.name}-{label[:4]}-{i}"
                if command == "tune":
                    cmd = TUNE + [str(workload), "--out", str(run), "--batch-sizes", sizes]
                else:
                    cmd = [sys.executable, "-m", "amp_advisor", "bench", str(workload), "--dtype", "fp32",
                           "--batch-size", sizes, "--device", "cpu"]
                before = workers()
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                at = rng.uniform(3.0, 9.0)
                time.sleep(at)
                proc.send_signal(sig)
                proc.wait()
                time.sleep(5)
                left = len(workers() - before)
                resumed, seen = "-", []
                if command == "tune" and (run / "run.json").exists():
                    done = subprocess.run([sys.executable, "-m", "amp_advisor", "tune", "--resume", "--out", str(run),
                                           "--timeout", "10"] if workload == HANG else
                                          [sys.executable, "-m", "amp_advisor", "tune", "--resume", "--out", str(run)],
                                          capture_output=True, text=True)
                    resumed = str(done.returncode)
                    seen = numbers(run)
                print(f"{label:28s} {sig.name:8s} {at:5.1f} {left:12d} {resumed:>7s} {len(seen):6d} "
                      f"{len(seen) - len(set(seen)):10d}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {sys.version.split()[0]}\n")
    with tempfile.TemporaryDirectory() as tmp:
        concurrent(Path(tmp), args.repeat)
        kills(Path(tmp), max(1, args.repeat // 3))


if __name__ == "__main__":
    main()
