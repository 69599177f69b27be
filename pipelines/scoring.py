"""Score a range of query ids of one example with a backend; failed rows are retried one by one.

A row fails when the batch call raises, or its Score has an ``error``, no value or a non-finite
value. Each failed row is retried alone until it succeeds or has had ``max_attempts`` attempts;
then it is logged with its last error. A row the backend did not send (``Score.sent`` False, e.g.
its dollar cap is spent) is neither retried nor returned, so a resumed job sends it. The result
is a query-log record batch; with a journal, every final row is on disk before it is returned,
a streaming backend's as soon as its answer is in.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import Backend, Example, Score
from pipelines.journal import Journal
from pipelines.layout import QueryLayout
from pipelines.schema import QUERY_LOG_SCHEMA


class BatchScorer:
    """Turns ``(example, layout, start, stop)`` into query-log rows with one backend replica.

    ``journal``: where every final row goes as soon as it is known (``pipelines.journal``): with a
    backend that ``streams_scores`` (API backends, which answer rows concurrently) a request is
    journaled before it is sent and a row as soon as its answer is in; with others, each call's
    rows when the call returns.
    """

    def __init__(self, backend: Backend, max_attempts: int = 3, journal: Journal | None = None) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.backend = backend
        self.max_attempts = max_attempts
        self.journal = journal
        self._streams = journal is not None and backend.streams_scores

    def score(self, example: Example, layout: QueryLayout, start: int, stop: int,
              recovered: pa.RecordBatch | None = None) -> pa.RecordBatch:
        """Query-log rows for the query ids ``[start, stop)`` of ``example`` that were sent, in id order.
        ``recovered``: rows of some of these ids answered already (journaled by a scorer that died),
        returned as they are instead of being sent again."""
        ids = np.arange(start, stop)
        if recovered is not None and recovered.num_rows:
            ids = np.setdiff1d(ids, recovered.column("query_id").to_numpy())
        keep = layout.masks(start, stop)[ids - start]
        rows = len(ids)
        journaled: set[int] = set()
        attempts = [1] * rows
        scores, seconds = self._call(example, keep, ids, attempts, journaled) if rows else ([], 0.0)
        latency = [seconds / max(rows, 1) * 1e3] * rows
        for row in range(rows):
            while scores[row].sent and _failure(scores[row]) is not None and attempts[row] < self.max_attempts:
                attempts[row] += 1
                retried, seconds = self._call(example, keep[row : row + 1], ids[row : row + 1], attempts[row : row + 1],
                                              journaled)
                scores[row] = retried[0]
                latency[row] = seconds * 1e3
        sent = [row for row in range(rows) if scores[row].sent]
        errors = [_failure(scores[row]) for row in sent]
        batch = pa.RecordBatch.from_pydict(
            {
                "example_id": [example.example_id] * len(sent),
                "query_id": ids[sent].astype(np.int64),
                "value": [None if error else float(scores[row].value) for row, error in zip(sent, errors)],
                "raw": [scores[row].raw or None for row in sent],
                "error": errors,
                "attempts": np.asarray([attempts[row] for row in sent], dtype=np.int32),
                "latency_ms": np.asarray([latency[row] for row in sent], dtype=np.float32),
                "cost_usd": [float(scores[row].cost_usd) for row in sent],
                "fingerprint": [scores[row].fingerprint for row in sent],
            },
            schema=QUERY_LOG_SCHEMA,
        )
        if self.journal is not None:
            fresh = pc.invert(pc.is_in(batch.column("query_id"), pa.array(sorted(journaled), pa.int64())))
            self.journal.rows(batch.filter(fresh))
        if recovered is None or not recovered.num_rows:
            return batch
        merged = pa.Table.from_batches([batch, recovered.select(QUERY_LOG_SCHEMA.names).cast(QUERY_LOG_SCHEMA)])
        return merged.sort_by("query_id").combine_chunks().to_batches()[0]

    def _call(self, example: Example, keep: np.ndarray, ids: np.ndarray, attempts: list[int],
              journaled: set[int]) -> tuple[list[Score], float]:
        """The backend's Scores for ``keep`` (query ids ``ids``) and the seconds taken; a raising call
        fails every row. A streaming backend's requests and usable answers are journaled as they go."""
        begin = time.perf_counter()
        hooks = {}
        streamed: dict[int, Score] = {}  # usable answers journaled while the call ran
        if self._streams:
            journal, example_id = self.journal, example.example_id

            def on_send(row: int, usd: float) -> None:
                journal.sent(example_id, int(ids[row]), usd)

            def on_score(row: int, score: Score) -> None:
                if _failure(score) is None:
                    journal.row(example_id, ids[row], value=float(score.value), raw=score.raw or None, error=None,
                                attempts=attempts[row], latency_ms=(time.perf_counter() - begin) * 1e3,
                                cost_usd=float(score.cost_usd), fingerprint=score.fingerprint)
                    journaled.add(int(ids[row]))
                    streamed[row] = score

            hooks = {"on_send": on_send, "on_score": on_score}
        try:
            scores = list(self.backend.score(example, keep, **hooks))
            if len(scores) != len(keep):
                raise RuntimeError(f"backend returned {len(scores)} scores for {len(keep)} masks")
        except Exception as err:  # a backend error of any kind fails the rows (but not those answered), not the job
            message = f"{type(err).__name__}: {err}"
            scores = [streamed.get(row, Score(value=None, raw="", error=message)) for row in range(len(keep))]
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
