"""Hostile saved state: nothing it holds runs as code, and every way it can be wrong is one line
and exit 2, never an internal error. The mutated documents come from Hypothesis."""

import dataclasses
import io
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tokenize
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from amp_advisor import jsonio
from amp_advisor.cli import cli
from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.harness.trial import TrialSpec
from amp_advisor.recommendation import GradScalerConfig, Measured, Recommendation
from amp_advisor.runtime import MixedPrecision
from amp_advisor.snippets import FORMATS, render
from amp_advisor.tuning.tuner import TuneSettings
from tests.fakes import WORKLOADS
from tests.hostile_docs import CODE_FORMATS, PAYLOAD, code_outside_literals, invoke, mutated
from tests.hostile_docs import finished_run as make_finished_run
from tests.processes import MARK_ENV, marked, wait_until_none_marked


def _hostile(dtype=Dtype.FP16):
    return Recommendation(
        dtype=dtype, batch_size=32, grad_accumulation_steps=2, scaler=GradScalerConfig(dtype is Dtype.FP16, 1024.0),
        tf32=True, device="cpu" + PAYLOAD, hardware={"name": PAYLOAD, PAYLOAD: PAYLOAD, "kind": "cpu"},
        measured=Measured(100.0), why=PAYLOAD, workload=PAYLOAD, notes=(PAYLOAD,), machine_busy=PAYLOAD)


@pytest.mark.parametrize("dtype", [Dtype.FP16, Dtype.BF16, Dtype.FP32])
@pytest.mark.parametrize("fmt", CODE_FORMATS)
def test_no_value_in_a_snippet_becomes_code(fmt, dtype):
    code = render(_hostile(dtype), fmt)
    compile(code, fmt, "exec")  # valid Python
    assert code_outside_literals(code) == []


@pytest.mark.parametrize("fmt", ["json", "toml", "deepspeed"])
def test_data_formats_stay_data(fmt):
    import tomllib

    text = render(_hostile(), fmt)
    doc = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    if fmt != "deepspeed":
        assert doc["hardware"]["name"] == PAYLOAD and doc["hardware"][PAYLOAD] == PAYLOAD


def test_a_hostile_device_in_a_file_is_refused(tmp_path):
    good = _hostile()
    doc = {**good.to_dict(), "device": "cpu" + PAYLOAD}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["show", str(tmp_path / "r.json"), "--format", "torch"])
    assert result.exit_code == 2 and "is not a torch device" in result.stderr


# ------------------------------------------------------------------------------- mutated documents
def _invoke(*args, code_format=None):
    outcome = invoke(*args, code_format=code_format)
    assert outcome.clean, (args, outcome)
    return outcome


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    make_finished_run(run)
    return run


HOSTILE_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck),
                            # no shrinking: the first failure is enough
                            phases=[Phase.explicit, Phase.reuse, Phase.generate])


def test_mutated_recommendations_through_load_and_show(finished_run, tmp_path_factory):
    base = json.loads((finished_run / "recommendation.json").read_text())
    where = tmp_path_factory.mktemp("mutated") / "recommendation.json"

    @HOSTILE_SETTINGS
    @given(mutated(base), st.sampled_from(list(FORMATS)))
    def check(doc, fmt):
        where.write_text(json.dumps(doc))
        _invoke("show", str(where), "--format", fmt, code_format=fmt)

    check()


def test_mutated_trials_and_run_files_through_report(finished_run, tmp_path_factory):
    lines = (finished_run / "trials.jsonl").read_text().splitlines()
    trial, run_doc = json.loads(lines[0]), json.loads((finished_run / "run.json").read_text())
    target = tmp_path_factory.mktemp("mutated") / "run"

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    @given(mutated(trial), mutated(run_doc), st.booleans())
    def check(bad_trial, bad_run, which):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(finished_run, target)
        if which:
            (target / "trials.jsonl").write_text("\n".join([json.dumps(bad_trial)] + lines[1:]) + "\n")
        else:
            (target / "run.json").write_text(json.dumps(bad_run))
        _invoke("report", str(target))

    check()


def test_deeply_nested_and_huge_documents_are_one_line(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    result = _invoke("show", str(tmp_path / "deep.json"))
    assert result.exit_code == 2
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trials.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    _invoke("report", str(tmp_path / "run"))  # the line is left out, and the report says so
    assert "trials.jsonl: line 1 is corrupt" in (tmp_path / "run" / "report.md").read_text()


def test_a_whole_last_line_that_fails_the_schema_is_refused_not_deleted(finished_run, tmp_path):
    """Class 10: a complete, valid JSON last line of another schema is corrupt, like a middle
    line: resume refuses it and keeps it; only a line a kill cut short (no newline) is torn."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    trials = run / "trials.jsonl"
    whole = trials.read_text() + json.dumps({"schema": "from another version"}) + "\n"
    trials.write_text(whole)
    result = _invoke("tune", "--resume", "--out", str(run))
    assert result.exit_code == 2 and "corrupt trial record" in result.stderr and trials.read_text() == whole
    _invoke("report", str(run))
    assert "is corrupt" in (run / "report.md").read_text() and "torn" not in (run / "report.md").read_text()
    trials.write_text(whole[:-20])  # cut short mid-write: torn
    _invoke("report", str(run))
    assert "its last line is torn" in (run / "report.md").read_text()


def test_wrong_types_are_refused_naming_the_field(tmp_path):
    rec = dataclasses.replace(_hostile(), device="cpu", hardware={"name": "x"})
    for field, value, message in [("batch_size", True, "recommendation.batch_size: expected int"),
                                  ("batch_size", 8.5, "recommendation.batch_size: expected int"),
                                  ("batch_size", "8", "recommendation.batch_size: expected int")]:
        doc = {**rec.to_dict(), field: value}
        (tmp_path / "r.json").write_text(json.dumps(doc))
        result = _invoke("show", str(tmp_path / "r.json"))
        assert result.exit_code == 2 and message in result.stderr, result.stderr
    doc = rec.to_dict()
    doc["grad_scaler"]["init_scale"] = 1e400
    (tmp_path / "r.json").write_text(json.dumps(doc).replace("Infinity", "1e400"))
    result = _invoke("show", str(tmp_path / "r.json"), "--format", "deepspeed")
    assert result.exit_code == 2 and "not a finite number" in result.stderr


@pytest.mark.parametrize("change, field", [
    (lambda e: e.pop("recommended"), "recommendation.evidence.recommended: missing"),
    (lambda e: e["recommended"].pop("trials"), "recommendation.evidence.recommended.trials: missing"),
    (lambda e: e["recommended"].update(trials=["1"]), "recommendation.evidence.recommended.trials[0]: expected int"),
    (lambda e: e.update(confirmed="yes"), "recommendation.evidence.confirmed: expected bool"),
    (lambda e: e.update(extra=1), "recommendation.evidence: unknown fields ['extra']"),
])
def test_the_evidence_of_a_recommendation_is_checked(tmp_path, change, field):
    figure = {"config": "bf16 bs=8", "dtype": "bf16", "batch_size": 8, "samples_per_s": 10.0, "trials": [3]}
    rec = dataclasses.replace(_hostile(), device="cpu", hardware={"name": "x"},
                              evidence={"confirmed": True, "recommended": figure, "fp32_best": None})
    doc = rec.to_dict()
    change(doc["evidence"])
    (tmp_path / "r.json").write_text(json.dumps(doc))
    result = _invoke("show", str(tmp_path / "r.json"))
    assert result.exit_code == 2 and field in result.stderr, result.stderr


def test_a_search_space_without_its_optional_fields_reports(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    doc = json.loads((run / "run.json").read_text())
    del doc["context"]["space"]["global_batch"]  # optional in the schema: loading must not need it
    (run / "run.json").write_text(json.dumps(doc))
    assert _invoke("report", str(run)).exit_code == 0


# ------------------------------------------------------------------ class 1: files the tool reads
def _bad_files(tmp_path):
    """Every way a file the tool reads can be wrong: (name, path)."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(17 * 2**20)  # sparse: over the 16 MiB limit without writing it
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "deep-object.json").write_text('{"model_type": ' + "[" * 500 + "]" * 500 + "}")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "dir.json").mkdir()
    return {"dev-zero": Path("/dev/zero"), "fifo": fifo, "huge": huge, "deep": tmp_path / "deep.json",
            "deep-object": tmp_path / "deep-object.json", "binary": tmp_path / "binary.json",
            "directory": tmp_path / "dir.json", "missing": tmp_path / "missing.json"}


def one_line(stderr: str) -> bool:
    """The message is one line (click's usage lines above its one "Error:" line aside)."""
    return len([line for line in stderr.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]) == 1


def _as_run_dir(tmp_path, name, path):
    """A run directory whose run.json is `path` (a link, so that devices and FIFOs stay what they are)."""
    run = tmp_path / f"run-{name}"
    run.mkdir()
    if path.exists() or path.is_fifo():
        (run / "run.json").symlink_to(path)
    return run


READERS = {
    "show": lambda tmp, name, path: ["show", str(path)],
    "report": lambda tmp, name, path: ["report", str(_as_run_dir(tmp, name, path))],
    "compare": lambda tmp, name, path: ["compare", str(_as_run_dir(tmp, name, path)),
                                        str(_as_run_dir(tmp, name + "-b", path))],
    "bench --hf-config": lambda tmp, name, path: ["bench", "--hf-config", str(path), "--dtype", "fp32",
                                                  "--batch-size", "2", "--device", "cpu"],
    "bench MODEL": lambda tmp, name, path: ["bench", str(path), "--dtype", "fp32", "--batch-size", "2",
                                            "--device", "cpu"],
    "tune --resume": lambda tmp, name, path: ["tune", "--resume", "--out", str(_as_run_dir(tmp, name, path))],
}


@pytest.mark.parametrize("reader", READERS)
def test_every_file_the_tool_reads_is_bounded_and_one_line(tmp_path, reader):
    """A device, a FIFO, a directory, a file over the size limit, one nested 100,000 deep, one
    that is not UTF-8, one that is missing: exit 2, one line, never a hang or an internal error.
    `report` writes what it can of a damaged run (exit 0) and names the file it could not read."""
    for name, path in _bad_files(tmp_path).items():
        outcome = invoke(*READERS[reader](tmp_path, name, path))
        assert outcome.clean, f"{reader} {name}: {outcome.stderr}"
        if reader == "report":
            assert "run.json" in outcome.stderr, f"{reader} {name}: {outcome.stderr}"
            continue
        assert outcome.exit_code == 2, f"{reader} {name}: {outcome.stderr}"
        assert one_line(outcome.stderr), f"{reader} {name}: {outcome.stderr}"


@given(depth=st.integers(1, 3000), kind=st.sampled_from(["[", '{"a": ']))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_document_depth_is_bounded_at_every_depth(depth, kind):
    closing = "]" if kind == "[" else "}"
    text = kind * depth + "0" + closing * depth
    try:
        value = jsonio.loads(text, "doc")
    except BadInputError as exc:
        assert depth > jsonio.MAX_DEPTH and "nested" in str(exc)
    else:
        assert depth <= jsonio.MAX_DEPTH and value is not None


# ------------------------------------------------------------------ class 2: float settings
CLI_FLOATS = [("bench", "--init-scale"), ("bench", "--timeout"), ("bench", "--collective-timeout"),
              ("tune", "--tolerance"), ("tune", "--time-budget"), ("tune", "--timeout"),
              ("diagnose", "--init-scale"), ("probe", "--bench-seconds")]
NOT_FINITE = ["inf", "-inf", "nan", "NaN", "1e400", "-1e400", "Infinity"]


@pytest.mark.parametrize("command, option", CLI_FLOATS)
def test_no_float_option_takes_a_value_that_is_not_finite(command, option, tmp_path):
    """Exit 2 at the CLI, before a worker starts or a run directory is made."""
    for value in NOT_FINITE:
        args = [command, option, value] + ({"bench": ["--example", "mlp", "--dtype", "fp16", "--batch-size", "4"],
                                            "tune": ["--example", "mlp", "--out", str(tmp_path / "run")],
                                            "diagnose": ["--example", "mlp"], "probe": ["--bench"]}[command])
        outcome = invoke(*args)
        assert outcome.exit_code == 2 and outcome.clean, (args, outcome.stderr)
        assert "finite" in outcome.stderr or "range" in outcome.stderr, (args, outcome.stderr)
        assert not (tmp_path / "run").exists()


@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 2.0**64, 2.0**65, 5e-324]),
       field=st.sampled_from(["init_scale", "timeout_s", "first_step_timeout_s", "abandon_after_s"]))
@settings(max_examples=150, deadline=None, derandomize=True)
def test_a_trial_spec_holds_only_finite_in_range_floats(value, field):
    try:
        spec = TrialSpec("w", Dtype.FP16, 8, **{field: value})
    except BadInputError as exc:
        assert not (math.isfinite(value) and 0 < value <= (2.0**64 if field == "init_scale" else 86400.0)), exc
    else:
        assert math.isfinite(getattr(spec, field)) and getattr(spec, field) > 0


@given(value=st.floats(allow_nan=True, allow_infinity=True),
       field=st.sampled_from(["time_budget_s", "trial_timeout_s", "tolerance", "max_skip_rate", "memory_margin",
                              "margin", "collective_timeout_s"]))
@settings(max_examples=150, deadline=None, derandomize=True)
def test_tune_settings_hold_only_finite_floats(value, field):
    try:
        settings_ = TuneSettings(workload="w", device="cpu", **{field: value})
    except BadInputError:
        return
    assert math.isfinite(getattr(settings_, field))


@given(value=st.floats(allow_nan=True, allow_infinity=True),
       field=st.sampled_from(["init_scale", "growth_factor", "backoff_factor", "max_grad_norm"]))
@settings(max_examples=100, deadline=None, derandomize=True)
def test_mixed_precision_takes_only_finite_scaler_settings(value, field):
    try:
        MixedPrecision("fp16", "cpu", **{field: value})
    except BadInputError:
        return
    assert math.isfinite(value)


def test_skipped_steps_are_the_steps_grad_scaler_skipped():
    """Skipped steps are counted from GradScaler's found-inf, checked against the ground truth:
    the optimizer.step calls GradScaler let through. (An infinite init_scale, which the old count
    by a falling scale missed, is refused at every entry: see the tests above.)"""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    calls = []
    step = optimizer.step
    optimizer.step = lambda *a, **k: (calls.append(1), step(*a, **k))[1]
    amp = MixedPrecision("fp16", "cpu", init_scale=2.0**30, growth_factor=1000.0, growth_interval=1)
    for _ in range(40):
        with amp.autocast():
            loss = model(torch.randn(4, 8)).float().pow(2).mean()
        amp.backward(loss)
        amp.step(optimizer)
    stats = amp.stats()
    assert stats["skipped_steps"] == 40 - len(calls) and 0 < len(calls) < 40


# ------------------------------------------------------------------ class 6: signals
def _tune_cmd(run):
    return [sys.executable, "-m", "amp_advisor", "tune", str(WORKLOADS / "tiny.py"), "--device", "cpu",
            "--out", str(run), "--strategy", "grid", "--batch-sizes", "4,8", "--steps", "3"]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_before_the_first_trial_exits_by_convention_and_advises_no_missing_run(tmp_path, sig, code):
    """Sent while the workload is still being checked: the run directory is not written yet, so
    the message must not advise resuming it; the exit code is 128 + the signal."""
    run = tmp_path / "run dir"
    proc = subprocess.Popen(_tune_cmd(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # once the worker process exists the CLI is running (its handlers are in place), and the
    # worker still imports torch and checks the workload before the run directory is written
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not children.read_text().split():
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "internal error" not in err
    if not (run / "run.json").exists():
        assert "--resume" not in err, err
    else:  # the run was written just before: the advice names it, quoted for the shell
        assert f"--out {shlex.quote(str(run))}" in err, err


# ------------------------------------------------------------------ class 7: text that becomes code or markup
HOSTILE_DIR = 'x");__import__("os").system("echo PWNED");(" $\\alpha$ <script>alert(1)</script>'


def test_a_hostile_run_directory_name_stays_data_in_code_shell_markdown_and_plots(finished_run, tmp_path):
    run = tmp_path / HOSTILE_DIR
    shutil.copytree(finished_run, run)
    _invoke("report", str(run))
    md = (run / "report.md").read_text()
    python = next(line for line in md.splitlines() if "Recommendation.load(" in line)
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(python).readline)
              if "PWNED" in t.string and t.type != tokenize.STRING]
    assert tokens == []  # the path is one string literal: pasted, nothing runs
    show = next(line for line in md.splitlines() if "amp-advisor show " in line).split("`")[1]
    assert shlex.split(show)[2] == str(run)  # pasted into a shell, the path arrives whole
    assert "<script>" not in md.split("```python")[0]  # outside code, the tag is escaped text
    other = tmp_path / "b $x$"
    shutil.copytree(finished_run, other)
    out = invoke("compare", str(run), str(other), "--out", str(tmp_path / "c.html"))
    assert out.exit_code == 0 and out.clean, out.stderr  # mathtext would have raised on "$\\alpha$"


# ------------------------------------------------------------------ class 3: the user's code at import and build
CONTRACT = ("import torch\n"
            "def make_batch(batch_size, device):\n"
            "    return torch.randn(batch_size, 4, device=device), torch.randn(batch_size, 1, device=device)\n")
MISBEHAVING = {
    "sys-exit": ("import sys\nsys.exit(0)\n" + CONTRACT + "def build_model():\n    return torch.nn.Linear(4, 1)\n",
                 "called sys.exit(0)"),
    "os-exit": ("import os\nos._exit(3)\n" + CONTRACT, "exited with code 3"),
    "hang": ("import time\ntime.sleep(3600)\n" + CONTRACT, "still importing after"),
    "returns-str": (CONTRACT + "def build_model():\n    return 'a string'\n", "build_model() returned str"),
}


@pytest.mark.parametrize("case", MISBEHAVING)
@pytest.mark.parametrize("form", ["file", "module:attr"])
def test_user_code_that_misbehaves_at_import_or_build_is_one_line_naming_it(tmp_path, monkeypatch, case, form):
    """Exit 2 before any trial, the workload named as typed, what happened said, --timeout
    honoured by the import check, and no run directory left behind."""
    source, expected = MISBEHAVING[case]
    name = f"bad_{case.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(source + "\nWORKLOAD = None\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    typed = str(tmp_path / f"{name}.py") if form == "file" else f"{name}"
    if form == "module:attr":
        (tmp_path / f"{name}_attr.py").write_text(f"import {name} as workload\n")
        typed = f"{name}_attr:workload"
    run = tmp_path / "run"
    started = time.monotonic()
    outcome = invoke("tune", typed, "--device", "cpu", "--out", str(run), "--timeout", "8", "--batch-sizes", "4,8")
    assert outcome.exit_code == 2 and outcome.clean, outcome.stderr
    assert expected in outcome.stderr and one_line(outcome.stderr), outcome.stderr
    assert "{" not in outcome.stderr.split(":")[0], outcome.stderr  # named as typed, not by its JSON ref
    assert not run.exists() and time.monotonic() - started < 120


# ------------------------------------------------------------------ class 8: advice that cannot be applied
ROOT_OVERFLOW = CONTRACT + '''
class Root(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.lin(x) * 1e6 * 1e6  # the model's own arithmetic, outside any submodule


def build_model():
    return Root()


def loss_fn(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()
'''
NAN_IN_FP32 = ROOT_OVERFLOW.replace("* 1e6 * 1e6", "* float('nan')")


def test_the_root_module_is_never_advised_as_an_fp32_island(tmp_path):
    (tmp_path / "root overflow.py").write_text(ROOT_OVERFLOW)
    outcome = invoke("diagnose", str(tmp_path / "root overflow.py"), "--dtype", "fp16", "--batch-size", "4",
                     "--device", "cpu", "--steps", "3")
    assert outcome.exit_code == 0 and outcome.clean, outcome.stderr
    result = CliRunner().invoke(cli, ["diagnose", str(tmp_path / "root overflow.py"), "--dtype", "fp16",
                                      "--batch-size", "4", "--device", "cpu", "--steps", "3"])
    assert "(model)" in result.stdout and "forward()" in result.stdout  # named, and what to do instead
    assert "--fp32-modules '(model)'" not in result.stdout and "--fp32-modules (model)" not in result.stdout
    for line in result.stdout.splitlines():  # any command it prints is valid shell, with the path whole
        if "check the fix: " in line:
            assert shlex.split(line.split("check the fix: ", 1)[1])[2] == str(tmp_path / "root overflow.py")


def test_a_model_non_finite_in_fp32_too_is_said_to_be_so(tmp_path):
    (tmp_path / "nan.py").write_text(NAN_IN_FP32)
    result = CliRunner().invoke(cli, ["diagnose", str(tmp_path / "nan.py"), "--dtype", "bf16", "--batch-size", "4",
                                      "--device", "cpu", "--steps", "3"])
    assert "fails in fp32 as well" in result.stdout, result.output
    assert "check the fix" not in result.stdout and "keep `" not in result.stdout


def test_a_tune_whose_x_ray_names_the_root_still_recommends(tmp_path):
    """fp16 overflows in the model's own forward: no island is advised, so there is no repair to
    fail; fp32 and bf16 still stand, and the run is complete, not failed."""
    (tmp_path / "root.py").write_text(ROOT_OVERFLOW)
    run = tmp_path / "run"
    outcome = invoke("tune", str(tmp_path / "root.py"), "--device", "cpu", "--out", str(run), "--batch-sizes", "4,8",
                     "--steps", "3", "--strategy", "grid")
    assert outcome.exit_code == 0 and outcome.clean, outcome.stderr
    assert json.loads((run / "run.json").read_text())["state"] == "complete"
    assert (run / "recommendation.json").exists()


# ------------------------------------------------------------------ class 4: processes outlive a killed run
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_nothing_the_run_or_the_users_code_started_survives_a_killed_run(tmp_path, sig):
    mark = uuid.uuid4().hex
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "amp_advisor", "tune", str(WORKLOADS / "spawning.py"), "--device", "cpu",
           "--out", str(run), "--batch-sizes", "4,8", "--steps", "3", "--strategy", "grid"]
    proc = subprocess.Popen(cmd, env={**os.environ, MARK_ENV: mark}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((run / "trials.jsonl").exists()
                                               and (run / "trials.jsonl").read_text().strip()):
        time.sleep(0.2)
    assert len(marked(mark)) > 3  # the CLI, its worker and the user's helpers are running
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert wait_until_none_marked(mark) == []
    if sig is not signal.SIGKILL:
        assert proc.returncode == 128 + sig
        assert json.loads((run / "run.json").read_text())["state"] == "interrupted"


def test_a_rank_count_the_machine_cannot_hold_is_refused_before_any_process_starts():
    from amp_advisor.distributed.env import RANKS_PER_CPU, check_rank_count

    with pytest.raises(BadInputError, match="only take turns"):
        check_rank_count(RANKS_PER_CPU * 2 + 1, cpus=2, available_bytes=2**40)
    with pytest.raises(BadInputError, match="GiB is available"):
        check_rank_count(6, cpus=8, available_bytes=4 * 2**30)
    check_rank_count(2, cpus=2, available_bytes=8 * 2**30)
    outcome = invoke("bench", "--example", "mlp", "--dtype", "fp32", "--batch-size", "8", "--parallel", "ddp",
                     "--nproc-per-node", "1000")
    assert outcome.exit_code == 2 and outcome.clean and "--nproc-per-node 1000" in outcome.stderr


# ------------------------------------------------------------------ class 9: memory estimated before building
@pytest.mark.parametrize("command", ["bench", "tune"])
def test_a_model_too_big_for_the_machine_is_refused_before_it_is_built(command, tmp_path):
    """19 B parameters (the issue's GPT-2, hidden 8192, 24 layers): estimated on the meta device
    from the config and refused in one line stating the estimate, with nothing built or written."""
    pytest.importorskip("transformers")
    size = ["--hf", "gpt2", "--hf-hidden", "8192", "--hf-layers", "24", "--hf-heads", "64", "--device", "cpu"]
    args = {"bench": ["bench", *size, "--dtype", "fp32", "--batch-size", "1"],
            "tune": ["tune", *size, "--out", str(tmp_path / "run")]}[command]
    started = time.monotonic()
    outcome = invoke(*args)
    assert outcome.exit_code == 2 and outcome.clean and one_line(outcome.stderr), outcome.stderr
    assert "GiB in fp32 before any activation" in outcome.stderr and "GiB free" in outcome.stderr
    assert not (tmp_path / "run").exists() and time.monotonic() - started < 120


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_nothing_the_users_code_started_survives_a_run_that_ends_normally(tmp_path):
    """The fault drill found it: a complete tune left every helper build_model started (the
    worker exited in order, and its descendants went to init)."""
    mark = uuid.uuid4().hex
    done = subprocess.run([sys.executable, "-m", "amp_advisor", "tune", str(WORKLOADS / "spawning.py"), "--device",
                           "cpu", "--out", str(tmp_path / "run"), "--batch-sizes", "4", "--steps", "3", "--strategy",
                           "grid", "--max-trials", "2"],
                          env={**os.environ, MARK_ENV: mark}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert wait_until_none_marked(mark) == []


# ------------------------------------------------------------------ rough edges
def test_rough_edges_are_one_line_and_early(tmp_path, finished_run):
    pytest.importorskip("transformers")
    outcome = invoke("bench", "--hf", "gpt3", "--dtype", "fp32", "--batch-size", "2", "--device", "cpu")
    assert outcome.exit_code == 2 and one_line(outcome.stderr) and len(outcome.stderr) < 400, outcome.stderr
    assert "did you mean" in outcome.stderr and "are supported" in outcome.stderr
    (tmp_path / "config.json").write_text('{"model_type": "gpt3"}')
    outcome = invoke("bench", "--hf-config", str(tmp_path / "config.json"), "--dtype", "fp32", "--batch-size", "2",
                     "--device", "cpu")
    assert outcome.exit_code == 2 and f"--hf-config {tmp_path / 'config.json'}: model_type 'gpt3'" in outcome.stderr
    outcome = invoke("bench", "--example", "mlp", "--dtype", "fp32", "--batch-size", "0", "--device", "cpu")
    assert outcome.exit_code == 2 and "--batch-size" in outcome.stderr
    (tmp_path / "existing").mkdir()
    shutil.copytree(finished_run, tmp_path / "b")
    result = CliRunner().invoke(cli, ["compare", str(finished_run), str(tmp_path / "b"), "--out",
                                      str(tmp_path / "existing")])
    assert result.exit_code == 2 and result.stdout == "" and "is a directory" in result.stderr, result.output


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a read-only tmpfs (needs root)")
def test_resume_of_a_complete_run_on_a_read_only_disk_only_reads(finished_run, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("this machine may not mount a tmpfs")
    try:
        shutil.copytree(finished_run, mount / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        outcome = invoke("tune", "--resume", "--out", str(mount / "run"))
        assert outcome.exit_code == 0 and outcome.clean, outcome.stderr
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_gradient_reduction_the_backend_cannot_run_is_refused_before_any_rank_starts():
    outcome = invoke("bench", "--example", "mlp", "--dtype", "bf16", "--batch-size", "8", "--parallel", "ddp",
                     "--comm", "bf16", "--nproc-per-node", "2", "--device", "cpu")
    assert outcome.exit_code == 2 and "needs the NCCL backend" in outcome.stderr and one_line(outcome.stderr)
    with pytest.raises(BadInputError, match="needs the NCCL backend"):
        TrialSpec("w", Dtype.BF16, 8, device="cpu", parallel="ddp", comm="bf16")
