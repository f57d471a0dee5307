"""`amp-advisor show` for a recommendation tuned under --parallel: the distributed section in
every format, and the real objects built from the snippets (a 1-rank gloo group stands in for
torchrun's; the frameworks where installed)."""

import dataclasses
import json
import socket

import pytest

from amp_advisor import snippets
from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.recommendation import Distributed, GradScalerConfig, Measured, Recommendation


def rec_for(dtype: Dtype, parallel: str, comm: str, accum: int = 2, device: str = "cpu") -> Recommendation:
    rec = Recommendation(
        dtype=dtype, batch_size=4, grad_accumulation_steps=accum,
        scaler=GradScalerConfig(enabled=dtype is Dtype.FP16, init_scale=2.0**12, growth_interval=500),
        tf32=False, device=device, hardware={"name": "test device", "kind": device.split(":")[0]},
        measured=Measured(100.0, 1.2, 2**30), why="test", workload="model.py",
    )
    backend = "nccl" if device.startswith("cuda") else "gloo"
    return dataclasses.replace(rec, distributed=Distributed.of(parallel, 2, backend, comm, dtype, 4, accum))


CASES = [(Dtype.BF16, "ddp", "fp16"), (Dtype.FP32, "ddp", "fp32"), (Dtype.FP16, "ddp", "fp16"),
         (Dtype.BF16, "fsdp2", "fp32"), (Dtype.BF16, "fsdp2", "bf16"), (Dtype.FP32, "fsdp2", "bf16")]
IDS = [f"{d}-{p}-{c}" for d, p, c in CASES]


@pytest.fixture
def one_rank_group(monkeypatch):
    """The environment torchrun gives a 1-rank job, and the group torn down afterwards."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                        "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_the_section_follows_from_the_policy_facts():
    d = rec_for(Dtype.BF16, "fsdp2", "fp32").distributed
    assert (d.global_batch, d.param_dtype, d.reduce_dtype, d.comm_hook) == (16, "bf16", "fp32", None)
    d = rec_for(Dtype.FP16, "ddp", "fp16").distributed
    assert (d.comm_hook, d.param_dtype) == ("fp16_compress_hook", None)
    assert rec_for(Dtype.FP32, "fsdp2", "bf16").distributed.param_dtype == "fp32"


@pytest.mark.parametrize("dtype, parallel, comm", CASES, ids=IDS)
def test_json_and_toml_round_trip_with_the_section(dtype, parallel, comm, tmp_path):
    rec = rec_for(dtype, parallel, comm)
    assert Recommendation.from_dict(json.loads(snippets.to_json(rec))) == rec
    path = tmp_path / "rec.toml"
    path.write_text(snippets.to_toml(rec))
    assert Recommendation.load(path, check_hardware=False) == rec


@pytest.mark.parametrize("change, message", [
    ({"parallel": "horovod"}, "expected ddp or fsdp2"),
    ({"comm": "fp8"}, "distributed.comm must be one of"),
    ({"global_batch": 17}, "must follow from the rest"),
    ({"comm_hook": "__import__('os').system('x')"}, "must follow from the rest"),
    ({"backend": "mpi"}, "backend must be gloo or nccl"),
])
def test_a_section_that_does_not_fit_is_refused(change, message, tmp_path):
    data = rec_for(Dtype.BF16, "ddp", "fp16").to_dict()
    data["distributed"].update(change)
    with pytest.raises(BadInputError, match=message):
        Recommendation.from_dict(data)


def test_older_schemas_still_load():
    data = rec_for(Dtype.BF16, "ddp", "fp16").to_dict()
    del data["distributed"]
    data["schema_version"] = 3
    assert Recommendation.from_dict(data).distributed is None


@pytest.mark.parametrize("dtype, parallel, comm", CASES, ids=IDS)
def test_the_torch_loop_trains_under_the_tuned_wrapper(dtype, parallel, comm, one_rank_group):
    import torch

    rec = rec_for(dtype, parallel, comm)
    code = snippets.torch_loop(rec)
    setup, loop = code[: code.index("for step, batch")], code[code.index("for step, batch"):]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    namespace: dict = {"model": model}
    exec(compile(setup, "<snippet>", "exec"), namespace)
    wrapped = namespace["model"]
    if parallel == "ddp":
        assert type(wrapped).__name__ == "DistributedDataParallel"
        assert (wrapped._comm_hooks or [None])[0] is not None if comm != "fp32" else True
    else:
        assert type(wrapped).__name__.startswith("FSDP")
    calls = []
    if parallel == "ddp" and comm != "fp32":  # count the all-reduces: one per optimizer step with accumulation
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        def counting(state, bucket):
            calls.append(1)
            return default_hooks.fp16_compress_hook(state, bucket)

        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        wrapped.register_comm_hook(None, counting)
        namespace["model"] = wrapped
    batches = [(torch.randn(4, 8), torch.randn(4, 1)) for _ in range(4)]
    namespace.update(loader=batches, optimizer=torch.optim.SGD(namespace["model"].parameters(), lr=0.01),
                     loss_fn=lambda m, b: torch.nn.functional.mse_loss(m(b[0]).float(), b[1]))
    exec(compile(loop, "<snippet>", "exec"), namespace)
    assert torch.isfinite(namespace["loss"])
    if calls:
        assert len(calls) == len(batches) // rec.grad_accumulation_steps  # no_sync on the other micro-batches


def test_deepspeed_carries_the_global_batch_and_the_comm_dtype():
    config = json.loads(snippets.deepspeed(rec_for(Dtype.BF16, "ddp", "fp16")))
    assert config["train_batch_size"] == 16 and config["communication_data_type"] == "fp16"



def executed(code: str) -> dict:
    """Run a snippet as a user would paste it; its names."""
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace

@pytest.mark.parametrize("dtype, parallel, comm", CASES, ids=IDS)
def test_lightning_builds_the_strategy(dtype, parallel, comm, tmp_path, monkeypatch):
    pytest.importorskip("lightning")
    monkeypatch.chdir(tmp_path)
    rec = rec_for(dtype, parallel, comm)
    code = snippets.lightning(rec)
    namespace = executed(code)
    strategy = namespace["strategy"]
    if parallel == "ddp":
        trainer = namespace["trainer"]
        assert trainer.strategy is strategy and trainer.num_devices == 2
        assert (strategy._ddp_comm_hook is None) == (comm == "fp32")
    else:
        import torch

        mp = strategy.mixed_precision
        assert (mp.param_dtype, mp.reduce_dtype) == ({"bf16": torch.bfloat16}.get(str(dtype), torch.float32),
                                                     {"bf16": torch.bfloat16}.get(comm, torch.float32))
        assert "trainer" not in namespace and "runs on GPUs only" in code  # Lightning's FSDP needs a GPU


@pytest.fixture
def fresh_accelerate_state():
    accelerate = pytest.importorskip("accelerate")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield accelerate
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("dtype, parallel, comm", CASES, ids=IDS)
def test_accelerate_builds_the_handlers_and_plugin(dtype, parallel, comm, fresh_accelerate_state):
    import torch

    rec = rec_for(dtype, parallel, comm)
    namespace = executed(snippets.accelerate(rec))
    accelerator = namespace["accelerator"]
    if parallel == "ddp":
        hook = accelerator.ddp_handler.comm_hook.value if accelerator.ddp_handler else "no"
        assert hook == ("no" if comm == "fp32" else comm)
    else:
        plugin = namespace["fsdp_plugin"]
        policy = plugin.mixed_precision_policy
        assert plugin.fsdp_version == 2
        assert policy.reduce_dtype == (torch.bfloat16 if comm == "bf16" else torch.float32)
        assert policy.param_dtype == (torch.bfloat16 if dtype is Dtype.BF16 else torch.float32)


@pytest.mark.parametrize("dtype, parallel, comm", CASES, ids=IDS)
def test_transformers_builds_the_training_arguments(dtype, parallel, comm, tmp_path, monkeypatch,
                                                    fresh_accelerate_state, one_rank_group):
    """(A DDP backend makes the arguments form the process group: torchrun's 1-rank environment.)"""
    pytest.importorskip("transformers")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # accelerate sets them: restored after the test
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    rec = rec_for(dtype, parallel, comm)
    code = snippets.hf_trainer(rec)
    namespace = executed(code)
    args = namespace["args"]
    if parallel == "ddp":
        assert args.ddp_backend == "gloo"
        assert ("no comm-hook setting" in code) == (comm != "fp32")
    else:
        assert args.fsdp_config["version"] == 2
        assert ("needs Accelerate's FullyShardedDataParallelPlugin" in code) == (
            rec.distributed.reduce_dtype != rec.distributed.param_dtype)
