"""The search strategies behind one small interface: ask for a candidate, tell its score.

The tuner owns the loop (a time limit, a log line and a durable record per trial before the next
ask); a strategy only proposes. `score` is samples/s for a feasible trial, None otherwise.
scikit-optimize is archived upstream, so it stays behind this interface with a grid beside it.
"""

from __future__ import annotations

import warnings
from typing import Protocol

from .space import Candidate, SearchSpace


class SearchStrategy(Protocol):
    name: str

    def ask(self) -> Candidate | None:
        """The next candidate to measure, or None when the strategy has nothing left to try."""

    def tell(self, candidate: Candidate, score: float | None) -> None: ...


class GridStrategy:
    """Every candidate of the space once, in a fixed order (dtype, then batch size)."""

    name = "grid"

    def __init__(self, space: SearchSpace) -> None:
        self._pending = list(space.candidates())

    def ask(self) -> Candidate | None:
        return self._pending.pop(0) if self._pending else None

    def tell(self, candidate: Candidate, score: float | None) -> None:
        pass


class BayesStrategy:
    """scikit-optimize's ask/tell Optimizer over the points that change speed, one categorical
    dimension per SearchSpace.dimensions() (dtype, batch size, comm, the levers searched on the
    grid); minimises -score. Tells are buffered and fitted at the next ask: one fit per proposal."""

    name = "bayes"

    def __init__(self, space: SearchSpace, seed: int = 0, initial_points: int = 4) -> None:
        from skopt import Optimizer  # scikit-learn comes with it: ~3 s to import, so only here
        from skopt.space import Categorical

        self._space = space
        dims = [Categorical(list(choices), name=name) for name, choices in space.dimensions()]
        self._names = [name for name, _ in space.dimensions()]
        # Extra trees handle categorical dimensions well and fit in milliseconds.
        self._opt = Optimizer(dims, base_estimator="ET", n_initial_points=initial_points,
                              acq_func="EI", random_state=seed)
        self._scale: float | None = None  # scores are divided by the first one: y near -1
        self._pending: list[tuple[list, float]] = []

    def ask(self) -> Candidate | None:
        with warnings.catch_warnings():
            # skopt warns when it re-proposes a measured point; the tuner answers those from its records
            warnings.filterwarnings("ignore", message="The objective has been evaluated", category=UserWarning)
            if self._pending:
                xs, ys = zip(*self._pending, strict=True)
                self._pending = []
                self._opt.tell(list(xs), list(ys))
            values = self._opt.ask()
        # skopt hands back numpy scalars; point_of makes them plain Python values
        return self._space.point_of(dict(zip(self._names, values, strict=True)))

    def tell(self, candidate: Candidate, score: float | None) -> None:
        if score is not None and self._scale is None:
            self._scale = score
        # infeasible: worse than any feasible (the first score seen sets the scale)
        y = 0.0 if score is None or self._scale is None else -score / self._scale
        point = self._space.coordinates(candidate)
        if point is None:
            return  # a point outside the grid (an edge bisection, a lever tried on a leader)
        self._pending.append((point, y))


def make_strategy(name: str, space: SearchSpace, seed: int) -> SearchStrategy:
    if name == "grid":
        return GridStrategy(space)
    if name == "bayes":
        return BayesStrategy(space, seed=seed)
    raise ValueError(f"unknown strategy {name!r}")
