"""The explanation method of a job and the query layout it gives each example."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.config import JobConfig
from pipelines.layout import QueryLayout
from spex_ray.methods import Method, MethodOptions, method_class


@dataclass(frozen=True)
class MethodSpec:
    """A job's method: its name and options (the config keys of ``MethodOptions``), the held-out
    masks and the indices written; same spec + same n => same masks and results. ``adaptive``:
    the design's queries go out in stages (``spex_ray.adaptive``) until the fit stops improving;
    ``link``: the fit's link (``spex_ray.link``)."""

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
    adaptive: bool = False
    link: str = "identity"

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
            adaptive=config.adaptive,
            link=config.link,
        )

    @property
    def options(self) -> MethodOptions:
        return MethodOptions(budget=self.budget, b=self.b, t=self.t, seed=self.seed, max_order=self.max_order,
                             refit=self.refit, trees=self.trees)

    def method_for(self, n: int) -> Method:
        """The method for an example of ``n`` features; ValueError with the reason when there is none."""
        return method_class(self.method).for_example(n, self.options)

    def layout(self, n: int, method: Method | None = None) -> QueryLayout:
        """The query ids of an example with ``n`` features (design, held-out, full, empty)."""
        method = method if method is not None else self.method_for(n)
        return QueryLayout(n=n, design=method.design.params(), holdout=self.holdout, seed=self.seed)
