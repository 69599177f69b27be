import asyncio

import numpy as np
import pytest

from connectors.ratelimit import CostCapReached, RateLimiter, parse_duration, retry_after_seconds


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def send_times(limiter, clock, costs):
    """Send times when each request is sent as soon as its slot comes (requests booked at once)."""
    return [clock.now + limiter.reserve(cost) for cost in costs]


def test_requests_are_paced_evenly_at_rpm_over_the_window_and_its_margin():
    clock = Clock()
    limiter = RateLimiter(rpm=120, clock=clock, margin_s=0)
    assert send_times(limiter, clock, [1] * 5) == pytest.approx([100.0, 100.5, 101.0, 101.5, 102.0])
    limiter = RateLimiter(rpm=120, clock=clock)  # default margin: 1 s per minute
    assert send_times(limiter, clock, [1] * 3) == pytest.approx([100.0, 100 + 61 / 120, 100 + 122 / 120])


def test_tokens_are_paced_at_tpm_and_the_slower_limit_wins():
    clock = Clock()
    limiter = RateLimiter(rpm=6000, tpm=600, clock=clock, margin_s=0)  # 10 tokens per second
    times = send_times(limiter, clock, [20, 5, 5])
    assert times == pytest.approx([100.0, 102.0, 102.5])


def worst_window(times, costs, window):
    """The most cost in any closed interval of ``window`` seconds (``times`` sorted)."""
    worst, total, first = 0, 0, 0
    for j, time in enumerate(times):
        total += costs[j]
        while time - times[first] > window:
            total -= costs[first]
            first += 1
        worst = max(worst, total)
    return worst


@pytest.mark.parametrize("window", [60.0, 2.0])
def test_no_window_holds_more_than_the_limits_even_with_jitter_up_to_the_margin(window):
    clock = Clock()
    limiter = RateLimiter(rpm=30, tpm=600, clock=clock, window_s=window, margin_s=window / 20)
    costs = [3, 40, 7, 1, 90, 12, 5, 5, 60, 2] * 20
    booked = send_times(limiter, clock, costs)
    jitter = np.random.default_rng(0).uniform(0, window / 20, len(booked))  # each request late by up to the margin
    order = np.argsort(booked + jitter)
    times = list((booked + jitter)[order])
    arrived = [costs[i] for i in order]
    assert worst_window(times, [1] * len(times), window) <= 30
    assert worst_window(times, arrived, window) <= 600
    # without the margin the same jitter lets the server count one request over
    limiter = RateLimiter(rpm=30, clock=Clock(), window_s=window, margin_s=0)
    booked = np.asarray([limiter.reserve(1) for _ in costs]) + 100.0
    assert worst_window(sorted(booked + jitter), [1] * len(costs), window) > 30


def test_a_pause_or_a_lowered_limit_never_crowds_a_window():
    clock = Clock()
    limiter = RateLimiter(rpm=10, clock=clock, window_s=10, margin_s=0.5)
    times = [clock.now + limiter.reserve(1) for _ in range(5)]
    limiter.pause(3.0)
    limiter.observe({"x-ratelimit-limit-requests": "36"})  # per minute: 6 per 10-s window
    assert limiter.effective_limits() == (6.0, None)
    times += [clock.now + limiter.reserve(1) for _ in range(20)]
    assert worst_window(times, [1] * len(times), 10.0) <= 10
    assert worst_window(times[5:], [1] * 20, 10.0) <= 6


def test_idle_time_is_not_banked_as_a_burst():
    clock = Clock()
    limiter = RateLimiter(rpm=60, clock=clock, margin_s=0)
    limiter.reserve(1)
    clock.now += 3600
    assert [limiter.reserve(1) for _ in range(3)] == pytest.approx([0.0, 1.0, 2.0])


def test_pause_delays_every_later_request():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert limiter.reserve(10) == 0.0
    limiter.pause(2.5)
    assert limiter.reserve(10) == pytest.approx(2.5)
    clock.now += 3
    assert limiter.reserve(10) == 0.0
    assert limiter.stats()["pauses"] == 1


def test_observed_headers_lower_the_limit_and_pause_when_exhausted():
    clock = Clock()
    limiter = RateLimiter(rpm=600, clock=clock)
    limiter.observe({"X-RateLimit-Limit-Requests": "60", "x-ratelimit-remaining-requests": "10"})
    assert limiter.effective_limits() == (60.0, None)
    limiter.observe({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30s"})
    assert limiter.reserve(1) == pytest.approx(90.0)


def test_cost_cap_stops_new_requests():
    limiter = RateLimiter(max_cost_usd=0.01)
    assert limiter.reserve(5) == 0.0
    limiter.spend(0.004)
    assert limiter.reserve(5) == 0.0
    limiter.spend(0.006)
    assert limiter.reserve(5) is None
    with pytest.raises(CostCapReached):
        asyncio.run(limiter.acquire(5))
    stats = limiter.stats()
    assert stats["cost_cap_reached"] and stats["requests"] == 2 and stats["spent_usd"] == pytest.approx(0.01)


def test_acquire_sleeps_for_the_slot_and_records_how_late_it_woke():
    limiter = RateLimiter(rpm=1200)

    async def three():
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for _ in range(3):
            await limiter.acquire(1)
        return loop.time() - begin

    assert 0.095 <= asyncio.run(three()) < 0.5
    assert 0 <= limiter.stats()["late_s_max"] < 0.1


@pytest.mark.parametrize(
    "text, seconds",
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.25", 0.25), ("soon", None), (None, None)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_headers():
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "150", "retry-after": "9"}) == pytest.approx(0.15)
    date = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert retry_after_seconds(date, now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize("kwargs", [{"rpm": 0}, {"tpm": -5}, {"rpm": "fast"}, {"rpm": True}, {"max_cost_usd": -1},
                                    {"window_s": 0}, {"margin_s": -1}])
def test_bad_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)
