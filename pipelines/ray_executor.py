"""The job's default executor: calls go to a pool of scorer actors (``pipelines.actors``), fits to
Ray tasks, and the job waits on both at once (see ``pipelines.executor.Executor``).

Entering connects to ``ray.address`` (else ``$RAY_ADDRESS``, else a new local cluster) unless Ray
is up; leaving shuts down a cluster it started, and its processes with it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ray

from connectors.base import Example
from pipelines.actors import ScorerPool
from pipelines.backends import default_gpus
from pipelines.calls import Batch, FitCall, FitResult, TargetCall
from pipelines.config import JobConfig
from pipelines.executor import Result
from pipelines.layout import QueryLayout
from pipelines.reaper import child_pids, reap_now, reap_on_exit
from pipelines.reduce import run_fit
from pipelines.shared_limiter import attach_shared_limiter

_WAIT_SECONDS = 0.5


def init_ray(address: str | None) -> bool:
    """Connect to ``address`` (else ``$RAY_ADDRESS``, else a new local cluster) unless Ray is up.

    Returns True if this call connected. ``ray.init(address=None)`` would silently join a cluster
    left behind by ``ray start --head``; "local" always starts a fresh one.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    before = child_pids()
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    if address == "local":
        reap_on_exit(exclude=before)  # its processes end with this one, even on SIGKILL
    return True


class RayExecutor:
    """``ray.num_actors`` scorer actors and at most as many fit tasks as the job submits; see the
    module docstring and ``pipelines.executor.Executor``."""

    def __init__(self, config: JobConfig) -> None:
        self._settings = config.ray
        self._pool: ScorerPool | None = None
        self._fits: dict[ray.ObjectRef, FitCall] = {}
        self._started_ray = False

    def __enter__(self) -> RayExecutor:
        self._started_ray = init_ray(self._settings.address)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._started_ray:
            ray.shutdown()
            reap_now()

    @property
    def retry(self) -> list[Batch | TargetCall]:
        return self._pool.retry

    def shared_limiter(self, backend_cls: type, spec: Mapping[str, Any],
                       spent_usd: float) -> tuple[dict[str, Any], Any | None]:
        """The job-wide limiter actor (``pipelines.shared_limiter``) for a backend that shares one."""
        return attach_shared_limiter(backend_cls, spec, spent_usd=spent_usd)

    def start(self, backend: str, spec: dict[str, Any], journal: tuple[Path, str] | None) -> list[dict[str, Any]]:
        settings = self._settings
        gpus = settings.num_gpus_per_actor
        self._pool = ScorerPool(
            spec,
            num_actors=settings.num_actors,
            num_cpus=settings.num_cpus_per_actor,
            num_gpus=default_gpus(backend, spec) if gpus is None else gpus,
            max_restarts=settings.max_restarts,
            max_attempts=settings.max_attempts,
            journal=journal,
        )
        return self._pool.start()

    def share(self, example: Example, layout: QueryLayout) -> ray.ObjectRef:
        """The pair in the object store: batches carry the reference, each actor fetches it once."""
        return ray.put((example, layout))

    def has_capacity(self) -> bool:
        return self._pool.has_capacity()

    def submit(self, call: Batch | TargetCall) -> None:
        self._pool.submit(call)

    def submit_fit(self, call: FitCall) -> None:
        ref = _fit_task.options(num_cpus=self._settings.num_cpus_per_fit).remote(call)
        self._fits[ref] = call

    def idle(self) -> bool:
        return not self._pool.refs() and not self._fits

    def wait(self) -> Iterator[Result]:
        """Up to ``_WAIT_SECONDS`` for one call or fit to finish, then every other one finished by then."""
        refs = self._pool.refs() + list(self._fits)
        if not refs:
            return
        ready, rest = ray.wait(refs, num_returns=1, timeout=_WAIT_SECONDS)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for ref in ready:
            if ref in self._fits:
                yield self._fitted(ref)
                continue
            result = self._pool.collect(ref)
            if result is not None:
                yield result

    def stats(self) -> list[dict[str, Any]]:
        return [] if self._pool is None else self._pool.stats()

    def losses(self) -> str:
        return self._pool.losses()

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _fitted(self, ref: ray.ObjectRef) -> FitResult:
        call = self._fits.pop(ref)
        try:
            rows, r2 = ray.get(ref)
            return FitResult(call, rows, r2=r2)
        except ray.exceptions.RayError as err:
            return FitResult(call, None, f"the fit task failed: {err}")


@ray.remote(max_retries=2)
def _fit_task(call: FitCall) -> tuple[list[dict] | None, float | None]:
    return run_fit(call)
