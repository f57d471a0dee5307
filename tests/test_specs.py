import pytest

from amp_advisor.dtypes import Dtype
from amp_advisor.errors import AdvisorError
from amp_advisor.hardware.specs import find_gpu_spec, known_gpu_specs, parse_gpu_specs

# The devices the issue requires, by the name each reports to torch/NVML.
REQUIRED = {
    "Tesla V100-SXM2-32GB": "v100-sxm2",
    "Tesla V100-PCIE-16GB": "v100-pcie",
    "Tesla T4": "t4",
    "NVIDIA A10": "a10",
    "NVIDIA A100-SXM4-40GB": "a100",
    "NVIDIA A100 80GB PCIe": "a100",
    "NVIDIA L4": "l4",
    "NVIDIA L40S": "l40s",
    "NVIDIA GeForce RTX 3090": "rtx-3090",
    "NVIDIA GeForce RTX 4090": "rtx-4090",
    "NVIDIA H100 80GB HBM3": "h100-sxm",
    "NVIDIA H100 PCIe": "h100-pcie",
    "NVIDIA H200": "h200",
    "NVIDIA B200": "b200",
    "AMD Instinct MI250X / MI250": "mi250x",
    "AMD Instinct MI300X": "mi300x",
}


@pytest.mark.parametrize("name, profile_id", REQUIRED.items())
def test_required_devices_are_known(name, profile_id):
    spec = find_gpu_spec(name)
    assert spec is not None and spec.profile_id == profile_id


@pytest.mark.parametrize(
    "name",
    ["NVIDIA A10G", "NVIDIA L40", "NVIDIA GeForce RTX 3090 Ti", "NVIDIA GeForce RTX 4090 D", "Tesla V100S-PCIE-32GB"],
)
def test_near_miss_names_do_not_borrow_another_cards_figures(name):
    assert find_gpu_spec(name) is None


def test_every_profile_has_a_source_and_sane_dense_figures():
    for spec in known_gpu_specs():
        assert spec.source, spec.profile_id
        fp32 = spec.tflops[Dtype.FP32]
        assert fp32 and fp32 > 0
        for dtype in (Dtype.FP16, Dtype.BF16, Dtype.TF32):
            value = spec.tflops[dtype]
            # reduced precision never runs slower than fp32 where a fast path is listed
            assert value is None or value >= fp32, (spec.profile_id, dtype)
        fp8, bf16 = spec.tflops[Dtype.FP8], spec.tflops[Dtype.BF16]
        if fp8 is not None and bf16 is not None:
            # fp8 doubles bf16 (the L40S datasheet itself rounds: 733 vs 2 x 362.05)
            assert fp8 == pytest.approx(2 * bf16, rel=0.02), spec.profile_id


def test_h100_sxm_figures_are_dense_not_sparse():
    spec = find_gpu_spec("NVIDIA H100 80GB HBM3")
    assert spec.tflops[Dtype.BF16] == pytest.approx(989.5)
    assert spec.tflops[Dtype.FP8] == pytest.approx(1979.0)


def test_unknown_name_is_none():
    assert find_gpu_spec("Some Future GPU 9000") is None
    assert find_gpu_spec(None) is None


def test_malformed_spec_data_is_reported_with_the_entry():
    with pytest.raises(AdvisorError, match="gpu #1 .*broken"):
        parse_gpu_specs({"schema_version": 1, "gpu": [{"id": "broken", "name": "x", "match": ["("],
                                                       "peak_tflops": {"fp32": 1}, "source": "s"}]})
    with pytest.raises(AdvisorError, match="schema_version"):
        parse_gpu_specs({"schema_version": 99})
    with pytest.raises(AdvisorError, match="nope"):
        parse_gpu_specs({"schema_version": 1, "gpu": [{"id": "x", "name": "x", "match": ["x"],
                                                       "peak_tflops": {"nope": 1}, "source": "s"}]})
