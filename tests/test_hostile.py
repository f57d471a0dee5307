"""Hostile saved state: nothing it holds runs as code, and every way it can be wrong is one line
and exit 2, never an internal error. The mutated documents come from Hypothesis."""

import copy
import dataclasses
import io
import json
import shutil
import tokenize

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from amp_advisor.cli import cli
from amp_advisor.dtypes import Dtype
from amp_advisor.recommendation import GradScalerConfig, Measured, Recommendation
from amp_advisor.snippets import FORMATS, render
from tests.fakes import WORKLOADS

PAYLOAD = '"); __import__("os").system("PWNED") #\n__import__("os").system("PWNED")\n\'\'\'"""'
CODE_FORMATS = ("torch", "lightning", "accelerate", "hf-trainer")


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
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if "PWNED" in token.string:
            assert token.type in (tokenize.STRING, tokenize.COMMENT), (fmt, token)


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
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def _paths(doc, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw, doc):
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
        if not isinstance(doc, dict):
            break
    return doc


def _invoke(*args):
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 2), result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    result = CliRunner().invoke(cli, ["tune", str(WORKLOADS / "tiny.py"), "--device", "cpu", "--out", str(run),
                                      "--batch-sizes", "4,8", "--steps", "3", "--strategy", "grid"])
    assert result.exit_code == 0, result.output
    return run


HOSTILE_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck),
                            phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: the first failure is enough


def test_mutated_recommendations_through_load_and_show(finished_run, tmp_path_factory):
    base = json.loads((finished_run / "recommendation.json").read_text())
    where = tmp_path_factory.mktemp("mutated") / "recommendation.json"

    @HOSTILE_SETTINGS
    @given(mutated(base), st.sampled_from(list(FORMATS)))
    def check(doc, fmt):
        where.write_text(json.dumps(doc))
        _invoke("show", str(where), "--format", fmt)

    check()


def test_mutated_trials_and_run_files_through_report(finished_run, tmp_path_factory):
    lines = (finished_run / "trials.jsonl").read_text().splitlines()
    trial, run_doc = json.loads(lines[0]), json.loads((finished_run / "run.json").read_text())
    target = tmp_path_factory.mktemp("mutated") / "run"

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck),
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
    assert "trials.jsonl: its last line is torn" in (tmp_path / "run" / "report.md").read_text()


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
