"""Client-side pacing for API backends: requests per minute, tokens per minute, a dollar cap.

Pure Python (threading + asyncio), no Ray. ``RateLimiter`` books a send slot for every request
sent, first attempt or retry alike, so that in any window of ``window_s`` seconds (60: a minute,
as providers count) at most ``rpm`` requests and ``tpm`` tokens are sent. Two rules decide a slot:
a sliding-window log of the slots booked (exact, whatever the mix of sizes, pauses and limit
changes), and even pacing at the same rate (no bursts). Both count over ``window_s + margin_s``,
so that a request sent up to ``margin_s`` later than its slot (event-loop delays, a round trip to
a shared limiter, the network) still arrives in the window the limiter counted it in; a sender
that wakes later than that gives its slot up and books a new one.
Server feedback narrows it: ``x-ratelimit-*`` headers (a lower server limit, an exhausted
allowance) and ``Retry-After`` pause every request that shares the limiter.

A limiter, local or shared (``pipelines.shared_limiter.SharedLimiter``), offers:
  ``await acquire(tokens, requests=1)`` wait for a send slot (raises ``CostCapReached``),
  ``pause(seconds)``, ``observe(headers)``, ``spend(usd)``, ``stats() -> dict``.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3}
REBOOKS = 3  # slots a sender may give up for waking too late, before it sends late anyway


class CostCapReached(RuntimeError):
    """The dollar cap is spent: no further request may be sent."""


def parse_duration(text: str | None) -> float | None:
    """Seconds in an ``x-ratelimit-reset-*`` value ("1s", "6m0s", "20ms", "1h2m3.5s", "0.5"); None if unreadable."""
    if text is None:
        return None
    text = text.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(float(lowered["retry-after-ms"]) / 1e3, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - (time.time() if now is None else now), 0.0)


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``x-ratelimit-*`` entries of ``headers`` (lower-cased keys), as a plain picklable dict."""
    return {key.lower(): value for key, value in headers.items() if key.lower().startswith("x-ratelimit-")}


class _Budget:
    """One limited quantity (requests or tokens): even pacing, and a log of the amounts booked at
    (nondecreasing) send times while they are inside the window."""

    def __init__(self) -> None:
        self._free_at = -math.inf  # even pacing: when the next unit may go
        self._log: deque[tuple[float, float]] = deque()
        self._total = 0.0

    def earliest(self, start: float, amount: float, limit: float, span: float) -> float:
        """The first time >= ``start`` at which ``amount`` may go: after the pacing of what went
        before, and when every window of ``span`` seconds holds at most ``limit`` with it (an amount
        over ``limit`` waits for an empty window)."""
        start = max(start, self._free_at)
        while self._log and self._log[0][0] + span <= start:
            self._total -= self._log.popleft()[1]
        excess = self._total + amount - limit
        for booked, booked_amount in self._log:
            if excess <= 1e-9:
                break
            start = booked + span
            excess -= booked_amount
        return start

    def book(self, start: float, amount: float, limit: float, span: float) -> None:
        self._log.append((start, amount))
        self._total += amount
        self._free_at = start + amount * span / limit


class RateLimiter:
    """Paces requests of one process (thread-safe; share one instance between backends).

    ``rpm``/``tpm``: requests and tokens allowed in any window of ``window_s`` seconds (None =
    none); ``margin_s``: how late after its slot a request may reach the server and still be
    counted right (default: 1 s per minute of window; throughput is ``rpm`` per
    ``window_s + margin_s``); ``max_cost_usd``: once ``spend`` has added up to it, ``acquire``
    raises ``CostCapReached`` (requests already sent still finish, so the overshoot is at most the
    cost of the requests in flight). ``clock``: monotonic seconds (for tests).
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        max_cost_usd: float | None = None,
        window_s: float = 60.0,
        margin_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and not (_is_number(value) and value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
        if max_cost_usd is not None and not (_is_number(max_cost_usd) and max_cost_usd >= 0):
            raise ValueError(f"max_cost_usd must be a non-negative number or None, got {max_cost_usd!r}")
        if not (_is_number(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number, got {window_s!r}")
        margin_s = window_s / 60.0 if margin_s is None else margin_s
        if not (_is_number(margin_s) and margin_s >= 0):
            raise ValueError(f"margin_s must be a non-negative number or None, got {margin_s!r}")
        self.rpm = None if rpm is None else float(rpm)
        self.tpm = None if tpm is None else float(tpm)
        self.max_cost_usd = None if max_cost_usd is None else float(max_cost_usd)
        self.window_s = float(window_s)
        self.margin_s = float(margin_s)
        self._server_rpm: float | None = None
        self._server_tpm: float | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._requests = _Budget()
        self._tokens = _Budget()
        self._last_start = -math.inf
        self._not_before = -math.inf
        self._spent = 0.0
        self._granted = 0
        self._granted_tokens = 0
        self._pauses = 0
        self._waited = 0.0
        self._late = 0.0
        self._rebooked = 0

    def reserve(self, tokens: int, requests: int = 1) -> float | None:
        """Book a send slot for ``requests`` requests of ``tokens`` tokens; the seconds to wait before
        sending, or None (nothing booked) when the cost cap is spent."""
        if tokens < 0 or requests < 0:
            raise ValueError(f"tokens and requests must be >= 0, got {tokens} and {requests}")
        with self._lock:
            if self.max_cost_usd is not None and self._spent >= self.max_cost_usd:
                return None
            now = self._clock()
            rpm, tpm = self.effective_limits()
            span = self.window_s + self.margin_s
            start = max(now, self._not_before, self._last_start)
            budgets = [(budget, limit, amount) for budget, limit, amount in
                       ((self._requests, rpm, requests), (self._tokens, tpm, tokens)) if limit and amount]
            # each budget only allows more as time goes on, so the latest of their earliest times suits all
            start = max([start] + [budget.earliest(start, amount, limit, span) for budget, limit, amount in budgets])
            for budget, limit, amount in budgets:
                budget.book(start, amount, limit, span)
            if requests or tokens:
                self._last_start = start
            self._granted += requests
            self._granted_tokens += tokens
            self._waited += start - now
            return start - now

    async def acquire(self, tokens: int, requests: int = 1) -> float:
        """Wait for a send slot; returns the seconds waited. Raises CostCapReached when the cap is spent.
        A wake-up later than ``margin_s`` after the slot (a busy event loop) gives it up for a new one."""
        loop = asyncio.get_running_loop()
        begin = loop.time()
        rebooks = 0
        while True:
            booked = loop.time()
            delay = self.reserve(tokens, requests)
            if delay is None:
                raise CostCapReached(f"max_cost_usd={self.max_cost_usd} reached (spent ${self._spent:.6f})")
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.late(loop.time() - booked - delay, can_rebook=rebooks < REBOOKS):
                return loop.time() - begin
            rebooks += 1

    def late(self, seconds: float, can_rebook: bool = False) -> bool:
        """A sender woke ``seconds`` after its slot: True when that is over ``margin_s`` and it may
        book another (the slot is given up, counted in ``rebooked``); else it sends (``late_s_max``)."""
        with self._lock:
            if can_rebook and seconds > self.margin_s:
                self._rebooked += 1
                return True
            self._late = max(self._late, seconds)
            return False

    def pause(self, seconds: float) -> None:
        """No request starts in the next ``seconds`` (a server's Retry-After or reset time)."""
        if seconds > 0:
            with self._lock:
                self._not_before = max(self._not_before, self._clock() + seconds)
                self._pauses += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Apply a response's ``x-ratelimit-*`` headers: adopt a lower server limit per minute; pause
        until the reset time when the server's remaining requests or tokens are exhausted."""
        headers = rate_limit_headers(headers)
        per_window = self.window_s / 60.0
        server_rpm = _number(headers.get("x-ratelimit-limit-requests"))
        server_tpm = _number(headers.get("x-ratelimit-limit-tokens"))
        with self._lock:
            if server_rpm is not None and server_rpm > 0:
                self._server_rpm = server_rpm * per_window
            if server_tpm is not None and server_tpm > 0:
                self._server_tpm = server_tpm * per_window
        for kind in ("requests", "tokens"):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is not None and remaining <= 0 and reset:
                self.pause(reset)

    def spend(self, usd: float) -> None:
        """Add the cost of a finished request."""
        with self._lock:
            self._spent += float(usd)

    def effective_limits(self) -> tuple[float | None, float | None]:
        """(rpm, tpm) in force per window: the configured ones, lowered by the limits the server announced."""
        return _lower(self.rpm, self._server_rpm), _lower(self.tpm, self._server_tpm)

    def stats(self) -> dict[str, Any]:
        """Counters: requests and tokens granted (slots booked, ``rebooked`` ones included), seconds
        waited in total, pauses, dollars spent, limits, and ``late_s_max``, the latest a request left
        after its slot (over ``margin_s``: the server may have counted more than ``rpm`` in a window)."""
        with self._lock:
            rpm, tpm = self.effective_limits()
            return {
                "requests": self._granted,
                "tokens": self._granted_tokens,
                "waited_s": self._waited,
                "pauses": self._pauses,
                "spent_usd": self._spent,
                "max_cost_usd": self.max_cost_usd,
                "cost_cap_reached": self.max_cost_usd is not None and self._spent >= self.max_cost_usd,
                "rpm": rpm,
                "tpm": tpm,
                "window_s": self.window_s,
                "margin_s": self.margin_s,
                "late_s_max": self._late,
                "rebooked": self._rebooked,
            }


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lower(configured: float | None, announced: float | None) -> float | None:
    if configured is None:
        return announced
    if announced is None:
        return configured
    return min(configured, announced)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None
