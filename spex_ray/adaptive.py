"""Adaptive budgets: the budget is a cap, queries go out in stages, and an example stops when more
queries stop improving its cross-validated fit.

A design's stages are prefixes of its query ids that are designs themselves, so a stage reuses
every earlier query: a ``FilledDesign`` (or ``SpexDesign``) stops after SPEX's design at
b = 4, 5, … (SPEX's designs nest), then after its uniform masks in doublings; a ``UniformDesign``
doubles from at least ``MIN_STAGE`` masks. After each stage the method's fit reports its
cross-validated R² on the queries spent (``Method.fit_cv``). The rule: stop after the first
stage that raised it by less than ``MIN_GAIN`` (or made it exact), and keep that stage's fit,
which used every query spent. A stage can only be judged by spending it, so a stop saves the
stages after it, and the fits of the earlier stages cost CPU (about as much again as the last).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spex_ray.design import MIN_FILLED_B, Design, FilledDesign, SpexDesign, UniformDesign, spex_num_queries
from spex_ray.interactions import Interactions
from spex_ray.methods import Method, cross_validated_methods

__all__ = ["MIN_GAIN", "MIN_STAGE", "AdaptiveFit", "fit_adaptive", "prefix_design", "stages", "stops"]

#: A stage that raises the cross-validated R² by less than this is the last.
MIN_GAIN = 0.01
#: Fewest masks in the first stage of a uniform design.
MIN_STAGE = 256
#: Cross-validated R² at or above this is exact: no stage can raise it.
_EXACT = 1.0 - 1e-9


@dataclass(frozen=True)
class AdaptiveFit:
    """The fit of the last stage spent; ``stages``: (queries spent, cross-validated R²) per stage."""

    interactions: Interactions
    queries: int
    budget: int
    stages: tuple[tuple[int, float], ...]

    @property
    def saved(self) -> int:
        """Queries of the budget left unspent."""
        return self.budget - self.queries


def stages(design: Design) -> list[int]:
    """Increasing query counts, the last ``design.num_queries``, each a prefix that is a design."""
    total = design.num_queries
    if isinstance(design, UniformDesign):
        counts = [total]
        while counts[-1] // 2 >= MIN_STAGE:
            counts.append(counts[-1] // 2)
        return counts[::-1]
    spex = design.spex if isinstance(design, FilledDesign) else design
    counts = [spex_num_queries(spex.n, b, spex.t, spex.groups) for b in range(min(MIN_FILLED_B, spex.b), spex.b + 1)]
    while 2 * counts[-1] < total:
        counts.append(2 * counts[-1])
    return counts if counts[-1] == total else [*counts, total]


def prefix_design(design: Design, queries: int) -> Design:
    """The design made of ``design``'s first ``queries`` queries (one of ``stages(design)``)."""
    if isinstance(design, UniformDesign):
        return UniformDesign(design.n, queries, design.seed, design.stream)
    spex = design.spex if isinstance(design, FilledDesign) else design
    if queries > spex.num_queries:
        return FilledDesign(spex, queries - spex.num_queries)
    for b in range(1, spex.b + 1):
        if spex_num_queries(spex.n, b, spex.t, spex.groups) == queries:
            return SpexDesign(spex.n, b, spex.t, spex.groups, spex.seed)
    raise ValueError(f"{queries} queries are not a stage of {design.params()}")


def stops(r2: float, previous: float | None, min_gain: float = MIN_GAIN) -> bool:
    """The rule: a stage of cross-validated R² ``r2`` is the last when it is exact, or when it raised
    the R² of the stage before (``previous``; None: it is the first) by less than ``min_gain``."""
    return r2 >= _EXACT or (previous is not None and r2 - previous < min_gain)


def fit_adaptive(method: Method, values_of: Callable[[int, int], np.ndarray], min_gain: float = MIN_GAIN) -> AdaptiveFit:
    """Spend ``method``'s queries stage by stage (``values_of(start, stop)``: float values of query
    ids [start, stop)) until a stage raises the cross-validated R² by less than ``min_gain``."""
    if not method.cross_validates:
        raise ValueError(f"adaptive budgets need {cross_validated_methods()} (a cross-validated fit), not {method.name}")
    values = np.empty(method.num_queries)
    spent, history = 0, []
    for count in stages(method.design):
        values[spent:count] = values_of(spent, count)
        spent = count
        result, r2 = method.with_design(prefix_design(method.design, count)).fit_cv(values[:count])
        previous = history[-1][1] if history else None
        history.append((count, r2))
        if stops(r2, previous, min_gain):
            break
    return AdaptiveFit(result, spent, method.num_queries, tuple(history))
