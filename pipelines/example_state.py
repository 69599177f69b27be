"""Per-example state while an example is scored: its values so far, which query ids are in, the
ones that failed for good, and with adaptive budgets the stage being scored (no Ray)."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from connectors.base import Example
from pipelines.calls import Batch
from pipelines.layout import QueryLayout
from pipelines.reduce import failed_queries_message


@dataclass
class ExampleState:
    """An example being scored: ``values`` (NaN = missing), ``done`` (query id answered or failed
    for good), ``errors`` (failed query id -> last error); ``work`` is the executor's handle on
    ``(example, layout)`` that its batches carry. With adaptive budgets (``start_stages``) only the
    query ids of ``stage`` are ``wanted``; ``previous_r2`` is the cross-validated R² of the stage
    before, when this run fitted it."""

    example: Example
    layout: QueryLayout
    work: Any
    values: np.ndarray = field(init=False)
    done: np.ndarray = field(init=False)
    wanted: np.ndarray = field(init=False)
    errors: dict[int, str] = field(default_factory=dict)
    stages: list[int] | None = None
    stage: int | None = None
    previous_r2: float | None = None

    def __post_init__(self) -> None:
        self.values = np.full(self.layout.num_queries, np.nan)
        self.done = np.zeros(self.layout.num_queries, dtype=bool)
        self.wanted = np.ones(self.layout.num_queries, dtype=bool)

    @property
    def remaining(self) -> int:
        """Wanted query ids not in yet."""
        return int(np.count_nonzero(self.wanted & ~self.done))

    def start_stages(self) -> None:
        """Score the design stage by stage (``layout.stages()``), from the last stage any of whose
        design queries is in: a query of stage k was sent only once stages < k were judged to go on."""
        self.stages = self.layout.stages()
        logged = np.flatnonzero(self.done[: self.layout.num_design])
        self.open_stage(bisect_right(self.stages, int(logged[-1])) if logged.size else 0)

    def open_stage(self, stage: int) -> None:
        """Want the query ids of ``stage``: its design queries and the held-out, full and empty ones."""
        self.stage = stage
        self.wanted = self.layout.stage_ids(self.stages[stage])

    def record(self, rows: pa.Table | pa.RecordBatch) -> int:
        """Take in query-log rows (ids already in, or beyond the layout, are ignored); returns how
        many were new."""
        ids = rows.column("query_id").to_numpy()
        values = rows.column("value").to_numpy(zero_copy_only=False)
        errors = rows.column("error").to_pylist()
        new = 0
        for query_id, value, error in zip(ids, values, errors):
            if query_id >= self.done.size or self.done[query_id]:
                continue
            self.done[query_id] = True
            new += 1
            if error is None:
                self.values[query_id] = value
            else:
                self.errors[int(query_id)] = error
        return new

    def missing_batches(self, batch_size: int) -> list[Batch]:
        """The wanted query ids not in yet, as batches of at most ``batch_size`` contiguous ids."""
        missing = np.flatnonzero(self.wanted & ~self.done)
        if missing.size == 0:
            return []
        batches = []
        for run in np.split(missing, np.flatnonzero(np.diff(missing) != 1) + 1):
            for start in range(int(run[0]), int(run[-1]) + 1, batch_size):
                stop = min(start + batch_size, int(run[-1]) + 1)
                batches.append(Batch(self.example.example_id, start, stop, self.work))
        return batches

    def failure(self, max_attempts: int) -> str | None:
        """Why the example cannot be fitted (some queries failed for good), or None."""
        if not self.errors:
            return None
        failed = sorted(self.errors)
        return failed_queries_message(failed, [self.errors[i] for i in failed], int(np.count_nonzero(self.wanted)),
                                      max_attempts)
