"""The numerics X-ray: the right culprit first on workloads with a known one, islands that fix
them, statistics (not tensors) for a model of 1,000+ modules, and clear errors."""

import json
import math
import pickle

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from amp_advisor import diagnose
from amp_advisor.cli import cli
from amp_advisor.diagnosis import INDEX, METRICS, Diagnosis
from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.harness.worker import Worker
from amp_advisor.islands import keep_in_fp32, release, resolve
from amp_advisor.runtime import MixedPrecision
from tests.fakes import WORKLOADS

TOLERANCE = 0.05  # the tuner's default loss tolerance against fp32


@pytest.fixture(scope="module")
def worker():
    with Worker() as w:
        yield w


@pytest.mark.parametrize("workload, dtype, culprit, kind", [
    ("fp16_overflow.py", "fp16", "first", "forward overflow"),
    ("fp16_backward_overflow.py", "fp16", "block.rescaled", "backward overflow"),
    ("bf16_drift.py", "bf16", "1", "drift"),
])
def test_the_known_culprit_comes_first(worker, workload, dtype, culprit, kind):
    d = diagnose(WORKLOADS / workload, dtype=dtype, batch_size=8, device="cpu", worker=worker)
    first = d.culprits()[0]
    assert (first.module, first.kind) == (culprit, kind), d.culprits()
    assert d.advised_islands()[0] == culprit
    assert first.advice.startswith(f"keep `{culprit}` in fp32: ")


@pytest.mark.parametrize("workload", ["fp16_overflow.py", "fp16_backward_overflow.py"])
def test_the_advised_islands_train_fp16_finite_and_close_to_fp32(worker, workload):
    broken = diagnose(WORKLOADS / workload, dtype="fp16", batch_size=8, device="cpu", worker=worker)
    fixed = diagnose(WORKLOADS / workload, dtype="fp16", batch_size=8, device="cpu", worker=worker,
                     fp32_modules=broken.advised_islands())
    assert fixed.finite and fixed.scales[-1] == fixed.scales[0]  # no step skipped: the scale never backed off
    assert not [c for c in fixed.culprits() if c.kind != "drift"]
    worst = max(abs(a - b) / abs(b) for a, b in zip(fixed.losses, fixed.ref_losses, strict=False))
    assert worst <= TOLERANCE


def test_a_model_of_a_thousand_modules_keeps_statistics_not_tensors(worker):
    d = diagnose(WORKLOADS / "many_blocks.py", dtype="bf16", batch_size=4, device="cpu", steps=3, worker=worker)
    assert len(d.modules) > 1000
    assert all(isinstance(v, float) for step in d.values for row in step for v in row)
    assert len(d.values) == 3 and all(len(step) == len(d.modules) for step in d.values)
    assert d.finite


def test_healthy_bf16_has_no_culprits(worker):
    d = diagnose(WORKLOADS / "tiny.py", dtype="bf16", batch_size=8, device="cpu", steps=3, worker=worker)
    assert d.culprits() == [] and d.advised_islands() == ()


def test_the_json_names_the_culprits_and_round_trips(tmp_path):
    result = CliRunner().invoke(cli, ["diagnose", str(WORKLOADS / "fp16_overflow.py"), "--dtype", "fp16",
                                      "--device", "cpu", "--steps", "3", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["culprits"][0]["module"] == "first" and doc["culprits"][0]["pass"] == "forward"
    again = Diagnosis.from_dict(json.loads(json.dumps(doc)))
    assert again.culprits()[0].module == "first" and again.modules == tuple(doc["modules"])


def test_unknown_islands_are_one_line_naming_the_closest(tmp_path):
    result = CliRunner().invoke(cli, ["diagnose", str(WORKLOADS / "fp16_overflow.py"), "--dtype", "fp16",
                                      "--device", "cpu", "--steps", "1", "--fp32-modules", "fist"])
    assert result.exit_code == 2
    assert "no module named 'fist'; closest: first" in result.stderr and "Traceback" not in result.output


def test_diagnose_refuses_fp32():
    with pytest.raises(BadInputError, match="fp16 or bf16"):
        diagnose(WORKLOADS / "tiny.py", dtype="fp32", device="cpu")


# ------------------------------------------------------------------------------ the islands
def _net():
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))


def test_an_island_computes_in_fp32_inside_autocast():
    model = _net()
    seen = {}
    model[2].register_forward_hook(lambda m, i, o: seen.update(island=o.dtype))
    model[0].register_forward_hook(lambda m, i, o: seen.update(other=o.dtype))
    assert keep_in_fp32(model, ["2"]) == ["2"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(3, 4))
    assert seen == {"island": torch.float32, "other": torch.bfloat16} and out.dtype == torch.float32
    out.sum().backward()  # the gradient flows back through the casts
    assert model[0].weight.grad is not None
    release(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(3, 4)).dtype == torch.bfloat16


def test_islands_by_class_and_class_name_and_errors():
    model = _net()
    assert [n for n, _ in resolve(model, [nn.Linear])] == ["0", "2"]
    assert [n for n, _ in resolve(model, ["LayerNorm"])] == ["1"]
    with pytest.raises(BadInputError, match="no module named 'LayerNrom'; closest: LayerNorm"):
        resolve(model, ["LayerNrom"])
    with pytest.raises(BadInputError, match="closest: 2"):
        resolve(model, ["22"])


def test_a_model_with_islands_still_pickles_and_installs_once():
    model = _net()
    keep_in_fp32(model, ["1"])
    keep_in_fp32(model, ["1"])  # twice: still one wrapper, around the module's own forward
    assert model[1].forward.forward.__func__ is nn.LayerNorm.forward
    copy = pickle.loads(pickle.dumps(model))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert copy(torch.randn(2, 4)).dtype == torch.bfloat16  # the last Linear is not an island


def test_mixed_precision_prepares_the_islands():
    amp = MixedPrecision("bf16", "cpu", fp32_modules=["2"])
    model = amp.prepare(_net())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with amp.autocast():
        loss = model(torch.randn(3, 4)).float().pow(2).mean()
    amp.backward(loss)
    assert amp.step(optimizer)
    assert amp.stats()["fp32_islands"] == ["2"]
    with pytest.raises(BadInputError, match="no module named '3'; its modules include 0, 1, 2"):
        MixedPrecision("bf16", "cpu", fp32_modules=["3"]).prepare(_net())


# ------------------------------------------------------------------------ ranking, by hand
def _diagnosis(rows_per_step, modules=("a", "a.b"), dtype=Dtype.FP16, scales=()):
    values = []
    for rows in rows_per_step:
        step = []
        for row in rows:
            full = [math.nan] * len(METRICS)
            for key, value in row.items():
                full[INDEX[key]] = value
            step.append(tuple(full))
        values.append(tuple(step))
    return Diagnosis("w.py", dtype, 8, "cpu", len(values), tuple(modules), ("T",) * len(modules), tuple(values),
                     losses=(1.0,) * len(values), scales=tuple(scales))


def test_a_backward_overflow_the_scaler_absorbs_is_not_a_culprit():
    overflow = {"grad_in_nonfinite": 1, "grad_out_nonfinite": 0, "out_nonfinite": 0}
    clean = {"grad_in_nonfinite": 0, "grad_out_nonfinite": 0, "out_nonfinite": 0}
    transient = _diagnosis([[overflow, clean], [clean, clean], [clean, clean], [clean, clean]],
                           scales=(65536, 32768, 32768, 32768))
    assert transient.culprits() == []
    persistent = _diagnosis([[overflow, clean]] * 4, scales=(65536, 32768, 16384, 8192))
    assert [c.module for c in persistent.culprits()] == ["a"]


def test_a_parent_drifting_because_of_its_child_is_not_named():
    child = {"rel_err": 0.5, "in_rel_err": 0.0}
    parent = {"rel_err": 0.5, "in_rel_err": 0.0}
    d = _diagnosis([[child, parent]], modules=("a.b", "a"), dtype=Dtype.BF16)
    assert [c.module for c in d.culprits()] == ["a.b"]


@pytest.mark.parametrize("device, message", [("banana", "not a torch device"), ("cuda:7", "--device cuda:7: ")])
def test_a_device_that_is_not_here_is_one_line_exit_2(device, message):
    result = CliRunner().invoke(cli, ["diagnose", str(WORKLOADS / "tiny.py"), "--dtype", "bf16", "--device", device,
                                      "--steps", "1"])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_a_model_that_raises_is_one_line_exit_1():
    result = CliRunner().invoke(cli, ["diagnose", str(WORKLOADS / "raises_in_step.py"), "--dtype", "bf16",
                                      "--device", "cpu", "--steps", "1"])
    assert result.exit_code == 1 and "the diagnosis stopped: NameError" in result.stderr
