"""The launched processes of a distributed run (one per rank, under torchrun), and how they talk.

Rank 0 runs the search. Its tuner sees a RankWorkers, which has the Worker interface: each trial
is published in the torchrun store as a numbered command; every rank's launcher runs it in its
own worker (harness/worker.py: the watchdog, the isolation) and puts its result back; rank 0
merges them (merge.py) into the one result it records. The other ranks run follow(): wait for a
command, run it, answer, until rank 0 says stop. Nothing is written to disk except by rank 0.

Faults: a rank's result that is a failure stops the trial on every rank (rank 0 publishes an
abort; each launcher kills its worker), and the next command carries a new generation: every
worker is replaced and the new ones form a fresh process group. A launcher that stops answering
(its heartbeat, bumped by a thread of its own, stays unchanged for STALE_S as rank 0 sees it)
ends the run with one clear error; `--resume` continues it.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from ..diagnosis import DiagnoseSpec, Diagnosis
from ..errors import AdvisorError
from ..harness.trial import Status, TrialResult, TrialSpec
from ..harness.worker import Worker, calibrate
from .env import RankEnv, resolve_device
from .group import GROUP_ENV, GroupInfo
from .merge import RAN, RankOutcome, merge, needs_new_group
from .policy import backend_for

POLL_S = 0.05
ABORT_GRACE_S = 1.0  # after a rank's failure, this long for the rank that caused it to report first
HEARTBEAT_S = 1.0
STALE_S = 120.0  # a rank's launcher silent this long is gone
STORE_TIMEOUT_S = 60.0
STOP_KEY = "stop"  # set by rank 0 when it ends, however it ends: every rank stops

EventFn = Callable[[dict[str, Any]], None]


class DistributedError(AdvisorError):
    """A rank's launcher stopped answering: the run cannot go on (continue it with --resume)."""


class Control:
    """The command channel: JSON values under keys of this launch in torchrun's store."""

    def __init__(self, env: RankEnv) -> None:
        self.env = env
        self.prefix = f"amp-advisor/{env.run_id}"
        self.store = self._connect()
        self._seen: dict[int, tuple[str | None, float]] = {}  # rank -> (its last beat, when it changed here)

    def _connect(self) -> Any:
        import torch.distributed as dist

        store = dist.TCPStore(self.env.addr, self.env.port, is_master=False,
                              timeout=datetime.timedelta(seconds=STORE_TIMEOUT_S))
        return dist.PrefixStore(self.prefix + "/control", store)

    def put(self, key: str, value: Any) -> None:
        self.store.set(key, json.dumps(value))

    def has(self, key: str) -> bool:
        return self.store.check([key])

    def get(self, key: str) -> Any:
        return json.loads(self.store.get(key))

    def start_heartbeat(self) -> None:
        """A counter this launcher bumps every HEARTBEAT_S from a thread of its own (on its own
        connection): alive while the process is, whatever the launcher is busy with."""
        store, key = self._connect(), f"beat/{self.env.rank}"

        def beat() -> None:
            count = 0
            while True:
                count += 1
                try:
                    store.set(key, str(count))
                except Exception:  # noqa: BLE001 - the store is gone: the job is ending
                    return
                time.sleep(HEARTBEAT_S)

        threading.Thread(target=beat, name="amp-advisor-heartbeat", daemon=True).start()

    def silent_for(self, rank: int, since: float) -> float:
        """Seconds (on this process's clock: nodes' clocks may differ) since `rank`'s heartbeat last
        changed, or since `since` (time.monotonic()) if it has not changed since then."""
        key = f"beat/{rank}"
        value = self.store.get(key).decode() if self.has(key) else None
        last, changed = self._seen.get(rank, (None, since))
        if value != last:
            self._seen[rank] = (value, time.monotonic())
            return 0.0
        return time.monotonic() - max(changed, since)

    def group(self, generation: int, backend: str, timeout_s: float) -> GroupInfo:
        return GroupInfo(rank=self.env.rank, world_size=self.env.world_size, local_rank=self.env.local_rank,
                         addr=self.env.addr, port=self.env.port, prefix=f"{self.prefix}/gen{generation}",
                         backend=backend, timeout_s=timeout_s)


class _Stopping:
    """When one trial stops on every rank: some rank failed ABORT_GRACE_S ago (so that the rank
    that caused it reports before the others are stopped); the abort is then published for the
    other ranks. Rank 0's worker asks it while running (should_abort), rank 0 while it waits."""

    def __init__(self, control: Control, number: int, peers: range) -> None:
        self.control, self.number, self.peers = control, number, peers
        self.local: TrialResult | None = None  # rank 0's own result, once it has it
        self.stopped_here = False  # rank 0's trial was stopped while it still ran
        self._first_failure: float | None = None

    def __call__(self) -> bool:
        stop = self._stop()
        self.stopped_here |= stop and self.local is None
        return stop

    def _stop(self) -> bool:
        if self.control.has(f"abort/{self.number}"):
            return True
        failed = self.local is not None and self.local.status not in RAN
        for rank in self.peers:
            key = f"res/{self.number}/{rank}"
            if not failed and self.control.has(key):
                result = self.control.get(key).get("result")
                failed = result is not None and Status(result.get("status")) not in RAN
        if not failed:
            return False
        if self._first_failure is None:
            self._first_failure = time.monotonic()
        if time.monotonic() - self._first_failure < ABORT_GRACE_S:
            return False
        self.control.put(f"abort/{self.number}", True)
        return True


def _worker(control: Control, generation: int, device: str, timeout_s: float, on_event: EventFn | None) -> Worker:
    group = control.group(generation, backend_for(device), timeout_s)
    return Worker(on_event=on_event, env={GROUP_ENV: group.to_env()}, patience_s=timeout_s)


class RankWorkers:
    """Rank 0's side: the Worker interface (spawn, wait_ready, check, calibrate, run, diagnose,
    close) over every rank's worker."""

    def __init__(self, env: RankEnv, device: str, parallel: str, collective_timeout_s: float, *,
                 on_event: EventFn | None = None) -> None:
        self.env, self.device, self.timeout_s, self.on_event = env, device, collective_timeout_s, on_event
        self.parallel = parallel
        self.control = Control(env)
        self.control.start_heartbeat()  # the other ranks stop if rank 0 goes silent
        self.generation = 0
        self.local = _worker(self.control, 0, device, collective_timeout_s, on_event)
        self._command = 0

    @property
    def world_size(self) -> int:
        """The ranks every trial runs on (Worker.world_size is 1)."""
        return self.env.world_size

    # the Worker interface -------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.local.alive

    @property
    def ready(self) -> dict[str, Any] | None:
        return self.local.ready

    def spawn(self) -> None:
        self.local.spawn()

    def wait_ready(self) -> dict[str, Any]:
        return self.local.wait_ready()

    def close(self) -> None:
        """Stop every rank: the next command says so, and STOP_KEY ends a trial still running
        there (rank 0 interrupted mid-trial)."""
        try:
            self.control.put(STOP_KEY, True)
            self._publish({"kind": "stop"})
        except Exception:  # noqa: BLE001 - the store may be gone already (torchrun tearing down)
            pass
        self.local.close()

    def check(self, workload: str, timeout_s: float | None = None) -> str | None:
        """The workload checked in every rank's worker (on another node the file must be there too)."""
        number = self._publish({"kind": "check", "workload": workload, "timeout_s": timeout_s})
        problem = self.local.check(workload, timeout_s)
        answers = self._collect(number, lambda: False)
        problems = [(0, problem)] + [(r, a.get("error")) for r, a in sorted(answers.items())]
        for rank, why in problems:
            if why:
                return f"rank {rank}: {why}" if rank else why
        return None

    def calibrate(self, workload: str, batch_size: int, device: str) -> float | None:
        """As Worker.calibrate, on every rank."""
        return calibrate(self.run, workload, batch_size, device, self.parallel)

    def diagnose(self, spec: DiagnoseSpec) -> Diagnosis:
        """The numerics X-ray runs on rank 0 alone: a module's numerics do not depend on the wrapper."""
        return self.local.diagnose(spec)

    def run(self, spec: TrialSpec) -> TrialResult:
        """One trial on every rank; the merged result."""
        number = self._publish({"kind": "trial", "spec": spec.to_dict()})
        stopping = _Stopping(self.control, number, self._peers())
        stopping.local = self.local.run(spec, should_abort=stopping)
        answers = self._collect(number, stopping)
        outcomes = [RankOutcome(0, stopping.local, aborted=stopping.stopped_here)]
        outcomes += [RankOutcome(rank, TrialResult.from_dict(a["result"]), bool(a.get("aborted")))
                     for rank, a in sorted(answers.items())]
        if needs_new_group(outcomes):
            self._new_generation()
        return merge(spec, outcomes, self.timeout_s)

    # inside ---------------------------------------------------------------------------------
    def _publish(self, command: dict[str, Any]) -> int:
        self._command += 1
        self.control.put(f"cmd/{self._command}", {**command, "generation": self.generation})
        return self._command

    def _peers(self) -> range:
        return range(1, self.env.world_size)

    def _collect(self, number: int, poll: Callable[[], bool]) -> dict[int, dict[str, Any]]:
        """Every other rank's answer to a command, waiting as long as their launchers are alive."""
        answers: dict[int, dict[str, Any]] = {}
        since = time.monotonic()
        while len(answers) < self.env.world_size - 1:
            poll()
            for rank in self._peers():
                key = f"res/{number}/{rank}"
                if rank not in answers and self.control.has(key):
                    answers[rank] = self.control.get(key)
            if len(answers) < self.env.world_size - 1:
                self._check_alive([r for r in self._peers() if r not in answers], since)
                time.sleep(POLL_S)
        return answers

    def _check_alive(self, ranks: list[int], since: float) -> None:
        """A launcher whose heartbeat is STALE_S old (or that never beat within STALE_S of the
        command) is gone: one error, the run resumable."""
        for rank in ranks:
            silent = self.control.silent_for(rank, since)
            if silent > STALE_S:
                raise DistributedError(f"rank {rank}'s launcher has not answered for {silent:.0f} s (its node "
                                       "or process is gone); the run stops here: continue it with --resume once "
                                       "every rank is back")

    def _new_generation(self) -> None:
        """Every worker replaced (the others do it on the next command, which carries the number)."""
        self.local.close()
        self.generation += 1
        self.local = _worker(self.control, self.generation, self.device, self.timeout_s, self.on_event)
        self.local.spawn()


def follow(env: RankEnv, device: str, collective_timeout_s: float) -> int:
    """A rank other than 0: run rank 0's commands in this rank's worker until it says stop.
    Returns the number of trials run."""
    control = Control(env)
    control.start_heartbeat()
    generation, worker = 0, _worker(control, 0, device, collective_timeout_s, None)
    worker.spawn()
    number = trials = 0
    try:
        while True:
            number += 1
            command = _wait_command(control, number)
            if command["kind"] == "stop":
                return trials
            if command["generation"] != generation:
                worker.close()
                generation = command["generation"]
                worker = _worker(control, generation, device, collective_timeout_s, None)
                worker.spawn()
            if command["kind"] == "check":
                problem = worker.check(command["workload"], command.get("timeout_s"))
                control.put(f"res/{number}/{env.rank}", {"error": problem})
                continue
            aborted: list[bool] = []
            since = time.monotonic()

            def stop_asked(key: str = f"abort/{number}", since: float = since,
                           aborted: list[bool] = aborted) -> bool:
                if control.has(key) or control.has(STOP_KEY):
                    aborted.append(True)
                    return True
                _check_coordinator(control, since)
                return False

            result = worker.run(TrialSpec.from_dict(command["spec"]), should_abort=stop_asked)
            trials += 1
            if control.has(STOP_KEY):
                return trials
            control.put(f"res/{number}/{env.rank}", {"result": result.to_dict(), "aborted": bool(aborted)})
    finally:
        worker.close()


def _wait_command(control: Control, number: int) -> dict[str, Any]:
    key, since = f"cmd/{number}", time.monotonic()
    while not control.has(key):
        _check_coordinator(control, since)
        time.sleep(POLL_S)
    return control.get(key)


def _check_coordinator(control: Control, since: float) -> None:
    """Rank 0 gone (its heartbeat unchanged for STALE_S): this rank stops, saying so."""
    silent = control.silent_for(0, since)
    if silent > STALE_S:
        raise DistributedError(f"rank 0 has not been heard from for {silent:.0f} s: this rank (rank "
                               f"{control.env.rank}) stops; continue the run with --resume from rank 0's launch")


def coordinate(rank: RankEnv, device: str, parallel: str, collective_timeout_s: float, *,
               on_event: EventFn | None = None) -> RankWorkers | None:
    """A command run with --parallel, on this rank: rank 0 gets the RankWorkers its command runs
    on; any other rank follows rank 0's commands until it says stop, then gets None (rank 0
    reports)."""
    device = resolve_device(device)
    if not rank.is_coordinator:
        follow(rank, device, collective_timeout_s)
        return None
    return RankWorkers(rank, device, parallel, collective_timeout_s, on_event=on_event)
