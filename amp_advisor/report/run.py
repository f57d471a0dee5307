"""A run directory read back for the report, and the figures derived from it.

Read-only: a report never changes the run it describes. What is missing (an interrupted run has
no recommendation, an old run has no device.json) is listed in `missing`, never an error; a
directory that holds no run at all is one.
"""

from __future__ import annotations

import os
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..diagnosis import Diagnosis
from ..dtypes import Dtype
from ..errors import BadInputError
from ..hardware.model import DeviceProfile
from ..harness.memory import LinuxRssPeak
from ..harness.trial import Status, TrialResult
from ..recommendation import Recommendation
from ..tuning.evidence import ConfigEvidence, Evidence
from ..tuning.record import Role, TrialRecord
from ..tuning.space import Candidate, SearchSpace
from ..tuning.store import RunStore
from ..workload_source import readable


@dataclass(frozen=True)
class TuningCost:
    trials: int
    trials_by_role: dict[str, int]
    wall_s: float | None  # the run's own clock, or the trials' sum when the run did not finish
    grid_trials: int | None
    grid_estimate_s: float | None  # every candidate of the space, estimated from the measured trials


@dataclass(frozen=True)
class CommEffect:
    dtype: Dtype
    comm: str  # what the gradients were reduced in
    best_samples_per_s: float | None  # the best usable trial's (all ranks)
    best_batch: int | None
    worst_loss_diff: float | None  # the largest relative loss difference from fp32 among its trials
    trials: int
    usable: int


@dataclass
class Run:
    dir: Path
    info: dict[str, Any]  # run.json ({} when missing)
    records: list[TrialRecord]
    recommendation: Recommendation | None
    device: DeviceProfile | None
    missing: list[str] = field(default_factory=list)
    no_recommendation_why: str | None = None  # when recommendation is None: why
    diagnoses: list[Diagnosis] = field(default_factory=list)  # X-rays of dtypes that failed on numerics
    _evidence: Evidence | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------------------ run.json
    @property
    def state(self) -> str:
        return self.info.get("state", "unknown")

    @property
    def settings(self) -> dict[str, Any]:
        return self.info.get("settings", {})

    @property
    def context(self) -> dict[str, Any]:
        return self.info.get("context", {})

    @property
    def workload(self) -> str:
        """The workload as the user gave it; a file relative to the run directory."""
        ref = self.settings.get("workload")
        if not ref:
            return "unknown workload"
        source = readable(ref)
        return source.shown(self.dir) if source else ref

    @property
    def built_model(self) -> TrialResult | None:
        """A trial that built the model and counted its FLOPs (its class or description, parameters),
        or the best there is: runs before the model was recorded have only the FLOPs."""
        results = [r.result for r in self.records]
        ranked = sorted(results, key=lambda r: (r.parameters is None, not r.flops_per_step))
        return ranked[0] if ranked and (ranked[0].parameters is not None or ranked[0].flops_per_step) else None

    @property
    def notes(self) -> list[str]:
        return list(self.info.get("notes", []))

    @property
    def space(self) -> SearchSpace | None:
        data = self.context.get("space")
        try:
            return SearchSpace.from_dict(data) if data else None
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(f"{self.dir / 'run.json'}: its search space is corrupt ({e}); expected the one "
                                f"`tune` wrote. Re-run `amp-advisor tune` to make a new run.") from e

    @property
    def memory_limit_bytes(self) -> int | None:
        return self.context.get("memory_limit_bytes")

    @property
    def device_memory_bytes(self) -> int | None:
        if self.device is not None:
            return getattr(self.device.identity, "memory_total_bytes", None)
        return self.recommendation.hardware.get("memory_total_bytes") if self.recommendation else None

    @property
    def device_name(self) -> str:
        if self.device is not None and self.device.name:
            return self.device.name
        if self.recommendation is not None:
            return self.recommendation.hardware.get("name") or self.recommendation.device
        return self.settings.get("device", "unknown device")

    def peak_tflops(self, dtype: Dtype) -> float | None:
        return self.device.peak_tflops(dtype) if self.device is not None else None

    # ------------------------------------------------------------------------- derived figures
    @property
    def evidence(self) -> Evidence:
        """The same pure view of the trials the tuner decided with."""
        if self._evidence is None:
            self._evidence = Evidence(self.records)
        return self._evidence

    def configs(self) -> list[ConfigEvidence]:
        """Each measured configuration once, in the order first measured."""
        return list(self.evidence.configs.values())

    def config(self, candidate: Candidate) -> ConfigEvidence | None:
        return self.evidence.config(candidate)

    def recommended_candidate(self) -> Candidate | None:
        rec = self.recommendation
        if rec is None:
            return None
        stability = self.evidence.of_role(Role.STABILITY)
        if rec.dtype.needs_grad_scaler and stability:
            # the stability run may have lowered init_scale; its first attempt is the searched candidate
            return stability[0].candidate
        return Candidate(rec.dtype, rec.batch_size, rec.scaler.init_scale if rec.dtype.needs_grad_scaler else 0.0,
                         rec.scaler.growth_interval if rec.dtype.needs_grad_scaler else 0,
                         rec.distributed.comm if rec.distributed else "", tuple(rec.levers.items())).canonical()

    def recommended_trial(self) -> TrialRecord | None:
        """The clean trial that best shows the recommendation: its stability run, else the last of
        the trials the recommendation names (else its last clean measurement)."""
        chosen = self.recommended_candidate()
        if chosen is None:
            return None
        matching = [r for r in self.records
                    if r.candidate.canonical() == chosen.canonical() and r.result.status is Status.OK]
        stability = [r for r in matching if r.role is Role.STABILITY]
        # the trial that measured the numerics (its loss vs fp32, its gradients): confirmation
        # rounds re-measure speed only
        with_numerics = [r for r in matching if r.result.fp32_losses or r.result.grad_stats]
        chosen_records = stability or with_numerics or matching
        return chosen_records[-1] if chosen_records else None

    def fp32_figure(self, which: str = "fp32_same_batch") -> dict | None:
        """What the recommendation compared itself with, as it recorded it ("fp32_same_batch" or
        "fp32_best": config, samples/s and the trials); None for runs before it did."""
        entry = (self.recommendation.evidence or {}).get(which) if self.recommendation else None
        return dict(entry) if entry else None

    def memory_saved_bytes(self) -> int | None:
        rec, twin = self.recommendation, self.fp32_figure()
        if rec is None or twin is None or rec.measured.peak_memory_bytes is None:
            return None
        peaks = [r.result.peak_memory_bytes for r in self.records
                 if r.number in twin["trials"] and r.result.peak_memory_bytes is not None]
        return max(peaks) - rec.measured.peak_memory_bytes if peaks else None

    def best_so_far(self) -> list[tuple[int, float | None, float | None]]:
        """(trial number, its samples/s when clean, best clean samples/s up to it) for search trials."""
        out, best = [], None
        for r in self.records:
            if r.role is not Role.SEARCH:
                continue
            score = r.result.samples_per_s if r.feasible else None
            if score is not None:
                best = score if best is None else max(best, score)
            out.append((r.number, score, best))
        return out

    def cost(self) -> TuningCost:
        by_role: dict[str, int] = {}
        for r in self.records:
            by_role[r.role.value] = by_role.get(r.role.value, 0) + 1
        walls = [r.result.wall_s for r in self.records if r.result.wall_s is not None]
        wall = self.info.get("wall_s") or (sum(walls) if walls else None)
        space = self.space
        grid_trials = len(space.candidates()) if space else None
        return TuningCost(len(self.records), by_role, wall, grid_trials,
                          self._grid_estimate_s(space) if space else None)

    def _grid_estimate_s(self, space: SearchSpace) -> float | None:
        """What running every candidate would have cost: a measured candidate costs what it did;
        another costs what the same dtype cost at the nearest measured batch size, scaled by the
        batch (the steps dominate a trial). A dtype that was stopped early costs its stopped trial."""
        measured: dict[Candidate, float] = {}
        for r in self.records:
            if r.role is Role.SEARCH and r.result.wall_s is not None:
                measured.setdefault(r.candidate, r.result.wall_s)
        if not measured:
            return None
        total = 0.0
        for c in space.candidates():
            if c in measured:
                total += measured[c]
                continue
            same = [(m, w) for m, w in measured.items() if m.dtype is c.dtype]
            if not same:
                total += statistics.median(measured.values())
                continue
            near, wall = min(same, key=lambda mw: (abs(mw[0].batch_size - c.batch_size), -mw[0].batch_size))
            pruned = any(r.candidate == near and r.result.status is Status.PRUNED for r in self.records)
            total += wall if pruned else wall * c.batch_size / near.batch_size
        return total

    # --------------------------------------------------------------------------- across ranks
    @property
    def ranked(self) -> list[TrialRecord]:
        """The trials that ran on several ranks (tune --parallel)."""
        return [r for r in self.records if r.result.ranks]

    def rank_step_times(self) -> list[tuple[int, tuple[float, ...]]]:
        """(trial number, each rank's median step in rank order) of every trial all ranks ran."""
        out = []
        for r in self.ranked:
            steps = tuple(x.step_median_s for x in r.result.ranks)
            if all(s is not None for s in steps):
                out.append((r.number, tuple(float(s) for s in steps if s is not None)))
        return out

    def rank_faults(self) -> list[TrialRecord]:
        """The trials a rank failed, naming it (merge.py)."""
        return [r for r in self.ranked if r.result.failed_rank is not None and r.result.status is not Status.OK]

    def comm_effects(self) -> list[CommEffect]:
        """Per dtype and reduction: the best usable speed (and its batch), and the loss agreement
        with fp32 of its explored trials: what the precision of the communication does."""
        groups: dict[tuple[Dtype, str], list[TrialRecord]] = {}
        for r in self.ranked:
            groups.setdefault((r.candidate.dtype, r.candidate.comm), []).append(r)
        out = []
        for (dtype, comm), records in groups.items():
            usable = [r for r in records if r.feasible and r.result.samples_per_s]
            best = max(usable, key=lambda r: r.result.samples_per_s or 0.0) if usable else None
            diffs = [r.result.loss_rel_diff_vs_fp32 for r in records if r.result.loss_rel_diff_vs_fp32 is not None]
            out.append(CommEffect(dtype, comm, best.result.samples_per_s if best else None,
                                  best.candidate.batch_size if best else None, max(diffs) if diffs else None,
                                  len(records), len(usable)))
        return sorted(out, key=lambda e: (list(Dtype).index(e.dtype), e.comm))

    def caveats(self) -> list[str]:
        out = []
        if self.state == "interrupted":
            out.append("The run was interrupted: the figures cover the trials it finished. "
                       f"Continue it with `amp-advisor tune --resume --out {shlex.quote(str(self.dir))}`.")
        elif self.state not in ("complete",):
            out.append(f"The run is in state '{self.state}': it may still be going, or was killed before it finished.")
        noisy = [r.number for r in self.records if any(w.startswith("noisy") for w in r.result.warnings)]
        if noisy:
            out.append(f"{len(noisy)} of {len(self.records)} trials had a step-time spread (IQR) over 10% of the "
                       "median: configurations within a few percent of each other may swap places between runs.")
        if any(r.result.memory_method == LinuxRssPeak.method for r in self.records):
            out.append("Peak memory on a CPU is how far the worker's resident memory grew during the trial "
                       "(weights, optimizer state, activations and allocator overhead), measured by the kernel.")
        if self.recommendation is not None and self.recommendation.machine_busy:
            out.append("The machine was busy while measuring: " + self.recommendation.machine_busy)
        if self.recommendation is not None:
            out.append("The recommendation holds for this hardware and torch version "
                       f"({self.device_name}, torch {self.recommendation.hardware.get('torch') or 'unknown'}); "
                       "loading it elsewhere warns.")
        failed = [r for r in self.records if r.result.status not in (Status.OK, Status.PRUNED)]
        if failed:
            kinds = sorted({r.result.status.value for r in failed})
            out.append(f"{len(failed)} trials failed ({', '.join(kinds)}): they are results, listed in the "
                       "trials table with their reasons.")
        return out


def load_run(path: str | os.PathLike) -> Run:
    directory = Path(path)
    if not directory.is_dir():
        raise BadInputError(f"{directory}: not a directory; expected a run directory written by `amp-advisor tune` "
                            "(it holds run.json and trials.jsonl)")
    store = RunStore(directory)
    if not store.run_file.exists() and not store.trials_file.exists():
        raise BadInputError(f"{directory}: not a tune run (no run.json or trials.jsonl); pass the run directory "
                            "that `amp-advisor tune` printed")
    missing: list[str] = []
    info: dict[str, Any] = {}
    if store.run_file.exists():
        try:
            info = store.run_info()
        except BadInputError as exc:
            missing.append(f"run.json unreadable ({exc}): settings and tuning cost not shown")
    else:
        missing.append("run.json is missing: settings and tuning cost are incomplete")

    records, problems = store.read_records()
    for line, why, torn in problems:
        where = "its last line is torn (the run was killed mid-write)" if torn else f"line {line} is corrupt ({why})"
        missing.append(f"trials.jsonl: {where}; that trial is left out")
    if not records:
        missing.append("trials.jsonl holds no trials yet")

    recommendation, no_recommendation_why = None, None
    rec_file = directory / "recommendation.json"
    if rec_file.exists():
        try:
            recommendation = Recommendation.load(rec_file, check_hardware=False)
        except BadInputError as exc:
            no_recommendation_why = str(exc)
            missing.append(f"recommendation.json unreadable: {exc}")
    else:
        no_recommendation_why = {"interrupted": "the run was interrupted before it chose",
                                 "complete": "no configuration ran cleanly",
                                 "running": "the run has not finished (or was killed)"}.get(
            str(info.get("state")), "the run did not write one")
        missing.append(f"no recommendation.json: {no_recommendation_why}")

    device = None
    if store.device_file.exists():
        try:
            device = store.device()
        except BadInputError as exc:
            missing.append(str(exc))
    else:
        missing.append("device.json is missing: the probe's verdicts per dtype are not shown")
    return Run(directory, info, records, recommendation, device, missing, no_recommendation_why, store.diagnoses())

