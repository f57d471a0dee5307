"""Tuning: search (dtype, batch size, init_scale, growth_interval) for the fastest configuration
that keeps fp32's numerics; write recommendation.json, trials.jsonl and trials.csv.

    tune() -> Tuner (tuner.py) -> strategy (search.py) over a SearchSpace (space.py)
           -> Worker trials -> RunStore (store.py) -> Recommendation
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..distributed.env import rank_env
from ..distributed.policy import DEFAULT_COLLECTIVE_TIMEOUT_S
from ..errors import AdvisorError, BadInputError, Interrupted, raise_interrupted
from ..harness import resolve_workload
from ..harness.executor import WorkloadExecutor
from ..harness.worker import Worker
from ..hf import HfSpec
from ..workload_source import WorkloadSource
from .space import build_space
from .store import RunStore
from .tuner import FLAGS, RESUMABLE, Tuner, TuneResult, TuneSettings, space_options

__all__ = ["tune", "TuneSettings", "TuneResult", "default_out_dir"]


def default_out_dir(workload: WorkloadSource, root: Path = Path("reports")) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{workload.name}"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C: through the same cleanup, leaving the directory consistent."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tune(
    model: str | os.PathLike | WorkloadSource | None = None,
    *,
    example: str | None = None,
    hf: HfSpec | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    resume: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    **settings: Any,
) -> TuneResult | None:
    """Tune `model` (a model.py path or a module:attr import string; or `example=`, or `hf=` a
    Hugging Face architecture) on `device`; see TuneSettings for the options.

    Under torchrun with `parallel=` ("ddp" or "fsdp2"): rank 0 runs the search and returns the
    result; every other rank measures the trials rank 0 sends and returns None.

    Everything that can be checked without a trial (the settings, the device, the batch sizes,
    the workload's contract) is checked before the run directory is created; the directory is
    then locked for the life of the run.

    With `resume=True`, `out` names an earlier run directory: its settings are reused and the
    trials it finished are not repeated. `model`/`example` and the settings given must agree
    with the saved run, except RESUMABLE ones (time budget, max trials, timeout), which are applied. A
    complete run is returned as it is, without new trials.
    """
    rank = rank_env(settings.get("parallel"), "tune")
    if rank is not None and not rank.is_coordinator:
        _workers(rank, device, settings, on_event)  # follows rank 0's trials until it stops
        return None
    if resume:
        given = {**settings, **({"device": device} if device != "auto" else {})}
        return _resume(model, example, hf, out, on_event, given)
    source = resolve_workload(model, example, hf)
    store = RunStore(Path(out) if out is not None else default_out_dir(source))
    if store.exists:
        raise BadInputError(f"{store.dir} already holds a run: pass --resume to continue it, or another --out")
    created = not store.dir.exists()
    store.lock()  # first, so that a second start on this directory is refused at once
    worker = _workers(rank, device, settings, on_event)
    assert worker is not None  # one process, or rank 0: the other ranks returned above
    worker.spawn()  # imports torch while the rest is checked
    try:
        try:
            if device == "auto":
                device = worker.wait_ready()["default_device"]
            tune_settings = TuneSettings(workload=source.ref, device=device, **settings)
            profile, space = _checked(tune_settings, worker.world_size)
            if on_event is not None:  # the import may take long: the display says what it waits for
                on_event({"event": "tune_phase", "phase": "importing the workload", "planned": 0})
            problem = worker.check(source.ref, tune_settings.trial_timeout_s)
            if problem:
                raise BadInputError(problem)
            smallest = space.batch_sizes[0]
            seconds = worker.calibrate(source.ref, smallest, device)  # bounds the first steps of the trials
            store.create(tune_settings.to_dict())
        except BaseException:
            store.discard(created)  # bad input leaves nothing behind
            raise
        return _run(store, tune_settings, worker, profile, on_event,
                    calibration=(smallest, seconds) if seconds else None)
    finally:
        worker.close()
        store.unlock()


def _checked(settings: TuneSettings, world_size: int = 1):
    """The device's profile and the search space its batch options give: bad input here is
    refused before anything is written."""
    from ..hardware import probe

    profile = probe(settings.device).devices[0]
    space, notes = build_space(profile, **space_options(settings, world_size))
    if not space.dtypes:
        raise BadInputError(f"nothing to tune on {settings.device}: no training dtype is left ({'; '.join(notes)})")
    return profile, space


def _workers(rank, device: str, settings: dict[str, Any], on_event) -> WorkloadExecutor | None:
    """The trial worker: one process; under --parallel (distributed.ranks.coordinate) every rank's
    for rank 0, while any other rank follows rank 0's trials until it stops and gets None."""
    if rank is None:
        return Worker()
    from ..distributed.ranks import coordinate

    timeout = settings.get("collective_timeout_s") or DEFAULT_COLLECTIVE_TIMEOUT_S
    with _sigterm_as_interrupt():  # on a following rank: SIGTERM stops its worker, as Ctrl-C
        return coordinate(rank, device, settings["parallel"], timeout, on_event=on_event)


def _resume(model, example, hf, out, on_event, given: dict[str, Any]) -> TuneResult:
    if out is None:
        raise BadInputError("--resume needs --out DIR: the run directory to continue")
    store = RunStore(Path(out))
    if not store.exists:
        raise BadInputError(f"{out}: no run to resume (no run.json there)")
    store.lock()  # before reading: a live run is refused, not raced
    try:
        info = store.run_info()
        saved = TuneSettings.from_dict(info["settings"])
        differs = []
        saved_source = WorkloadSource.from_ref(saved.workload)
        if model is not None or example is not None or hf is not None:
            source = resolve_workload(model, example, hf)
            if not source.same_as(saved_source):
                differs.append(f"the workload {source.shown()} (the run tunes {saved_source.shown()})")
        for name, value in given.items():
            current = getattr(saved, name)
            if name not in RESUMABLE and value is not None and value != current:
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
                differs.append(f"{FLAGS.get(name, name)} {shown} (the run: {current})")
        if differs:
            raise BadInputError(f"{out}: --resume continues the run as it was started, and these differ: "
                                f"{'; '.join(differs)}. Leave them out, or start a new run with another --out")
        changes = {name: given[name] for name in RESUMABLE if given.get(name) is not None}
        if changes:
            saved = TuneSettings.from_dict({**saved.to_dict(), **changes})
        if info.get("state") == "complete":
            return _completed(store, info)
        if saved_source.path is not None:
            resolve_workload(saved_source.path)  # the file is still there and parses
        rank = rank_env(saved.parallel, "tune")
        if rank is not None:
            world = ((info.get("context") or {}).get("space") or {}).get("world_size") or rank.world_size
            if world != rank.world_size:
                raise BadInputError(f"{out}: the run was tuned on {world} ranks and this launch has "
                                    f"{rank.world_size}: resume it with --nproc_per_node giving {world} ranks")
        worker = _workers(rank, saved.device, saved.to_dict(), on_event)
        assert worker is not None  # tune() sent the other ranks to follow rank 0 before resuming
        worker.spawn()
        try:
            profile, _ = _checked(saved, worker.world_size)
            try:
                store.write_state("running", saved.to_dict())
            except OSError as exc:
                raise BadInputError(f"{store.run_file}: {exc.strerror or exc}; resuming a run that is not complete "
                                    "writes to its directory: make it writable") from None
            return _run(store, saved, worker, profile, on_event)
        finally:
            worker.close()
    finally:
        store.unlock()


def _completed(store: RunStore, info: dict[str, Any]) -> TuneResult:
    """A complete run, read back: its recommendation and trials as they are."""
    from ..recommendation import Recommendation
    from ..report import ReportFiles

    rec_file = store.dir / "recommendation.json"
    rec = Recommendation.load(rec_file, check_hardware=False) if rec_file.exists() else None
    html = store.dir / "report.html"
    report = ReportFiles(store.dir / "report.md", html, (), ()) if html.exists() else None
    return TuneResult(store.dir, rec, list(store.records()), None, list(info.get("notes") or []),
                      "the run was already complete: nothing re-run", 0.0,
                      report=report, report_error=None if report else "the run has no report.html")


def _run(store: RunStore, settings: TuneSettings, worker: WorkloadExecutor, profile, on_event,
         calibration: tuple[int, float] | None = None) -> TuneResult:
    """The run, in a locked and created directory. However it ends, run.json says how: complete,
    interrupted (Ctrl-C, SIGTERM, a full disk: --resume continues) or failed (with the reason)."""
    tuner = Tuner(settings, store, on_event=on_event, worker=worker, device_profile=profile, calibration=calibration)
    with _sigterm_as_interrupt():
        try:
            result = tuner.run()
            # the run's end, written inside the same guard: a full disk here is an interrupted
            # run (every trial is recorded; --resume decides again), never an internal error
            store.write_csv(result.records)
            if result.recommendation is not None:
                result.recommendation.save(store.dir / "recommendation.json")
            store.write_state("complete", trials=result.trials_run, stopped_because=result.stopped_because,
                              wall_s=result.wall_s, notes=result.notes)
        except KeyboardInterrupt as exc:
            unmarked = _mark(store, "interrupted", tuner)
            with contextlib.suppress(OSError):
                store.write_csv(tuner.records)
            _write_report(store.dir)  # what the finished trials show, marked as partial
            raise Interrupted(getattr(exc, "signum", signal.SIGINT), store.dir, unmarked) from None
        except OSError as exc:  # disk full, permissions, a removed directory: the run can continue later
            where = exc.filename or store.dir
            unmarked = _mark(store, "interrupted", tuner, reason=f"{exc.strerror or exc}: {where}")
            state = ("the run is marked interrupted" if unmarked is None else
                     f"run.json could not be marked interrupted either ({unmarked}), and still says running")
            raise BadInputError(f"{where}: {exc.strerror or exc}; {state}: fix it and continue with "
                                f"`amp-advisor tune --resume --out {shlex.quote(str(store.dir))}`") from None
        except BaseException as exc:
            _mark(store, "failed", tuner, reason=f"{type(exc).__name__}: {exc}")
            raise
    result.report, result.report_error = _write_report(store.dir)
    return result


def _mark(store: RunStore, state: str, tuner: Tuner, reason: str | None = None) -> str | None:
    """Best effort: with the disk full even run.json may not be writable. Returns why the mark
    failed (None: run.json now says `state`), so that no message claims a mark that is not there."""
    try:
        extra: dict[str, Any] = {"reason": reason} if reason else {}
        store.write_state(state, trials=len(tuner.records), notes=tuner.notes, **extra)
    except (OSError, AdvisorError) as exc:
        return f"{getattr(exc, 'strerror', None) or exc}"
    return None


def _write_report(run_dir: Path):
    """The report is derived from the files already on disk: if drawing it fails, the run is
    still whole, and `amp-advisor report DIR` can try again."""
    from ..report import write_report

    try:
        return write_report(run_dir), None
    except AdvisorError as exc:  # a storage failure, already one line naming the path
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - reported to the caller, the run's data is untouched
        return None, f"{type(exc).__name__}: {exc}"
