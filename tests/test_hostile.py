"""Hostile saved state: nothing it holds runs as code, and every way it can be wrong is one line
and exit 2, never an internal error. The mutated documents come from Hypothesis."""

import dataclasses
import json
import shutil

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from amp_advisor.cli import cli
from amp_advisor.dtypes import Dtype
from amp_advisor.recommendation import GradScalerConfig, Measured, Recommendation
from amp_advisor.snippets import FORMATS, render
from tests.hostile_docs import CODE_FORMATS, PAYLOAD, code_outside_literals, invoke, mutated
from tests.hostile_docs import finished_run as make_finished_run



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
