"""The tuning loop: the strategy proposes, the tuner decides what is worth a trial, runs it in
the worker, records it durably, and finally chooses with the evidence.

Rules, and why:
- an fp32 baseline runs first: the reference speed, and the fp32 gradients that seed
  GradScaler's init_scale (the largest power of two keeping the largest gradient 8x under 65504);
- a trial whose first step takes PRUNE_FACTOR x longer than the best throughput so far would
  need is stopped early ("pruned"), so a slow dtype (bf16 on an AVX2 CPU: ~100x) costs seconds;
  with the Bayesian strategy a pruned dtype is then ruled out at every batch size;
- out-of-memory is a constraint: sizes at or above one that failed are ruled out for that dtype,
  a linear memory model of the measured peaks rules out sizes past the device's memory less a
  margin, and the edge between the largest success and the smallest failure is bisected;
- the top candidates are re-measured, interleaved, before choosing (this machine drifts), and a
  reduced precision is chosen only if it beats fp32 at the same batch size by more than 2%;
- a chosen fp16 configuration gets a longer stability run: skipped steps and underflow.
"""

from __future__ import annotations

import datetime
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..dtypes import Dtype
from ..errors import BadInputError
from ..harness.trial import TrialResult, TrialSpec
from ..harness.worker import Worker
from ..recommendation import GradScalerConfig, Measured, Recommendation, fingerprint_of
from .search import make_strategy
from .space import Candidate, SearchSpace, build_space, default_batch_sizes, seeded_init_scale
from .store import RunStore, TrialRecord

PRUNE_FACTOR = 4.0  # a first step this many times slower than the best rate needs: clearly slower
# The first step carries one-time costs (allocator, lazy init) and this machine stalls for
# seconds at a time: below this, a healthy first step was seen to be stopped.
MIN_ABANDON_S = 2.0
NOT_WORSE_MARGIN = 0.02  # reduced precision must beat fp32 at the same batch by more than this
MAX_REPEATED_ASKS = 10  # the strategy keeps proposing measured points: it has converged
TRIAL_MEASURE_S = 4.0  # aim for this much measured time per trial: enough steps, not more
MIN_STEPS = 3
CONFIRM_ROUNDS = 2  # re-measurements of each leader, interleaved: this machine drifts over seconds

EventFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TuneSettings:
    workload: str
    device: str
    strategy: str = "bayes"
    seed: int = 0
    max_trials: int | None = None  # None: grid = all candidates; bayes = 25% of them, at least 6
    time_budget_s: float | None = 900.0
    trial_timeout_s: float | None = None
    tolerance: float = 0.05  # relative loss difference vs fp32 over the measured steps
    max_skip_rate: float = 0.2  # fp16: skipped optimizer steps / steps
    steps: int = 8
    warmup_steps: int = 2
    batch_sizes: tuple[int, ...] | None = None
    global_batch: int | None = None
    memory_margin: float = 0.10
    confirm_top: int = 2
    stability_steps: int = 40

    def __post_init__(self) -> None:
        if self.strategy not in ("bayes", "grid"):
            raise BadInputError(f"--strategy {self.strategy!r}: expected bayes or grid")
        for name in ("max_trials", "time_budget_s", "trial_timeout_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise BadInputError(f"{name.replace('_s', '').replace('_', '-')} must be > 0, got {value}")
        if not 0 < self.tolerance:
            raise BadInputError(f"--tolerance must be > 0, got {self.tolerance}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["batch_sizes"] = list(self.batch_sizes) if self.batch_sizes else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TuneSettings":
        data = dict(data)
        if data.get("batch_sizes"):
            data["batch_sizes"] = tuple(data["batch_sizes"])
        return cls(**data)


@dataclass
class TuneResult:
    out_dir: Path
    recommendation: Recommendation | None
    records: list[TrialRecord]
    space: SearchSpace | None
    notes: list[str] = field(default_factory=list)
    stopped_because: str = ""
    wall_s: float = 0.0
    report: Any = None  # report.ReportFiles once written
    report_error: str | None = None  # why the report could not be written (the run itself is complete)

    @property
    def trials_run(self) -> int:
        return len(self.records)


def judge(result: TrialResult, settings: TuneSettings) -> tuple[bool, str | None]:
    """Feasible = it ran cleanly and kept fp32's numerics."""
    if result.status != "ok":
        return False, f"{result.status}: {result.error}"
    diff = result.loss_rel_diff_vs_fp32
    if diff is not None and diff > settings.tolerance:
        return False, f"loss differs from fp32 by {diff:.1%} over the measured steps (tolerance {settings.tolerance:.1%})"
    if result.skipped_steps is not None and result.skipped_steps / max(len(result.losses), 1) > settings.max_skip_rate:
        return False, f"GradScaler skipped {result.skipped_steps} of {len(result.losses)} steps"
    return True, None


class Tuner:
    def __init__(self, settings: TuneSettings, store: RunStore, *, on_event: EventFn | None = None,
                 worker: Worker | None = None, device_profile=None) -> None:
        self.settings = settings
        self.store = store
        self.emit = on_event or (lambda event: None)
        self.worker = worker
        self.profile = device_profile
        self.records: list[TrialRecord] = []
        self.notes: list[str] = []
        self.ruled_out: dict[Candidate, str] = {}
        self.space: SearchSpace | None = None  # built after the fp32 baseline (it seeds init_scale)
        self.memory_limit: int | None = None  # device memory less the margin, read once per run
        self._started = 0.0

    # ---------------------------------------------------------------------------- bookkeeping
    def _measured(self, candidate: Candidate) -> list[TrialRecord]:
        key = candidate.canonical()
        return [r for r in self.records if r.candidate.canonical() == key and r.role in ("search", "confirm", "bisect")]

    def _score(self, candidate: Candidate) -> float | None:
        scores = [r.score for r in self._measured(candidate)]
        if not scores or any(s is None for s in scores):
            return None
        return statistics.median(scores)

    def _best(self) -> tuple[Candidate, float] | None:
        scored = {r.candidate.canonical(): self._score(r.candidate) for r in self.records if r.role != "stability"}
        scored = {c: s for c, s in scored.items() if s is not None and not self._rule_out_reason(c)}
        if not scored:
            return None
        best = max(scored, key=scored.get)
        return best, scored[best]

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _out_of_time(self) -> bool:
        return self.settings.time_budget_s is not None and self._elapsed() >= self.settings.time_budget_s

    # ------------------------------------------------------------------------------- one trial
    def _expected_step_s(self, candidate: Candidate, accum: int) -> float | None:
        """From the fastest clean trial of the same dtype, scaled by samples per step."""
        rates = [r.result.samples_per_s for r in self.records
                 if r.candidate.dtype is candidate.dtype and r.result.status == "ok" and r.result.samples_per_s]
        return candidate.batch_size * accum / max(rates) if rates else None

    def _spec(self, candidate: Candidate, space: SearchSpace | None, *, steps: int | None = None,
              abandon: bool = True) -> TrialSpec:
        accum = space.grad_accum(candidate.batch_size) if space else 1
        warmup = self.settings.warmup_steps
        expected = self._expected_step_s(candidate, accum)
        if steps is None and expected:
            # a big batch on a slow device: fewer (long) steps measure as well as many short ones
            steps = max(MIN_STEPS, min(self.settings.steps, round(TRIAL_MEASURE_S / expected)))
            warmup = 1 if expected > 1.0 else warmup
        best = self._best()
        abandon_after = None
        if abandon and best is not None:
            expected_step = candidate.batch_size * accum / best[1]
            abandon_after = max(PRUNE_FACTOR * expected_step, MIN_ABANDON_S)
        return TrialSpec(
            workload=self.settings.workload, dtype=candidate.dtype, batch_size=candidate.batch_size,
            device=self.settings.device, steps=steps or self.settings.steps, warmup_steps=warmup,
            init_scale=candidate.init_scale or 2.0**16, growth_interval=candidate.growth_interval or 2000,
            grad_accum=accum, compare_fp32=candidate.dtype is not Dtype.FP32, seed=self.settings.seed,
            timeout_s=self.settings.trial_timeout_s, abandon_after_s=abandon_after,
        )

    def _run(self, candidate: Candidate, role: str, space: SearchSpace | None, **spec_kw: Any) -> TrialRecord:
        number = len(self.records) + 1
        self.emit({"event": "trial_start", "number": number, "label": candidate.label, "role": role})
        result = self.worker.run(self._spec(candidate, space, **spec_kw))
        if result.bad_input:
            raise BadInputError(result.error or "the workload broke the contract")
        feasible, why_not = judge(result, self.settings)
        record = TrialRecord(number, role, candidate, result, feasible, why_not)
        self.store.append(record)  # durable before anything else happens
        self.records.append(record)
        self._learn(record)
        best = self._best()
        self.emit({"event": "trial_end", "number": number, "label": candidate.label, "status": result.status,
                   "samples_per_s": result.samples_per_s, "feasible": feasible, "why_not": why_not,
                   "best": (best[0].label, best[1]) if best else None})
        return record

    # ------------------------------------------------------------------ what a result rules out
    def _learn(self, record: TrialRecord) -> None:
        c, status = record.candidate, record.result.status
        # A crash above some size is often the kernel's OOM killer, a hang a loader or collective
        # that cannot cope with the size: larger batches of the same dtype are not worth a trial.
        if status in ("oom", "crash", "timeout"):
            for other in self._space_candidates():
                if other.dtype is c.dtype and other.batch_size >= c.batch_size:
                    self.ruled_out.setdefault(other.canonical(), f"{c.dtype} failed with {status} at batch {c.batch_size}")
        if status == "pruned":
            # A dtype that has run cleanly is not "clearly slower": one stalled first step on a busy
            # machine rules out that configuration only. Otherwise (bayes) the whole dtype goes.
            ran_cleanly = any(r.candidate.dtype is c.dtype and r.result.status == "ok" for r in self.records)
            self.ruled_out.setdefault(c.canonical(), f"stopped early at batch {c.batch_size}: clearly slower than the best")
            if not ran_cleanly and self.settings.strategy != "grid":
                for other in self._space_candidates():
                    if other.dtype is c.dtype:
                        self.ruled_out.setdefault(
                            other.canonical(), f"{c.dtype} was stopped early at batch {c.batch_size}: clearly slower than the best")

    def _space_candidates(self) -> list[Candidate]:
        return self.space.candidates() if self.space else []

    def _read_memory_limit(self) -> int | None:
        ident = self.profile.identity
        total = getattr(ident, "memory_total_bytes", None)
        if self.profile.kind == "cpu":
            try:
                for line in Path("/proc/meminfo").read_text().splitlines():
                    if line.startswith("MemAvailable:"):
                        total = int(line.split()[1]) * 1024
            except OSError:
                return None
        return int(total * (1 - self.settings.memory_margin)) if total else None

    def _predicted_peak(self, c: Candidate) -> float | None:
        points = [(r.candidate.batch_size, r.result.peak_memory_bytes) for r in self.records
                  if r.candidate.dtype is c.dtype and r.result.status == "ok" and r.result.peak_memory_bytes]
        sizes = {b for b, _ in points}
        if len(sizes) < 2:
            return None
        mean_b = statistics.fmean(b for b, _ in points)
        mean_p = statistics.fmean(p for _, p in points)
        slope = sum((b - mean_b) * (p - mean_p) for b, p in points) / sum((b - mean_b) ** 2 for b, _ in points)
        return mean_p + slope * (c.batch_size - mean_b)

    def _rule_out_reason(self, c: Candidate) -> str | None:
        if c.canonical() in self.ruled_out:
            return self.ruled_out[c.canonical()]
        limit, predicted = self.memory_limit, self._predicted_peak(c)
        measured = [r.result.peak_memory_bytes for r in self._measured(c) if r.result.peak_memory_bytes]
        if limit and measured and max(measured) > limit:
            return (f"measured peak memory {max(measured) / 2**30:.1f} GiB leaves less than the "
                    f"{self.settings.memory_margin:.0%} safety margin")
        if limit and predicted and predicted > limit:
            return (f"predicted peak memory {predicted / 2**30:.1f} GiB exceeds {limit / 2**30:.1f} GiB "
                    f"(device memory less a {self.settings.memory_margin:.0%} margin)")
        return None

    # --------------------------------------------------------------------------------- the run
    def run(self) -> TuneResult:
        from ..hardware import probe

        self._started = time.monotonic()
        own_worker = self.worker is None
        self.worker = self.worker or Worker()
        self.worker.spawn()  # boots (imports torch) while the probe runs here
        try:
            if self.profile is None:
                self.profile = probe(self.settings.device).devices[0]
            self.memory_limit = self._read_memory_limit()
            self.store.write_device(self.profile)
            self.store.record_context(memory_limit_bytes=self.memory_limit, memory_margin=self.settings.memory_margin)
            self.records = list(self.store.records())
            for record in self.records:
                self._learn(record)
            stopped = self._search()
            self._bisect_oom_edge()
            recommendation = self._choose()
        finally:
            if own_worker:
                self.worker.close()
        return TuneResult(self.store.dir, recommendation, self.records, self.space, self.notes, stopped, self._elapsed())

    def _baseline(self) -> TrialRecord | None:
        """fp32 at the middle batch size (smaller ones if that fails): the reference everything is
        compared with, and the gradients that seed fp16's init_scale."""
        for record in self.records:
            if record.role == "search" and record.candidate.dtype is Dtype.FP32 and record.result.status == "ok":
                return record
        sizes = sorted(self.settings.batch_sizes or default_batch_sizes(self.profile))
        if self.settings.global_batch:
            sizes = [b for b in sizes if b <= self.settings.global_batch and self.settings.global_batch % b == 0] or [1]
        middle = sizes[len(sizes) // 2]
        provisional = SearchSpace((Dtype.FP32,), tuple(sizes), (2.0**16,), (2000,), self.settings.global_batch)
        for bs in [b for b in reversed(sizes) if b <= middle]:
            if self._out_of_time():
                return None
            record = self._run(Candidate(Dtype.FP32, bs), "search", provisional)
            if record.result.status == "ok":
                return record
        return None

    def _search(self) -> str:
        baseline = self._baseline()
        max_abs = baseline.result.grad_stats.max_abs if baseline and baseline.result.grad_stats else None
        seed = seeded_init_scale(max_abs)
        if max_abs:
            self.notes.append(f"fp16 init_scale seeded at 2^{math.log2(seed):g}: the largest fp32 gradient is "
                              f"{max_abs:.3g}, times the scale kept 8x under fp16's 65504")
        self.space, space_notes = build_space(self.profile, batch_sizes=self.settings.batch_sizes,
                                              global_batch=self.settings.global_batch, init_scale_seed=seed)
        self.notes += space_notes
        self.store.record_context(space=self.space.to_dict(), init_scale_seed=seed)
        for record in self.records:
            self._learn(record)
        candidates = self.space.candidates()
        limit = self.settings.max_trials or (len(candidates) if self.settings.strategy == "grid"
                                             else max(6, math.ceil(0.25 * len(candidates))))
        strategy = make_strategy(self.settings.strategy, self.space, self.settings.seed)
        for record in self.records:
            if record.role == "search" and record.candidate.canonical() in set(candidates):
                strategy.tell(record.candidate.canonical(), record.score)
        self.emit({"event": "plan", "planned": limit, "space": len(candidates), "strategy": strategy.name})
        repeated = 0
        while True:
            searched = sum(1 for r in self.records if r.role == "search")
            if searched >= limit:
                return f"reached {limit} search trials"
            if self._out_of_time():
                return f"time budget of {self.settings.time_budget_s:g} s used"
            if all(self._measured(c) or self._rule_out_reason(c) for c in candidates):
                return "every candidate was measured or ruled out"
            candidate = strategy.ask()
            if candidate is None:
                return "every candidate was tried"
            candidate = candidate.canonical()
            if self._measured(candidate):
                strategy.tell(candidate, self._score(candidate))
                repeated += 1
                if repeated > MAX_REPEATED_ASKS:
                    return "the search kept proposing measured configurations: converged"
                continue
            reason = self._rule_out_reason(candidate)
            if reason is not None:
                strategy.tell(candidate, None)
                repeated += 1
                if repeated > MAX_REPEATED_ASKS:
                    return "every remaining candidate is ruled out"
                continue
            repeated = 0
            if not any(r.candidate.dtype is candidate.dtype for r in self.records):
                # A dtype's first trial scouts at the smallest batch: if it is clearly slower (bf16
                # on an AVX2 CPU), finding out costs the least there.
                scout = Candidate(candidate.dtype, min(self.space.batch_sizes), candidate.init_scale,
                                  candidate.growth_interval)
                if scout != candidate:
                    strategy.tell(scout, self._run(scout, "search", self.space).score)
                    continue
            record = self._run(candidate, "search", self.space)
            strategy.tell(candidate, record.score)

    def _bisect_oom_edge(self) -> None:
        """Between the largest batch that ran and the smallest that ran out of memory, per dtype."""
        best = self._best()
        if best is None or self._out_of_time():
            return
        dtype = best[0].dtype
        ok = [r.candidate.batch_size for r in self.records if r.candidate.dtype is dtype and r.result.status == "ok"]
        failed = [r.candidate.batch_size for r in self.records
                  if r.candidate.dtype is dtype and r.result.status in ("oom", "crash", "timeout")]
        if not ok or not failed or best[0].batch_size != max(ok):
            return  # no edge, or the best is not at it (a bigger batch would not help)
        low, high = max(ok), min(failed)
        for _ in range(2):
            middle = (low + high) // 2
            middle -= middle % 8 if middle > 8 else 0
            if middle <= low or middle >= high or self._out_of_time():
                return
            record = self._run(Candidate(dtype, middle, best[0].init_scale, best[0].growth_interval), "bisect", self.space)
            if record.result.status == "ok":
                low = middle
            else:
                high = middle

    def _choose(self) -> Recommendation | None:
        best = self._best()
        if best is None:
            self.notes.append("no configuration ran cleanly: nothing to recommend (see the trials for why)")
            return None
        # Re-measure the leaders (and fp32 at the leader's batch size), interleaved.
        ranked = sorted({r.candidate.canonical() for r in self.records if self._score(r.candidate) is not None},
                        key=lambda c: -self._score(c))[: self.settings.confirm_top]
        fp32_twin = Candidate(Dtype.FP32, ranked[0].batch_size)
        contenders = ranked + ([fp32_twin] if ranked[0].dtype is not Dtype.FP32 and fp32_twin not in ranked else [])
        if len(contenders) > 1:
            for _ in range(CONFIRM_ROUNDS):
                for c in contenders:
                    if not self._out_of_time():
                        self._run(c, "confirm", self.space, abandon=False)
        best_candidate, best_score = self._best()
        why = self._why(best_candidate, best_score)
        if best_candidate.dtype is not Dtype.FP32:
            twin = self._score(Candidate(Dtype.FP32, best_candidate.batch_size))
            if twin is None or best_score <= twin * (1 + NOT_WORSE_MARGIN):
                shown = f"{twin:.1f}" if twin else "unmeasured"
                self.notes.append(f"{best_candidate.label} ({best_score:.1f} samples/s) does not beat fp32 at the same "
                                  f"batch size ({shown}) by more than {NOT_WORSE_MARGIN:.0%}: fp32 recommended")
                fp32_best = max((c for c in {r.candidate.canonical() for r in self.records}
                                 if c.dtype is Dtype.FP32 and self._score(c) is not None), key=self._score, default=None)
                if fp32_best is None:
                    return None
                best_candidate, best_score = fp32_best, self._score(fp32_best)
                why = self._why(best_candidate, best_score)
        scaler = GradScalerConfig(enabled=False)
        if best_candidate.dtype is Dtype.FP16:
            scaler, stability_note = self._stability(best_candidate)
            why += "; " + stability_note
        return self._recommendation(best_candidate, best_score, scaler, why)

    def _stability(self, candidate: Candidate) -> tuple[GradScalerConfig, str]:
        """A longer fp16 run at the chosen scaler settings; halve the scale once if it skips too often."""
        scale = candidate.init_scale
        for attempt in range(2):
            c = Candidate(Dtype.FP16, candidate.batch_size, scale, candidate.growth_interval)
            record = self._run(c, "stability", self.space, steps=self.settings.stability_steps, abandon=False)
            res = record.result
            skipped = res.skipped_steps or 0
            underflow = res.grad_stats.underflow_fraction if res.grad_stats else 0.0
            if res.status == "ok" and skipped / max(len(res.losses), 1) <= self.settings.max_skip_rate:
                return (GradScalerConfig(True, scale, growth_interval=candidate.growth_interval),
                        f"fp16 stability run: {skipped} of {len(res.losses)} steps skipped, "
                        f"{underflow:.3%} of gradient elements underflow at scale {res.final_loss_scale:g}")
            scale /= 8
        return (GradScalerConfig(True, scale, growth_interval=candidate.growth_interval),
                "fp16 stability run still skipped many steps: watch the scaler's skipped-step count")

    def _why(self, chosen: Candidate, score: float) -> str:
        parts = [f"{chosen.label} was the fastest configuration that kept fp32's numerics ({score:.1f} samples/s)"]
        for dtype in self.space.dtypes if self.space else ():
            if dtype is chosen.dtype:
                continue
            mine = [r for r in self.records if r.candidate.dtype is dtype]
            pruned = [r for r in mine if r.result.status == "pruned"]
            verdict = self.profile.dtypes[dtype]
            if pruned:
                parts.append(f"{dtype} was stopped early, clearly slower ({verdict.why})")
            elif mine and all(not r.feasible for r in mine):
                parts.append(f"{dtype} failed: {mine[0].why_not}")
            elif mine:
                top = max((self._score(r.candidate) or 0.0) for r in mine)
                parts.append(f"{dtype} reached {top:.1f} samples/s at best")
            elif not verdict.fast:
                parts.append(f"{dtype} not tried: {verdict.why}")
        return "; ".join(parts)

    def _recommendation(self, c: Candidate, score: float, scaler: GradScalerConfig, why: str) -> Recommendation:
        measured = self._measured(c)
        twin = self._score(Candidate(Dtype.FP32, c.batch_size))
        peaks = [r.result.peak_memory_bytes for r in measured if r.result.peak_memory_bytes is not None]
        return Recommendation(
            dtype=c.dtype,
            batch_size=c.batch_size,
            grad_accumulation_steps=self.space.grad_accum(c.batch_size) if self.space else 1,
            scaler=scaler,
            tf32=c.dtype in (Dtype.TF32, Dtype.BF16, Dtype.FP16) and self.profile.dtypes[Dtype.TF32].fast,
            device=self.settings.device,
            hardware={**fingerprint_of(self.profile), "torch": _torch_version()},
            measured=Measured(samples_per_s=score, speedup_vs_fp32=score / twin if twin else None,
                              peak_memory_bytes=max(peaks) if peaks else None),
            why=why,
            workload=self.settings.workload,
            created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            notes=tuple(self.notes),
        )


def _torch_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return None
