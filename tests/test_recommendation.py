import json
import warnings

import pytest
import torch

from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.recommendation import (
    GradScalerConfig,
    HardwareMismatchWarning,
    Measured,
    Recommendation,
    current_fingerprint,
)


def make(dtype=Dtype.BF16, enabled=False, hardware=None, **kw):
    return Recommendation(
        dtype=dtype, batch_size=32, grad_accumulation_steps=2,
        scaler=GradScalerConfig(enabled=enabled, init_scale=2.0**12, growth_interval=500),
        tf32=False, device="cpu", hardware=hardware or current_fingerprint("cpu"),
        measured=Measured(samples_per_s=100.0, speedup_vs_fp32=1.5, peak_memory_bytes=123), **kw,
    )


def test_save_and_load_round_trip(tmp_path):
    rec = make(why="because")
    path = rec.save(tmp_path / "run" / "recommendation.json")
    doc = json.loads(path.read_text())
    for key in ("schema_version", "dtype", "batch_size", "grad_accumulation_steps", "grad_scaler", "tf32",
                "device", "hardware", "measured"):
        assert key in doc
    assert set(doc["grad_scaler"]) == {"enabled", "init_scale", "growth_factor", "backoff_factor", "growth_interval"}
    assert set(doc["measured"]) == {"samples_per_s", "speedup_vs_fp32", "peak_memory_bytes"}
    assert Recommendation.load(path) == rec
    assert Recommendation.load(tmp_path / "run") == rec  # the run directory works too


def test_autocast_uses_the_recommended_dtype():
    a = torch.randn(4, 4)
    with make(Dtype.BF16).autocast():
        assert (a @ a).dtype == torch.bfloat16
    with make(Dtype.FP32).autocast():
        assert (a @ a).dtype == torch.float32


def test_grad_scaler_is_configured_and_only_enabled_for_fp16():
    scaler = make(Dtype.FP16, enabled=True).grad_scaler()
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**12 and scaler.get_growth_interval() == 500
    assert not make(Dtype.BF16).grad_scaler().is_enabled()


def test_a_newer_schema_asks_for_an_upgrade(tmp_path):
    doc = make().to_dict()
    doc["schema_version"] = 99
    (tmp_path / "r.json").write_text(json.dumps(doc))
    with pytest.raises(BadInputError, match="schema_version 99.*upgrade amp-advisor"):
        Recommendation.load(tmp_path / "r.json")


@pytest.mark.parametrize(
    "content, message",
    [
        ("import os; os.system('echo pwned')", "corrupt recommendation file, not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"schema_version": 1}', "not a valid recommendation"),
    ],
)
def test_corrupt_files_are_refused_without_running_anything(tmp_path, content, message):
    (tmp_path / "r.json").write_text(content)
    with pytest.raises(BadInputError, match=message):
        Recommendation.load(tmp_path / "r.json")


def test_inconsistent_content_is_refused(tmp_path):
    doc = make(Dtype.BF16).to_dict()
    doc["grad_scaler"]["enabled"] = True
    with pytest.raises(BadInputError, match="only meaningful for fp16"):
        Recommendation.from_dict(doc)
    doc = make().to_dict()
    doc["extra"] = 1
    with pytest.raises(BadInputError, match="unknown fields"):
        Recommendation.from_dict(doc)


def test_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        Recommendation.load(tmp_path / "nope.json")


def test_loading_on_other_hardware_warns(tmp_path):
    path = make(hardware={"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}).save(tmp_path / "r.json")
    with pytest.warns(HardwareMismatchWarning, match="tuned on other hardware"):
        Recommendation.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Recommendation.load(make().save(tmp_path / "same.json"))  # this machine: no warning
