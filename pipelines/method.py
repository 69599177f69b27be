"""The explanation method of a job and the query layout it gives each example."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.config import JobConfig
from pipelines.layout import QueryLayout
from spex_ray.methods import MethodPlan, plan_method


@dataclass(frozen=True)
class MethodSpec:
    """Everything ``plan_method`` and the reducer need besides the example; same spec + same n =>
    same masks and results."""

    method: str
    budget: int | None
    b: int | None
    t: int
    seed: int
    max_order: int
    refit: str | None
    holdout: int
    indices: tuple[str, ...]
    trees: str = "lightgbm"

    @classmethod
    def from_config(cls, config: JobConfig) -> MethodSpec:
        return cls(
            method=config.method,
            budget=config.budget,
            b=config.b,
            t=config.t,
            seed=config.seed,
            max_order=config.max_order,
            refit=config.refit,
            trees=config.trees,
            holdout=config.holdout,
            indices=tuple(config.indices),
        )

    def plan(self, n: int) -> MethodPlan:
        """The method's plan for ``n`` features; ValueError with the reason when there is none."""
        return plan_method(
            self.method, n, budget=self.budget, b=self.b, t=self.t,
            seed=self.seed, max_order=self.max_order, refit=self.refit, trees=self.trees,
        )

    def layout(self, n: int, plan: MethodPlan | None = None) -> QueryLayout:
        """The query ids of an example with ``n`` features (design, held-out, full, empty)."""
        plan = plan if plan is not None else self.plan(n)
        return QueryLayout(n=n, design=plan.design.params(), holdout=self.holdout, seed=self.seed)
