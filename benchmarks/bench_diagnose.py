"""Issue 12's figures, as two tables. Run alone (it loads both cores):

    python benchmarks/bench_diagnose.py [--rounds 3]

1. What `diagnose` costs: wall time of a K=10-step diagnosis against a plain trial of the same
   10 steps (`bench`, no warm-up, with and without its fp32 loss check), both in one warm worker,
   interleaved round by round (this machine drifts by 15-30% over seconds). Target: <= 3x.
2. What an fp32 island costs at training time: MixedPrecision steps of the transformer example
   with one island (its final LayerNorm) against the same model without, interleaved in blocks
   (ABBA). Target: <= 2% of the step.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amp_advisor import bench, diagnose  # noqa: E402
from amp_advisor.examples import transformer  # noqa: E402
from amp_advisor.harness.worker import Worker  # noqa: E402
from amp_advisor.runtime import MixedPrecision  # noqa: E402
from amp_advisor.workload_source import example_path  # noqa: E402

WORKLOADS = ROOT / "tests" / "workloads"
STEPS = 10
CASES = [  # (label, path, dtype, batch size)
    ("mlp example", example_path("mlp"), "bf16", 32),
    ("transformer example", example_path("transformer"), "bf16", 8),
    ("200 blocks (1,000+ modules)", WORKLOADS / "many_blocks.py", "bf16", 16),
    ("fp16 forward overflow", WORKLOADS / "fp16_overflow.py", "fp16", 8),
]


def cpu_name() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "?")
    isa = [f for f in ("amx_bf16", "avx512_bf16", "avx512_fp16") if f" {f}" in flags]
    return f"{name}, {torch.get_num_threads()} threads, {' '.join(isa) or 'no bf16/AMX flags'}"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def diagnose_cost(rounds: int) -> None:
    print(f"\n1. diagnose ({STEPS} steps) vs a plain trial of the same {STEPS} steps, one warm worker, "
          f"{rounds} interleaved rounds (median)\n")
    print(f"{'workload':30s} {'dtype':5s} {'diagnose s':>10s} {'trial s':>8s} {'+fp32 s':>8s} "
          f"{'x trial':>8s} {'x +fp32':>8s}  target <= 3x")
    with Worker() as worker:
        for label, path, dtype, batch in CASES:
            def plain(check: bool, path=path, dtype=dtype, batch=batch):
                return lambda: bench(path, dtype=dtype, batch_size=batch, device="cpu", steps=STEPS, warmup_steps=0,
                                     compare_fp32=check, worker=worker)

            def xray(path=path, dtype=dtype, batch=batch):
                return diagnose(path, dtype=dtype, batch_size=batch, device="cpu", steps=STEPS, worker=worker)

            xray()  # once untimed: the worker's imports and the first model build of this workload
            d_s, t_s, c_s = [], [], []
            for _ in range(rounds):
                d_s.append(timed(xray))
                t_s.append(timed(plain(False)))
                c_s.append(timed(plain(True)))
            ratio = statistics.median(d / t for d, t in zip(d_s, t_s, strict=True))
            ratio_c = statistics.median(d / c for d, c in zip(d_s, c_s, strict=True))
            print(f"{label:30s} {dtype:5s} {statistics.median(d_s):10.2f} {statistics.median(t_s):8.2f} "
                  f"{statistics.median(c_s):8.2f} {ratio:8.2f} {ratio_c:8.2f}  {'meets' if ratio <= 3 else 'MISSES'}",
                  flush=True)


def island_overhead(rounds: int, block_steps: int) -> None:
    print(f"\n2. MixedPrecision bf16 step of the transformer example (batch 8): one fp32 island (`norm`) vs none, "
          f"{rounds} ABBA rounds of {block_steps} steps\n")
    torch.manual_seed(0)
    base = transformer.build_model()
    loops = {}
    for name, islands in (("none", ()), ("norm", ("norm",))):
        model = copy.deepcopy(base)
        amp = MixedPrecision("bf16", "cpu", fp32_modules=islands)
        amp.prepare(model)
        loops[name] = (model, amp, torch.optim.AdamW(model.parameters(), lr=1e-4))
    batch = transformer.make_batch(8, "cpu")

    def block(name: str) -> float:
        model, amp, optimizer = loops[name]
        started = time.perf_counter()
        for _ in range(block_steps):
            with amp.autocast():
                loss = transformer.loss_fn(model, batch)
            amp.backward(loss)
            amp.step(optimizer)
        return (time.perf_counter() - started) / block_steps

    for name in loops:
        block(name)  # warm-up
    ratios, steps = [], []
    for k in range(rounds):
        order = ("none", "norm", "norm", "none") if k % 2 == 0 else ("norm", "none", "none", "norm")
        times = {"none": [], "norm": []}
        for name in order:
            times[name].append(block(name))
        ratios.append(sum(times["norm"]) / sum(times["none"]))
        steps.append(statistics.mean(times["none"]))
    ratio = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), ratio, max(ratios)]
    print(f"{'step without (ms)':>18s} {'with/without':>13s} {'IQR':>15s}  target <= 1.02")
    print(f"{statistics.median(steps) * 1e3:18.1f} {ratio:13.4f} {q[0]:7.4f}-{q[-1]:.4f}  "
          f"{'meets' if ratio <= 1.02 else 'MISSES'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of table 1")
    parser.add_argument("--island-rounds", type=int, default=12, help="ABBA rounds of table 2")
    parser.add_argument("--block-steps", type=int, default=5, help="steps per block of table 2")
    args = parser.parse_args()
    print(f"# CPU: {cpu_name()}; torch {torch.__version__}")
    diagnose_cost(args.rounds)
    island_overhead(args.island_rounds, args.block_steps)


if __name__ == "__main__":
    main()
