"""The worker process's side of the protocol in worker.py: `python -m amp_advisor.harness.worker_process`.

Kept apart from worker.py, and imported by nothing in the package, so that running it with -m
does not execute a module the package has already imported (runpy warns about that on every
start, and the warning would end up in every crashed trial's last output).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from .reaper import become_subreaper, kill_tree, signal_on_parent_death
from .trial import TrialSpec
from .worker import PARENT_ENV  # the process this worker serves

PARENT_POLL_S = 0.25


def die_with_parent() -> None:
    """The worker, and everything the user's code started from it, must not outlive the process
    it serves, however that one dies (SIGKILL included; reaper.py): the worker is a subreaper of
    its descendants, the kernel sends it SIGTERM when the parent exits (PR_SET_PDEATHSIG), and a
    thread notices the parent is gone (re-parented) for when the main thread is stuck in C code.
    Either way the worker kills its whole tree and exits."""
    parent = int(os.environ.get(PARENT_ENV, "0") or 0)
    become_subreaper()
    signal.signal(signal.SIGTERM, lambda signum, frame: reap_and_exit())
    signal_on_parent_death(signal.SIGTERM)
    if not parent:
        return

    def orphaned() -> bool:
        return os.getppid() != parent

    def watch() -> None:
        while not orphaned():
            time.sleep(PARENT_POLL_S)
        reap_and_exit()

    if orphaned():  # the parent died before this process got here
        reap_and_exit()
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def reap_and_exit() -> None:
    """Kill every process this worker's trials started (its tree and its group), then exit."""
    try:
        kill_tree(os.getpid(), include_self=False)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(1)


def check_workload(path: str) -> str | None:
    """Import the workload and check the contract's names, as a trial would, without a trial:
    None, or the one-line reason it cannot be tuned."""
    from ..workload import WorkloadError, load
    from ..workload_source import shown_ref

    try:
        load(path)
    except WorkloadError as exc:
        return str(exc)
    except SystemExit as exc:  # the module called sys.exit at import: this worker lives on
        return (f"{shown_ref(path)}: importing it called sys.exit({exc.code!r}); a workload module must only define "
                "build_model and make_batch when imported (guard the rest with if __name__ == '__main__':)")
    return None


def diagnose(spec: dict[str, Any], emit: Any) -> dict[str, Any]:
    """The numerics X-ray of one configuration (xray.py): the "diagnosed" event, with the
    diagnosis or why there is none (`bad_input` when the workload or the islands are wrong)."""
    from ..diagnosis import DiagnoseSpec
    from ..errors import BadInputError
    from .oom import is_oom
    from .xray import run_diagnosis

    try:
        return {"event": "diagnosed", "diagnosis": run_diagnosis(DiagnoseSpec.from_dict(spec), emit).to_dict()}
    except BadInputError as exc:
        return {"event": "diagnosed", "error": str(exc), "bad_input": True}
    except Exception as exc:  # the user's code raised: the caller reports it
        why = "out of memory: try a smaller --batch-size" if is_oom(exc) else f"{type(exc).__name__}: {exc}"
        return {"event": "diagnosed", "error": why, "bad_input": False}


def main() -> None:
    die_with_parent()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the user's code prints (Python or C) goes to stderr

    def emit(event: dict[str, Any]) -> None:
        protocol.write(json.dumps(event) + "\n")
        protocol.flush()

    import torch

    from .measure import TrialRunner

    # What lives on in this process (torch, and after each trial the workload's own modules and
    # what the runner keeps) is moved out of the collector's sight: the full collections around
    # every trial then scan only that trial's objects, 0.13 s less each (4 a trial) with torch alone.
    gc.freeze()
    default = "cuda:0" if torch.cuda.is_available() else "cpu"
    emit({"event": "ready", "pid": os.getpid(), "torch": torch.__version__, "default_device": default})
    runner = TrialRunner(emit)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request.get("command") == "exit":
                break
            if request.get("command") == "check":
                emit({"event": "checked", "error": check_workload(request["workload"])})
                continue
            if request.get("command") == "diagnose":
                emit(diagnose(request["spec"], emit))
                continue
            result = runner.run(TrialSpec.from_dict(request["spec"]))  # collected at its end
            gc.freeze()
            emit({"event": "result", "result": result.to_dict()})
    finally:
        # an orderly end too: what the user's code started (it is re-parented to this subreaper
        # when its own parent is gone) ends with the worker, never handed on to init
        kill_tree(os.getpid(), include_self=False)


if __name__ == "__main__":
    main()
