"""Trials in a subprocess (this is the parent's side; the child runs worker_process.py): a hang,
a crash or an out-of-memory in the user's code becomes a recorded result, never the end of the run.

One worker process is reused between trials (torch is imported once) and replaced after it
dies or is killed. Parent and worker speak JSON lines: the parent writes one request per trial
on the worker's stdin; the worker answers with events on a private copy of its stdout (the
user's own prints are redirected to stderr, so they cannot corrupt the protocol):

    {"event": "ready", "pid": ..., "default_device": "cuda:0"}
    {"event": "step", "phase": "warmup" | "measured" | "fp32 reference", "index": i, "seconds": s}
    {"event": "result", "result": {...TrialResult...}}

Watchdog: with an explicit timeout, the whole trial gets that many seconds. Without one, every
event resets a deadline of HANG_GRACE_S + HANG_FACTOR x the slowest step seen so far, so a
slow-but-moving trial runs on and a hung one is killed soon after it stops moving.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..diagnosis import DiagnoseSpec, Diagnosis
from ..distributed.policy import FULL_COMM
from ..dtypes import Dtype
from ..errors import AdvisorError, BadInputError
from ..workload_source import shown_ref
from .reaper import kill_tree
from .trial import Status, TrialResult, TrialSpec, failed, pruned_reason

PARENT_ENV = "AMP_ADVISOR_PARENT_PID"  # set on the worker: the process it serves (worker_process.py)
STARTUP_TIMEOUT_S = 180.0  # importing torch on a cold, busy machine
FIRST_STEP_TIMEOUT_S = 600.0  # before any step time is known: model build + first step
HANG_GRACE_S = 30.0
HANG_FACTOR = 20.0  # an fp32 reference step can be ~15x slower than a bf16 step on an H100

ANSWERS = ("checked", "diagnosed", "result")  # the events that end a request
ABORT_POLL_S = 0.25  # how often a trial with should_abort asks it
# The worker's output stream ends a moment before its exit status can be read: a process whose
# stream ended is given this long to be reaped before it counts as still running (hung).
REAP_GRACE_S = 5.0
ABORTED_WHY = "stopped: another rank of the trial failed"

EventFn = Callable[[dict[str, Any]], None]


def _earliest(*deadlines: float | None) -> float:
    return min(d for d in deadlines if d is not None)


def calibrate(run: Callable[[TrialSpec], TrialResult], workload: str, batch_size: int, device: str,
              parallel: str | None = None) -> float | None:
    """Seconds to build the model and train one fp32 step at `batch_size` (the smallest of a run),
    through `run` (one worker's, or every rank's under `parallel`): what bounds the first step of
    the trials after it. None if that step failed (the trials will record why)."""
    spec = TrialSpec(workload=workload, dtype=Dtype.FP32, batch_size=batch_size, device=device, steps=1,
                     warmup_steps=0, compare_fp32=False, grad_stats=False, parallel=parallel,
                     comm=FULL_COMM if parallel else "")
    started = time.monotonic()
    result = run(spec)
    if result.bad_input:  # a contract break (build_model returned no nn.Module...): before any trial
        raise BadInputError(result.error or "the workload broke the contract")
    return time.monotonic() - started if result.status is Status.OK else None


class DiagnoseError(AdvisorError):
    """A diagnosis that could not finish: the model raised, ran out of memory, or hung."""


class WorkerError(AdvisorError):
    """The worker process could not be started."""


class Worker:
    """A reusable trial subprocess. Use as a context manager, or call close()."""

    world_size = 1  # the ranks a trial runs on (distributed.ranks.RankWorkers: every rank's)

    def __init__(self, *, on_event: EventFn | None = None, echo_stderr: bool = False,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S, env: dict[str, str] | None = None,
                 patience_s: float = 0.0) -> None:
        """`env`: added to the worker's environment (a distributed worker's process group).
        `patience_s`: added to the no-progress allowance (a distributed worker can wait that long
        in a collective for another rank before its own group gives up: it must not be called
        hung first)."""
        self.on_event = on_event
        self.echo_stderr = echo_stderr
        self.startup_timeout_s = startup_timeout_s
        self.env = dict(env or {})
        self.patience_s = patience_s
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.ready: dict[str, Any] | None = None
        self.started = 0  # how many processes this worker has spawned (1 + replacements)
        self._busy = False  # a request is in flight: the worker will not read an exit command soon
        self._stream_ended = False  # the process closed its output: it is exiting (see alive)

    # ------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Worker:
        self.spawn()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """Whether the process runs. Once its output stream has ended it is exiting: its exit is
        waited for (REAP_GRACE_S at most), so that a worker that exited (os._exit at import, a
        crash) is never taken for a hung one because its status was read a moment too early."""
        if self._proc is None:
            return False
        if self._stream_ended:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=REAP_GRACE_S)
        return self._proc.poll() is None

    def spawn(self) -> None:
        """Start the process if there is none; does not wait for it to be ready."""
        if self.alive:
            return
        self._events = queue.Queue()
        self._stream_ended = False
        self._stderr_tail.clear()
        self.ready = None
        self._busy = False
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "amp_advisor.harness.worker_process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1,
            start_new_session=True,  # its own process group: a kill takes its children too
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())},
        )
        self.started += 1
        threading.Thread(target=self._read_events, args=(self._proc, self._events), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self._proc,), daemon=True).start()

    def wait_ready(self) -> dict[str, Any]:
        self.spawn()
        if self.ready is None:
            event = self._next_event(time.monotonic() + self.startup_timeout_s)
            if event is None or event.get("event") != "ready":
                reason = "timed out" if event is None and self.alive else "exited"
                self._kill()
                raise WorkerError(f"the trial worker {reason} while starting: {self.stderr_tail(8) or 'no output'}")
            self.ready = event
        return self.ready

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._busy:  # interrupted mid-request (Ctrl-C, SIGTERM): the trial may be hung; no grace
            self._kill(proc)
            return
        try:
            if proc.poll() is None:
                self._send({"command": "exit"}, proc)
                proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self._kill(proc)

    def _kill(self, proc: subprocess.Popen | None = None) -> None:
        proc = proc or self._proc
        if proc is None:
            return
        kill_tree(proc.pid)  # its descendants too, those in sessions of their own included
        proc.wait()
        if proc is self._proc:
            self._proc = None
            self._busy = False

    def _send(self, message: dict[str, Any], proc: subprocess.Popen | None = None) -> None:
        """One command to the worker (the running one unless `proc` is given), as a JSON line."""
        proc = proc or self._proc
        if proc is None or proc.stdin is None:
            raise WorkerError("the trial worker is not running")
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()
        self._busy = message.get("command") != "exit"

    # -------------------------------------------------------------------------------- threads
    @staticmethod
    def _read_events(proc: subprocess.Popen, events: queue.Queue) -> None:
        for line in proc.stdout or ():
            try:
                events.put(json.loads(line))
            except json.JSONDecodeError:
                events.put({"event": "garbage", "line": line.rstrip()})
        events.put(None)  # end of stream: the process is gone

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr or ():
            self._stderr_tail.append(line.rstrip())
            if self.echo_stderr:
                sys.stderr.write(line)

    def stderr_tail(self, lines: int = 5) -> str:
        return " | ".join(list(self._stderr_tail)[-lines:])

    def _next_event(self, deadline: float) -> dict[str, Any] | None:
        """The next event; None when the stream ended (the process died) or the deadline passed."""
        try:
            event = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if event is None:
            self._stream_ended = True
        if event is None or event.get("event") in ANSWERS:
            self._busy = False
        return event

    def check(self, workload: str, timeout_s: float | None = None) -> str | None:
        """Whether the workload imports and provides the contract (in the worker: its top-level
        code runs there, never in this process). None, or why not, in one line that names the
        workload as the user gave it. `timeout_s` (the user's --timeout): how long the import
        may take (default FIRST_STEP_TIMEOUT_S)."""
        self.wait_ready()
        limit = timeout_s or FIRST_STEP_TIMEOUT_S
        started = time.monotonic()
        self._send({"command": "check", "workload": workload})
        event = self._next_event(started + limit)
        while event is not None and event.get("event") != "checked":
            event = self._next_event(started + limit)
        if event is not None:
            return event.get("error")
        shown = shown_ref(workload)
        if self.alive:
            self._kill()
            return (f"{shown}: still importing after {time.monotonic() - started:.0f} s (its top-level code does not "
                    f"return); pass --timeout SECONDS if it needs longer{self._last_output()}")
        code = self._proc.wait() if self._proc is not None else None
        self._proc = None
        ended = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
                 else f"exited with code {code}")
        return (f"{shown}: importing it ended the worker process: it {ended} (sys.exit or os._exit at import?); a "
                f"workload module must only define build_model and make_batch when imported{self._last_output()}")

    def _last_output(self) -> str:
        tail = self.stderr_tail(3)
        return f"; last output: {tail}" if tail else ""

    def calibrate(self, workload: str, batch_size: int, device: str) -> float | None:
        return calibrate(self.run, workload, batch_size, device)

    def diagnose(self, spec: DiagnoseSpec) -> Diagnosis:
        """The numerics X-ray of one configuration (harness/xray.py), in the worker. A workload
        or island list that is wrong raises BadInputError; the model failing, the worker dying or
        hanging (no step for HANG_GRACE_S + HANG_FACTOR x the slowest so far) raise DiagnoseError."""
        self.wait_ready()
        self._send({"command": "diagnose", "spec": spec.to_dict()})
        last = time.monotonic()
        deadline, slowest = last + FIRST_STEP_TIMEOUT_S, 0.0
        while True:
            event = self._next_event(deadline)
            if event is None:
                hung = self.alive
                self._kill()
                what = (f"made no progress for {deadline - last:.0f} s" if hung
                        else "ended: the worker died")
                raise DiagnoseError(f"the diagnosis {what}; last output: {self.stderr_tail(3) or 'none'}")
            if event.get("event") == "diagnosed":
                if event.get("bad_input"):
                    raise BadInputError(event["error"])
                if event.get("error"):
                    raise DiagnoseError(f"the diagnosis stopped: {event['error']}")
                return Diagnosis.from_dict(event["diagnosis"])
            if event.get("event") == "step":
                now = time.monotonic()
                slowest, last = max(slowest, now - last), now
                deadline = now + HANG_GRACE_S + HANG_FACTOR * slowest
            if self.on_event is not None:
                self.on_event(event)

    # --------------------------------------------------------------------------------- trials
    def run(self, spec: TrialSpec, should_abort: Callable[[], bool] | None = None) -> TrialResult:
        """Run one trial; every way it can end is a TrialResult. `should_abort` is asked every
        ABORT_POLL_S: when it says True the worker is killed and the trial ends as ABORTED_WHY
        (another rank of a distributed trial failed)."""
        started = time.monotonic()
        ready = self.wait_ready()
        pid = ready.get("pid")
        self._send({"spec": spec.to_dict()})

        hard_deadline = started + spec.timeout_s if spec.timeout_s else None
        first_step_s = (spec.first_step_timeout_s or FIRST_STEP_TIMEOUT_S) + self.patience_s
        progress_deadline = time.monotonic() + first_step_s
        abandon_at: float | None = None
        slowest_step = 0.0
        while True:
            deadline = _earliest(hard_deadline, None if hard_deadline else progress_deadline, abandon_at)
            wake = deadline if should_abort is None else min(deadline, time.monotonic() + ABORT_POLL_S)
            event = self._next_event(wake)
            if should_abort is not None:
                # a worker that died or answered reports that, not the abort
                running = self.alive if event is None else event.get("event") != "result"
                if running and should_abort():
                    self._kill()
                    return failed(spec, Status.ERROR, ABORTED_WHY, wall_s=time.monotonic() - started, worker_pid=pid)
                if event is None and self.alive and time.monotonic() < deadline:
                    continue  # only the poll's wake-up
            if event is None:
                if self.alive and abandon_at is not None and spec.abandon_after_s is not None \
                        and time.monotonic() >= abandon_at:
                    self._kill()  # cheaper to restart the worker than to wait for a step this slow
                    return failed(spec, Status.PRUNED, pruned_reason(None, spec.abandon_after_s),
                                  wall_s=time.monotonic() - started, worker_pid=pid)
                if self.alive and time.monotonic() >= deadline:
                    return self._timed_out(spec, started, pid, hard_deadline is not None, slowest_step, first_step_s)
                return self._crashed(spec, started, pid)
            kind = event.get("event")
            if kind == "result":
                result = TrialResult.from_dict(event["result"])
                return result.with_updates(wall_s=time.monotonic() - started, worker_pid=pid)
            if kind == "step":
                slowest_step = max(slowest_step, float(event.get("seconds") or 0.0))
                abandon_at = None  # the first step finished; the worker judges its time itself
            if slowest_step:  # any event is progress
                progress_deadline = time.monotonic() + self._hang_allowance(slowest_step)
            if kind == "phase" and event.get("phase") == "built" and spec.abandon_after_s:
                abandon_at = time.monotonic() + spec.abandon_after_s
            if self.on_event is not None:
                self.on_event(event)

    def _hang_allowance(self, slowest_step: float) -> float:
        """How long a trial may go without an event once a step time is known."""
        return HANG_GRACE_S + HANG_FACTOR * slowest_step + self.patience_s

    def _timed_out(self, spec: TrialSpec, started: float, pid: int | None, explicit: bool,
                   slowest_step: float, first_step_s: float) -> TrialResult:
        self._kill()
        elapsed = time.monotonic() - started
        if explicit:
            why = f"stopped after {elapsed:.0f} s: the trial exceeded its timeout of {spec.timeout_s:g} s"
        elif slowest_step:
            why = (f"stopped after {elapsed:.0f} s: no progress for {self._hang_allowance(slowest_step):.0f} s "
                   f"(the slowest step so far took {slowest_step:.2f} s)")
        else:
            why = (f"stopped after {elapsed:.0f} s: the model build and first training step did not finish within "
                   f"the {first_step_s:.0f} s allowed")
        return failed(spec, Status.TIMEOUT, why, wall_s=elapsed, worker_pid=pid)

    def _crashed(self, spec: TrialSpec, started: float, pid: int | None) -> TrialResult:
        proc = self._proc
        code = proc.wait() if proc is not None else None
        self._proc = None
        time.sleep(0.05)  # let the stderr reader catch the last lines
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = f"the worker died with {name}"
            if name == "SIGKILL":
                why += " (killed from outside: often the kernel's out-of-memory killer)"
        else:
            why = f"the worker exited with code {code}"
        tail = self.stderr_tail()
        return failed(spec, Status.CRASH, why + (f"; last output: {tail}" if tail else ""),
                      wall_s=time.monotonic() - started, worker_pid=pid)
