"""The CPU's bf16 matmuls for fp32 as a lever (amp_advisor/levers/matmul.py): offered where the
probe calls bf16 fast, to fp32 only; a trial runs its matmuls so and is judged against strict
fp32; it is switched through the one place TF32 is (tf32.py), and restored."""

import dataclasses

import pytest
import torch

from amp_advisor import levers, tf32
from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.harness.measure import TrialRunner
from amp_advisor.harness.trial import Status, TrialSpec
from amp_advisor.recommendation import Recommendation
from amp_advisor.runtime import MixedPrecision
from amp_advisor.snippets import torch_loop
from tests.fakes import (
    CPUINFO_AVX512_BF16,
    CPUINFO_EPYC_AVX2,
    CPUINFO_SAPPHIRE_RAPIDS,
    WORKLOADS,
    fake_cpu_profile,
    fake_h100_profile,
)
from tests.test_snippets import rec_for

MATMUL = levers.get("matmul")


def mkldnn():
    return torch.backends.mkldnn.matmul.fp32_precision


def test_it_is_offered_where_bf16_is_fast_and_only_to_fp32():
    assert MATMUL.values(fake_cpu_profile(CPUINFO_SAPPHIRE_RAPIDS)) == ("off", "bf16")
    assert MATMUL.values(fake_cpu_profile(CPUINFO_AVX512_BF16)) == ("off", "bf16")
    assert MATMUL.values(fake_cpu_profile(CPUINFO_EPYC_AVX2)) == ("off",)  # bf16 emulated: 15-38x slower
    assert MATMUL.values(fake_h100_profile()) == ("off",)  # a GPU's counterpart is tf32, a dtype
    assert MATMUL.applies(Dtype.FP32) and not MATMUL.applies(Dtype.BF16)
    with pytest.raises(BadInputError, match="does not apply to bf16"):
        TrialSpec("w", Dtype.BF16, 4, levers={"matmul": "bf16"})
    with pytest.raises(BadInputError, match="not one of off on cuda"):
        MixedPrecision("fp32", "cuda", levers={"matmul": "bf16"})


def test_strict_fp32_inside_it_and_both_restored():
    before = mkldnn(), torch.backends.cuda.matmul.fp32_precision
    with tf32.cpu_bf16_scoped():
        assert mkldnn() == "bf16"
        with tf32.scoped(False):  # a trial's fp32 reference pass: strict fp32 on every backend
            assert mkldnn() == "ieee"
        assert mkldnn() == "bf16"
    assert (mkldnn(), torch.backends.cuda.matmul.fp32_precision) == before
    torch.get_float32_matmul_precision()  # one precision again: it does not raise


def test_a_trial_with_bf16_matmuls_is_judged_against_strict_fp32():
    before = mkldnn()
    spec = TrialSpec(str(WORKLOADS / "tiny.py"), Dtype.FP32, 8, steps=3, warmup_steps=1, compare_steps=4,
                     levers={"matmul": "bf16"})
    assert spec.compare_fp32 and not spec.is_reference
    result = TrialRunner().run(spec)
    assert result.status is Status.OK, result.error
    assert result.loss_rel_diff_vs_fp32 is not None and result.loss_rel_diff_vs_fp32 < 0.05
    assert mkldnn() == before


def test_the_recommendation_and_its_snippet_switch_it(tmp_path):
    rec = dataclasses.replace(rec_for(Dtype.FP32, accum=1), levers={"matmul": "bf16"})
    loaded = Recommendation.load(rec.save(tmp_path / "r.json"), check_hardware=False)
    assert loaded.levers == {"matmul": "bf16"}
    text = torch_loop(loaded)
    assert tf32.CPU_BF16_SOURCE_LINES[0] in text and "with bf16 matmuls" in text
    before = mkldnn()
    try:
        exec(compile(text[: text.index("for step, batch")], "<snippet>", "exec"), {"model": torch.nn.Linear(2, 2)})
        assert mkldnn() == "bf16"
        torch.backends.mkldnn.matmul.fp32_precision = before
        loaded.prepare(torch.nn.Linear(2, 2), device_type="cpu")
        assert mkldnn() == "bf16"
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
