"""Sane upper bounds on what a user can ask for: a typo (1e9 seconds, a million steps) must be
refused in one line, not hold the machine for days. Torch-free, so the CLI can import it cheaply."""

import math

MAX_BENCH_SECONDS = 120.0  # probe --bench, per device
MAX_BATCH_SIZE = 1 << 20  # samples per micro-batch
MAX_STEPS = 10_000  # measured (or warm-up) steps of one trial
MAX_TRIALS = 10_000  # search trials of one run
MAX_TIME_BUDGET_S = 7 * 86400.0  # one tune run: a week
MAX_TRIAL_TIMEOUT_S = 86400.0  # one trial: a day
MAX_INIT_SCALE = 2.0**64  # a GradScaler scale: fp16 gradients overflow long before this
MAX_GROWTH_FACTOR = 1000.0  # GradScaler's growth per interval (torch's default: 2)
MAX_GRAD_NORM = 1e12


def out_of_range(value: object, low: float, high: float, *, low_open: bool = True,
                 high_open: bool = False) -> str | None:
    """Why `value` is not a finite number in (low, high] ([low, ...] when not `low_open`, [..., high)
    when `high_open`), in a few words; None when it is. Every float setting passes through here, at the CLI, in the
    library and in a trial's spec: inf and nan are never a setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {value!r}"
    if not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        return (f"expected a number {'>' if low_open else '>='} {low:g} and {'<' if high_open else '<='} {high:g}, "
                f"got {value!r}")
    return None
