"""Score a range of query ids of one example with a backend; failed rows are retried one by one.

A row fails when the batch call raises, or its Score has an ``error``, no value or a non-finite
value. Each failed row is retried alone until it succeeds or has had ``max_attempts`` attempts;
then it is logged with its last error. A row the backend did not send (``Score.not_sent``, e.g.
its dollar cap is spent) is neither retried nor returned, so a resumed job sends it. The result
is a query-log record batch.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa

from connectors.base import Backend, Example, Score
from pipelines.layout import QueryLayout
from spex_ray.schema import QUERY_LOG_SCHEMA


class BatchScorer:
    """Turns ``(example, layout, start, stop)`` into query-log rows with one backend replica."""

    def __init__(self, backend: Backend, max_attempts: int = 3) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.backend = backend
        self.max_attempts = max_attempts

    def score(self, example: Example, layout: QueryLayout, start: int, stop: int) -> pa.RecordBatch:
        """Query-log rows for the query ids ``[start, stop)`` of ``example`` that were sent, in id order."""
        keep = layout.masks(start, stop)
        rows = stop - start
        scores, seconds = self._call(example, keep)
        latency = [seconds / rows * 1e3] * rows
        attempts = [1] * rows
        for row in range(rows):
            while not scores[row].not_sent and _failure(scores[row]) is not None and attempts[row] < self.max_attempts:
                attempts[row] += 1
                retried, seconds = self._call(example, keep[row : row + 1])
                scores[row] = retried[0]
                latency[row] = seconds * 1e3
        sent = [row for row in range(rows) if not scores[row].not_sent]
        errors = [_failure(scores[row]) for row in sent]
        return pa.RecordBatch.from_pydict(
            {
                "example_id": [example.example_id] * len(sent),
                "query_id": np.asarray(sent, dtype=np.int64) + start,
                "value": [None if error else float(scores[row].value) for row, error in zip(sent, errors)],
                "raw": [scores[row].raw or None for row in sent],
                "error": errors,
                "attempts": np.asarray([attempts[row] for row in sent], dtype=np.int32),
                "latency_ms": np.asarray([latency[row] for row in sent], dtype=np.float32),
            },
            schema=QUERY_LOG_SCHEMA,
        )

    def _call(self, example: Example, keep: np.ndarray) -> tuple[list[Score], float]:
        """The backend's Scores for ``keep`` and the seconds taken; a raising call fails every row."""
        begin = time.perf_counter()
        try:
            scores = list(self.backend.score(example, keep))
            if len(scores) != len(keep):
                raise RuntimeError(f"backend returned {len(scores)} scores for {len(keep)} masks")
        except Exception as err:  # a backend error of any kind fails the rows, not the job
            message = f"{type(err).__name__}: {err}"
            scores = [Score(value=None, raw="", error=message) for _ in range(len(keep))]
        return scores, time.perf_counter() - begin


def _failure(score: Score) -> str | None:
    """Why ``score`` counts as failed, or None when it is usable."""
    if score.error is not None:
        return score.error
    if score.value is None:
        return "backend returned no value"
    if not math.isfinite(score.value):
        return f"backend returned a non-finite value ({score.value})"
    return None
