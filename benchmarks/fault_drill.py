"""Fault drills on real processes and a real disk; prints a table.

Each drill starts `amp-advisor tune` on tests/workloads/spawning.py (its build_model starts
helper processes of its own: one in a new session, one by double fork), then breaks it:
- sigkill / sigterm / sigint: the signal at a random moment of the tune (before the first trial,
  mid-trial, in the confirmation rounds); after a SIGKILL the run is resumed to the end;
- disk-full: the run directory on a small tmpfs (mounted here when this process may mount one;
  skipped, with the reason, where it may not), so that a write fails mid-run.

For each drill: trials kept (whole records in trials.jsonl that were there before the fault),
trials lost (records seen before the fault and missing after it, or after the resume),
processes left (anything carrying the drill's mark 30 s after the command ended), and whether
run.json's state agrees with what the command said (interrupted -> "interrupted", a full disk ->
"marked interrupted" only if run.json says so, before the first trial -> no run directory).
Targets: 0 lost, 0 left, 0 disagreements, over at least 50 drills. Run alone: it loads both cores.

Usage: python benchmarks/fault_drill.py [--drills 52] [--seed 0]
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
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_tune import cpu_name  # noqa: E402  (the machine line every benchmark prints)

from tests.processes import MARK_ENV, wait_until_none_marked  # noqa: E402

WORKLOAD = ROOT / "tests" / "workloads" / "spawning.py"
TUNE = [sys.executable, "-m", "amp_advisor", "tune", str(WORKLOAD), "--device", "cpu", "--batch-sizes", "4,8,16",
        "--steps", "3", "--strategy", "grid"]
SIGNALS = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}


@dataclass
class Drill:
    kind: str
    at_s: float
    kept: int = 0
    lost: int = 0
    left: int = 0
    agrees: bool = True
    note: str = ""


def records(run: Path) -> list[int]:
    """The trial numbers of the whole lines of trials.jsonl (a line cut short is not a record)."""
    try:
        text = (run / "trials.jsonl").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            try:
                out.append(int(json.loads(line)["number"]))
            except (ValueError, KeyError, TypeError):
                pass
    return out


def state(run: Path) -> str | None:
    try:
        return json.loads((run / "run.json").read_text())["state"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def signal_drill(kind: str, root: Path, rng: random.Random) -> Drill:
    mark, run = uuid.uuid4().hex, root / f"{kind}-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, MARK_ENV: mark}
    drill = Drill(kind, rng.uniform(1.0, 14.0))
    proc = subprocess.Popen([*TUNE, "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(drill.at_s)
    before = records(run)
    proc.send_signal(SIGNALS[kind])
    _, err = proc.communicate(timeout=300)
    after = records(run)
    drill.kept = len(set(before) & set(after))
    drill.lost = len(set(before) - set(after))
    final = state(run)
    if kind == "sigkill" or proc.returncode == 0:
        drill.agrees = final in ("running", "complete", None) or not run.exists()
    elif "nothing to resume" in err:
        drill.agrees = final is None
    else:
        drill.agrees = ("interrupted" in err) == (final == "interrupted")
    drill.left = len(wait_until_none_marked(mark))
    if kind == "sigkill" and final == "running":  # the run resumes to the end, losing nothing
        resumed = subprocess.run([sys.executable, "-m", "amp_advisor", "tune", "--resume", "--out", str(run)],
                                 env=env, capture_output=True, text=True, timeout=600)
        done = records(run)
        drill.lost += len(set(before) - set(done)) + (len(done) - len(set(done)))  # missing, or duplicated
        drill.agrees &= resumed.returncode == 0 and state(run) == "complete"
        drill.left += len(wait_until_none_marked(mark))
        drill.note = f"resumed: {len(done)} trials"
    if not drill.agrees:
        drill.note += f" state {final!r}, said: {err.strip().splitlines()[-1:] if err.strip() else ''}"
    return drill


def can_mount() -> str | None:
    """None when a tmpfs can be mounted here, else why not."""
    probe = Path(tempfile.mkdtemp(prefix="amp-drill-mount-"))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
        subprocess.run(["umount", str(probe)], check=False)
        return None
    except OSError as exc:
        return f"no mount command ({exc})"
    finally:
        probe.rmdir()


def disk_full_drill(root: Path, size_kib: int) -> Drill:
    """The run directory on a tmpfs of `size_kib`: the trial records, run.json and the report
    outgrow it during the run."""
    mark, mount = uuid.uuid4().hex, root / f"full-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount)], check=True)
    drill = Drill("disk-full", 0.0, note=f"tmpfs {size_kib} KiB")
    try:
        run = mount / "run"
        done = subprocess.run([*TUNE, "--out", str(run)], env={**os.environ, MARK_ENV: mark}, capture_output=True,
                              text=True, timeout=600)
        kept = records(run)
        drill.kept = len(kept)
        drill.lost = len(kept) - len(set(kept))  # a record written twice
        final = state(run)
        said_marked = "the run is marked interrupted" in done.stderr
        said_unmarked = "could not be marked interrupted" in done.stderr
        if done.returncode == 0:
            drill.agrees = final == "complete"
            drill.note += ", completed (the disk held)"
        else:
            drill.agrees = (said_marked and final == "interrupted") or (said_unmarked and final != "interrupted") \
                or (not said_marked and not said_unmarked and final is None)
            drill.agrees &= "Traceback" not in done.stderr and done.returncode == 2
            drill.note += f", exit {done.returncode}, run.json {final!r}"
            if not drill.agrees:
                drill.note += f": {done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else ''}"
        drill.left = len(wait_until_none_marked(mark))
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    return drill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drills", type=int, default=52, help="signal drills (plus the disk-full ones)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {cpu_name()}, Python {sys.version.split()[0]}; workload {WORKLOAD.relative_to(ROOT)}\n")
    drills: list[Drill] = []
    with tempfile.TemporaryDirectory(prefix="amp-drill-") as tmp:
        root = Path(tmp)
        kinds = list(SIGNALS)
        for i in range(args.drills):
            drills.append(signal_drill(kinds[i % len(kinds)], root, rng))
            print(f"  {i + 1:3d} {drills[-1].kind:9s} at {drills[-1].at_s:5.1f} s: kept {drills[-1].kept}, "
                  f"lost {drills[-1].lost}, left {drills[-1].left}, agrees {drills[-1].agrees} {drills[-1].note}",
                  flush=True)
        why_not = can_mount()
        if why_not is None:
            for size in (24, 48, 96, 192):
                drills.append(disk_full_drill(root, size))
                d = drills[-1]
                print(f"  {len(drills):3d} {d.kind:9s}: kept {d.kept}, lost {d.lost}, left {d.left}, "
                      f"agrees {d.agrees} ({d.note})", flush=True)
        else:
            print(f"  disk-full drills skipped: {why_not}")
    print(f"\n{'drill':10s} {'runs':>5s} {'kept':>6s} {'lost':>5s} {'left':>5s} {'disagree':>9s}")
    for kind in [*SIGNALS, "disk-full", "all"]:
        rows = [d for d in drills if kind in ("all", d.kind)]
        if rows:
            print(f"{kind:10s} {len(rows):5d} {sum(d.kept for d in rows):6d} {sum(d.lost for d in rows):5d} "
                  f"{sum(d.left for d in rows):5d} {sum(not d.agrees for d in rows):9d}")
    bad = sum(d.lost + d.left + (not d.agrees) for d in drills)
    print(f"\ntargets (0 lost, 0 left, 0 disagreements over >= 50 drills): "
          f"{'met' if bad == 0 and len(drills) >= 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
