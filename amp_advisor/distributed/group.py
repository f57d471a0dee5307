"""In a trial worker: the process group the workers of all ranks form, and the model wrapped for
a trial (DDP with its comm hook, or FSDP2 with its MixedPrecisionPolicy).

The group is formed once per worker process, over the torchrun store under a prefix of its own
(one per generation of workers: after any rank's failure every worker is replaced and the new
ones form a fresh group). Its timeout bounds how long a rank waits in a collective for a rank
that stopped: that rank's error is then a communication failure, and the stopped rank is named.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from ..dtypes import Dtype
from .policy import Parallel, ddp_hook, fsdp2_policy

GROUP_ENV = "AMP_ADVISOR_GROUP"  # set by the rank's launcher on the worker it spawns


@dataclass(frozen=True)
class GroupInfo:
    rank: int
    world_size: int
    local_rank: int
    addr: str  # the torchrun store
    port: int
    prefix: str  # this generation's keys in the store
    backend: str
    timeout_s: float

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> GroupInfo | None:
        text = os.environ.get(GROUP_ENV)
        return cls(**json.loads(text)) if text else None


_formed: GroupInfo | None = None


def ensure_group() -> GroupInfo:
    """This worker's group, formed on first use. Raises if the worker was started without one."""
    global _formed
    if _formed is not None:
        return _formed
    info = GroupInfo.from_env()
    if info is None:
        raise RuntimeError("a distributed trial reached a worker started without a process group "
                           "(run it under torchrun, or through amp-advisor --nproc-per-node)")
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=info.timeout_s)
    store = dist.TCPStore(info.addr, info.port, is_master=False, timeout=timeout)
    if info.backend == "nccl":
        import torch

        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(info.backend, store=dist.PrefixStore(info.prefix, store), rank=info.rank,
                            world_size=info.world_size, timeout=timeout)
    _formed = info
    return info


def rank_device(device: str, info: GroupInfo) -> str:
    """The device of this rank: a GPU per local rank (torchrun's convention), the CPU as it is."""
    return f"cuda:{info.local_rank}" if device.startswith("cuda") else device


def agree(flag: bool) -> bool:
    """True when every rank says True: a decision that changes which collectives run (using a
    cached fp32 curve or training one) must be the same on all ranks."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def blocks(model: Any) -> list[Any]:
    """The model's natural block list: its ModuleList (or Sequential) with the most parameters
    and at least two children holding parameters; [] when it has none."""
    import torch

    best: list[Any] = []
    best_params = 0
    for module in model.modules():
        if isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)):
            children = [c for c in module.children() if any(True for _ in c.parameters())]
            params = sum(p.numel() for c in children for p in c.parameters())
            if len(children) >= 2 and params > best_params:
                best, best_params = children, params
    return best


def wrap(model: Any, parallel: Parallel, dtype: Dtype, comm: str, device: Any) -> Any:
    """`model` as the trial trains it: DDP with the comm's hook, or FSDP2 with `fully_shard` per
    block (then the root) under the policy for (dtype, comm)."""
    if parallel is Parallel.DDP:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        hook = ddp_hook(comm)
        if hook is not None:
            wrapped.register_comm_hook(None, hook)
        return wrapped
    from torch.distributed.fsdp import fully_shard

    policy = fsdp2_policy(dtype, comm)
    for block in blocks(model):
        fully_shard(block, mp_policy=policy)
    return fully_shard(model, mp_policy=policy)


def is_comm_failure(exc: BaseException) -> bool:
    """Whether an exception came from the process group (a peer died, or a collective timed out
    waiting for a rank that stopped), not from this rank's own work."""
    try:
        from torch.distributed import DistError

        if isinstance(exc, DistError):
            return True
    except ImportError:
        pass
    text = str(exc)
    return any(mark in text for mark in ("gloo/transport", "Connection reset by peer", "Connection closed by peer",
                                          "Timed out waiting", "NCCL error", "ProcessGroupNCCL", "ProcessGroupGloo"))
