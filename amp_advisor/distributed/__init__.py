"""Rank-aware trials under torchrun: every rank's worker trains the same trial, wrapped in DDP or
FSDP2, and rank 0 runs the search and records one result.

    policy.py   the strategies and their precision policies (facts; no torch at import)
    env.py      the rank this process is, from the environment torchrun sets; the launcher for --nproc-per-node
    group.py    in a worker: the process group of the workers, wrapping a model, agreeing across ranks
    ranks.py    in the launched processes: rank 0's RankWorkers (the Worker interface for the tuner)
                and the other ranks' follow() loop, speaking through the torchrun store
    merge.py    per-rank results -> the trial's result: the slowest rank's steps, the failing rank named
"""
