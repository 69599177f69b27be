"""Scorer actors in separate processes share one RPM budget and one dollar cap through the limiter actor."""

import json
import os

import numpy as np
import pyarrow as pa
import pytest
import ray

pytest.importorskip("openai")
pytest.importorskip("bpe_openai")

from openai_server import FakeOpenAIServer  # noqa: E402
from test_openai_window import FAULTS, MARGIN_S, RPM, TPM, WINDOW_S, assert_windows_hold  # noqa: E402

from connectors import Example, build_backend  # noqa: E402
from connectors.backends.openai_backend import OpenAIBackend  # noqa: E402
from pipelines.usage import Usage  # noqa: E402
from pipelines.shared_limiter import (  # noqa: E402
    SharedLimiter,
    attach_shared_limiter,
    start_shared_limiter,
)

KEY = "sk-test-shared-limiter-key-0000000000"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    previous = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = KEY  # scorer processes inherit the key from the environment
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
    if previous is None:
        del os.environ["OPENAI_API_KEY"]
    else:
        os.environ["OPENAI_API_KEY"] = previous


@ray.remote(num_cpus=0)
class Scorer:
    def build(self, spec):
        self.backend = build_backend(spec)

    def score(self, example, keep):
        return self.backend.score(example, keep)


@pytest.fixture(scope="module")
def scorers():
    actors = [Scorer.remote() for _ in range(2)]
    yield actors
    for actor in actors:
        ray.kill(actor)


def score_halves(scorers, spec, example, keep):
    ray.get([scorer.build.remote(spec) for scorer in scorers])
    half = len(keep) // 2
    return ray.get([scorers[0].score.remote(example, keep[:half]), scorers[1].score.remote(example, keep[half:])])


def example_and_masks(rows, seed):
    text = "A shop lowers a lamp's price by twenty percent, then raises it by twenty percent."
    example = Example.from_text("lamp", text, "words", question="True or False: the price is back where it started.")
    return example, np.random.default_rng(seed).random((rows, example.n)) < 0.5


def test_actors_draw_on_one_request_budget(scorers):
    example, keep = example_and_masks(24, seed=0)
    with FakeOpenAIServer(api_key=KEY) as server:
        spec, limiter = attach_shared_limiter(OpenAIBackend, {"name": "openai", "base_url": server.base_url,
                                                              "rpm": 900, "tpm": None, "max_in_flight": 8})
        assert isinstance(spec["limiter"], SharedLimiter)
        halves = score_halves(scorers, spec, example, keep)
        times = sorted(r.time for r in server.received)
    scores = halves[0] + halves[1]
    assert all(s.error is None for s in scores)
    assert len(times) == len({json.loads(s.raw)["cache_key"] for s in scores})
    # one budget for both processes: their requests together go out at about 900 per minute, not two
    # budgets' 1,800. (Senders that wake late on a loaded machine may bunch within the limiter's
    # margin, so the sub-second spacing is not asserted; no window over rpm is, in the next test.)
    rate = (len(times) - 1) / (times[-1] - times[0]) * 60
    assert 0.8 * 900 <= rate <= 1.25 * 900
    stats = limiter.stats()
    assert stats["requests"] == len(times) and stats["rpm"] == 900
    assert stats["spent_usd"] == pytest.approx(sum(json.loads(s.raw)["cost_usd"] for s in scores))
    limiter.shutdown()


def test_two_processes_under_faults_never_crowd_a_window(scorers):
    example, keep = example_and_masks(100, seed=2)
    limiter = start_shared_limiter(RPM, TPM, window_s=WINDOW_S, margin_s=MARGIN_S)
    with FakeOpenAIServer(api_key=KEY, faults=FAULTS, slow_s=1.0, retry_after_s=0.2) as server:
        spec = {"name": "openai", "base_url": server.base_url, "limiter": limiter, "max_in_flight": 8,
                "timeout_s": 0.5, "backoff_s": 0.05, "backoff_max_s": 0.2}
        scores = [score for half in score_halves(scorers, spec, example, keep) for score in half]
        assert all(score.error is None for score in scores)
        assert_windows_hold(server, RPM, TPM)
    stats = limiter.stats()
    assert stats["requests"] - stats["rebooked"] == len(server.received) and stats["late_s_max"] <= MARGIN_S
    limiter.shutdown()


def test_the_dollar_cap_is_shared(scorers):
    example, keep = example_and_masks(20, seed=1)
    with FakeOpenAIServer(api_key=KEY) as server:
        spec, limiter = attach_shared_limiter(OpenAIBackend, {"name": "openai", "base_url": server.base_url,
                                                              "rpm": None, "tpm": None, "max_in_flight": 1,
                                                              "max_cost_usd": 3e-5})
        halves = score_halves(scorers, spec, example, keep)
        received = len(server.received)
    raws = [json.loads(s.raw) for s in halves[0] + halves[1]]
    sent = [raw for raw in raws if not raw.get("not_sent")]
    assert 0 < len(sent) == received < len(raws)
    per_request = max(raw["cost_usd"] for raw in sent)
    assert sum(raw["cost_usd"] for raw in sent) <= 3e-5 + 2 * per_request  # at most one in flight per actor over
    assert limiter.stats()["cost_cap_reached"]
    limiter.shutdown()


def test_backends_without_a_limiter_option_are_left_alone():
    spec, limiter = attach_shared_limiter(build_backend({"name": "vader"}).__class__, {"name": "vader"})
    assert spec == {"name": "vader"} and limiter is None


def test_a_resumed_job_starts_with_what_earlier_runs_spent():
    raws = [json.dumps({"cost_usd": 0.25}), None, "", json.dumps({"cost_usd": 0.5, "not_sent": False}), "{not json",
            json.dumps({"error": "x"})]  # rows logged before the typed columns: their dollars are in raw
    usage = Usage()
    usage.add(pa.table({"raw": pa.array(raws, pa.string()), "cost_usd": pa.nulls(6, pa.float64()),
                        "fingerprint": pa.nulls(6, pa.string())}))
    assert usage.cost_usd == 0.75
    _, limiter = attach_shared_limiter(OpenAIBackend, {"name": "openai", "max_cost_usd": 1.0}, spent_usd=0.75)
    stats = limiter.stats()
    assert stats["spent_usd"] == 0.75 and not stats["cost_cap_reached"]
    assert (stats["rpm"], stats["tpm"]) == (500, 200_000)  # the backend's defaults
    limiter.shutdown()
    _, spent = attach_shared_limiter(OpenAIBackend, {"name": "openai", "max_cost_usd": 1.0}, spent_usd=1.0)
    assert spent.stats()["cost_cap_reached"]
    spent.shutdown()
