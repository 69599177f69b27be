"""Explanation methods behind one interface: a query design plus a fit from values to interactions.

``plan_method(method, n, ...)`` returns a ``MethodPlan``: ``.design`` says which masks to query
(``design.masks(start, stop)``, True = kept) and ``.fit(values)`` turns the values of those
queries, in query-id order, into Fourier-basis ``Interactions``. Equal ``params()`` mean equal
masks and equal results, which is what the pipeline's resume and caching rely on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from spex_ray.design import SpexDesign, UniformDesign, spex_num_queries
from spex_ray.interactions import Interactions
from spex_ray.peeling import check_values, decode

MethodName = Literal["spex", "spex-hard", "spex-soft", "spex-hybrid", "proxyspex", "lasso", "faith-banzhaf"]
METHODS: tuple[str, ...] = ("spex", "spex-hard", "spex-soft", "spex-hybrid", "proxyspex", "lasso", "faith-banzhaf")
#: Tree libraries of spex-hybrid and proxyspex (``spex_ray.trees``, imported only when fitting).
TREE_LIBRARIES: tuple[str, ...] = ("lightgbm", "sklearn")
#: b used when neither a budget nor b is given.
DEFAULT_B = 6


@dataclass(frozen=True)
class MethodPlan:
    """One method applied to one example of n features: its design and its fit."""

    method: str
    design: SpexDesign | UniformDesign
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_queries(self) -> int:
        return self.design.num_queries

    def params(self) -> dict[str, Any]:
        return {"method": self.method, "design": self.design.params(), **self.options}

    def fit(self, values: np.ndarray) -> Interactions:
        """Fourier-basis interactions from float values (num_queries,) in query-id order."""
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
    method: str,
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
    """Plan ``method`` for an example of ``n`` features.

    SPEX methods take ``b`` or, failing that, the largest design that fits ``budget`` (default
    b = 6). Uniform-mask methods (lasso, faith-banzhaf, proxyspex) use ``budget`` queries or, when
    only ``b`` is given, as many as SPEX would at that b (equal-budget comparisons).
    ``max_order`` caps the order of the regression baselines (1 or 2); ``refit`` applies to
    spex, spex-hard and spex-soft; ``trees`` ("lightgbm" or "sklearn") is the tree library of
    spex-hybrid (soft decoding, SPEX's support plus tree terms chosen by cross-validation, least-
    squares refit; see ``spex_ray.hybrid``) and proxyspex.
    """
    if trees not in TREE_LIBRARIES:
        raise ValueError(f"trees must be one of {', '.join(TREE_LIBRARIES)}, got {trees!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if n < 1:
        raise ValueError(f"an explanation needs at least 1 feature, got n={n}")
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be a positive number of queries, got {budget}")
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
