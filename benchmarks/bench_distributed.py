"""Issue 13's figures, as four tables. Run alone (the ranks share this machine's cores):

    python benchmarks/bench_distributed.py [--rounds 3] [--example transformer]

1. Throughput, 1 rank vs 2 ranks: `amp-advisor bench` of one example at the same micro-batch per
   rank, as one process (all cores), under --parallel ddp on 1 rank, and on 2 ranks (the cores
   split, one thread each) with each reduction; interleaved round by round, global samples/s.
2. The share of a 2-rank DDP step spent communicating: under torchrun, the same model stepped with
   DDP's real all-reduce and with a hook that skips it (returns the local gradients), ABBA.
3. What a distributed tune costs against a single-process tune of the same example, settings
   and trial budget: wall time per trial. Target: <= 1.5x.
4. Fault recovery: a tune whose rank 1 dies (crash) or hangs at batch 32; from the moment of the
   fault (stamped by the workload) to the next trial's model built on every rank. Target: <= 30 s
   (+ the collective timeout that detects a hang).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_tune import cpu_name  # noqa: E402  (the machine line every benchmark prints)

FAULTS = ROOT / "benchmarks" / "workloads" / "stamped_faults.py"
HANG_TIMEOUT_S = 10  # --collective-timeout of the hang row


def advisor(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amp_advisor", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def torchrun(nproc: int, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                        **(env or {})}, timeout=timeout)


def _result(proc: subprocess.CompletedProcess) -> dict:
    if proc.returncode != 0:
        raise SystemExit(f"a run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


# ------------------------------------------------------------------------------ 1. throughput
def throughput(example: str, dtype: str, batch: int, rounds: int, steps: int) -> None:
    common = ["bench", "--example", example, "--dtype", dtype, "--batch-size", str(batch), "--steps", str(steps),
              "--no-fp32-check", "--json"]
    rows = [("1 process, all cores", lambda: advisor(*common)),
            ("ddp, 1 rank, all cores", lambda: advisor(*common, "--parallel", "ddp", "--nproc-per-node", "1")),
            ("ddp, 2 ranks, fp32 all-reduce", lambda: torchrun(2, "-m", "amp_advisor", *common, "--parallel", "ddp")),
            ("ddp, 2 ranks, fp16 all-reduce", lambda: torchrun(2, "-m", "amp_advisor", *common, "--parallel", "ddp",
                                                               "--comm", "fp16")),
            ("fsdp2, 2 ranks, fp32 reduce", lambda: torchrun(2, "-m", "amp_advisor", *common, "--parallel", "fsdp2")),
            ("fsdp2, 2 ranks, bf16 reduce", lambda: torchrun(2, "-m", "amp_advisor", *common, "--parallel", "fsdp2",
                                                             "--comm", "bf16"))]
    rates: dict[str, list[float]] = {label: [] for label, _ in rows}
    steps_s: dict[str, list[float]] = {label: [] for label, _ in rows}
    for k in range(rounds):
        for label, run in (rows if k % 2 == 0 else rows[::-1]):
            result = _result(run())
            rates[label].append(result["samples_per_s"])
            steps_s[label].append(result["step_time_s"]["median"])
    base = statistics.median(rates[rows[0][0]])
    print(f"\n1. {example} {dtype}, micro-batch {batch} per rank, {steps} measured steps, {rounds} interleaved rounds "
          "(medians); samples/s count every rank\n")
    print(f"{'configuration':34s} {'global samples/s':>16s} {'step ms':>8s} {'vs 1 process':>12s}")
    for label, _ in rows:
        rate = statistics.median(rates[label])
        print(f"{label:34s} {rate:16.1f} {statistics.median(steps_s[label]) * 1e3:8.1f} {rate / base:11.2f}x")


# ---------------------------------------------------------------------------- 2. comm share
CHILD = r'''
import json, os, statistics, sys, time, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from amp_advisor.workload import load
from amp_advisor.workload_source import example_path
example, batch, rounds, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dist.init_process_group("gloo")
w = load(str(example_path(example)))
torch.manual_seed(0)
def skip(state, bucket):  # no communication: the local gradient as if it were the average
    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut
models = {}
for name in ("all-reduce", "skipped"):
    torch.manual_seed(0)
    m = DDP(w.build_model())
    if name == "skipped":
        m.register_comm_hook(None, skip)
    models[name] = (m, w.build_optimizer(m.parameters()))
torch.manual_seed(1 + dist.get_rank())
data = [w.make_batch(batch, torch.device("cpu")) for _ in range(4)]
def step(name, i):
    m, opt = models[name]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = w.loss_fn(m, data[i % 4])
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
times = {n: [] for n in models}
for n in models:
    for i in range(3): step(n, i)
for r in range(rounds):
    for n in (list(models) if r % 2 == 0 else list(models)[::-1]):
        dist.barrier()
        t = time.perf_counter()
        for i in range(steps): step(n, i)
        dist.barrier()
        times[n].append((time.perf_counter() - t) / steps)
if dist.get_rank() == 0:
    print(json.dumps({n: statistics.median(v) for n, v in times.items()}))
dist.destroy_process_group()
'''


def comm_share(example: str, batch: int, rounds: int, steps: int) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(CHILD)
    proc = torchrun(2, f.name, example, str(batch), str(rounds * 2), str(steps))
    os.unlink(f.name)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    medians = json.loads(proc.stdout.strip().splitlines()[-1])
    full, local = medians["all-reduce"], medians["skipped"]
    print(f"\n2. {example} bf16, micro-batch {batch} per rank, 2 ranks (gloo, 1 thread each): DDP steps with the "
          f"all-reduce vs with it skipped, {rounds * 2} ABBA rounds of {steps} steps (medians)\n")
    print(f"{'step with all-reduce':>22s} {'step without':>13s} {'communication share':>20s}")
    print(f"{full * 1e3:19.1f} ms {local * 1e3:10.1f} ms {max(0.0, full - local) / full:19.1%}")


# ------------------------------------------------------------------------------ 3. tune cost
def tune_cost(example: str, trials: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        common = ["tune", "--example", example, "--strategy", "grid", "--batch-sizes", "16,32", "--steps", "3",
                  "--max-trials", str(trials)]
        for label, run in (("1 process", lambda out: advisor(*common, "--out", out)),
                           ("ddp, 2 ranks", lambda out: torchrun(2, "-m", "amp_advisor", *common, "--out", out,
                                                                 "--parallel", "ddp")),
                           ("fsdp2, 2 ranks", lambda out: torchrun(2, "-m", "amp_advisor", *common, "--out", out,
                                                                   "--parallel", "fsdp2"))):
            out = str(Path(tmp) / label.replace(" ", "_").replace(",", ""))
            started = time.monotonic()
            proc = run(out)
            wall = time.monotonic() - started
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            info = json.loads((Path(out) / "run.json").read_text())
            rows.append((label, info["trials"], wall))
    base = rows[0][2] / rows[0][1]
    print(f"\n3. tune --example {example} --strategy grid --batch-sizes 16,32 --max-trials {trials}: the whole "
          "command's wall time (launch, workers, trials, report)\n")
    print(f"{'run':16s} {'trials':>6s} {'wall s':>7s} {'s per trial':>11s} {'vs 1 process':>12s}  target <= 1.5x")
    for label, n, wall in rows:
        print(f"{label:16s} {n:6d} {wall:7.1f} {wall / n:11.2f} {wall / n / base:11.2f}x")


# ------------------------------------------------------------------------- 4. fault recovery
def recovery() -> None:
    print("\n4. fault recovery: tune of benchmarks/workloads/stamped_faults.py --parallel ddp on 2 ranks, rank 1 "
          "failing at batch 32 (the baseline); from the fault to the next trial's model built on every rank\n")
    print(f"{'fault':6s} {'detected by':34s} {'recovery s':>10s} {'target s':>8s}  trials")
    for fault in ("crash", "hang"):
        with tempfile.TemporaryDirectory() as tmp:
            proc = torchrun(2, "-m", "amp_advisor", "tune", str(FAULTS), "--parallel", "ddp", "--out", f"{tmp}/run",
                            "--batch-sizes", "16,32", "--max-trials", "3", "--steps", "3",
                            "--collective-timeout", str(HANG_TIMEOUT_S), env={"AMP_FAULT": fault, "AMP_STAMP_DIR": tmp})
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            fault_at = float(Path(tmp, "fault-1.txt").read_text().split()[0])
            built = [min(t for t in map(float, Path(tmp, f"build-{r}.txt").read_text().split()) if t > fault_at)
                     for r in (0, 1)]
            trials = [json.loads(line)["result"]["status"] for line in Path(tmp, "run", "trials.jsonl").open()]
        how = "the worker's death" if fault == "crash" else f"rank 0's collective timeout ({HANG_TIMEOUT_S} s)"
        target = 30 + (HANG_TIMEOUT_S if fault == "hang" else 0)
        print(f"{fault:6s} {how:34s} {max(built) - fault_at:10.1f} {target:8d}  {', '.join(trials)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--example", default="transformer")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tune-trials", type=int, default=6)
    parser.add_argument("--only", choices=("throughput", "comm", "tune", "recovery"))
    args = parser.parse_args()
    print(f"machine: {cpu_name()}; {time.strftime('%Y-%m-%d %H:%M')}")
    if args.only in (None, "throughput"):
        throughput(args.example, "bf16", args.batch_size, args.rounds, args.steps)
    if args.only in (None, "comm"):
        comm_share(args.example, args.batch_size, args.rounds, args.steps)
    if args.only in (None, "tune"):
        tune_cost("mlp", args.tune_trials)
    if args.only in (None, "recovery"):
        recovery()


if __name__ == "__main__":
    main()
