"""Which rank this process is, from the environment torchrun sets, and the launcher behind
`--nproc-per-node` (torch's own elastic launcher: the same agent torchrun runs)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import BadInputError
from ..harness.memory import memory_available_bytes

REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankEnv:
    rank: int
    world_size: int
    local_rank: int
    addr: str  # the store torchrun's agent hosts
    port: int
    run_id: str  # unique per launch (and per restart of it)

    @property
    def is_coordinator(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> RankEnv | None:
        """None outside torchrun (or any launcher setting torch.distributed's env:// variables)."""
        if not all(environ.get(name) for name in REQUIRED):
            return None
        try:
            return cls(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", "0")),
                       environ["MASTER_ADDR"], int(environ["MASTER_PORT"]),
                       f"{environ.get('TORCHELASTIC_RUN_ID', 'run')}.{environ.get('TORCHELASTIC_RESTART_COUNT', '0')}")
        except ValueError:
            shown = ", ".join(f"{n}={environ.get(n)!r}" for n in (*REQUIRED, "LOCAL_RANK"))
            raise BadInputError(f"the torch.distributed environment is malformed ({shown}): expected integers "
                                "for the ranks and the port, as torchrun sets them") from None


def rank_env(parallel: str | None, command: str) -> RankEnv | None:
    """This process's rank for a command run with --parallel (None on one process). --parallel
    needs a launcher; a launcher without --parallel would run the command once per rank."""
    env = RankEnv.from_environ()
    if parallel is not None and env is None:
        raise BadInputError(f"--parallel {parallel} runs one process per rank: start it with `torchrun "
                            f"--nproc_per_node N -m amp_advisor {command} ... --parallel {parallel}`, or pass "
                            f"--nproc-per-node N to `amp-advisor {command}`")
    if parallel is None and env is not None and env.world_size > 1:
        raise BadInputError(f"running under torchrun with {env.world_size} ranks but without --parallel: pass "
                            "--parallel ddp or --parallel fsdp2 (each rank would otherwise run on its own)")
    return env if parallel is not None else None


def threads_per_rank(nproc: int) -> int:
    """OpenMP threads per rank on the CPU: the cores shared out (torchrun's own default is 1)."""
    return max(1, (os.cpu_count() or 1) // nproc)


# A rank is two Python processes with torch imported (the command and its trial worker: about
# 0.22 GiB each at rest on a CPU build, measured), before the model: budget 1 GiB each.
RANK_MEMORY_BYTES = 2**30
RANKS_PER_CPU = 4  # more ranks than this per core only time-share: no measurement means anything


def check_rank_count(nproc: int, cpus: int | None = None, available_bytes: int | None = None) -> None:
    """Refuse, before any process starts, a rank count this machine cannot hold: at least 1, at
    most RANKS_PER_CPU per CPU this process may use, and RANK_MEMORY_BYTES each of the memory
    available now (once forked, 1000 ranks exhaust the process table before they fail)."""
    if nproc < 1:
        raise BadInputError(f"--nproc-per-node {nproc}: expected a number of processes >= 1")
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if nproc > RANKS_PER_CPU * cpus:
        raise BadInputError(f"--nproc-per-node {nproc}: this machine has {cpus} CPUs, and more than "
                            f"{RANKS_PER_CPU * cpus} ranks ({RANKS_PER_CPU} per CPU) only take turns; use fewer")
    if available_bytes is None:
        available_bytes = memory_available_bytes()
    if available_bytes is not None and nproc * RANK_MEMORY_BYTES > available_bytes:
        need = nproc * RANK_MEMORY_BYTES / 2**30
        raise BadInputError(f"--nproc-per-node {nproc}: {nproc} ranks need about {need:.0f} GiB before any model "
                            "(two processes with torch each), and "
                            f"{available_bytes / 2**30:.1f} GiB is available; use at most "
                            f"{max(1, available_bytes // RANK_MEMORY_BYTES)}")


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `python -m amp_advisor ARGV` as `nproc` ranks on this node through torch's elastic
    launcher (what `torchrun --standalone --nproc_per_node N` does); the exit code of the run:
    rank 0's when it failed, else the first failing rank's, else 0."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_rank_count(nproc)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"amp-advisor-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "amp_advisor", *argv)
    except ChildFailedError as exc:
        codes = {rank: failure.exitcode for rank, failure in exc.failures.items()}
        return codes.get(0) or next(iter(codes.values()), 1) or 1
    return 0


def resolve_device(device: str) -> str:
    """--device auto as a launcher resolves it before any worker is up: a GPU per rank if there
    is one (each rank then takes the GPU of its local rank), else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"
