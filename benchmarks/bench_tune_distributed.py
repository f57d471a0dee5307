"""The distributed tune (issue 13) against an independent oracle, on this machine; prints tables.

Per strategy (ddp, fsdp2) and workload: `torchrun --nproc_per_node 2 -m amp_advisor tune --parallel P`
(Bayesian strategy, defaults), then the oracle: under torchrun too, every (dtype, batch, reduction)
of the run's space trained with plain torch.amp and torch's own DDP/FSDP2 as a user writes them
(bench_tune.py's training step, wrapped here: DDP + default_hooks.fp16_compress_hook, or
fully_shard with a MixedPrecisionPolicy), timed with torch.utils.benchmark in interleaved rounds
(ABBA). Every rank runs the same fixed number of steps (Timer.timeit(n): collectives need the
ranks in step); a step is the slowest rank's, samples/s count both ranks. A dtype below 1/4 of
fp32's rate at the smallest batch is measured there only (bench_tune.py's rule).

1. Quality: oracle samples/s of the recommendation / the oracle's best. Target >= 0.95.
2. Reduced precision where it wins: the oracle's best reduced-precision configuration beats its
   best fp32 by > 5% -> a reduced precision must be recommended.
3. Never worse: the recommendation vs fp32 at the same batch (fp32 reduction), by the oracle.

Usage: python benchmarks/bench_tune_distributed.py [--parallel ddp,fsdp2] [--workloads mlp,transformer]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_tune import WORKLOADS, cpu_name, tune  # noqa: E402

NPROC = 2
HOPELESS = 0.25
CHILD = HERE / "_oracle_rank.py"


TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(NPROC))
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the 2 cores shared out, as torchrun does by default


def torchrun(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ONE_THREAD})


def oracle(name: str, parallel: str, space: dict, rounds: int, steps: int) -> dict[tuple, float]:
    spec = {"workload": str(WORKLOADS[name]), "parallel": parallel, "dtypes": space["dtypes"],
            "batches": space["batch_sizes"], "comms": space["comms"], "rounds": rounds, "steps": steps,
            "hopeless": HOPELESS}
    done = torchrun(str(CHILD), json.dumps(spec))
    if done.returncode != 0:
        log = Path(tempfile.gettempdir()) / f"oracle-{name}-{parallel}.stderr"
        log.write_text(done.stderr)
        raise SystemExit(f"oracle {name} {parallel} failed (its ranks' output: {log}): {done.stderr[-1500:]}")
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return {(d, b, c): rate for d, b, c, rate in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", default="ddp,fsdp2")
    parser.add_argument("--workloads", default="mlp,transformer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement, the same on every rank")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}; {NPROC} ranks (gloo, 1 thread each)\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for parallel in args.parallel.split(","):
            for name in args.workloads.split(","):
                out = Path(tmp) / f"{name}-{parallel}"
                rec, run, trials, wall = tune(name, WORKLOADS[name], out, launcher=TORCHRUN,
                                              extra=("--parallel", parallel), env=ONE_THREAD)
                measured = oracle(name, parallel, run["context"]["space"], args.rounds, args.steps)
                rows.append((name, parallel, rec, trials, wall, measured))
                print(f"  {name} {parallel}: tuned in {wall:.0f} s ({len(trials)} trials), oracle measured "
                      f"{len(measured)} configurations", flush=True)

    def label(key: tuple) -> str:
        return f"{key[0]} bs={key[1]} reduce={key[2]}"

    print("\n1. quality: the oracle's samples/s of the recommendation / the oracle's best\n")
    print(f"{'workload':12s} {'parallel':8s} {'recommends':26s} {'oracle':>8s} {'oracle best':26s} {'best':>8s} "
          f"{'quality':>7s} {'trials':>6s} {'wall s':>6s}  verdict")
    for name, parallel, rec, trials, wall, measured in rows:
        key = (rec["dtype"], rec["batch_size"], rec["distributed"]["comm"])
        best = max(measured, key=measured.get)
        quality = measured.get(key, float("nan")) / measured[best]
        print(f"{name:12s} {parallel:8s} {label(key):26s} {measured.get(key, float('nan')):8.1f} {label(best):26s} "
              f"{measured[best]:8.1f} {quality:7.3f} {len(trials):6d} {wall:6.0f}  "
              f"{'meets' if quality >= 0.95 else 'MISSES'} (>= 0.95)")

    print("\n2. reduced precision where it wins: the oracle's best reduced-precision configuration vs its best fp32\n")
    print(f"{'workload':12s} {'parallel':8s} {'best fp32':30s} {'best reduced':34s} {'ratio':>6s} "
          f"{'recommended':12s}  verdict")
    for name, parallel, rec, _trials, _wall, measured in rows:
        fp32 = max((k for k in measured if k[0] == "fp32"), key=measured.get)
        reduced = max((k for k in measured if k[0] != "fp32"), key=measured.get, default=None)
        if reduced is None:
            continue
        ratio = measured[reduced] / measured[fp32]
        wins = ratio > 1.05
        ok = rec["dtype"] != "fp32" if wins else True
        print(f"{name:12s} {parallel:8s} {label(fp32) + f' {measured[fp32]:.0f}':30s} "
              f"{label(reduced) + f' {measured[reduced]:.0f}':34s} {ratio:6.2f} {rec['dtype']:12s}  "
              + ("meets" if ok else "MISSES") + (" (reduced wins by > 5%)" if wins else " (n/a: no win > 5%)"))

    print("\n3. never worse: the oracle's recommendation vs fp32 at the same batch (fp32 reduction)\n")
    print(f"{'workload':12s} {'parallel':8s} {'recommends':26s} {'oracle':>8s} {'fp32 same bs':>12s} {'ratio':>6s} "
          f"{'tune said':>9s}  verdict")
    for name, parallel, rec, _trials, _wall, measured in rows:
        key = (rec["dtype"], rec["batch_size"], rec["distributed"]["comm"])
        twin = measured.get(("fp32", rec["batch_size"], "fp32"))
        ratio = measured[key] / twin if twin else float("nan")
        said = rec["measured"].get("speedup_vs_fp32")
        print(f"{name:12s} {parallel:8s} {label(key):26s} {measured[key]:8.1f} {twin or float('nan'):12.1f} "
              f"{ratio:6.2f} {said or float('nan'):9.2f}  {'meets' if ratio >= 0.98 else 'MISSES'} "
              "(not slower by > 2%)")

    print("\noracle: global samples/s per configuration (median of its rounds); * the recommendation\n")
    for name, parallel, rec, _trials, _wall, measured in rows:
        chosen = (rec["dtype"], rec["batch_size"], rec["distributed"]["comm"])
        for dtype, comm in dict.fromkeys((k[0], k[2]) for k in measured):
            cells = [f"bs={b} {rate:.0f}{'*' if (d, b, c) == chosen else ''}"
                     for (d, b, c), rate in sorted(measured.items()) if (d, c) == (dtype, comm)]
            print(f"  {name:12s} {parallel:6s} {dtype:5s} reduce={comm:5s} " + "  ".join(cells))
    print("\nwhy, as the runs say it:")
    for name, parallel, rec, *_ in rows:
        print(f"  {name} {parallel}: {rec['why']}")


if __name__ == "__main__":
    main()
