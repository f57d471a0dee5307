"""MixedPrecision, the training-time helper: the same numbers as a hand-written torch.amp loop,
exact checkpoints, statistics without per-step syncs, and the fp16-parameters error."""

import json

import pytest
import torch
import torch.nn.functional as F

from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.recommendation import GradScalerConfig, Measured, Recommendation
from amp_advisor.runtime import FP16ParametersError, MixedPrecision, TrainingInstabilityError

LOWER = {Dtype.FP16: torch.float16, Dtype.BF16: torch.bfloat16}


def _setup(seed=0, steps=12):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batches = [(torch.randn(8, 16), torch.randn(8, 1)) for _ in range(steps)]
    return model, optimizer, batches


def _loss(model, x, y):
    return F.mse_loss(model(x).float(), y)


def hand_written(dtype, accum=1, clip=None, steps=12, **scaler_kw):
    """The loop a person writes from the torch.amp documentation."""
    model, optimizer, batches = _setup(steps=steps)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype is Dtype.FP16, **scaler_kw)
    losses, scales = [], []
    for i, (x, y) in enumerate(batches):
        with torch.autocast("cpu", dtype=LOWER.get(dtype, torch.float32), enabled=dtype in LOWER):
            loss = _loss(model, x, y)
        losses.append(loss.item())
        scaler.scale(loss / accum if accum > 1 else loss).backward()
        if (i + 1) % accum == 0:
            if clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scales.append(scaler.get_scale() if scaler.is_enabled() else None)
    return losses, scales, model


def with_helper(dtype, accum=1, clip=None, steps=12, **scaler_kw):
    model, optimizer, batches = _setup(steps=steps)
    amp = MixedPrecision(dtype, "cpu", grad_accumulation_steps=accum, max_grad_norm=clip, **scaler_kw)
    losses, stepped = [], []
    for x, y in batches:
        with amp.autocast():
            loss = _loss(model, x, y)
        losses.append(loss.item())
        amp.backward(loss)
        stepped.append(amp.step(optimizer))
    return losses, amp, model, stepped


def _scale_sequence(amp):
    """Per optimizer step, from the helper's change history."""
    stats = amp.stats()
    history = dict((int(step), scale) for step, scale in stats["scale_history"])
    out, current = [], history[0]
    for step in range(1, stats["steps"] + 1):
        current = history.get(step, current)
        out.append(current)
    return out


def _same_parameters(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("dtype", [Dtype.FP32, Dtype.BF16])
@pytest.mark.parametrize("accum,clip", [(1, None), (3, None), (2, 0.05)])
def test_fp32_and_bf16_match_the_hand_written_loop_exactly(dtype, accum, clip):
    ref_losses, _, ref_model = hand_written(dtype, accum, clip)
    losses, amp, model, stepped = with_helper(dtype, accum, clip)
    assert losses == ref_losses and _same_parameters(model, ref_model)
    assert stepped == [(i + 1) % accum == 0 for i in range(12)]
    assert amp.stats()["steps"] == 12 // accum and amp.stats()["micro_steps"] == 12


@pytest.mark.parametrize("accum,clip", [(1, None), (2, 0.05)])
def test_fp16_matches_the_hand_written_scale_sequence(accum, clip):
    # a scale far too large overflows for a few steps (skipped), then growth every 2 clean steps
    kw = dict(init_scale=2.0**24, growth_interval=2)
    ref_losses, ref_scales, ref_model = hand_written(Dtype.FP16, accum, clip, steps=16 * accum, **kw)
    losses, amp, model, _ = with_helper(Dtype.FP16, accum, clip, steps=16 * accum, **kw)
    assert losses == ref_losses and _same_parameters(model, ref_model)
    assert _scale_sequence(amp) == ref_scales
    stats = amp.stats()
    expected_skips = sum(1 for before, after in zip([2.0**24] + ref_scales, ref_scales, strict=False) if after < before)
    assert expected_skips > 0 and stats["skipped_steps"] == expected_skips
    assert stats["overflow_ratio"] == expected_skips / stats["steps"]
    assert any(b > a for a, b in zip(ref_scales, ref_scales[1:], strict=False))  # it grew too


def test_resuming_from_a_json_checkpoint_continues_the_same_scale_sequence():
    kw = dict(init_scale=2.0**24, growth_interval=3)
    _, full, full_model, _ = with_helper(Dtype.FP16, steps=16, **kw)

    model, optimizer, batches = _setup(steps=16)
    amp = MixedPrecision("fp16", "cpu", **kw)
    for x, y in batches[:7]:
        with amp.autocast():
            loss = _loss(model, x, y)
        amp.backward(loss)
        amp.step(optimizer)
    checkpoint = json.loads(json.dumps({"amp": amp.state_dict()}))  # survives a JSON round trip
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()

    model2, optimizer2, _ = _setup(steps=16)
    model2.load_state_dict(model_state)
    optimizer2.load_state_dict(optimizer_state)
    resumed = MixedPrecision("fp16", "cpu", **kw)
    resumed.load_state_dict(checkpoint["amp"])
    for x, y in batches[7:]:
        with resumed.autocast():
            loss = _loss(model2, x, y)
        resumed.backward(loss)
        resumed.step(optimizer2)
    assert _scale_sequence(resumed) == _scale_sequence(full)
    assert resumed.stats() == full.stats()
    assert _same_parameters(model2, full_model)


def test_a_checkpoint_from_other_settings_is_refused():
    state = MixedPrecision("fp16", "cpu").state_dict()
    with pytest.raises(BadInputError, match="bf16"):
        MixedPrecision("bf16", "cpu").load_state_dict(state)
    with pytest.raises(BadInputError, match="grad_accumulation_steps"):
        MixedPrecision("fp16", "cpu", grad_accumulation_steps=4).load_state_dict(state)
    with pytest.raises(BadInputError, match="schema_version"):
        MixedPrecision("fp16", "cpu").load_state_dict({"schema_version": 99})


@pytest.mark.parametrize("dtype,enabled", [(Dtype.BF16, True), (Dtype.FP32, True), (Dtype.FP16, False)])
def test_without_fp16_there_is_no_scaler_work(monkeypatch, dtype, enabled):
    def forbidden(*args, **kwargs):
        raise AssertionError("GradScaler was used")

    for name in ("scale", "unscale_", "step", "update", "get_scale"):
        monkeypatch.setattr(torch.amp.GradScaler, name, forbidden)
    model, optimizer, batches = _setup()
    amp = MixedPrecision(dtype, "cpu", enabled=enabled, max_grad_norm=1.0)
    for x, y in batches:
        with amp.autocast():
            loss = _loss(model, x, y)
        assert loss.dtype == torch.float32
        amp.backward(loss)
        amp.step(optimizer)
    stats = amp.stats()
    assert stats["grad_scaler"] is False and stats["scale"] is None and stats["scale_history"] == []
    assert stats["autocast"] == ("bfloat16" if dtype is Dtype.BF16 and enabled else None)


def test_statistics_need_no_sync_per_step(monkeypatch):
    model, optimizer, batches = _setup(steps=20)
    amp = MixedPrecision("fp16", "cpu", init_scale=2.0**24, growth_interval=2)
    monkeypatch.setattr(amp.scaler, "get_scale", lambda: pytest.fail("get_scale() syncs the device"))
    reads = []
    original = amp._flush
    monkeypatch.setattr(amp, "_flush", lambda: (reads.append(amp._steps), original()))
    for x, y in batches:
        with amp.autocast():
            loss = _loss(model, x, y)
        amp.backward(loss)
        amp.step(optimizer)
    assert reads == []  # nothing was read from the device during the 20 steps
    assert amp.stats()["steps"] == 20 and reads == [20]


def test_fp16_parameters_get_an_error_that_explains_the_fix():
    model, _, batches = _setup()
    model.half()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    amp = MixedPrecision("fp16", "cpu")
    x, y = batches[0]
    with amp.autocast():
        loss = F.mse_loss(model(x.half()).float(), y)
    amp.backward(loss)
    with pytest.raises(FP16ParametersError, match=r"model\.half\(\).*bf16"):
        amp.step(optimizer)


def test_stats_are_saved_as_json(tmp_path):
    _, amp, _, _ = with_helper(Dtype.FP16, init_scale=2.0**24, growth_interval=2)
    path = amp.save_stats(tmp_path / "amp_stats.json")
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(amp.stats())) and saved["steps"] == 12


def test_bad_arguments():
    with pytest.raises(BadInputError, match="fp8"):
        MixedPrecision("fp8", "cpu")
    with pytest.raises(BadInputError, match="grad_accumulation_steps"):
        MixedPrecision("fp16", "cpu", grad_accumulation_steps=0)
    with pytest.raises(BadInputError, match="max_grad_norm"):
        MixedPrecision("fp16", "cpu", max_grad_norm=0)
    with pytest.raises(BadInputError, match="optimizer"):
        MixedPrecision("fp32", "cpu").step()


def test_a_recommendation_builds_its_helper():
    rec = Recommendation(dtype=Dtype.FP16, batch_size=16, grad_accumulation_steps=4,
                         scaler=GradScalerConfig(True, init_scale=2.0**12, growth_interval=100), tf32=False,
                         device="cpu", hardware={}, measured=Measured(1.0, None, None))
    amp = rec.mixed_precision(max_grad_norm=1.0)
    assert amp.grad_accumulation_steps == 4 and amp.max_grad_norm == 1.0
    assert amp.scaler.get_scale() == 2.0**12 and amp.scaler.get_growth_interval() == 100
    assert [amp.sync_gradients for _ in range(1)] == [False]


# --------------------------------------------------------------------------- the safety net
def _unstable_training(amp, steps, monkeypatch, flush_every=16):
    """Train the workload that breaks fp16 after a few steps; returns the helper's stats."""
    import amp_advisor.runtime as runtime
    from amp_advisor.workload import load
    from tests.fakes import WORKLOADS

    monkeypatch.setattr(runtime, "FLUSH_EVERY", flush_every)
    workload = load(WORKLOADS / "unstable_midrun.py")
    torch.manual_seed(0)
    model = workload.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(steps):
        with amp.autocast():
            loss = workload.loss_fn(model, workload.make_batch(8, "cpu"))
        amp.backward(loss)
        amp.step(optimizer)
    return amp.stats()


def test_persistent_fp16_overflow_raises_pointing_at_diagnose(monkeypatch):
    amp = MixedPrecision("fp16", "cpu", instability_steps=10)
    with pytest.raises(TrainingInstabilityError, match="amp-advisor diagnose MODEL.py --dtype fp16"):
        _unstable_training(amp, 80, monkeypatch)


def test_fallback_switches_precision_and_a_resumed_run_keeps_it(monkeypatch):
    amp = MixedPrecision("fp16", "cpu", on_instability="fallback", fallback_dtype="fp32", instability_steps=10)
    with pytest.warns(RuntimeWarning, match="falling back to fp32"):
        stats = _unstable_training(amp, 80, monkeypatch)
    fallback = stats["fallback"]
    assert fallback["from"] == "fp16" and fallback["to"] == "fp32" and fallback["at_step"] <= 33
    assert stats["dtype"] == "fp32" and not stats["grad_scaler"]
    assert amp.fell_back and amp.autocast().__class__.__name__ == "nullcontext"
    state = json.loads(json.dumps(amp.state_dict()))  # JSON-safe, fallback included
    resumed = MixedPrecision("fp16", "cpu", on_instability="fallback", fallback_dtype="fp32")
    with pytest.warns(RuntimeWarning, match="resuming in fp32"):
        resumed.load_state_dict(state)
    assert resumed.dtype is Dtype.FP32 and resumed.stats()["fallback"] == fallback


def test_bf16_non_finite_losses_in_a_row_are_trouble(monkeypatch):
    import amp_advisor.runtime as runtime

    monkeypatch.setattr(runtime, "FLUSH_EVERY", 8)
    amp = MixedPrecision("bf16", "cpu", instability_steps=5)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(TrainingInstabilityError, match="non-finite losses in a row"):
        for _ in range(16):
            with amp.autocast():
                loss = model(torch.randn(2, 4)).float().sum() * float("nan")
            amp.backward(loss)
            amp.step(optimizer)


def test_healthy_training_never_trips_the_net(monkeypatch):
    amp = MixedPrecision("fp16", "cpu", instability_steps=3)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    import amp_advisor.runtime as runtime

    monkeypatch.setattr(runtime, "FLUSH_EVERY", 4)
    for _ in range(20):
        with amp.autocast():
            loss = model(torch.randn(2, 4)).float().pow(2).mean()
        amp.backward(loss)
        amp.step(optimizer)
    assert amp.stats()["fallback"] is None and not amp.fell_back


def test_the_default_fallback_is_bf16_only_where_it_is_native(monkeypatch):
    import amp_advisor.runtime as runtime

    monkeypatch.setattr(runtime, "_native_bf16", lambda device_type: True)
    assert runtime.default_fallback(Dtype.FP16, "cuda") is Dtype.BF16
    assert runtime.default_fallback(Dtype.BF16, "cuda") is Dtype.FP32
    monkeypatch.setattr(runtime, "_native_bf16", lambda device_type: False)
    assert runtime.default_fallback(Dtype.FP16, "cpu") is Dtype.FP32
    with pytest.raises(BadInputError, match="on_instability must be one of raise, fallback"):
        MixedPrecision("fp16", "cpu", on_instability="ignore")
