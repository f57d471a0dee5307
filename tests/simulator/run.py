"""One simulated tune: the real Tuner on a SimulatedMachine, in a real run directory, scored
against the landscape's truth."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amp_advisor.dtypes import Dtype
from amp_advisor.harness.trial import Status
from amp_advisor.tuning.settings import TuneSettings
from amp_advisor.tuning.space import build_space
from amp_advisor.tuning.store import RunStore
from amp_advisor.tuning.tuner import Tuner

from .landscape import Landscape
from .machine import SimClock, SimulatedMachine
from .profiles import device_string, profile


@dataclass(frozen=True)
class Outcome:
    landscape: str
    family: str
    device: str
    seed: int
    settings: str  # which settings ran: "default", "max-trials 6", ...
    recommended: str | None  # "bf16 bs=64"
    best: str  # the true best
    quality: float  # true samples/s of the recommendation / the true best (0 when nothing was recommended)
    trials: int
    sim_wall_s: float  # the run's wall time on the simulated machine
    invalid: str | None  # why the recommendation rests on a failed, unconfirmed or numerics-failing configuration
    log: tuple[str, ...] = ()  # one line per trial: what ran, what it measured, what is true


def simulate(landscape: Landscape, seed: int, *, settings_name: str = "default", keep: Path | None = None,
             machine_class: type[SimulatedMachine] = SimulatedMachine, **settings: Any) -> Outcome:
    """Tune `landscape` with the real Tuner (TuneSettings' defaults, overridden by `settings`) on
    `machine_class` (a SimulatedMachine, or one that answers some trials its own way)."""
    device_profile = profile(landscape.device)
    clock = SimClock()
    machine = machine_class(landscape, seed, clock)
    tune_settings = TuneSettings(workload=f"simulated:{landscape.name}", device=device_string(landscape.device),
                                 seed=seed, batch_sizes=landscape.batch_sizes, **settings)
    space, _ = build_space(device_profile, batch_sizes=landscape.batch_sizes)
    smallest = space.batch_sizes[0]
    first = landscape.point(Dtype.FP32, smallest)
    calibration = (smallest, landscape.build_s + first.first_step_s)
    root = Path(tempfile.mkdtemp(prefix="amp-sim-")) if keep is None else keep
    try:
        store = RunStore(root / "run")
        store.create(tune_settings.to_dict())
        tuner = Tuner(tune_settings, store, worker=machine, device_profile=device_profile, calibration=calibration,
                      clock=clock, memory_total_bytes=landscape.memory_total_bytes)
        result = tuner.run()
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    best_dtype, best_batch, best_levers, best_rate = landscape.best(space.dtypes, space.batch_sizes)
    rec = result.recommendation
    shown = f"{best_dtype} bs={best_batch}{_levers_text(best_levers)} ({best_rate:.1f}/s)"
    log = tuple(_line(landscape, r) for r in result.records) + tuple(f"note: {n}" for n in result.notes)
    if rec is None:
        return Outcome(landscape.name, landscape.family, landscape.device, seed, settings_name, None, shown, 0.0,
                       result.trials_run, clock.now, "no recommendation, although a configuration is valid", log)
    islands = bool(rec.fp32_modules)
    chosen = tuple(sorted(rec.levers.items()))
    quality = landscape.run_rate(rec.dtype, rec.batch_size, islands, chosen) / best_rate
    return Outcome(landscape.name, landscape.family, landscape.device, seed, settings_name,
                   f"{rec.dtype} bs={rec.batch_size}" + _levers_text(chosen) + (" +islands" if islands else ""),
                   shown, quality,
                   result.trials_run, clock.now, _invalid(landscape, result, rec, islands), log)


def _levers_text(levers: tuple) -> str:
    return "".join(f" {name}={value}" for name, value in levers)


def _line(landscape: Landscape, r) -> str:
    c = r.candidate
    true = landscape.true_rate(c.dtype, c.batch_size, bool(c.fp32_modules), c.levers)
    measured = f"{r.result.samples_per_s:.1f}" if r.result.samples_per_s else "-"
    where = f" round {r.round}" if r.round is not None else ""
    return (f"{r.number:3d} {r.role.value:9s}{where:9s} {c.label:34s} {r.result.status.value:9s} "
            f"measured {measured:>8s} true {true:8.1f}" + ("" if r.feasible else f"  [{r.why_not}]"))


def _invalid(landscape: Landscape, result, rec, islands: bool) -> str | None:
    if not landscape.valid(rec.dtype, rec.batch_size, islands):
        why = "out of memory" if not landscape.fits(rec.dtype, rec.batch_size) else "fails on numerics"
        return f"{rec.dtype} bs={rec.batch_size} {why} on this landscape"
    chosen = result.decision.candidate if result.decision else None
    if chosen is not None:
        failed = [r.number for r in result.records if r.candidate.canonical() == chosen.canonical()
                  and r.role.measures_speed and not r.feasible and r.result.status is not Status.PRUNED]
        if failed:
            return f"{chosen.label} rests on failed trials {failed}"
    if result.decision is not None and not result.decision.confirmed:
        return f"{rec.dtype} bs={rec.batch_size} was not confirmed"
    return None
