"""One rank of bench_tune_distributed.py's oracle (run under torchrun): bench_tune.py's plain
torch.amp training step, the model wrapped in torch's DDP or FSDP2 as a user would write it, timed
with torch.utils.benchmark, every rank the same number of steps. Prints, on rank 0, a JSON list of
[dtype, batch, comm, samples/s]."""

import json
import statistics
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from bench_tune import AUTOCAST, load_module, oracle_step
from torch.utils.benchmark import Timer

spec = json.loads(sys.argv[1])
dist.init_process_group("gloo")
world, rank = dist.get_world_size(), dist.get_rank()
module = load_module(Path(spec["workload"]))
TORCH = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def shard_units(model):
    """The ModuleList/Sequential holding the most parameters over >= 2 children with parameters."""
    best, most = [], 0
    for m in model.modules():
        if isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential)):
            kids = [c for c in m.children() if sum(p.numel() for p in c.parameters())]
            n = sum(p.numel() for c in kids for p in c.parameters())
            if len(kids) >= 2 and n > most:
                best, most = kids, n
    return best


def wrapper(comm):
    def wrap(model, dtype):
        if spec["parallel"] == "ddp":
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            model = torch.nn.parallel.DistributedDataParallel(model)
            if comm == "fp16":
                model.register_comm_hook(None, default_hooks.fp16_compress_hook)
            return model
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=TORCH[dtype] if dtype in AUTOCAST else torch.float32,
                                      reduce_dtype=TORCH[comm])
        for unit in shard_units(model):
            fully_shard(unit, mp_policy=policy)
        return fully_shard(model, mp_policy=policy)

    return wrap


def make_step(dtype, batch, comm):
    return oracle_step(module, dtype, batch, wrap=wrapper(comm))


def rate(step, batch):
    step()
    dist.barrier()
    seconds = Timer("step()", globals={"step": step}, num_threads=torch.get_num_threads()).timeit(spec["steps"]).mean
    slowest = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # a step is the slowest rank's
    return world * batch / float(slowest)


configs = [(d, b, c) for d in spec["dtypes"] for b in spec["batches"]
           for c in (spec["comms"][:1] if d == "fp32" else spec["comms"])]
smallest = min(spec["batches"])
steps = {k: make_step(*k) for k in configs if k[1] == smallest}
first = {k: rate(s, k[1]) for k, s in steps.items()}
fp32_rate = first[("fp32", smallest, spec["comms"][0])]
for k in configs:
    if k[1] != smallest and not (k[0] != "fp32" and first[(k[0], smallest, k[2])] < spec["hopeless"] * fp32_rate):
        steps[k] = make_step(*k)
rates = {k: [] for k in steps}
keys = list(steps)
for r in range(spec["rounds"]):
    for k in (keys if r % 2 == 0 else keys[::-1]):
        rates[k].append(rate(steps[k], k[1]))
out = {k: statistics.median(v) for k, v in rates.items()}
if rank == 0:
    print(json.dumps([[*k, v] for k, v in out.items()]))
dist.destroy_process_group()
