"""fp32 islands as a lever (levers/islands.py): one home from the repair to the trial, the
recommendation, MixedPrecision and the snippets, and what was written before it still read."""

import dataclasses

import pytest
import torch

from amp_advisor import levers
from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.harness.trial import TrialSpec
from amp_advisor.runtime import MixedPrecision
from amp_advisor.tuning.record import Role
from amp_advisor.tuning.space import Candidate
from tests.fakes import GPU_RATES, SyntheticWorker, fake_h100_profile, run_tuner


def test_the_islands_lever_is_declared_first_and_never_searched():
    lever = levers.get("islands")
    assert lever.stage is levers.Stage.ISLANDS and levers.registered()[0] is lever
    assert lever.explore == "repair" and lever.values(fake_h100_profile()) == (levers.OFF,)
    assert lever.applies(Dtype.BF16) and lever.applies(Dtype.FP16) and not lever.applies(Dtype.FP32)
    assert levers.problems({"islands": "encoder.attn,head"}, Dtype.BF16, "cpu") == []
    (why,) = levers.problems({"islands": 'head"]); import os #'}, Dtype.BF16, "cpu")
    assert why.startswith("levers.islands:") and "expected module names" in why
    assert levers.problems({"islands": "head"}, Dtype.FP32, "cpu") == ["levers.islands=head does not apply to fp32"]


def test_a_candidate_holds_its_islands_as_a_lever_and_its_plain_form_keeps_them():
    repaired = Candidate(Dtype.BF16, 8).with_islands(("encoder.attn", "head"))
    assert repaired.levers == (("islands", "encoder.attn,head"),)
    assert repaired.fp32_modules == ("encoder.attn", "head") and "+fp32[encoder.attn,head]" in repaired.label
    compiled = repaired.with_lever("compile", "default")
    assert compiled.plain == repaired  # a speed lever's gain is measured against the repaired configuration
    assert compiled.with_islands() == Candidate(Dtype.BF16, 8, levers=(("compile", "default"),))
    assert Candidate.from_dict(repaired.to_dict()) == repaired
    # a run directory written before the islands were a lever: its records are still read
    old = {"dtype": "bf16", "batch_size": 8, "init_scale": 0.0, "growth_interval": 0, "fp32_modules": ["head"]}
    assert Candidate.from_dict(old) == Candidate(Dtype.BF16, 8).with_islands(("head",))
    spec = TrialSpec.from_dict({"workload": "w.py", "dtype": "bf16", "batch_size": 8, "fp32_modules": ["head"]})
    assert spec.levers == (("islands", "head"),) and spec.fp32_modules == ("head",)


def test_mixed_precision_installs_the_islands_lever_on_the_model():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    amp = MixedPrecision("bf16", "cpu", levers={"islands": "1"})
    prepared = amp.prepare(model)
    assert prepared is model and amp.islands == ["1"]
    with amp.autocast():
        assert model(torch.randn(2, 4)).dtype == torch.float32  # the last Linear is an island
    with pytest.raises(BadInputError, match="has no module named 'head'"):
        MixedPrecision("bf16", "cpu", levers={"islands": "head"}).prepare(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_the_repair_runs_its_trial_with_the_islands_lever_and_recommends_it(tmp_path):
    worker = SyntheticWorker(GPU_RATES, loss_diff={Dtype.FP16: 0.5, Dtype.BF16: 0.5},
                             culprit={Dtype.FP16: "encoder.attn"})
    result, _ = run_tuner(tmp_path, worker, strategy="grid", batch_sizes=(32, 64))
    (repair,) = [r for r in result.records if r.role is Role.REPAIR]
    assert dict(repair.result.spec.levers) == {"islands": "encoder.attn"}
    assert result.recommendation.levers == {"islands": "encoder.attn"}


def test_skip_lever_islands_leaves_a_numerics_failure_unrepaired_and_says_so(tmp_path):
    worker = SyntheticWorker(GPU_RATES, loss_diff={Dtype.FP16: 0.5, Dtype.BF16: 0.5},
                             culprit={Dtype.FP16: "encoder.attn"})
    result, _ = run_tuner(tmp_path, worker, strategy="grid", batch_sizes=(32, 64), skip_levers=("islands",))
    assert worker.diagnosed == [] and not [r for r in result.records if r.role is Role.REPAIR]
    assert any("not repaired with fp32 islands (--skip-lever islands)" in note for note in result.notes)
    assert result.recommendation.dtype not in (Dtype.FP16, Dtype.BF16) and not result.recommendation.levers


def test_a_recommendation_with_islands_states_them_in_every_snippet():
    from amp_advisor import snippets
    from tests.test_snippets import rec_for

    rec = dataclasses.replace(rec_for(Dtype.BF16), levers={"islands": "encoder.attn"})
    for fmt in ("torch", "lightning", "accelerate", "hf-trainer"):
        assert "keep_in_fp32(" in snippets.render(rec, fmt) and '"encoder.attn"' in snippets.render(rec, fmt)
