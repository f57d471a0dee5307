"""Sane upper bounds on what a user can ask for: a typo (1e9 seconds, a million steps) must be
refused in one line, not hold the machine for days. Torch-free, so the CLI can import it cheaply."""

MAX_BENCH_SECONDS = 120.0  # probe --bench, per device
MAX_BATCH_SIZE = 1 << 20  # samples per micro-batch
MAX_STEPS = 10_000  # measured (or warm-up) steps of one trial
MAX_TRIALS = 10_000  # search trials of one run
MAX_TIME_BUDGET_S = 7 * 86400.0  # one tune run: a week
MAX_TRIAL_TIMEOUT_S = 86400.0  # one trial: a day
