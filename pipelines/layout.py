"""Which mask each query id of one example stands for.

Query ids of an example, in order:
  ``[0, Q)``         the method's design (``design_from_params(design)``),
  ``[Q, Q + H)``     ``H`` held-out uniform masks for faithfulness
                     (``UniformDesign(n, H, seed, stream=HOLDOUT_STREAM)``: not a method's masks),
  ``Q + H``          all features kept (the full value),
  ``Q + H + 1``      all features masked (the empty value).
Masks are bool (rows, n), True = feature kept; they are a deterministic function of the
parameters and the query id, so only ``(example_id, query_id)`` ever travels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from spex_ray.adaptive import stages
from spex_ray.design import UniformDesign, design_from_params


HOLDOUT_STREAM = 1


@dataclass(frozen=True)
class QueryLayout:
    """The query ids of one example; ``design`` is the design's ``params()`` dict."""

    n: int
    design: dict[str, Any]
    holdout: int
    seed: int

    def __reduce__(self):
        """Pickle the parameters only; designs are rebuilt where they are used."""
        return QueryLayout, (self.n, self.design, self.holdout, self.seed)

    @cached_property
    def _design(self):
        return design_from_params(self.design)

    @cached_property
    def _holdout(self):
        return UniformDesign(self.n, self.holdout, seed=self.seed, stream=HOLDOUT_STREAM) if self.holdout else None

    @cached_property
    def num_design(self) -> int:
        """Q, the design's queries."""
        return self._design.num_queries

    @property
    def full_id(self) -> int:
        return self.num_design + self.holdout

    @property
    def empty_id(self) -> int:
        return self.num_design + self.holdout + 1

    @property
    def num_queries(self) -> int:
        """All query ids of the example: Q + H + 2."""
        return self.num_design + self.holdout + 2

    def stages(self) -> list[int]:
        """The design's stages for adaptive budgets (``spex_ray.adaptive.stages``): increasing
        query counts, each a prefix of the design that is a design, the last Q."""
        return stages(self._design)

    def stage_ids(self, count: int) -> np.ndarray:
        """bool (Q + H + 2,): the query ids a stage of ``count`` design queries needs: the design's
        first ``count``, and the held-out, full and empty ones (sent with the first stage)."""
        ids = np.arange(self.num_queries)
        return (ids < count) | (ids >= self.num_design)

    def holdout_masks(self) -> np.ndarray:
        """bool (H, n): the held-out masks."""
        return self.masks(self.num_design, self.full_id)

    def masks(self, start: int, stop: int) -> np.ndarray:
        """bool (stop - start, n): the masks of query ids ``[start, stop)``."""
        if not 0 <= start <= stop <= self.num_queries:
            raise ValueError(f"query ids [{start}, {stop}) outside [0, {self.num_queries})")
        parts = []
        q, h = self.num_design, self.holdout
        if start < q:
            parts.append(self._design.masks(start, min(stop, q)))
        if h and start < q + h and stop > q:
            parts.append(self._holdout.masks(max(start, q) - q, min(stop, q + h) - q))
        if start <= self.full_id < stop:
            parts.append(np.ones((1, self.n), dtype=bool))
        if start <= self.empty_id < stop:
            parts.append(np.zeros((1, self.n), dtype=bool))
        if not parts:
            return np.zeros((0, self.n), dtype=bool)
        return np.concatenate([np.asarray(part, dtype=bool) for part in parts], axis=0)
