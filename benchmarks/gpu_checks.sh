#!/usr/bin/env bash
# The GPU checks of the tune issues, as one prepared run on a lent GPU (the device tool), where
# nothing can be installed from a registry: the repository is used in place (profiles/ linked
# where an install would put it), scikit-optimize and pyaml travel as wheels in .whl/.
# Writes under $OUT: nvidia-smi.txt, probe.txt, bench_tune.txt (the oracle table),
# landscapes/*.json (the sweeps, for tests/simulator/measured/) and runs.tgz (the run directories).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-checks}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
[ -e amp_advisor/profiles ] || ln -s ../profiles amp_advisor/profiles
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
python3 -m amp_advisor probe --bench 2>&1 | tee "$OUT/probe.txt"
python3 benchmarks/bench_tune.py --device cuda --workloads "${WORKLOADS:-hf_gpt2,transformer}" --keep /tmp/runs \
    --landscapes "$OUT/landscapes" 2>&1 | tee "$OUT/bench_tune.txt"
tar czf "$OUT/runs.tgz" -C /tmp runs
