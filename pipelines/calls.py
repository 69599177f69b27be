"""The work a job hands its executor, and what comes back (no Ray; see ``pipelines.executor``).

Three calls: a ``TargetCall`` asks one backend replica for an example's target, a ``Batch`` asks
one for the query-log rows of a range of an example's query ids, a ``FitCall`` turns an example's
values into explanation rows (``pipelines.reduce.run_fit``; with adaptive budgets, the values of
one stage, into rows or into "go on to the next stage"). Each comes back as its ``...Result``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from connectors.base import Backend, Example
from pipelines.layout import QueryLayout
from pipelines.method import MethodSpec
from pipelines.schema import QUERY_LOG_SCHEMA


@dataclass
class Batch:
    """A contiguous range of query ids of one example; ``work`` is the executor's handle on the
    ``(Example, QueryLayout)`` pair (``Executor.share``); ``failures`` counts replica deaths under
    it; ``recovered``: rows of it that a dead replica journaled."""

    example_id: str
    start: int
    stop: int
    work: Any
    failures: int = 0
    recovered: pa.RecordBatch | None = None


@dataclass
class TargetCall:
    """The target of one example, asked of one replica; ``failures`` counts replica deaths under it."""

    example: Example
    failures: int = 0


@dataclass
class FitCall:
    """One example whose values are all in, to fit and turn into explanation rows. With adaptive
    budgets, those of ``stage`` (an index into ``layout.stages()``; None: the whole design) are in;
    ``previous_r2``: the cross-validated R² of the stage before (None: the first stage, or not
    known to this run: the fit computes it when the rule needs it)."""

    example: Example
    spec: MethodSpec
    layout: QueryLayout
    values: np.ndarray
    stage: int | None = None
    previous_r2: float | None = None


@dataclass
class BatchResult:
    """A scored batch (``rows``: the queries sent), or a batch given up (``rows`` None, ``error`` why)."""

    batch: Batch
    rows: pa.RecordBatch | None
    error: str | None = None


@dataclass
class TargetResult:
    """An example's target (None: the backend has none to give), or why there is none (``error``)."""

    call: TargetCall
    target: str | None
    error: str | None = None


@dataclass
class FitResult:
    """An example's explanation rows, or why the fit did not run (``rows`` None, ``error`` why), or
    (``goes_on``) an adaptive stage that did not stop the example. ``r2``: an adaptive stage's
    cross-validated R² (None without adaptive budgets)."""

    call: FitCall
    rows: list[dict] | None
    error: str | None = None
    r2: float | None = None

    @property
    def goes_on(self) -> bool:
        """The example's next stage of queries is to be sent (no rows, no error)."""
        return self.rows is None and self.error is None


def make_target(backend: Backend, example: Example) -> tuple[str | None, str | None]:
    """``(backend.target(example), None)``, or ``(None, why)`` when the backend cannot make one."""
    try:
        return backend.target(example), None
    except Exception as err:  # a bad example fails itself, not the job
        return None, f"cannot make the target: {type(err).__name__}: {err}"


def failed_rows(batch: Batch, error: str | None) -> pa.RecordBatch:
    """Query-log rows recording that a batch could not be scored; the answers its dead replicas
    journaled (paid for) are kept as they are."""
    recovered = batch.recovered
    known = set() if recovered is None else set(recovered.column("query_id").to_pylist())
    ids = np.array([q for q in range(batch.start, batch.stop) if q not in known], dtype=np.int64)
    failed = pa.RecordBatch.from_pydict(
        {
            "example_id": [batch.example_id] * ids.size,
            "query_id": ids,
            "value": [None] * ids.size,
            "raw": [None] * ids.size,
            "error": [error] * ids.size,
            "attempts": np.full(ids.size, batch.failures, dtype=np.int32),
            "latency_ms": [None] * ids.size,
            "cost_usd": [0.0] * ids.size,
            "fingerprint": [None] * ids.size,
        },
        schema=QUERY_LOG_SCHEMA,
    )
    if recovered is None:
        return failed
    return pa.Table.from_batches([recovered.cast(QUERY_LOG_SCHEMA), failed]).combine_chunks().to_batches()[0]
