"""The report: what it says matches the run directory, the HTML stands alone, partial runs render,
and a directory that is not a run is refused."""

import base64
import json
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

from amp_advisor.cli import cli
from amp_advisor.dtypes import Dtype
from amp_advisor.recommendation import GradScalerConfig, Measured, Recommendation
from amp_advisor.report import load_run, write_report
from amp_advisor.report.document import number
from amp_advisor.snippets import torch_loop
from amp_advisor.tuning.store import RunStore
from tests.fakes import GPU_RATES, SyntheticWorker, run_tuner

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("Recommendation", "Workload", "Hardware", "Speed and memory", "Numerics",
            "Levers: each against the same configuration without it", "Search and its cost", "Trials",
            "Caveats and notes")  # the levers section: the run tried torch.compile on its leader


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """A synthetic H100 where fp16 wins, bf16/fp16 run out of memory at 512: a complete run."""
    tmp = tmp_path_factory.mktemp("gpu")
    worker = SyntheticWorker(GPU_RATES, oom_at={Dtype.FP16: 512, Dtype.BF16: 512, Dtype.FP32: 512},
                             memory_per_sample={Dtype.FP16: 6e7, Dtype.BF16: 6e7})
    result, store = run_tuner(tmp, worker, strategy="grid", batch_sizes=(64, 128, 256, 512))
    store.write_state("complete", trials=result.trials_run, stopped_because=result.stopped_because,
                      wall_s=result.wall_s, notes=result.notes)
    result.recommendation.save(store.dir / "recommendation.json")
    files = write_report(store.dir)
    return store.dir, result, files


def _md_rows(markdown: str) -> dict[int, list[str]]:
    """Trials-table rows of report.md by trial number."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit() and len(cells) == 14:
            rows[int(cells[0])] = cells
    return rows


def test_sections_and_answer_first(gpu_run):
    run_dir, result, _ = gpu_run
    md = (run_dir / "report.md").read_text()
    headings = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert headings == list(SECTIONS)
    rec = result.recommendation
    assert rec.dtype is Dtype.FP16 and rec.scaler.enabled
    assert md.startswith(f"# amp-advisor: use fp16 at batch size {rec.batch_size}")
    answer = md.split("## Hardware")[0]
    assert f"**throughput: {rec.measured.samples_per_s:.1f}**" in answer
    assert f"**vs fp32: {rec.measured.speedup_vs_fp32:.2f}x**" in answer
    saved = (10**9 + rec.batch_size * 10**8) - (10**9 + rec.batch_size * 6e7)
    assert f"saves {saved / 2**30:.2f} GiB vs fp32" in answer
    assert "torch.autocast(\"cuda\", dtype=torch.float16)" in answer and "GradScaler(\"cuda\"" in answer


def test_every_trial_is_in_the_table_with_its_numbers(gpu_run):
    run_dir, result, _ = gpu_run
    rows = _md_rows((run_dir / "report.md").read_text())
    lines = (run_dir / "trials.jsonl").read_text().splitlines()
    assert sorted(rows) == list(range(1, len(lines) + 1))
    for line in lines:
        trial = json.loads(line)
        row = rows[trial["number"]]
        res = trial["result"]
        assert row[2] == trial["candidate"]["dtype"] and row[3].startswith(str(trial["candidate"]["batch_size"]))
        assert row[6] == number(res["samples_per_s"])
        if res["step_time_s"]:
            assert row[7].startswith(f"{res['step_time_s']['median'] * 1e3:.1f} ± ")
        if res["status"] != "ok":
            assert row[5] == res["status"] and res["error"] in row[-1]
    assert any(r[5] == "oom" for r in rows.values())


def test_hardware_verdicts_and_tuning_cost(gpu_run):
    run_dir, result, _ = gpu_run
    md = (run_dir / "report.md").read_text()
    hardware = md.split("## Hardware")[1].split("## Speed")[0]
    assert "NVIDIA H100 80GB HBM3" in hardware and "compute capability" in hardware
    for dtype in ("fp32", "tf32", "fp16", "bf16", "fp8"):
        assert f"| {dtype} |" in hardware
    run = load_run(run_dir)
    cost = run.cost()
    assert cost.trials == len(result.records)
    assert cost.grid_trials == len(result.space.candidates())
    searched = sum(r.result.wall_s or 0.0 for r in result.records if r.role == "search")
    assert cost.grid_estimate_s >= searched
    assert f"| **a full grid** | {cost.grid_trials} trials" in md
    best = [b for _, _, b in run.best_so_far() if b is not None]
    assert best == sorted(best)  # best-so-far never goes down


def test_plots_are_written_and_embedded(gpu_run):
    run_dir, _, files = gpu_run
    assert {p.name for p in files.plots} == {f"{n}.png" for n in ("throughput", "memory", "search", "gradients",
                                                                     "loss", "tflops")}
    for path in files.plots:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    page = (run_dir / "report.html").read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 6
    for encoded in images:
        assert base64.b64decode(encoded).startswith(PNG_SIGNATURE)
    md = (run_dir / "report.md").read_text()
    for path in files.plots:
        assert f"(plots/{path.name})" in md


def test_html_makes_no_external_request(gpu_run):
    page = (gpu_run[0] / "report.html").read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # only inline images and in-page links
    assert "url(" not in page and "@import" not in page and "<link" not in page
    assert re.search(r"<script>[^<]*sortable", page) and "<script src" not in page
    trials_table = re.search(r'<table class="sortable">.*?</table>', page, re.S).group(0)
    assert trials_table.count("<tbody") == len(gpu_run[1].records)  # one tbody per trial: the sorter moves them


def test_an_interrupted_run_renders_what_it_has(tmp_path):
    worker = SyntheticWorker(GPU_RATES, interrupt_after=4)
    with pytest.raises(KeyboardInterrupt):
        run_tuner(tmp_path, worker, batch_sizes=(64, 128, 256, 512))
    store = RunStore(tmp_path / "run")
    store.write_state("interrupted", trials=4)
    before = store.trials_file.read_bytes()
    files = write_report(store.dir)
    md = files.markdown.read_text()
    assert "**Partial report.**" in md and "interrupted before it chose" in md
    assert md.startswith("# amp-advisor: no recommendation")
    assert "--resume" in md
    assert len(_md_rows(md)) == 4
    assert store.trials_file.read_bytes() == before  # reading for a report changes nothing


def test_a_torn_line_and_a_missing_device_are_said_not_fatal(gpu_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(gpu_run[0], run_dir)
    (run_dir / "device.json").unlink()
    with open(run_dir / "trials.jsonl", "a") as f:
        f.write('{"number": 99, "role": "sea')
    torn = (run_dir / "trials.jsonl").read_bytes()
    files = write_report(run_dir)
    assert any("torn" in m for m in files.missing) and any("device.json" in m for m in files.missing)
    md = files.markdown.read_text()
    assert "Partial report" in md and len(_md_rows(md)) == len(gpu_run[1].records)
    assert (run_dir / "trials.jsonl").read_bytes() == torn


@pytest.mark.parametrize("make", ["empty_dir", "file", "missing"])
def test_not_a_run_is_one_line_and_exit_2(tmp_path, make):
    target = tmp_path / "x"
    if make == "empty_dir":
        target.mkdir()
    elif make == "file":
        target.write_text("hello")
    result = CliRunner().invoke(cli, ["report", str(target)])
    assert result.exit_code == 2
    assert "not a" in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_report_command_regenerates(gpu_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(gpu_run[0], run_dir)
    (run_dir / "report.html").unlink()
    shutil.rmtree(run_dir / "plots")
    result = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").exists() and len(list((run_dir / "plots").glob("*.png"))) == 6


def _cpu_recommendation(dtype: Dtype, accum: int) -> Recommendation:
    return Recommendation(dtype=dtype, batch_size=4, grad_accumulation_steps=accum,
                          scaler=GradScalerConfig(enabled=dtype is Dtype.FP16, init_scale=2.0**10, growth_interval=5),
                          tf32=False, device="cpu", hardware={"name": "test"}, measured=Measured(1.0, None, None))


@pytest.mark.parametrize("dtype", [Dtype.FP32, Dtype.BF16, Dtype.FP16])
@pytest.mark.parametrize("accum", [1, 2])
def test_the_pasted_loop_runs_and_trains(dtype, accum):
    """The snippet is code a user pastes: it must run as printed and update the model."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    before = model.weight.detach().clone()
    namespace = {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "loss_fn": lambda m, batch: torch.nn.functional.mse_loss(m(batch[0]).float(), batch[1]),
        "loader": [(torch.randn(4, 8), torch.randn(4, 1)) for _ in range(4)],
    }
    exec(compile(torch_loop(_cpu_recommendation(dtype, accum)), "<snippet>", "exec"), namespace)
    assert not torch.equal(before, model.weight)


def test_written_files_are_readable_like_any_new_file(gpu_run):
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    for name in ("report.html", "report.md", "recommendation.json", "run.json"):
        mode = stat.S_IMODE((gpu_run[0] / name).stat().st_mode)
        assert mode == 0o666 & ~mask, (name, oct(mode))
