"""Every fact about parallel strategies and their precision policies, stated once: the strategies,
what crosses the network under each (DDP's gradient all-reduce, FSDP2's reduce-scatter), which
backend can run which, and which training dtypes each admits. Plain data: no torch at import.

A *comm* names what the gradients are reduced in:
- DDP: "fp32" (no hook), "fp16" (`fp16_compress_hook`), "bf16" (`bf16_compress_hook`, NCCL only);
- FSDP2: `MixedPrecisionPolicy(param_dtype=<the trial's dtype>, reduce_dtype=<comm>)`, comm "fp32"
  or "bf16"; the parameters are all-gathered in the trial's dtype (fp32 for fp32/tf32).

fp32 is every decision's yardstick ("fp32 everywhere"): tune trains fp32 with its gradients reduced
in fp32, and searches the compressed reductions with the reduced precisions (bench measures any).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from ..dtypes import Dtype, torch_dtype, torch_dtype_name
from ..errors import BadInputError


class Parallel(str, Enum):
    DDP = "ddp"
    FSDP2 = "fsdp2"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> Parallel:
        try:
            return cls(text.lower())
        except ValueError:
            raise BadInputError(f"--parallel {text!r}: expected one of {', '.join(p.value for p in cls)}") from None


FULL_COMM = "fp32"  # gradients reduced in fp32: what every comparison with "fp32 everywhere" uses
COMMS: dict[Parallel, tuple[str, ...]] = {Parallel.DDP: ("fp32", "fp16", "bf16"), Parallel.FSDP2: ("fp32", "bf16")}
NCCL_ONLY_COMMS: dict[Parallel, tuple[str, ...]] = {Parallel.DDP: ("bf16",), Parallel.FSDP2: ()}
# The DDP hooks behind each comm, by their name in torch.distributed.algorithms.ddp_comm_hooks.default_hooks.
DDP_HOOKS = {"fp16": "fp16_compress_hook", "bf16": "bf16_compress_hook"}
DEFAULT_COLLECTIVE_TIMEOUT_S = 60.0  # a rank waits this long in a collective for a rank that stopped


def backend_for(device: str) -> str:
    """The process-group backend: NCCL between GPUs, gloo between CPUs."""
    return "nccl" if device.startswith("cuda") else "gloo"


def comms_for(parallel: Parallel, backend: str) -> tuple[tuple[str, ...], list[str]]:
    """The comm choices a backend can run, and a note for each left out."""
    allowed, notes = [], []
    for comm in COMMS[parallel]:
        if why := comm_rule(parallel, comm, backend):
            notes.append(f"{why}: left out")
            continue
        allowed.append(comm)
    return tuple(allowed), notes


def comm_rule(parallel: Parallel, comm: str, backend: str) -> str | None:
    """Why gradients cannot be reduced in `comm` under `parallel` on `backend`, or None."""
    if comm in NCCL_ONLY_COMMS[parallel] and backend != "nccl":
        return (f"{parallel} {comm} gradient all-reduce: its hook ({DDP_HOOKS[comm]}) needs the NCCL backend (CUDA "
                f"GPUs), and this run uses {backend}")
    return None


def dtype_rule(parallel: Parallel, dtype: Dtype) -> str | None:
    """Why `dtype` cannot be tuned under `parallel`, or None."""
    if parallel is Parallel.FSDP2 and dtype.needs_grad_scaler:
        return ("fp16 left out under fsdp2: its sharded gradients need a GradScaler whose inf check is agreed "
                "across ranks (ShardedGradScaler), which the trials do not run; bf16 needs no scaler")
    return None


def param_dtype(dtype: Dtype) -> Dtype:
    """FSDP2's param_dtype for a trial's dtype: the reduced precision itself, else fp32."""
    return dtype if dtype.autocasts else Dtype.FP32


def describe(parallel: Parallel, comm: str, dtype: Dtype) -> str:
    """The policy in words, e.g. "ddp, gradients all-reduced in fp16 (fp16_compress_hook)"."""
    if parallel is Parallel.DDP:
        how = f" ({DDP_HOOKS[comm]})" if comm in DDP_HOOKS else ""
        return f"ddp, gradients all-reduced in {comm}{how}"
    return f"fsdp2, parameters gathered in {param_dtype(dtype)}, gradients reduced in {comm}"


def ddp_hook(comm: str) -> Any:
    """The DDP communication hook for a comm (None for fp32)."""
    if comm not in DDP_HOOKS:
        return None
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    return getattr(default_hooks, DDP_HOOKS[comm])


def fsdp2_policy(dtype: Dtype, comm: str) -> Any:
    """FSDP2's MixedPrecisionPolicy for a trial's dtype and comm."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch_dtype(param_dtype(dtype)), reduce_dtype=torch_dtype(Dtype(comm)))


def fsdp2_policy_source(dtype: Dtype, comm: str, cls: str = "MixedPrecisionPolicy") -> str:
    """The same policy as source text, for snippets (`cls`: the name the snippet imported it as;
    FSDP version 1's MixedPrecision takes the same two arguments)."""
    return f"{cls}(param_dtype={torch_dtype_name(param_dtype(dtype))}, reduce_dtype={torch_dtype_name(Dtype(comm))})"
