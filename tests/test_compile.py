"""torch.compile as a lever (amp_advisor/levers/compile.py): its modes per device, a compiled
trial's compile time apart from its steps, its graph breaks, its faults, its numerics setting,
and the recommendation, the helper and the snippets carrying the mode (built against the real
frameworks)."""

import dataclasses
import json

import pytest
import torch

from amp_advisor import levers, snippets
from amp_advisor.dtypes import Dtype
from amp_advisor.harness.measure import TrialRunner
from amp_advisor.harness.trial import Status, TrialSpec
from amp_advisor.recommendation import Recommendation
from amp_advisor.tuning.space import build_space
from tests.fakes import WORKLOADS, fake_cpu_profile, fake_h100_profile
from tests.test_snippets import rec_for

COMPILE = levers.get("compile")


def test_the_modes_offered_are_the_devices_own():
    assert COMPILE.values(fake_cpu_profile()) == ("off", "default", "max-autotune-no-cudagraphs")
    assert COMPILE.values(fake_h100_profile()) == ("off", "default", "reduce-overhead", "max-autotune")
    space, _ = build_space(fake_cpu_profile(), batch_sizes=(8,))
    assert dict(space.levers)["compile"] == ("off", "default", "max-autotune-no-cudagraphs")
    assert "compile" not in dict(build_space(fake_cpu_profile(), batch_sizes=(8,), skip_levers=("compile",))[0].levers)
    with pytest.raises(Exception, match="not one of off, default, max-autotune-no-cudagraphs on cpu"):
        TrialSpec("w", Dtype.BF16, 4, levers={"compile": "reduce-overhead"})


def test_each_compiled_trial_starts_from_a_fresh_inductor_cache_on_disk_and_in_memory():
    """Cold means cold: a new cache directory for the trial (removed after, the user's setting
    restored), and inductor's in-process caches emptied, so a module an earlier trial in the same
    worker compiled is not loaded again from memory."""
    import os

    from torch._inductor import utils

    calls = []

    class Probe:
        def cache_clear(self):
            calls.append("cleared")

    utils._registered_caches.append(Probe())
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:
        with COMPILE.scope("default"):
            inside = os.environ["TORCHINDUCTOR_CACHE_DIR"]
            assert os.path.isdir(inside) and inside != before
            assert calls == ["cleared"]
        assert not os.path.exists(inside) and os.environ.get("TORCHINDUCTOR_CACHE_DIR") == before
        assert calls == ["cleared", "cleared"]
    finally:
        utils._registered_caches.pop()


def _trial(workload, dtype=Dtype.BF16, **kw):
    spec = TrialSpec(str(WORKLOADS / workload), dtype, 8, steps=3, warmup_steps=1, compare_steps=4,
                     levers={"compile": "default"}, **kw)
    return TrialRunner().run(spec)


def test_a_compiled_trial_times_its_compile_apart_and_counts_its_graph_break():
    # the workload's loss asserts backward_pass_autocast == "off" while a compiled model trains
    result = _trial("compile_graph_break.py")
    assert result.status is Status.OK, result.error
    assert result.lever_stats["compile.graph_breaks"] == 1.0
    assert result.lever_stats["compile.graphs"] >= 2.0
    # cold: the first step's compile; warm: compiled again from the cache the cold one filled
    assert result.one_time_s > 0 and result.one_time_warm_s is not None
    assert result.one_time_s > result.one_time_warm_s
    assert result.loss_rel_diff_vs_fp32 is not None and result.loss_rel_diff_vs_fp32 < 0.05  # held to eager fp32
    assert torch._functorch.config.backward_pass_autocast == "same_as_forward"  # restored after the trial


def test_a_compile_error_is_a_recorded_result(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", inductor_config.cpp.cxx)  # the workload breaks it
    result = _trial("compile_fails.py")
    assert result.status is Status.ERROR
    assert "InvalidCxxCompiler" in result.error or "compiler" in result.error.lower(), result.error


def _recommendation(mode="default"):
    return dataclasses.replace(rec_for(Dtype.BF16, accum=1), levers={"compile": mode})


def test_the_recommendation_carries_the_mode_and_prepare_compiles(tmp_path):
    rec = Recommendation.load(_recommendation().save(tmp_path / "r.json"), check_hardware=False)
    assert rec.levers == {"compile": "default"}
    model = rec.prepare(torch.nn.Sequential(torch.nn.Linear(4, 4)), device_type="cpu")
    assert isinstance(model, torch._dynamo.eval_frame.OptimizedModule)
    with rec.autocast():
        model(torch.ones(2, 4)).sum().backward()
    torch._dynamo.reset()


def test_the_torch_loop_compiles_after_the_islands_with_static_shapes():
    rec = _recommendation("max-autotune-no-cudagraphs")
    rec = dataclasses.replace(rec, levers={**rec.levers, "islands": "0"})
    text = snippets.torch_loop(rec)
    compiled = text.index('model = torch.compile(model, mode="max-autotune-no-cudagraphs", dynamic=False)')
    assert text.index("keep_in_fp32(model") < compiled < text.index("for step, batch in enumerate(loader):")
    assert 'backward_pass_autocast = "off"' in text and "compiled (max-autotune-no-cudagraphs)" in text
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    namespace = run(text[: text.index("for step, batch")], model=model)
    assert isinstance(namespace["model"], torch._dynamo.eval_frame.OptimizedModule)
    assert torch._functorch.config.backward_pass_autocast == "off"
    torch._functorch.config.backward_pass_autocast = "same_as_forward"


def run(code, **names):
    namespace = dict(names)
    exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace


def test_the_lightning_snippet_compiles_the_module(tmp_path, monkeypatch):
    pl = pytest.importorskip("lightning.pytorch")
    monkeypatch.chdir(tmp_path)
    namespace = run(snippets.lightning(_recommendation()), lightning_module=pl.LightningModule())
    assert isinstance(namespace["lightning_module"], torch._dynamo.eval_frame.OptimizedModule)
    assert namespace["trainer"].precision == "bf16-mixed"


def test_the_accelerate_snippet_builds_a_dynamo_plugin(fresh_accelerate_state):
    accelerator = run(snippets.accelerate(_recommendation()))["accelerator"]
    plugin = accelerator.state.dynamo_plugin
    assert plugin.mode == "default" and plugin.dynamic is False and str(plugin.backend).lower().endswith("inductor")


def test_the_hf_trainer_snippet_sets_torch_compile(tmp_path, monkeypatch, fresh_accelerate_state):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    args = run(snippets.hf_trainer(_recommendation()))["args"]
    assert args.torch_compile is True and args.torch_compile_mode == "default"


def test_the_deepspeed_config_states_deepspeeds_compile_config():
    # the keys of DeepSpeed's CompileConfig (deepspeed/runtime/compiler.py), which engine.compile() reads
    config = json.loads(snippets.deepspeed(_recommendation()))
    assert config["compile"] == {"enabled": True, "backend": "inductor",
                                 "kwargs": {"mode": "default", "dynamic": False}}
    torch._functorch.config.backward_pass_autocast = "same_as_forward"
