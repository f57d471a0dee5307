"""Tuning: search (dtype, batch size, init_scale, growth_interval) for the fastest configuration
that keeps fp32's numerics; write recommendation.json, trials.jsonl and trials.csv.

    tune() -> Tuner (tuner.py) -> strategy (search.py) over a SearchSpace (space.py)
           -> Worker trials -> RunStore (store.py) -> Recommendation
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import BadInputError
from ..harness import resolve_workload
from ..harness.worker import Worker
from .store import RunStore
from .tuner import TuneResult, Tuner, TuneSettings

__all__ = ["tune", "TuneSettings", "TuneResult", "default_out_dir"]


def default_out_dir(workload: Path, root: Path = Path("reports")) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{workload.stem}"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C: through the same cleanup, leaving the directory consistent."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tune(
    model: str | os.PathLike | None = None,
    *,
    example: str | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    resume: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    **settings: Any,
) -> TuneResult:
    """Tune `model` (a model.py path, or `example=`) on `device`; see TuneSettings for the options.

    With `resume=True`, `out` names an earlier run directory: its settings are reused and the
    trials it finished are not repeated.
    """
    if resume:
        if out is None:
            raise BadInputError("--resume needs --out DIR: the run directory to continue")
        store = RunStore(Path(out))
        if not store.exists:
            raise BadInputError(f"{out}: no run to resume (no run.json there)")
        saved = TuneSettings.from_dict(store.settings())
        if settings.get("time_budget_s") is not None:  # a resumed run may get a new budget
            saved = TuneSettings.from_dict({**saved.to_dict(), "time_budget_s": settings["time_budget_s"]})
        path, tune_settings = Path(saved.workload), saved
        resolve_workload(path, None)
    else:
        path = resolve_workload(model, example)
        store = RunStore(Path(out) if out is not None else default_out_dir(path))
        tune_settings = None

    worker = Worker()
    worker.spawn()  # imports torch while the rest is prepared
    try:
        if tune_settings is None:
            if device == "auto":
                device = worker.wait_ready()["default_device"]
            tune_settings = TuneSettings(workload=str(path), device=device, **settings)
            store.create(tune_settings.to_dict())
        else:
            store.write_state("running")
        tuner = Tuner(tune_settings, store, on_event=on_event, worker=worker)
        with _sigterm_as_interrupt():
            try:
                result = tuner.run()
            except KeyboardInterrupt:
                store.write_state("interrupted", trials=len(tuner.records), notes=tuner.notes)
                store.write_csv(tuner.records)
                _write_report(store.dir)  # what the finished trials show, marked as partial
                raise
    finally:
        worker.close()
    store.write_csv(result.records)
    if result.recommendation is not None:
        result.recommendation.save(store.dir / "recommendation.json")
    store.write_state("complete", trials=result.trials_run, stopped_because=result.stopped_because,
                      wall_s=result.wall_s, notes=result.notes)
    result.report, result.report_error = _write_report(store.dir)
    return result


def _write_report(run_dir: Path):
    """The report is derived from the files already on disk: if drawing it fails, the run is
    still whole, and `amp-advisor report DIR` can try again."""
    from ..report import write_report

    try:
        return write_report(run_dir), None
    except Exception as exc:  # noqa: BLE001 - reported to the caller, the run's data is untouched
        return None, f"{type(exc).__name__}: {exc}"
