"""From `pip install` to a first recommendation for a standard architecture: a fresh virtual
environment, the README's install command for the `hf` extra, then `amp-advisor tune --hf gpt2`,
each timed. Target (issue 14): install + tune <= 2 minutes on the CI machine (2 cores).

pip runs with --no-cache-dir unless --cache: a fresh machine has no wheel cache (torch==2.13.0
still comes from this machine's disk, as on CI). Prints a table; run it alone (2 cores).

Usage: python benchmarks/first_recommendation.py [--cache] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 120.0
INSTALL = ["torch==2.13.0", "-e", f"{ROOT}[hf]"]  # the README's: pip install torch==2.13.0 -e ".[hf]"


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        output = done.stdout[-1500:] + done.stderr[-1500:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{output}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", action="store_true", help="let pip use its wheel cache")
    parser.add_argument("--keep", type=Path, help="build the environment and the run here, and keep them")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_tune import cpu_name

    print(f"machine: {cpu_name()}; pip cache {'on' if args.cache else 'off (--no-cache-dir)'}\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        venv, out = root / "venv", root / "run"
        rows = [("python -m venv", timed([sys.executable, "-m", "venv", str(venv)]))]
        pip = [str(venv / "bin" / "pip"), "install", "-q"] + ([] if args.cache else ["--no-cache-dir"])
        rows.append(("pip install torch==2.13.0 -e \".[hf]\"", timed(pip + INSTALL)))
        # from an empty directory: nothing of the checkout on the path but what pip installed
        rows.append(("amp-advisor tune --hf gpt2", timed([str(venv / "bin" / "amp-advisor"), "tune", "--hf", "gpt2",
                                                          "--out", str(out)], cwd=root)))
        rec = json.loads((out / "recommendation.json").read_text())
        trials = len((out / "trials.jsonl").read_text().splitlines())
    print(f"{'step':42s} {'seconds':>8s}")
    for step, seconds in rows:
        print(f"{step:42s} {seconds:8.1f}")
    total = rows[1][1] + rows[2][1]
    verdict = "meets" if total <= TARGET_S else "misses"
    print(f"{'pip install -> first recommendation':42s} {total:8.1f}   target <= {TARGET_S:.0f} s: {verdict}")
    measured = rec["measured"]
    speedup = measured.get("speedup_vs_fp32")
    print(f"\nrecommendation: {rec['dtype']}, batch {rec['batch_size']}, {measured['samples_per_s']:.1f} samples/s"
          + (f", {speedup:.2f}x fp32 at the same batch" if speedup else "") + f" ({trials} trials)")


if __name__ == "__main__":
    main()
