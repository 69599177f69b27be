import asyncio

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


def test_requests_are_paced_evenly_at_rpm():
    clock = Clock()
    limiter = RateLimiter(rpm=120, clock=clock)
    assert send_times(limiter, clock, [1] * 5) == pytest.approx([100.0, 100.5, 101.0, 101.5, 102.0])


def test_tokens_are_paced_at_tpm_and_the_slower_limit_wins():
    clock = Clock()
    limiter = RateLimiter(rpm=6000, tpm=600, clock=clock)  # 10 tokens per second
    times = send_times(limiter, clock, [20, 5, 5])
    assert times == pytest.approx([100.0, 102.0, 102.5])


def test_any_interval_respects_both_limits():
    clock = Clock()
    limiter = RateLimiter(rpm=300, tpm=3000, clock=clock)
    costs = [3, 40, 7, 1, 90, 12, 5, 5, 60, 2] * 5
    times = send_times(limiter, clock, costs)
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            span = times[j] - times[i]
            assert j - i <= 300 / 60 * span + 1e-9
            assert sum(costs[i:j]) <= 3000 / 60 * span + 1e-9


def test_idle_time_is_not_banked_as_a_burst():
    clock = Clock()
    limiter = RateLimiter(rpm=60, clock=clock)
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


def test_acquire_sleeps_for_the_slot():
    limiter = RateLimiter(rpm=1200)

    async def three():
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for _ in range(3):
            await limiter.acquire(1)
        return loop.time() - begin

    assert 0.095 <= asyncio.run(three()) < 0.5


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


@pytest.mark.parametrize("kwargs", [{"rpm": 0}, {"tpm": -5}, {"rpm": "fast"}, {"rpm": True}, {"max_cost_usd": -1}])
def test_bad_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)
