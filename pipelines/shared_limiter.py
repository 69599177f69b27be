"""One rate limit and one dollar cap for the whole job: a Ray actor holding a ``RateLimiter``
(Ray-only: ``pipelines.ray_executor`` imports it; a backend that declares ``shared_limits`` gets one).

Every scorer actor's backend gets a ``SharedLimiter`` (picklable: it holds the actor handle) with
the interface of ``connectors.ratelimit.RateLimiter``, so all replicas draw on one RPM/TPM budget
and one ``max_cost_usd``. Only relative durations cross process boundaries: the actor books send
slots on its own clock and answers "wait this many seconds", so nodes need no common clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import ray

from connectors.base import LIMITER_OPTION, Backend
from connectors.ratelimit import REBOOKS, CostCapReached, RateLimiter


class _LimiterActor:
    """The job-wide ``RateLimiter`` (wrapped with ``ray.remote`` by ``start_shared_limiter``)."""

    def __init__(self, rpm: float | None, tpm: float | None, max_cost_usd: float | None, spent_usd: float,
                 window: dict[str, float]) -> None:
        self._limiter = RateLimiter(rpm, tpm, max_cost_usd=max_cost_usd, **window)
        self._limiter.spend(spent_usd)

    def reserve(self, tokens: int, requests: int) -> float | None:
        return self._limiter.reserve(tokens, requests)

    def late(self, seconds: float, can_rebook: bool) -> None:
        self._limiter.late(seconds, can_rebook)

    def margin_s(self) -> float:
        return self._limiter.margin_s

    def pause(self, seconds: float) -> None:
        self._limiter.pause(seconds)

    def observe(self, headers: dict[str, str]) -> None:
        self._limiter.observe(headers)

    def spend(self, usd: float) -> None:
        self._limiter.spend(usd)

    def stats(self) -> dict[str, Any]:
        return self._limiter.stats()


class SharedLimiter:
    """Client of the job-wide limiter actor, with ``RateLimiter``'s interface.

    ``acquire`` asks the actor for a slot (one round trip) and sleeps locally; ``pause``,
    ``observe`` and ``spend`` are fire-and-forget (Ray keeps their order per caller). A sender
    that wakes more than the limiter's ``margin_s`` after its slot (the round trip included) gives
    it up and books another, as with ``RateLimiter``; such wake-ups and new maxima of lateness are
    reported to the actor.
    """

    def __init__(self, handle: Any, margin_s: float) -> None:
        self.handle = handle
        self.margin_s = margin_s
        self._late = 0.0

    async def acquire(self, tokens: int, requests: int = 1) -> float:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        rebooks = 0
        while True:
            booked = loop.time()
            delay = await self.handle.reserve.remote(tokens, requests)
            if delay is None:
                raise CostCapReached("the job's max_cost_usd is spent")
            if delay > 0:
                await asyncio.sleep(delay)
            late = loop.time() - booked - delay
            rebook = late > self.margin_s and rebooks < REBOOKS
            if rebook or late > self._late:
                self._late = self._late if rebook else late
                self.handle.late.remote(late, rebook)
            if not rebook:
                return loop.time() - begin
            rebooks += 1

    def pause(self, seconds: float) -> None:
        self.handle.pause.remote(seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        self.handle.observe.remote(dict(headers))

    def spend(self, usd: float) -> None:
        self.handle.spend.remote(usd)

    def stats(self) -> dict[str, Any]:
        """The actor's counters (``RateLimiter.stats``): requests, tokens, waited_s, pauses, spent_usd,
        cost_cap_reached, rpm, tpm, window_s, margin_s, late_s_max, rebooked."""
        return ray.get(self.handle.stats.remote())

    def shutdown(self) -> None:
        ray.kill(self.handle)


def start_shared_limiter(rpm: float | None = None, tpm: float | None = None,
                         max_cost_usd: float | None = None, spent_usd: float = 0.0, **window: float) -> SharedLimiter:
    """Start the limiter actor (no CPU reserved, restarted if its process dies) and return its client.

    ``spent_usd``: dollars already spent by earlier runs of the job (the query log's, see
    ``pipelines.usage.Usage``), so that
    ``max_cost_usd`` caps the whole job, not each run. A restarted actor starts again from it.
    ``window``: ``window_s``/``margin_s`` of ``RateLimiter`` (tests shrink the minute).
    """
    actor = ray.remote(_LimiterActor).options(num_cpus=0, max_restarts=-1, max_task_retries=-1)
    handle = actor.remote(rpm, tpm, max_cost_usd, spent_usd, window)
    return SharedLimiter(handle, ray.get(handle.margin_s.remote()))


def attach_shared_limiter(backend_cls: type[Backend], spec: Mapping[str, Any],
                          spent_usd: float = 0.0) -> tuple[dict[str, Any], SharedLimiter | None]:
    """For a backend class that shares a rate limit (``Backend.shared_limits`` of the spec is not
    None): start the job-wide limiter with the limits it declares, already charged ``spent_usd``,
    and return ``(spec with limiter=client, client)``; other backends get ``(spec, None)``."""
    limits = backend_cls.shared_limits(spec)
    if limits is None:
        return dict(spec), None
    limiter = start_shared_limiter(limits.rpm, limits.tpm, limits.max_cost_usd, spent_usd=spent_usd)
    return {**spec, LIMITER_OPTION: limiter}, limiter
