"""What MixedPrecision costs per training step, against the same loop written by hand with
torch.amp: same model, same batches, measured in one process and interleaved.

    python benchmarks/runtime_overhead.py            # prints a table

Each round runs a block of steps of each loop, in ABBA order (this machine drifts by 15-30%
over seconds, so a slow second affects both loops alike); the ratio is helper/hand-written per
round, and the table gives the median and spread over rounds. Targets (issue 6): <= 1.01 for
fp32 and bf16, <= 1.02 for fp16.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from amp_advisor.runtime import MixedPrecision
from amp_advisor.timing import median_iqr

LOWER = {"fp16": torch.float16, "bf16": torch.bfloat16}


def trivial():
    # Almost no work per step: what is left is the Python around it, i.e. the helper's own cost.
    return torch.nn.Linear(16, 10)


def small_mlp():
    # Small enough that a step takes ~1 ms in fp32: the per-step Python work of the helper shows.
    return torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 512),
                               torch.nn.GELU(), torch.nn.Linear(512, 10))


def example_mlp():
    from amp_advisor.examples import mlp

    return mlp.build_model()


MODELS = {"small MLP (0.4M params, batch 32)": (small_mlp, 256, 32),
          "mlp example (6.3M params, batch 16)": (example_mlp, 1024, 16)}
BLOCK_S = 0.25  # seconds per block: long enough to time, short enough to interleave often


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


class HandWritten:
    """The loop from the torch.amp documentation, the minimum for each dtype."""

    def __init__(self, model, dtype: str, accum: int, **scaler_kw):
        self.model, self.dtype, self.accum = model, dtype, accum
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.scaler = torch.amp.GradScaler("cpu", **scaler_kw) if dtype == "fp16" else None
        self.micro = 0

    def step(self, batch):
        if self.dtype in LOWER:
            with torch.autocast("cpu", dtype=LOWER[self.dtype]):
                loss = loss_fn(self.model, batch)
        else:
            loss = loss_fn(self.model, batch)
        reported = loss  # the micro-batch's own loss, as the helper's caller sees it
        if self.accum > 1:
            loss = loss / self.accum
        self.micro += 1
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if self.micro % self.accum == 0:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return reported


class WithHelper:
    def __init__(self, model, dtype: str, accum: int, **scaler_kw):
        self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.amp = MixedPrecision(dtype, "cpu", grad_accumulation_steps=accum, **scaler_kw)

    def step(self, batch):
        with self.amp.autocast():
            loss = loss_fn(self.model, batch)
        self.amp.backward(loss)
        self.amp.step(self.optimizer)
        return loss


def timed_block(loop, batches) -> float:
    start = time.perf_counter()
    for batch in batches:
        loop.step(batch)
    return time.perf_counter() - start


def measure(build, features: int, batch_size: int, dtype: str, accum: int, rounds: int, block: int | None = None,
            control: bool = False):
    """Median helper/hand ratio over interleaved rounds, plus per-step times. control=True puts a
    second hand-written loop in the helper's place: the ratio two identical loops show here."""
    torch.manual_seed(1)
    hand = HandWritten(build(), dtype, accum)
    torch.manual_seed(1)
    helper = (HandWritten if control else WithHelper)(build(), dtype, accum)
    torch.manual_seed(0)
    probe = [(torch.randn(batch_size, features), torch.randint(0, 10, (batch_size,))) for _ in range(3)]
    for loop in (hand, helper):  # warm-up: allocator, autograd, optimizer state
        timed_block(loop, probe)
    if block is None:  # calibrate: ~BLOCK_S per block, whole accumulations
        step_s = timed_block(hand, probe) / len(probe)
        block = max(accum, round(BLOCK_S / step_s / accum) * accum)
    batches = [(torch.randn(batch_size, features), torch.randint(0, 10, (batch_size,))) for _ in range(block)]
    ratios, hand_times, helper_times = [], [], []
    for r in range(rounds):
        order = (hand, helper) if r % 2 == 0 else (helper, hand)  # ABBA: drift hits both alike
        times = {id(loop): timed_block(loop, batches) for loop in order}
        ratios.append(times[id(helper)] / times[id(hand)])
        hand_times.append(times[id(hand)] / block)
        helper_times.append(times[id(helper)] / block)
    median, iqr = median_iqr(ratios)
    return {"ratio": median, "iqr": iqr, "hand_s": statistics.median(hand_times),
            "helper_s": statistics.median(helper_times), "block": block}


def correctness(dtype: str, accum: int, steps: int = 32) -> dict:
    """Both loops from the same seed, weights and batches: are losses, parameters and (fp16) the
    scale after every optimizer step identical? The scale starts too high, so some steps skip."""
    scaler_kw = {"init_scale": 2.0**24, "growth_interval": 3} if dtype == "fp16" else {}
    torch.manual_seed(1)
    hand = HandWritten(small_mlp(), dtype, accum, **scaler_kw)
    torch.manual_seed(1)
    helper = WithHelper(small_mlp(), dtype, accum, **scaler_kw)
    torch.manual_seed(0)
    batches = [(torch.randn(32, 256), torch.randint(0, 10, (32,))) for _ in range(steps)]
    hand_losses, helper_losses, hand_scales = [], [], []
    for i, batch in enumerate(batches):
        hand_losses.append(hand.step(batch).item())
        helper_losses.append(helper.step(batch).item())
        if hand.scaler is not None and (i + 1) % accum == 0:
            hand_scales.append(hand.scaler.get_scale())
    stats = helper.amp.stats()
    history = {int(step): scale for step, scale in stats["scale_history"]}
    helper_scales, current = [], history.get(0)
    for step in range(1, stats["steps"] + 1):
        current = history.get(step, current)
        helper_scales.append(current)
    same_params = all(torch.equal(a, b)
                      for a, b in zip(hand.model.parameters(), helper.model.parameters(), strict=True))
    return {"losses": hand_losses == helper_losses, "params": same_params,
            "scales": hand_scales == helper_scales if hand.scaler is not None else None,
            "skipped": stats["skipped_steps"], "steps": stats["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    targets = {"fp32": 1.01, "bf16": 1.01, "fp16": 1.02}
    print(f"torch {torch.__version__}, {args.threads} threads")
    print("\n0. Correctness: helper vs hand-written from the same seed (small MLP, 32 micro-batches)")
    print(f"{'dtype':<5} {'accum':>5} {'losses identical':>16} {'params identical':>16} {'scales identical':>16} "
          f"{'skipped steps':>13}")
    for dtype in ("fp32", "bf16", "fp16"):
        for accum in (1, 4):
            c = correctness(dtype, accum)
            scales = "n/a (no scaler)" if c["scales"] is None else str(c["scales"])
            print(f"{dtype:<5} {accum:>5} {str(c['losses']):>16} {str(c['params']):>16} {scales:>16} "
                  f"{c['skipped']:>6} of {c['steps']:<4}", flush=True)
    print(f"\n{args.rounds} interleaved rounds per row below (ABBA)")
    print("\n1. The helper's own cost per optimizer step: a model that does almost nothing (Linear 16->10, "
          "batch 4), so the difference is the Python around the step")
    print(f"{'dtype':<5} {'accum':>5} {'hand-written':>13} {'helper':>11} {'helper adds':>12}")
    for dtype in ("fp32", "bf16", "fp16"):
        for accum in (1, 4):
            m = measure(trivial, 16, 4, dtype, accum, args.rounds, block=400)
            print(f"{dtype:<5} {accum:>5} {m['hand_s'] * 1e6:>10.1f} us {m['helper_s'] * 1e6:>8.1f} us "
                  f"{(m['helper_s'] - m['hand_s']) * 1e6:>9.1f} us", flush=True)
    print("\n2. Real training steps, helper / hand-written (median over rounds; target <= 1.01 fp32 and bf16, "
          "<= 1.02 fp16)")
    print(f"{'model':<38} {'dtype':<5} {'accum':>5} {'step (hand)':>12} {'ratio':>7} {'IQR':>7} {'target':>7} "
          f"{'met':>4}")
    for name, build, features, batch_size in [("control: hand-written twice (small MLP)", small_mlp, 256, 32),
                                              ("control: hand-written twice (mlp example)", example_mlp, 1024, 16)]:
        m = measure(build, features, batch_size, "fp32", 4, args.rounds, control=True)
        print(f"{name:<38} {'fp32':<5} {4:>5} {m['hand_s'] * 1e3:>9.2f} ms {m['ratio']:>7.4f} {m['iqr']:>7.4f} "
              f"{'-':>7} {'-':>4}", flush=True)
    for name, (build, features, batch_size) in MODELS.items():
        for dtype in ("fp32", "bf16", "fp16"):
            if name.startswith("mlp") and dtype != "fp32":
                continue  # ~1 s per bf16/fp16 step on an AVX2 CPU: the small MLP is the harder case anyway
            for accum in (1, 4):
                m = measure(build, features, batch_size, dtype, accum, args.rounds)
                met = "yes" if m["ratio"] <= targets[dtype] else "NO"
                print(f"{name:<38} {dtype:<5} {accum:>5} {m['hand_s'] * 1e3:>9.2f} ms {m['ratio']:>7.4f} "
                      f"{m['iqr']:>7.4f} {targets[dtype]:>7} {met:>4}", flush=True)


if __name__ == "__main__":
    main()
