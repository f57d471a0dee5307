import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from amp_advisor.cli import cli


@pytest.fixture
def run():
    def invoke(*args):
        return CliRunner().invoke(cli, list(args))

    return invoke


def test_probe_prints_a_table_for_the_cpu(run):
    result = run("probe", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "suggested dtype:" in result.output
    for dtype in ("fp32", "tf32", "fp16", "bf16", "fp8"):
        assert f"\n  {dtype} " in result.output


def test_probe_json_is_schema_versioned_and_complete(run):
    result = run("probe", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1
    cpu = next(d for d in doc["devices"] if d["kind"] == "cpu")
    assert set(cpu["dtypes"]) == {"fp32", "tf32", "fp16", "bf16", "fp8"}
    assert {"supported", "fast", "why"} == set(cpu["dtypes"]["bf16"])
    assert cpu["suggested_dtype"] in cpu["dtypes"] and "peak_tflops" in cpu


def test_probe_bench_json_has_measurements_and_progress_stays_off_stdout(run):
    result = run("probe", "--device", "cpu", "--bench", "--bench-seconds", "0.3", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)  # stdout is pure JSON
    (cpu,) = doc["devices"]
    assert cpu["measured_tflops"]["fp32"] > 0
    assert "benchmarking cpu fp32" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["probe", "--device", "tpu"], "unknown device 'tpu'"),
        (["probe", "--device", "cuda"], "--device cuda: no CUDA device is usable here"),
        (["probe", "--bench-seconds", "0"], "--bench-seconds"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(run, args, message):
    if args[-1] == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3  # no wall of text


def test_debug_shows_the_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "amp_advisor", "probe", "--device", "tpu", "--debug"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "BadInputError" in proc.stderr


def test_python_dash_m_and_the_console_script_share_the_cli():
    proc = subprocess.run([sys.executable, "-m", "amp_advisor", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "probe" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "amp_advisor", "probe", "--device", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0


WORKLOADS = __import__("pathlib").Path(__file__).parent / "workloads"


def test_bench_json_result(run):
    result = run("bench", str(WORKLOADS / "tiny.py"), "--dtype", "fp32", "--batch-size", "8",
                 "--steps", "4", "--warmup-steps", "1", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    for key in ("status", "error", "samples_per_s", "peak_memory_bytes", "skipped_steps",
                "loss_rel_diff_vs_fp32", "tflops", "mfu"):
        assert key in doc
    assert doc["status"] == "ok" and doc["step_time_s"]["median"] > 0 and "iqr" in doc["step_time_s"]


def test_bench_table_and_a_failed_trial_exits_1(run):
    result = run("bench", str(WORKLOADS / "fp16_overflow.py"), "--dtype", "fp16", "--batch-size", "8",
                 "--steps", "3", "--warmup-steps", "1")
    assert result.exit_code == 1
    assert result.stdout.startswith("NONFINITE") and "fp16 overflow" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "missing.py", "--dtype", "fp32", "--batch-size", "8"], "missing.py: no such file"),
        (["bench", "--example", "nope", "--dtype", "fp32", "--batch-size", "8"], "unknown example 'nope'"),
        (["bench", "--example", "mlp", "--dtype", "tf32", "--batch-size", "8", "--device", "cpu"],
         "tf32 cannot run on cpu"),
        (["bench", "--example", "mlp", "--dtype", "fp32", "--batch-size", "-3"], "--batch-size"),
        (["bench", str(WORKLOADS / "loss_not_scalar.py"), "--dtype", "fp32", "--batch-size", "8"],
         "loss_not_scalar.py: loss_fn returned a tensor of shape"),
    ],
)
def test_bench_bad_input_is_one_line_and_exit_code_2(run, args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
