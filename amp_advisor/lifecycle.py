"""The run lifecycle, above tuning and report: the public entry points that take a workload from
the user and see it through. tune(): lock, resume, the Tuner's phases, the report; bench() and
diagnose(): one trial or one X-ray in a worker (every rank's under torchrun).

    tune() -> Tuner (tuning/tuner.py) -> Worker trials -> RunStore (tuning/store.py)
           -> Recommendation -> report/ (report.md, report.html, plots)
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

from .diagnosis import DEFAULT_STEPS, DiagnoseSpec, Diagnosis
from .distributed.env import rank_env
from .distributed.policy import DEFAULT_COLLECTIVE_TIMEOUT_S, FULL_COMM
from .distributed.ranks import coordinate
from .dtypes import DEFAULT_GROWTH_INTERVAL, DEFAULT_INIT_SCALE, TRAINING_DTYPE_NAMES, Dtype
from .errors import AdvisorError, BadInputError, Interrupted, raise_interrupted
from .hardware import probe
from .harness.executor import WorkloadExecutor
from .harness.trial import TrialResult, TrialSpec
from .harness.worker import Worker
from .hf import HfSpec
from .recommendation import Recommendation
from .report import ReportFiles, write_report
from .tuning.settings import FLAGS, RESUMABLE, TuneSettings
from .tuning.space import build_space
from .tuning.store import RunStore
from .tuning.tuner import Tuner, TuneResult, space_options
from .workload_source import WorkloadSource

__all__ = ["tune", "bench", "diagnose", "resolve_workload", "default_out_dir"]


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
            tune_settings, profile, calibration = _prepare(source, device, settings, worker, on_event)
            store.create(tune_settings.to_dict())
        except BaseException:
            store.discard(created)  # bad input leaves nothing behind
            raise
        return _run(store, tune_settings, worker, profile, on_event, calibration=calibration)
    finally:
        worker.close()
        store.unlock()


def _prepare(source: WorkloadSource, device: str, settings: dict[str, Any], worker: WorkloadExecutor, on_event):
    """Everything checked before a run directory is written: the settings, the device, the batch
    sizes and the workload's contract (imported in the worker); then one calibration step at the
    smallest batch, which bounds the trials' first steps. (settings, device profile, calibration)."""
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
    seconds = worker.calibrate(source.ref, smallest, device)
    return tune_settings, profile, (smallest, seconds) if seconds else None


def _checked(settings: TuneSettings, world_size: int = 1):
    """The device's profile and the search space its batch options give: bad input here is
    refused before anything is written."""

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

    try:
        return write_report(run_dir), None
    except AdvisorError as exc:  # a storage failure, already one line naming the path
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - reported to the caller, the run's data is untouched
        return None, f"{type(exc).__name__}: {exc}"


def resolve_workload(model: str | os.PathLike | WorkloadSource | None, example: str | None = None,
                     hf: HfSpec | None = None) -> WorkloadSource:
    """A model.py path, a module:attr import string, a built-in example name or a Hugging Face
    spec -> where the workload comes from, checked without running any of it."""
    return WorkloadSource.given(model, example, hf)


def _training_dtype(dtype: str | Dtype) -> Dtype:
    dtype = Dtype.parse(dtype) if isinstance(dtype, str) else dtype
    if not dtype.is_training:
        raise BadInputError(f"dtype {dtype} cannot be trained: expected one of {', '.join(TRAINING_DTYPE_NAMES)}")
    return dtype


def diagnose(
    model: str | os.PathLike | WorkloadSource | None = None,
    *,
    example: str | None = None,
    hf: HfSpec | None = None,
    dtype: str | Dtype = "fp16",
    batch_size: int = 8,
    device: str = "auto",
    steps: int = DEFAULT_STEPS,
    init_scale: float = DEFAULT_INIT_SCALE,
    growth_interval: int = DEFAULT_GROWTH_INTERVAL,
    fp32_modules: tuple[str, ...] | list[str] = (),
    seed: int = 0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    worker: Worker | None = None,
) -> Diagnosis:
    """The numerics X-ray: train `steps` steps of `model` at `dtype` with hooks on every module,
    beside an fp32 run of the same weights and batches, and rank the modules that break it
    (`Diagnosis.culprits()`, each with its advice). `fp32_modules`: islands to run with, to check
    that the advice fixes it. A workload that breaks the contract, or an island naming no module,
    raises BadInputError; a model that raises or hangs, DiagnoseError."""
    source = resolve_workload(model, example, hf)
    dtype = _training_dtype(dtype)
    if not dtype.autocasts:
        raise BadInputError(f"diagnose compares a reduced precision with fp32: --dtype fp16 or bf16, not {dtype}")
    own = worker is None
    worker = worker or Worker(on_event=on_event)
    try:
        worker.spawn()
        if device == "auto":
            device = worker.wait_ready()["default_device"]
        spec = DiagnoseSpec(source.ref, dtype, batch_size, device, steps, init_scale, growth_interval, seed,
                            tuple(fp32_modules))
        return worker.diagnose(spec)
    finally:
        if own:
            worker.close()


def bench(
    model: str | os.PathLike | WorkloadSource | None = None,
    *,
    example: str | None = None,
    hf: HfSpec | None = None,
    dtype: str | Dtype = "fp32",
    batch_size: int,
    device: str = "auto",
    steps: int = 20,
    warmup_steps: int = 3,
    init_scale: float = DEFAULT_INIT_SCALE,
    growth_interval: int = DEFAULT_GROWTH_INTERVAL,
    grad_accum: int = 1,
    timeout: float | None = None,
    compare_fp32: bool = True,
    seed: int = 0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    worker: Worker | None = None,
    parallel: str | None = None,
    comm: str = "",
    collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S,
) -> TrialResult | None:
    """Train `model` (a model.py path or a module:attr import string; or `example=`, or `hf=` a
    Hugging Face architecture) for `steps` measured steps and report.

    Failures of the model (oom, timeout, crash, nonfinite, error) come back as the result's
    `status`; a workload that breaks the contract, or a dtype the device cannot run, raises
    BadInputError. Pass a `worker` to reuse one process across calls.

    Under torchrun with `parallel=` ("ddp"/"fsdp2", gradients reduced in `comm`): every rank
    trains the trial; rank 0 returns the merged result, the other ranks None.
    """

    rank = rank_env(parallel, "bench")
    source = resolve_workload(model, example, hf)
    dtype = _training_dtype(dtype)
    own = worker is None
    runner: Any = worker  # a Worker, or every rank's (RankWorkers) under torchrun
    if rank is not None and runner is None:
        runner = coordinate(rank, device, str(parallel), collective_timeout_s, on_event=on_event)
        if runner is None:
            return None  # a rank other than 0: it measured; rank 0 returns the result
    runner = runner or Worker(on_event=on_event)
    try:
        runner.spawn()  # the worker imports torch while the spec is checked
        if device == "auto":
            device = runner.wait_ready()["default_device"]
        spec = TrialSpec(
            workload=source.ref, dtype=dtype, batch_size=batch_size, device=device, steps=steps,
            warmup_steps=warmup_steps, init_scale=init_scale, growth_interval=growth_interval,
            grad_accum=grad_accum, compare_fp32=compare_fp32, seed=seed, timeout_s=timeout,
            parallel=parallel, comm=comm or (FULL_COMM if parallel else ""),
        )
        result = runner.run(spec)
    finally:
        if own:
            runner.close()
    if result.bad_input:
        raise BadInputError(result.error or "the workload broke the contract")
    return result
