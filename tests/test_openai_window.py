"""Rate limits hold as the server counts them: against a local server that fails about a fifth of
the requests (429, 500, slow, malformed, dropped), no window of arrivals holds more than ``rpm``
requests or ``tpm`` tokens, retries and failures included.

The limiter's window is shrunk from a minute to 3 s so that the test runs in seconds; its margin
is not shrunk in proportion (0.25 s rather than 3 s / 60) because the jitter between a booked
slot and the server's arrival time in one Python process that hosts both is absolute, not a
fraction of the window.
"""

import json

import numpy as np
import pytest

pytest.importorskip("openai")
pytest.importorskip("bpe_openai")

from openai_server import FakeOpenAIServer, busiest_window  # noqa: E402

from connectors import Example  # noqa: E402
from connectors.backends.openai_backend import OpenAIBackend  # noqa: E402
from connectors.ratelimit import RateLimiter  # noqa: E402

KEY = "sk-test-window-0000000000000000"
WINDOW_S, MARGIN_S, RPM, TPM = 3.0, 0.25, 45, 2500  # tokens: about 54 a request
FAULTS = {"429": 0.04, "429-retry-after": 0.03, "500": 0.04, "slow": 0.03, "malformed": 0.04, "drop": 0.02}


def faulty_server() -> FakeOpenAIServer:
    return FakeOpenAIServer(api_key=KEY, faults=FAULTS, slow_s=1.0, retry_after_s=0.2)


def riddle(rows: int, seed: int = 0) -> tuple[Example, np.ndarray]:
    text = "A snail climbs a ten metre wall, three metres up each day and two metres down each night."
    example = Example.from_text("snail", text, "words", question="True or False: it reaches the top on day eight.")
    return example, np.random.default_rng(seed).random((rows, example.n)) < 0.5


def assert_windows_hold(server: FakeOpenAIServer, rpm: float, tpm: float) -> None:
    received = sorted(server.received, key=lambda r: r.time)
    times = [r.time for r in received]
    failed = sum(r.status != 200 or r.fault is not None for r in received)
    assert 0.12 <= failed / len(received) <= 0.3, f"{failed} of {len(received)} requests faulted"
    assert busiest_window(times, [1] * len(times), WINDOW_S) <= rpm
    assert busiest_window(times, [r.tokens for r in received], WINDOW_S) <= tpm
    span = times[-1] - times[0]
    assert len(times) / span * (WINDOW_S + MARGIN_S) >= 0.7 * rpm, "the limiter is far too cautious"


def test_every_request_sent_counts_and_no_window_exceeds_the_limits(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    example, keep = riddle(100)
    limiter = RateLimiter(RPM, TPM, window_s=WINDOW_S, margin_s=MARGIN_S)
    with faulty_server() as server:
        with OpenAIBackend(base_url=server.base_url, limiter=limiter, max_in_flight=16, timeout_s=0.5,
                           backoff_s=0.05, backoff_max_s=0.2) as backend:
            scores = backend.score(example, keep)
        assert all(score.error is None for score in scores)
        assert sum(json.loads(score.raw)["attempts"] for score in scores) == len(server.received)
        assert_windows_hold(server, RPM, TPM)
    stats = limiter.stats()
    assert stats["requests"] - stats["rebooked"] == len(server.received)
    assert stats["late_s_max"] <= MARGIN_S
