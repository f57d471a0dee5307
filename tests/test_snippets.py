"""`amp-advisor show`: every format, and the framework objects built from the emitted snippets
(where the framework is installed: the `frameworks` extra), so a snippet a framework rejects fails."""

import json
import math
import sys

import pytest
from click.testing import CliRunner

from amp_advisor import snippets
from amp_advisor.cli import cli
from amp_advisor.dtypes import Dtype
from amp_advisor.recommendation import GradScalerConfig, Measured, Recommendation

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def rec_for(dtype: Dtype, device: str = "cpu", accum: int = 2, tf32: bool = False) -> Recommendation:
    return Recommendation(
        dtype=dtype, batch_size=32, grad_accumulation_steps=accum,
        scaler=GradScalerConfig(enabled=dtype is Dtype.FP16, init_scale=2.0**12, growth_factor=2.0,
                                backoff_factor=0.5, growth_interval=500),
        tf32=tf32, device=device, hardware={"name": "test device", "kind": device.split(":")[0]},
        measured=Measured(100.0, 1.5, 2**30), why="test", workload="model.py",
    )


CPU_RECS = [rec_for(Dtype.FP32), rec_for(Dtype.BF16), rec_for(Dtype.FP16)]
IDS = ["fp32", "bf16", "fp16"]


def run(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace


@pytest.fixture
def saved(tmp_path):
    def save(rec):
        return rec.save(tmp_path / "run" / "recommendation.json").parent
    return save


@pytest.mark.parametrize("fmt", list(snippets.FORMATS))
def test_show_prints_every_format_from_a_run_dir(saved, fmt):
    run_dir = saved(rec_for(Dtype.FP16))
    result = CliRunner().invoke(cli, ["show", str(run_dir), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert result.output == snippets.render(Recommendation.load(run_dir, check_hardware=False), fmt)


def test_json_and_toml_round_trip(saved, tmp_path):
    rec = rec_for(Dtype.FP16)
    assert Recommendation.from_dict(json.loads(snippets.to_json(rec))) == rec
    parsed = tomllib.loads(snippets.to_toml(rec))
    assert parsed["grad_scaler"]["init_scale"] == 2.0**12 and parsed["dtype"] == "fp16"
    path = tmp_path / "rec.toml"
    path.write_text(snippets.to_toml(rec))
    assert Recommendation.load(path, check_hardware=False) == rec  # `show` reads TOML back too


def test_show_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    for target in (tmp_path / "missing.json", tmp_path / "broken.json", tmp_path):
        result = CliRunner().invoke(cli, ["show", str(target)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_deepspeed_block_maps_the_scaler():
    config = json.loads(snippets.deepspeed(rec_for(Dtype.FP16)))
    assert config["fp16"] == {"enabled": True, "loss_scale": 0, "initial_scale_power": 12,
                              "loss_scale_window": 500, "hysteresis": 1, "min_loss_scale": 1}
    assert config["train_micro_batch_size_per_gpu"] == 32 and config["gradient_accumulation_steps"] == 2
    assert json.loads(snippets.deepspeed(rec_for(Dtype.BF16)))["bf16"] == {"enabled": True}
    assert "fp16" not in json.loads(snippets.deepspeed(rec_for(Dtype.FP32)))


@pytest.mark.parametrize("rec", CPU_RECS, ids=IDS)
def test_the_torch_loop_is_valid_python(rec):
    compile(snippets.torch_loop(rec), "<snippet>", "exec")


# ------------------------------------------------------------------ the real frameworks
@pytest.mark.parametrize("rec", CPU_RECS, ids=IDS)
def test_lightning_builds_the_trainer(rec, tmp_path, monkeypatch):
    pytest.importorskip("lightning")
    monkeypatch.chdir(tmp_path)  # the Trainer may create lightning_logs/
    trainer = run(snippets.lightning(rec))["trainer"]
    assert trainer.accumulate_grad_batches == rec.grad_accumulation_steps
    expected = {Dtype.FP32: "32-true", Dtype.BF16: "bf16-mixed", Dtype.FP16: "16-mixed"}[rec.dtype]
    assert trainer.precision == expected
    if rec.scaler.enabled:
        scaler = trainer.precision_plugin.scaler
        assert scaler.get_scale() == rec.scaler.init_scale
        assert scaler.get_growth_interval() == rec.scaler.growth_interval


@pytest.mark.parametrize("rec", CPU_RECS, ids=IDS)
def test_accelerate_builds_the_accelerator(rec, fresh_accelerate_state):
    code = snippets.accelerate(rec)
    accelerator = run(code)["accelerator"]
    assert accelerator.mixed_precision == {Dtype.FP32: "no", Dtype.BF16: "bf16", Dtype.FP16: "fp16"}[rec.dtype]
    assert accelerator.gradient_accumulation_steps == rec.grad_accumulation_steps
    if rec.dtype is Dtype.FP16:
        # Accelerate quietly trains fp16 on a CPU in fp32: the snippet must say so
        assert accelerator.scaler is None and not accelerator.native_amp
        assert "turns fp16 off on a CPU" in code


@pytest.mark.gpu
def test_accelerate_takes_the_tuned_scaler_on_a_gpu(fresh_accelerate_state):
    rec = rec_for(Dtype.FP16, device="cuda:0")
    accelerator = run(snippets.accelerate(rec))["accelerator"]
    assert accelerator.scaler.get_scale() == rec.scaler.init_scale
    assert accelerator.scaler.get_growth_interval() == rec.scaler.growth_interval


@pytest.mark.parametrize("rec", CPU_RECS, ids=IDS)
def test_transformers_builds_the_training_arguments(rec, tmp_path, monkeypatch, fresh_accelerate_state):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    args = run(snippets.hf_trainer(rec))["args"]
    assert args.per_device_train_batch_size == rec.batch_size
    assert args.gradient_accumulation_steps == rec.grad_accumulation_steps
    assert (args.bf16, args.fp16) == (rec.dtype is Dtype.BF16, rec.dtype is Dtype.FP16)


def test_snippets_say_where_the_framework_cannot_take_the_tuned_scaler():
    text = snippets.hf_trainer(rec_for(Dtype.FP16))
    assert "cannot set GradScaler" in text and "init_scale=4096" in text
    assert math.log2(4096) == 12


@pytest.mark.parametrize("fmt, model_name", [("torch", "model"), ("accelerate", "model"),
                                             ("hf-trainer", "model"), ("lightning", "lightning_module")])
def test_islands_in_every_code_format_are_installed_on_the_model(fmt, model_name, tmp_path, monkeypatch,
                                                                 fresh_accelerate_state):
    import dataclasses

    import torch

    monkeypatch.chdir(tmp_path)
    rec = dataclasses.replace(rec_for(Dtype.BF16), levers={"islands": "1"})
    code = snippets.render(rec, fmt)
    if fmt == "torch":
        code = code[: code.index("for step, batch")]  # the loop needs the user's loader
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    namespace = {model_name: model}
    exec(compile(code, "<snippet>", "exec"), namespace)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(2, 4)).dtype == torch.float32  # the last Linear is an island
    assert "has no setting for this" in code or fmt == "torch"


def test_fp32_islands_round_trip_as_a_lever_and_refuse_code(tmp_path):
    import dataclasses

    rec = dataclasses.replace(rec_for(Dtype.FP16), levers={"islands": "encoder.layers.2.attn,head"})
    back = Recommendation.load(rec.save(tmp_path / "r.json"))
    assert back.fp32_modules == ("encoder.layers.2.attn", "head") and back.levers == rec.levers
    hostile = 'head"]); import os; os.system("id") #'
    doc = rec.to_dict()
    doc["levers"]["islands"] = hostile
    (tmp_path / "r.json").write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["show", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "levers.islands" in result.stderr and "expected module names" in result.stderr
    # written before the islands were a lever (schema 5: a `fp32_modules` list): read into the lever, checked so too
    old = {**rec.to_dict(), "schema_version": 5, "levers": {}, "fp32_modules": ["encoder.layers.2.attn", "head"]}
    (tmp_path / "r.json").write_text(json.dumps(old))
    assert Recommendation.load(tmp_path / "r.json").levers == {"islands": "encoder.layers.2.attn,head"}
    (tmp_path / "r.json").write_text(json.dumps({**old, "fp32_modules": [hostile]}))
    result = CliRunner().invoke(cli, ["show", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "levers.islands" in result.stderr
    (tmp_path / "r.json").write_text(json.dumps({**old, "fp32_modules": "head"}))
    result = CliRunner().invoke(cli, ["show", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "fp32_modules: expected a list of module names" in result.stderr
    doc = {**rec.to_dict(), "schema_version": 2, "levers": {}}  # written before islands existed: still read
    (tmp_path / "r.json").write_text(json.dumps(doc))
    assert Recommendation.load(tmp_path / "r.json").fp32_modules == ()
