import json

import pytest

from amp_advisor.errors import BadInputError
from amp_advisor.hardware import probe
from amp_advisor.hardware.model import HardwareProfile
from tests.fakes import GPU_TABLE, FakeCuda, FakeNvmlConfig, nvml_reader
from tests.test_probe_gpu import SyntheticGpuRunner


def sample_profile(bench=False):
    gpus = [GPU_TABLE["T4"], GPU_TABLE["H100"]]
    return probe("all", cuda=FakeCuda(gpus), nvml=nvml_reader(FakeNvmlConfig(gpus)),
                 bench=bench, bench_seconds=0.2, runner_for=SyntheticGpuRunner)


@pytest.mark.parametrize("bench", [False, True])
def test_json_round_trip_is_lossless(bench):
    profile = sample_profile(bench)
    text = json.dumps(profile.to_dict())
    again = HardwareProfile.from_dict(json.loads(text))
    assert again == profile


def test_a_newer_schema_is_refused_with_a_clear_message():
    doc = sample_profile().to_dict()
    doc["schema_version"] = 2
    with pytest.raises(BadInputError, match="schema_version 2.*reads version 1"):
        HardwareProfile.from_dict(doc)


def test_a_malformed_document_is_bad_input():
    doc = sample_profile().to_dict()
    del doc["devices"][0]["dtypes"]
    with pytest.raises(BadInputError, match="malformed"):
        HardwareProfile.from_dict(doc)


def test_device_lookup():
    profile = sample_profile()
    assert profile.device("cuda:1").name == "NVIDIA H100 80GB HBM3"
    with pytest.raises(KeyError, match="cuda:7"):
        profile.device("cuda:7")
