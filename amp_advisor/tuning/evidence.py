"""Evidence: a pure, read-only view of a run's trials, shared by the tuner and the report.

Per configuration: every trial that measured it, its exploration score (search, recheck and
bisect trials) and its confirmed score (the interleaved confirmation rounds). Which trials
support a figure is always known, so a recommendation can name them.

Scores, and why:
- exploration score = the best clean measurement: noise on a shared machine (another job, a
  slow period) only ever slows a run down, so the fastest measurement is the least disturbed one.
  It only ranks configurations for confirmation; it never decides;
- confirmed score = the best of its confirmation rounds, which interleave the contenders so
  that all of them see the same minutes of the machine, each with the same number of chances at
  an undisturbed moment. (The median of two rounds is their mean: one slow patch of the machine,
  which lasts seconds here and slows a run by up to 1.8x, would decide between two batch sizes a
  few percent apart.) Comparisons use the rounds both configurations shared, so neither has
  more chances than the other;
- a configuration with any measurement that failed or broke the numerics has no score.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..dtypes import Dtype
from ..harness.trial import Status
from .record import Role, TrialRecord
from .space import Candidate


@dataclass(frozen=True)
class ConfigEvidence:
    """One configuration over all its trials (stability runs apart)."""

    candidate: Candidate
    records: tuple[TrialRecord, ...]

    @property
    def clean(self) -> bool:
        """Every measurement ran and kept fp32's numerics. A first step stopped early (pruned) says
        nothing of either: the tuner measures such a configuration again when its dtype runs
        cleanly elsewhere (a stall of the machine, not of the configuration)."""
        return bool(self.records) and all(r.feasible for r in self.records if r.result.status is not Status.PRUNED)

    @property
    def explore_records(self) -> tuple[TrialRecord, ...]:
        return tuple(r for r in self.records if r.role.explores)

    @property
    def confirm_records(self) -> tuple[TrialRecord, ...]:
        return tuple(r for r in self.records if r.role is Role.CONFIRM)

    def _figure(self, records: tuple[TrialRecord, ...], combine: Callable[[list[float]], float]) -> float | None:
        """`records`' scores combined, if the configuration is clean and every one that ran has a score."""
        ran = [r for r in records if r.result.status is not Status.PRUNED]
        scores = [r.score for r in ran if r.score is not None]
        return combine(scores) if self.clean and scores and len(scores) == len(ran) else None

    @property
    def explore_score(self) -> float | None:
        return self._figure(self.explore_records, max)

    @property
    def confirmed_score(self) -> float | None:
        return self._figure(self.confirm_records, round_score)

    @property
    def confirmed(self) -> bool:
        return self.confirmed_score is not None

    @property
    def score(self) -> float | None:
        """What the configuration is shown at: confirmed when it was, explored otherwise."""
        return self.confirmed_score if self.confirmed_score is not None else self.explore_score

    @property
    def score_trials(self) -> tuple[int, ...]:
        """The trials `score` comes from."""
        records = self.confirm_records if self.confirmed_score is not None else self.explore_records
        return tuple(r.number for r in records)

    @property
    def rounds(self) -> dict[int, float | None]:
        return {r.round: r.score for r in self.confirm_records if r.round is not None}

    @property
    def peak_memory_bytes(self) -> int | None:
        peaks = [r.result.peak_memory_bytes for r in self.records if r.result.peak_memory_bytes]
        return max(peaks) if peaks else None

    @property
    def one_time_s(self) -> float | None:
        """The levers' one-time cost (a compile), cold: the largest its trials measured."""
        costs = [r.result.one_time_s for r in self.records if r.result.one_time_s is not None]
        return max(costs) if costs else None

    def over_run(self, rate: float, train_steps: int | None) -> float:
        """`rate` (this configuration's samples/s in some rounds) over a planned run of
        `train_steps` optimizer steps with its one-time cost paid once; `rate` itself without a
        planned run or a cost."""
        if not train_steps or not self.one_time_s or not self.records:
            return rate
        samples = train_steps * self.records[0].result.spec.samples_per_step
        return samples / (samples / rate + self.one_time_s)

    @property
    def one_time_warm_s(self) -> float | None:
        costs = [r.result.one_time_warm_s for r in self.records if r.result.one_time_warm_s is not None]
        return min(costs) if costs else None

    @property
    def tflops(self) -> float | None:
        values = [r.result.tflops for r in self.records if r.feasible and r.result.tflops]
        return statistics.median(values) if values else None

    @property
    def mfu(self) -> float | None:
        values = [r.result.mfu for r in self.records if r.feasible and r.result.mfu]
        return statistics.median(values) if values else None


@dataclass(frozen=True)
class Paired:
    """Two configurations over the confirmation rounds that measured both: like with like."""

    a: ConfigEvidence
    b: ConfigEvidence
    rounds: tuple[int, ...]
    a_score: float | None
    b_score: float | None

    @property
    def ratio(self) -> float | None:
        """b's speed over a's in these rounds (None unless both have a clean figure)."""
        return self.b_score / self.a_score if self.a_score and self.b_score else None

    @property
    def trials(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (tuple(r.number for r in self.a.confirm_records if r.round in self.rounds),
                tuple(r.number for r in self.b.confirm_records if r.round in self.rounds))


def round_score(scores: list[float]) -> float:
    """A configuration's figure over confirmation rounds: the best of two (a slow patch only ever
    slows a round down); over three or more, the mean of all but the slowest, which still drops a
    slow patch and no longer rewards a configuration for one lucky round."""
    if len(scores) < 3:
        return max(scores)
    return statistics.fmean(sorted(scores)[1:])


class Evidence:
    def __init__(self, records: Iterable[TrialRecord]) -> None:
        self.records: tuple[TrialRecord, ...] = tuple(records)
        grouped: dict[Candidate, list[TrialRecord]] = {}
        for r in self.records:
            if r.role.measures_speed:
                grouped.setdefault(r.candidate.canonical(), []).append(r)
        self.configs: dict[Candidate, ConfigEvidence] = {c: ConfigEvidence(c, tuple(rs)) for c, rs in grouped.items()}

    def config(self, candidate: Candidate) -> ConfigEvidence | None:
        return self.configs.get(candidate.canonical())

    def measured(self, candidate: Candidate) -> bool:
        return candidate.canonical() in self.configs

    def of_role(self, role: Role) -> list[TrialRecord]:
        return [r for r in self.records if r.role is role]

    def of_dtype(self, dtype: Dtype) -> list[TrialRecord]:
        return [r for r in self.records if r.candidate.dtype is dtype]

    def ran_cleanly(self, dtype: Dtype) -> bool:
        return any(r.result.status is Status.OK for r in self.of_dtype(dtype))

    def best(self, *, dtype: Dtype | None = None, confirmed: bool = False,
             allowed: Callable[[Candidate], bool] = lambda c: True) -> ConfigEvidence | None:
        """The highest-scoring configuration (of a dtype; among confirmed ones; allowed ones)."""
        def score(e: ConfigEvidence) -> float | None:
            return e.confirmed_score if confirmed else e.explore_score

        pool = [(s, e) for e in self.configs.values()
                if (dtype is None or e.candidate.dtype is dtype) and allowed(e.candidate)
                and (s := score(e)) is not None]
        return max(pool, key=lambda pair: pair[0])[1] if pool else None

    def best_per_dtype(self, allowed: Callable[[Candidate], bool] = lambda c: True) -> dict[Dtype, ConfigEvidence]:
        out = {}
        for dtype in dict.fromkeys(r.candidate.dtype for r in self.records):
            best = self.best(dtype=dtype, allowed=allowed)
            if best is not None:
                out[dtype] = best
        return out

    def break_even(self, candidate: Candidate) -> tuple[float, float, float | None] | None:
        """A configuration with a one-time cost against itself without its levers: (one-time
        seconds, seconds saved per optimizer step, optimizer steps until the cost is paid back:
        None when it never is). None: one of the two has no score or no cost was measured."""
        config, plain = self.config(candidate), self.config(candidate.plain)
        if config is None or plain is None or config.one_time_s is None or not config.score or not plain.score:
            return None
        samples = config.records[0].result.spec.samples_per_step
        saved = samples / plain.score - samples / config.score
        return config.one_time_s, saved, (config.one_time_s / saved if saved > 0 else None)

    def twin(self, candidate: Candidate) -> ConfigEvidence | None:
        """fp32 at the same batch size, if measured."""
        return self.config(candidate.fp32_twin)

    def paired(self, a: Candidate, b: Candidate) -> Paired | None:
        """a and b over the confirmation rounds that measured both (the best of those rounds)."""
        ea, eb = self.config(a), self.config(b)
        if ea is None or eb is None:
            return None
        common = tuple(sorted(set(ea.rounds) & set(eb.rounds)))
        if not common:
            return None
        return Paired(ea, eb, common, self.in_rounds(a, common), self.in_rounds(b, common))

    def main_rounds(self) -> tuple[int, ...]:
        """The confirmation rounds in which all the contenders met: those that measured the same
        configurations as the first round. (Later rounds measure a close call's group, or the
        leader beside its twins.)"""
        members: dict[int, set] = {}
        for r in self.records:
            if r.round is not None:
                members.setdefault(r.round, set()).add(r.candidate.canonical())
        if not members:
            return ()
        first = members[min(members)]
        return tuple(sorted(k for k, m in members.items() if m == first))

    def in_rounds(self, candidate: Candidate, rounds: tuple[int, ...]) -> float | None:
        """A configuration's best over the given rounds (None if it missed one or was not clean)."""
        config = self.config(candidate)
        if config is None or not config.clean or not rounds or any(k not in config.rounds for k in rounds):
            return None
        scores = [s for k in rounds if (s := config.rounds[k]) is not None]
        return round_score(scores) if len(scores) == len(rounds) else None

    def spread(self, candidate: Candidate) -> tuple[float, float, tuple[int, ...]] | None:
        """(slowest, fastest, trials) over every clean measurement of a configuration: the same
        configuration measured at different times shows how far the machine drifted."""
        config = self.config(candidate)
        if config is None:
            return None
        clean = [(r.score, r.number) for r in config.records if r.score]
        if len(clean) < 2:
            return None
        scores = [score for score, _ in clean]
        return min(scores), max(scores), tuple(number for _, number in clean)
