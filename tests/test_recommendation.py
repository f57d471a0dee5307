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
    assert set(doc["measured"]) == {"samples_per_s", "speedup_vs_fp32", "peak_memory_bytes", "speedup_vs_best_fp32",
                                    "one_time_s", "one_time_warm_s", "break_even_steps", "train_steps"}
    assert doc["levers"] == {}
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
    hardware = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    path = make(hardware=hardware).save(tmp_path / "r.json")
    with pytest.warns(HardwareMismatchWarning, match="tuned on other hardware"):
        Recommendation.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Recommendation.load(make().save(tmp_path / "same.json"))  # this machine: no warning


EVIDENCE = {"confirmed": True,
            "recommended": {"config": "bf16 bs=32", "dtype": "bf16", "batch_size": 32, "samples_per_s": 150.0,
                            "trials": [7, 9]},
            "fp32_best": {"config": "fp32 bs=16", "dtype": "fp32", "batch_size": 16, "samples_per_s": 100.0,
                          "trials": [8, 10]},
            "fp32_same_batch": None}


def test_the_trials_a_recommendation_rests_on_survive_json_and_toml(tmp_path):
    from amp_advisor.snippets import to_toml

    rec = make(evidence=EVIDENCE, machine_busy="the load average was above the 2 cores")
    assert Recommendation.load(rec.save(tmp_path / "r.json")) == rec
    (tmp_path / "r.toml").write_text(to_toml(rec))
    back = Recommendation.load(tmp_path / "r.toml")
    assert back.trials("recommended") == (7, 9) and back.trials("fp32_best") == (8, 10)
    assert back.trials("fp32_same_batch") == () and back.machine_busy == rec.machine_busy


def test_a_schema_1_recommendation_still_loads(tmp_path):
    doc = make().to_dict()
    del doc["evidence"], doc["machine_busy"], doc["measured"]["speedup_vs_best_fp32"]
    doc["schema_version"] = 1
    (tmp_path / "old.json").write_text(json.dumps(doc))
    rec = Recommendation.load(tmp_path / "old.json")
    assert rec.evidence is None and rec.trials() == () and rec.schema_version == 1


@pytest.mark.parametrize("on", [True, False])
def test_tf32_means_the_same_in_autocast_the_helper_and_the_snippet(on):
    """One TF32 behaviour: process-wide, matmuls and cuDNN, as the trials measured it."""
    from amp_advisor import tf32
    from amp_advisor.snippets import torch_loop

    def state():
        return torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32

    rec = Recommendation(**{**{f: getattr(make(), f) for f in ("dtype", "batch_size", "grad_accumulation_steps",
                                                               "scaler", "device", "hardware", "measured")},
                            "tf32": on})
    saved = state()
    try:
        tf32.enable(False)
        with rec.autocast():
            pass
        after_autocast = state()  # stays on after the block: the backward pass runs outside it
        tf32.enable(False)
        rec.mixed_precision()
        after_helper = state()
        tf32.enable(on)
        expected = state()
        assert after_autocast == after_helper == expected
        assert all(line in torch_loop(rec) for line in tf32.SOURCE_LINES) is on
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]
