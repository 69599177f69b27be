"""Explanation methods behind one interface: a query design plus a fit from values to interactions.

``plan_method(method, n, ...)`` returns a ``MethodPlan``: ``.design`` says which masks to query
(``design.masks(start, stop)``, True = kept) and ``.fit(values)`` turns the values of those
queries, in query-id order, into Fourier-basis ``Interactions``. Equal ``params()`` mean equal
masks and equal results, which is what the pipeline's resume and caching rely on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import typing
from typing import Any, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from spex_ray.design import FilledDesign, SpexDesign, UniformDesign, design_for_budget, spex_num_queries
from spex_ray.interactions import Interactions
from spex_ray.peeling import check_values, decode

MethodName = Literal["spex-hybrid", "spex-hard", "spex-soft", "proxyspex", "lasso", "faith-banzhaf"]
METHODS: tuple[str, ...] = typing.get_args(MethodName)
#: The default of ``explain``, ``plan_method`` and the job config: the most faithful per query in BENCHMARKS.md.
DEFAULT_METHOD = "spex-hybrid"
#: Tree libraries of spex-hybrid and proxyspex (``spex_ray.trees``, imported only when fitting).
TREE_LIBRARIES: tuple[str, ...] = ("lightgbm", "sklearn")
#: b used when neither a budget nor b is given.
DEFAULT_B = 6


@dataclass(frozen=True)
class MethodPlan:
    """One method applied to one example of n features: its design and its fit."""

    method: str
    design: SpexDesign | UniformDesign | FilledDesign
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_queries(self) -> int:
        return self.design.num_queries

    def params(self) -> dict[str, Any]:
        return {"method": self.method, "design": self.design.params(), **self.options}

    def fit(self, values: np.ndarray) -> Interactions:
        """Fourier-basis interactions from float values (num_queries,) in query-id order. Runs on one
        thread (BLAS included): callers parallelise across examples, and BLAS threads spinning on a
        busy machine cost up to 15x the CPU of these small solves."""
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(values)

    def fit_cv(self, values: np.ndarray) -> tuple[Interactions, float]:
        """``fit``'s interactions and their cross-validated R² on the design's own queries
        (1 − CV mean squared error / variance of the values; spex-hybrid only)."""
        if self.method != "spex-hybrid":
            raise ValueError(f"a cross-validated fit (adaptive budgets) needs spex-hybrid, not {self.method}")
        from spex_ray.hybrid import fit_spex_hybrid_cv

        with threadpool_limits(limits=1, user_api="blas"):
            result, error = fit_spex_hybrid_cv(self.design, values, backend=self.options["trees"])
        variance = float(np.var(values))
        return result, 1.0 - error / variance if variance > 0 else 1.0

    def _fit(self, values: np.ndarray) -> Interactions:
        if self.method == "spex-hybrid":
            from spex_ray.hybrid import fit_spex_hybrid  # imports scikit-learn and the tree library

            return fit_spex_hybrid(self.design, values, backend=self.options["trees"])
        if self.method.startswith("spex"):
            decoder = "hard" if self.method == "spex-hard" else "soft"
            return decode(self.design, values, decoder, refit=self.options["refit"])
        from spex_ray import baselines  # imports scikit-learn: only when a baseline is used

        values = check_values(values, self.num_queries)
        masks = self.design.masks()
        if self.method == "lasso":
            return baselines.fit_lasso(masks, values, order=self.options["order"], seed=self.design.seed)
        if self.method == "faith-banzhaf":
            return baselines.fit_faith_banzhaf(masks, values, order=self.options["order"])
        return baselines.fit_proxyspex(masks, values, seed=self.design.seed, backend=self.options["trees"])


def plan_method(
    method: str | None,
    n: int,
    *,
    budget: int | None = None,
    b: int | None = None,
    t: int = 5,
    groups: int = 3,
    seed: int = 0,
    max_order: int = 2,
    refit: str | None = "ls",
    trees: str = "lightgbm",
) -> MethodPlan:
    """Plan ``method`` (None: ``DEFAULT_METHOD``, spex-hybrid) for an example of ``n`` features.

    Queries: ``b`` sizes a SPEX design (SPEX's count at that b, for every method: equal-budget
    comparisons); otherwise ``budget`` is spent whole by spex-hybrid (``design.design_for_budget``:
    SPEX's largest design at b ≥ 4, then uniform masks up to the budget; only uniform masks below
    SPEX's b = 4) and by the uniform-mask methods (lasso, faith-banzhaf, proxyspex), while spex-hard
    and spex-soft take the largest SPEX design within it; with neither, b = 6.
    ``max_order`` caps the order of the regression baselines (1 or 2); ``refit`` applies to
    spex-hard and spex-soft; ``trees`` ("lightgbm" or "sklearn") is the tree library of
    spex-hybrid (soft decoding, SPEX's support plus tree terms chosen by cross-validation, least
    squares or ridge refit; see ``spex_ray.hybrid``) and proxyspex.
    """
    method = DEFAULT_METHOD if method is None else method
    if trees not in TREE_LIBRARIES:
        raise ValueError(f"trees must be one of {', '.join(TREE_LIBRARIES)}, got {trees!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if n < 1:
        raise ValueError(f"an explanation needs at least 1 feature, got n={n}")
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be a positive number of queries, got {budget}")
    if method == "spex-hybrid" and b is None and budget is not None:
        return MethodPlan(method, design_for_budget(n, budget, t, groups, seed), {"trees": trees})
    if method.startswith("spex"):
        if b is not None:
            design = SpexDesign(n, b, t, groups, seed)
        elif budget is not None:
            design = SpexDesign.for_budget(n, budget, t, groups, seed)
        else:
            design = SpexDesign(n, DEFAULT_B, t, groups, seed)
        if method == "spex-hybrid":
            return MethodPlan(method, design, {"trees": trees})
        return MethodPlan(method, design, {"refit": refit})
    if budget is None:
        budget = spex_num_queries(n, DEFAULT_B if b is None else b, t, groups)
    options = {"order": min(max(max_order, 1), 2)} if method in ("lasso", "faith-banzhaf") else {"trees": trees}
    return MethodPlan(method, UniformDesign(n, budget, seed), options)
