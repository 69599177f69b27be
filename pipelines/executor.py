"""Where a job's calls run: the ``Executor`` contract, and ``LocalExecutor``, which runs them one at
a time in this process without Ray (tests, benchmarks, debugging a backend).

The job's steps (``pipelines.job``) never touch Ray; an executor gets calls (``pipelines.calls``)
and hands back their results. ``pipelines.ray_executor.RayExecutor`` runs them on a pool of
scorer actors and Ray tasks: the job's default.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from connectors.base import Example, build_backend
from pipelines.calls import Batch, BatchResult, FitCall, FitResult, TargetCall, TargetResult, make_target
from pipelines.config import JobConfig
from pipelines.journal import Journal
from pipelines.layout import QueryLayout
from pipelines.reduce import run_fit
from pipelines.scoring import BatchScorer

Result = BatchResult | TargetResult | FitResult
LOCAL_NODE = "local"


class Executor(Protocol):
    """Runs a job's calls. Made from the job's config; used as a context manager around the job
    (entering connects to its compute, e.g. starts Ray; leaving lets go of what entering started).

    ``start`` builds the backend replicas from the backend spec (``journal``: (folder, run id)
    where replicas journal their answers, or None) and returns each one's ``info()``.
    ``submit`` a target call or batch only when ``has_capacity()``; a call whose replica died comes
    back in ``retry`` to be submitted again. ``submit_fit`` takes any number of fits. ``wait``
    yields results as they come (none when ``idle()``: nothing is in flight). ``stats`` is per
    replica (``ScorerPool.stats``'s keys), ``losses`` a progress-line note of replica deaths.
    """

    retry: list[Batch | TargetCall]

    def __enter__(self) -> Executor: ...
    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None: ...
    def shared_limiter(self, backend_cls: type, spec: Mapping[str, Any],
                       spent_usd: float) -> tuple[dict[str, Any], Any | None]: ...
    def start(self, backend: str, spec: dict[str, Any], journal: tuple[Path, str] | None) -> list[dict[str, Any]]: ...
    def share(self, example: Example, layout: QueryLayout) -> Any: ...
    def has_capacity(self) -> bool: ...
    def submit(self, call: Batch | TargetCall) -> None: ...
    def submit_fit(self, call: FitCall) -> None: ...
    def idle(self) -> bool: ...
    def wait(self) -> Iterator[Result]: ...
    def stats(self) -> list[dict[str, Any]]: ...
    def losses(self) -> str: ...
    def shutdown(self) -> None: ...


class LocalExecutor:
    """One backend replica and every fit in this process, one call at a time (fits first), no Ray.

    Holds at most ``capacity`` calls; nothing dies, so ``retry`` stays empty. A backend that would
    share a job-wide rate limiter (a Ray actor) is refused.
    """

    def __init__(self, config: JobConfig, capacity: int = 2) -> None:
        self._max_attempts = config.ray.max_attempts
        self._capacity = capacity
        self._calls: deque[Batch | TargetCall] = deque()
        self._fits: deque[FitCall] = deque()
        self._scorer: BatchScorer | None = None
        self._batches = 0
        self._queries = 0
        self.retry: list[Batch | TargetCall] = []

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def shared_limiter(self, backend_cls: type, spec: Mapping[str, Any],
                       spent_usd: float) -> tuple[dict[str, Any], None]:
        if backend_cls.shared_limits(spec) is not None:
            raise ValueError(f"{backend_cls.__name__} shares a job-wide rate limiter, which needs Ray: "
                             "run it with the Ray executor")
        return dict(spec), None

    def start(self, backend: str, spec: dict[str, Any], journal: tuple[Path, str] | None) -> list[dict[str, Any]]:
        self._scorer = BatchScorer(build_backend(spec), self._max_attempts,
                                   None if journal is None else Journal(*journal))
        return [{"node_id": LOCAL_NODE, "pid": os.getpid(), "backend": self._scorer.backend.identity()}]

    def share(self, example: Example, layout: QueryLayout) -> tuple[Example, QueryLayout]:
        return example, layout

    def has_capacity(self) -> bool:
        return len(self._calls) < self._capacity

    def submit(self, call: Batch | TargetCall) -> None:
        self._calls.append(call)

    def submit_fit(self, call: FitCall) -> None:
        self._fits.append(call)

    def idle(self) -> bool:
        return not self._calls and not self._fits

    def wait(self) -> Iterator[Result]:
        """Run the oldest fit, else the oldest call, and yield its result."""
        if self._fits:
            call = self._fits.popleft()
            try:
                rows, r2 = run_fit(call)
            except Exception as err:  # as RayExecutor: a fit that raises is that example's error row
                yield FitResult(call, None, f"the fit failed: {err}")
                return
            yield FitResult(call, rows, r2=r2)
        elif self._calls:
            yield self._run(self._calls.popleft())

    def stats(self) -> list[dict[str, Any]]:
        return [{"actor": 0, "node_id": LOCAL_NODE, "pid": os.getpid(), "alive": True, "batches": self._batches,
                 "queries_by_node": {LOCAL_NODE: self._queries}, "deaths": 0, "recovered": 0, "resent": 0}]

    def losses(self) -> str:
        return ""

    def shutdown(self) -> None:
        self._calls.clear()
        self._fits.clear()

    def _run(self, call: Batch | TargetCall) -> BatchResult | TargetResult:
        if isinstance(call, TargetCall):
            return TargetResult(call, *make_target(self._scorer.backend, call.example))
        example, layout = call.work
        rows = self._scorer.score(example, layout, call.start, call.stop, call.recovered)
        self._batches += 1
        self._queries += rows.num_rows
        return BatchResult(call, rows)
