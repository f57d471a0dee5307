"""Targets of the probe issue, measured on this machine; prints a table.

- `amp-advisor probe` wall time <= 2.5 s, `amp-advisor probe --bench` <= 6 s;
- `python -c "import torch"` is timed in the same run, interleaved, because absolute times on a
  shared machine drift: the probe's own cost is reported as the difference from that baseline;
- from `probe --bench --json`: the CPU's bf16 and fp16 speed relative to fp32, and the verdicts.

Usage: python benchmarks/probe_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch (baseline)": [sys.executable, "-c", "import torch"],
    "amp-advisor probe": ["amp-advisor", "probe"],
    "amp-advisor probe --bench": ["amp-advisor", "probe", "--bench"],
}
TARGETS = {"amp-advisor probe": 2.5, "amp-advisor probe --bench": 6.0}

# The probe's own cost, without the noise of importing torch: import torch first, then time
# importing the CLI, probing and rendering, in the same process.
IN_PROCESS = """
import time, torch
start = time.perf_counter()
from amp_advisor.cli import main
from amp_advisor.hardware import probe
from amp_advisor.hardware.render import render_profile
render_profile(probe())
print(time.perf_counter() - start)
"""


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("amp-advisor") is None:
        sys.exit("amp-advisor is not on PATH: pip install -e . first")

    for cmd in COMMANDS.values():  # warm the page cache once, untimed
        wall(cmd)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # interleaved, so drift hits every command alike
        for name, cmd in COMMANDS.items():
            samples[name].append(wall(cmd))

    own = [float(subprocess.run([sys.executable, "-c", IN_PROCESS], check=True, capture_output=True,
                                text=True).stdout) for _ in range(args.repeats)]

    base = statistics.median(samples["import torch (baseline)"])
    print(f"wall time over {args.repeats} interleaved runs (seconds)\n")
    print(f"{'command':28s} {'median':>7s} {'min':>6s} {'max':>6s} {'over torch':>10s} {'target':>7s}  verdict")
    for name, values in samples.items():
        med = statistics.median(values)
        target = TARGETS.get(name)
        verdict = "" if target is None else ("meets" if med <= target else "MISSES")
        over = "" if name.startswith("import") else f"{med - base:+.2f}"
        print(f"{name:28s} {med:7.2f} {min(values):6.2f} {max(values):6.2f} {over:>10s} "
              f"{'' if target is None else f'<= {target}':>7s}  {verdict}")
    print(f"{'probe after import torch':28s} {statistics.median(own):7.2f} {min(own):6.2f} {max(own):6.2f} "
          f"{'':>10s} {'':>7s}  (in-process: CLI import + probe + render)")

    doc = json.loads(subprocess.run(["amp-advisor", "probe", "--device", "cpu", "--bench", "--json"],
                                    check=True, capture_output=True, text=True).stdout)
    (cpu,) = doc["devices"]
    print(f"\nCPU: {cpu['name']} (torch capability {cpu['identity']['torch_cpu_capability']}), "
          f"suggested dtype: {cpu['suggested_dtype']}\n")
    print(f"{'dtype':6s} {'supported':>9s} {'fast':>5s} {'n':>5s} {'TFLOP/s':>9s} {'vs fp32':>8s} {'fp32 is':>12s}")
    for dtype, verdict in cpu["dtypes"].items():
        bench = cpu["bench"].get(dtype)
        if bench is None or bench["tflops"] is None:
            print(f"{dtype:6s} {verdict['supported']!s:>9s} {verdict['fast']!s:>5s} {'-':>5s}")
            continue
        rel = bench["relative_to_fp32"]
        print(f"{dtype:6s} {verdict['supported']!s:>9s} {verdict['fast']!s:>5s} {bench['n']:>5d} "
              f"{bench['tflops']:9.4f} {rel:8.4f} {f'{1 / rel:.3g}x faster' if rel < 1 else '':>12s}")


if __name__ == "__main__":
    main()
