"""`amp-advisor compare`: runs side by side in the terminal and as one self-contained page; runs
of different workloads refused unless forced."""

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from amp_advisor.cli import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "reports" / "examples"
AVX2 = EXAMPLES / "cpu" / "transformer"  # the same example tuned on an AVX2-only CPU ...
BF16 = EXAMPLES / "cpu-avx512bf16" / "transformer"  # ... and on one with native bf16


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def copy_run(src: Path, dst: Path, workload: str | None = None) -> Path:
    shutil.copytree(src, dst)
    if workload is not None:
        info = json.loads((dst / "run.json").read_text())
        info["settings"]["workload"] = workload
        (dst / "run.json").write_text(json.dumps(info))
    return dst


def test_two_committed_example_runs_side_by_side(tmp_path):
    page = tmp_path / "compare.html"
    result = run("compare", AVX2, BF16, "--out", page)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "cpu/transformer" in out and "cpu-avx512bf16/transformer" in out  # told apart by their paths
    assert "example transformer, 2 runs side by side" in out
    assert re.search(r"recommendation\s+fp32, batch 16\s+bf16, batch 16", out)
    assert re.search(r"vs fp32, same batch\s+1\.00x\s+1\.53x", out)
    assert "avx512_bf16" in out  # what makes the difference
    assert re.search(r"bf16 bs=16\s+–\s+131\.2", out)  # measured on one machine only
    html = page.read_text()
    assert "<img" in html and "data:image/png;base64," in html
    assert not re.search(r"""(src|href)=["']https?:""", html)  # no request of its own
    for text in ("Side by side", "Every configuration", "cpu-avx512bf16/transformer", "1.53x"):
        assert text in html


def test_a_run_and_not_a_run_is_one_line_exit_2(tmp_path):
    result = run("compare", AVX2, tmp_path)
    assert result.exit_code == 2 and "not a tune run" in result.stderr and "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    single = run("compare", AVX2)
    assert single.exit_code == 2 and "two run directories or more" in single.stderr


def test_runs_of_different_workloads_are_refused_unless_forced(tmp_path):
    other = copy_run(AVX2, tmp_path / "mlp", workload="/elsewhere/amp_advisor/examples/mlp.py")
    refused = run("compare", AVX2, other, "--out", tmp_path / "x.html")
    assert refused.exit_code == 2 and "different workloads" in refused.stderr and "--force" in refused.stderr
    assert "example transformer" in refused.stderr and "example mlp" in refused.stderr
    assert not (tmp_path / "x.html").exists()
    forced = run("compare", AVX2, other, "--force", "--out", tmp_path / "x.html")
    assert forced.exit_code == 0 and "forced: the runs are of different workloads" in forced.stdout
    assert "Forced: the runs are of different workloads" in (tmp_path / "x.html").read_text()


@pytest.mark.parametrize("second, same", [("/home/b/proj/model.py", True), ("/home/b/proj/other.py", False)])
def test_the_same_model_file_on_two_machines_is_one_workload(tmp_path, second, same):
    a = copy_run(AVX2, tmp_path / "a", workload="/home/a/proj/model.py")
    b = copy_run(BF16, tmp_path / "b", workload=second)
    result = run("compare", a, b, "--out", tmp_path / "c.html")
    assert (result.exit_code == 0) is same, result.output
