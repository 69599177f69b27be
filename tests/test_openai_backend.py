import hashlib
import json
import logging

import numpy as np
import pytest

pytest.importorskip("openai")
pytest.importorskip("bpe_openai")

from openai_server import (  # noqa: E402
    FAULTS,
    FakeOpenAIServer,
    encoding,
    next_token_logprobs,
    prompt_token_logprobs,
    rate_excess,
)

from connectors import Example, build_backend, example_renderer  # noqa: E402
from connectors.backends.openai_backend import DEFAULT_USER_TEMPLATE, OpenAIBackend  # noqa: E402
from connectors.backends.openai_values import label_variants, logsumexp  # noqa: E402

KEY = "sk-test-Zq8v3KeyThatMustNeverLeak0001"
TEXT = "A snail climbs a ten metre wall, three metres up each day and two metres down each night."
QUESTION = "True or False: The snail reaches the top on the eighth day."


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def example():
    return Example.from_text("snail", TEXT, "words", question=QUESTION, target="True")


def masks(example, rows, seed=0):
    keep = np.random.default_rng(seed).random((rows, example.n)) < 0.5
    keep[0] = True
    return keep


def backend(server, **options):
    options = {"base_url": server.base_url, "rpm": None, "tpm": None, "backoff_s": 0.01, **options}
    return OpenAIBackend(**options)


def one_outcome_each(scores):
    """Every query ends with exactly one value or one error."""
    for score in scores:
        assert (score.value is None) != (score.error is None), score
        json.loads(score.raw)


def expected_log_odds(user_text):
    top = dict(next_token_logprobs(user_text)[:20])
    true = [lp for token, lp in top.items() if token in label_variants("True")]
    false = [lp for token, lp in top.items() if token in label_variants("False")]
    floor = min(top.values())
    return (logsumexp(true) if true else floor) - (logsumexp(false) if false else floor)


def test_values_are_the_label_log_odds_of_the_masked_prompt(server, example):
    keep = masks(example, 12)
    with backend(server) as openai_backend:
        scores = openai_backend.score(example, keep)
    one_outcome_each(scores)
    texts = example_renderer(example).render_batch(keep)
    for score, text in zip(scores, texts):
        user = DEFAULT_USER_TEMPLATE.format(context=text, question=QUESTION)
        assert score.value == pytest.approx(expected_log_odds(user), abs=1e-12)
        raw = json.loads(score.raw)
        assert raw["attempts"] == 1 and raw["errors"] == []
        assert raw["usage"]["prompt_tokens"] == raw["estimated_prompt_tokens"]
        assert set(raw["label_logprobs"]) == {"True", "False"}
        assert raw["system_fingerprint"] == "fp_fake_0001"
    sent = [r.body for r in server.received]
    assert {m["messages"][-1]["content"] for m in sent} == {
        DEFAULT_USER_TEMPLATE.format(context=text, question=QUESTION) for text in texts}
    assert all(b["logprobs"] and b["top_logprobs"] == 20 and b["max_completion_tokens"] == 1
               and b["temperature"] == 0 and b["seed"] == 0 for b in sent)


def test_a_label_missing_from_the_top_20_gets_the_recorded_floor(server):
    certain = Example.from_text("certain", "It is certainly so.", "words", question="True or False?")
    with backend(server) as default, backend(server, floor=-40.0) as fixed:
        raw = json.loads(default.score(certain, np.ones((1, certain.n), bool))[0].raw)
        fixed_score = fixed.score(certain, np.ones((1, certain.n), bool))[0]
    assert raw["floored"] == ["False"] and raw["label_logprobs"]["False"] == raw["floor"] < -10
    assert json.loads(fixed_score.raw)["floor"] == -40.0
    assert fixed_score.value == pytest.approx(json.loads(fixed_score.raw)["label_logprobs"]["True"] + 40.0)


def test_faults_are_retried_and_give_the_fault_free_values(server, example):
    keep = masks(example, 40, seed=1)
    with FakeOpenAIServer(api_key=KEY) as fault_free, backend(fault_free) as clean:
        expected = [score.value for score in clean.score(example, keep)]
    server.faults = {name: 0.95 / len(FAULTS) for name in FAULTS}
    server.max_faults_per_prompt = 2
    server.slow_s = 1.5
    with backend(server, timeout_s=0.5, max_attempts=6) as faulty:  # room for a timeout on a busy machine
        scores = faulty.score(example, keep)
    one_outcome_each(scores)
    assert [score.value for score in scores] == expected
    assert {r.fault for r in server.received} >= set(FAULTS)
    attempts = [json.loads(score.raw)["attempts"] for score in scores]
    assert max(attempts) >= 3 and sum(attempts) == len(server.received)
    retried = [json.loads(s.raw) for s in scores if json.loads(s.raw)["attempts"] > 1]
    assert all(len(raw["errors"]) == raw["attempts"] - 1 for raw in retried)


def test_a_request_that_keeps_failing_becomes_an_error_not_a_lost_query(server):
    server.fail_marker = "poison"
    example = Example.from_text("mixed", "one two poison three four", "words", question="?")
    keep = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 1], [0, 0, 1, 0, 0]], dtype=bool)
    with backend(server, max_attempts=3) as openai_backend:
        scores = openai_backend.score(example, keep)
    one_outcome_each(scores)
    assert [score.value is None for score in scores] == [True, False, True]
    failed = json.loads(scores[0].raw)
    assert failed["attempts"] == 3 and len(failed["errors"]) == 3
    assert "InternalServerError" in scores[0].error and "after 3 attempt(s)" in scores[0].error
    assert len(server.received) == 3 + 1 + 3


def test_an_exhausted_quota_is_not_retried(server):
    server.quota_marker = "broke"
    example = Example.from_text("quota", "we are broke now", "words", question="?")
    with backend(server) as openai_backend:
        (score,) = openai_backend.score(example, np.ones((1, example.n), bool))
    assert score.value is None and "RateLimitError" in score.error
    assert json.loads(score.raw)["attempts"] == 1 and len(server.received) == 1


def test_the_key_never_reaches_logs_raw_output_errors_or_identity(monkeypatch, example, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    faults = {name: 0.9 / len(FAULTS) for name in FAULTS if name != "slow"}
    with FakeOpenAIServer(api_key=KEY, faults=faults) as good, \
            FakeOpenAIServer(api_key="sk-the-server-wants-another-key") as wrong:
        with backend(good) as ok_backend, backend(wrong) as rejected:
            scores = ok_backend.score(example, masks(example, 16)) + rejected.score(example, masks(example, 2))
            identity = json.dumps([ok_backend.identity(), rejected.identity()])
            text = repr(ok_backend)
        assert all(r.authorization == f"Bearer {KEY}" for r in good.received + wrong.received)
    denied = scores[-1]
    assert denied.value is None and "AuthenticationError" in denied.error and "<redacted>" in denied.error
    assert json.loads(denied.raw)["attempts"] == 1  # a 401 is not retried
    assert "openai" in {record.name.split(".")[0] for record in caplog.records}  # the SDK's debug lines are captured
    for leak_site in [caplog.text, identity, text, *(s.raw for s in scores), *(s.error or "" for s in scores)]:
        assert KEY not in leak_site
        assert KEY[8:24] not in leak_site


def test_a_missing_key_fails_at_construction(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIBackend(base_url="http://127.0.0.1:9/v1")


def test_request_rate_stays_within_rpm(server, example):
    server.latency_s = 0.02
    with backend(server, rpm=1500, max_in_flight=8) as openai_backend:
        scores = openai_backend.score(example, masks(example, 30, seed=2))
    one_outcome_each(scores)
    times = sorted(r.time for r in server.received)
    # one request, plus 30 ms of traffic at the limit for scheduling jitter
    assert rate_excess(times, [1] * len(times), 1500) <= 1 + 1500 / 60 * 0.03
    achieved = (len(times) - 1) / (times[-1] - times[0]) * 60
    assert 0.8 * 1500 <= achieved <= 1.05 * 1500


def test_token_rate_stays_within_tpm(server, example):
    server.latency_s = 0.01
    with backend(server, tpm=60_000, max_in_flight=8) as openai_backend:
        scores = openai_backend.score(example, masks(example, 24, seed=3))
    one_outcome_each(scores)
    received = sorted(server.received, key=lambda r: r.time)
    times = [r.time for r in received]
    costs = [r.tokens for r in received]  # the server's own count: prompt tokens + max output tokens
    assert max(costs) > 1
    assert rate_excess(times, costs, 60_000) <= max(costs) + 60_000 / 60 * 0.03
    achieved = sum(costs[:-1]) / (times[-1] - times[0]) * 60
    assert 0.8 * 60_000 <= achieved <= 1.05 * 60_000


def test_the_server_announced_limit_is_adopted(server, example):
    server.rpm_limit = 1200
    with backend(server, max_in_flight=1) as openai_backend:
        scores = openai_backend.score(example, masks(example, 30, seed=10))
        assert openai_backend.limiter.stats()["rpm"] == 1200
    one_outcome_each(scores)
    times = sorted(r.time for r in server.received)
    assert (len(times) - 2) / (times[-1] - times[1]) <= 1.1 * 1200 / 60  # paced once announced


def test_retry_after_pauses_every_request(server, example):
    server.faults = {"429-retry-after": 1.0}
    server.max_faults_per_prompt = 1
    server.retry_after_s = 0.3
    with backend(server, backoff_s=5.0) as openai_backend:  # a backoff would take seconds: Retry-After wins
        scores = openai_backend.score(example, masks(example, 6, seed=4))
        assert openai_backend.limiter.stats()["pauses"] >= 1
    one_outcome_each(scores)
    assert all(json.loads(s.raw)["attempts"] == 2 for s in scores)
    first_429 = min(r.time for r in server.received if r.status == 429)
    retries = [r.time for r in server.received if r.status == 200]
    assert min(retries) - first_429 >= 0.3 - 0.02


def test_429_without_retry_after_backs_off_and_succeeds(server, example):
    server.faults = {"429": 1.0}
    server.max_faults_per_prompt = 2
    with backend(server) as openai_backend:
        scores = openai_backend.score(example, masks(example, 5, seed=5))
    one_outcome_each(scores)
    assert [json.loads(s.raw)["attempts"] for s in scores] == [3] * 5


def test_identical_rows_are_sent_once_and_paid_once(server, example):
    keep = masks(example, 4, seed=6)
    keep = np.concatenate([keep, keep[:2]])
    with backend(server) as openai_backend:
        scores = openai_backend.score(example, keep)
    assert len(server.received) == 4
    assert [s.value for s in scores[4:]] == [s.value for s in scores[:2]]
    raws = [json.loads(s.raw) for s in scores]
    assert [raw["cost_usd"] for raw in raws[4:]] == [0.0, 0.0] and raws[4]["same_as_row"] == 0
    assert raws[4]["cache_key"] == raws[0]["cache_key"]


def test_cost_is_tracked_per_row_from_usage(server, example):
    with backend(server, usd_per_million_input=2.0, usd_per_million_output=10.0) as openai_backend:
        scores = openai_backend.score(example, masks(example, 5, seed=7))
        spent = openai_backend.limiter.stats()["spent_usd"]
    for score in scores:
        raw = json.loads(score.raw)
        usage = raw["usage"]
        dollars = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 10.0) / 1e6
        assert raw["cost_usd"] == pytest.approx(dollars)
    assert spent == pytest.approx(sum(json.loads(s.raw)["cost_usd"] for s in scores))


def test_the_cost_cap_stops_sending_and_marks_rows_not_sent(server, example):
    keep = masks(example, 10, seed=8)
    with backend(server, max_in_flight=1) as probe:
        one = json.loads(probe.score(example, keep[:1])[0].raw)["cost_usd"]
    server.received.clear()
    with backend(server, max_in_flight=1, max_cost_usd=2.5 * one) as capped:
        scores = capped.score(example, keep)
    one_outcome_each(scores)
    raws = [json.loads(s.raw) for s in scores]
    sent = [raw for raw in raws if not raw.get("not_sent")]
    assert len(sent) == 3 == len(server.received)
    assert all(s.error.startswith("not sent") for s, raw in zip(scores, raws) if raw.get("not_sent"))
    assert sum(raw["cost_usd"] for raw in raws) <= 2.5 * one + max(raw["cost_usd"] for raw in sent)


def test_cache_key_hashes_model_messages_and_parameters(server, example):
    keep = masks(example, 1)
    with backend(server) as a, backend(server) as b, backend(server, temperature=0.5) as c, \
            backend(server, model="gpt-4o") as d:
        keys = [json.loads(x.score(example, keep)[0].raw)["cache_key"] for x in (a, b, c, d)]
    assert keys[0] == keys[1] and len(set(keys)) == 3
    request = a.requests(example, keep)[0]
    canonical = json.dumps({"endpoint": "/v1/chat/completions", "body": request.body}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    assert keys[0] == hashlib.sha256(canonical.encode()).hexdigest() == request.cache_key


def test_target_log_probability_from_prompt_logprobs(server, example):
    keep = masks(example, 4, seed=9)
    with backend(server, value="answer_logprob") as openai_backend:
        scores = openai_backend.score(example, keep)
        requests = openai_backend.requests(example, keep)
    one_outcome_each(scores)
    enc = encoding()
    for score, request in zip(scores, requests):
        prompt = request.body["prompt"]
        assert request.endpoint == "/v1/completions" and prompt.endswith("Answer: True")
        tokens = enc.encode(prompt)
        assert enc.decode(tokens[-1:]) == " True"
        assert score.value == pytest.approx(prompt_token_logprobs(tokens)[-1])
        assert json.loads(score.raw)["target_tokens"] == [" True"]


def test_target_value_without_a_target_gives_row_errors(server):
    no_target = Example.from_text("none", "a b c", "words")
    with backend(server, value="answer_logprob") as openai_backend:
        scores = openai_backend.score(no_target, np.ones((2, 3), bool))
    assert all(s.value is None and "no target" in s.error for s in scores)
    assert not server.received


def test_identity_names_model_host_and_fingerprints_seen(server, example):
    with backend(server) as openai_backend:
        assert openai_backend.identity()["system_fingerprints"] == []
        openai_backend.score(example, masks(example, 1))
        identity = openai_backend.identity()
    assert identity["model"] == "gpt-4o-mini" and identity["base_url_host"] == "127.0.0.1"
    assert identity["system_fingerprints"] == ["fp_fake_0001"] and identity["backend"] == "openai"


def test_estimate_counts_requests_tokens_dollars_and_time_without_a_key(monkeypatch, example):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    other = Example.from_text("other", TEXT + " " + TEXT, "words", question=QUESTION)
    estimate = OpenAIBackend.estimate([example, other], [100, 300], rpm=600, tpm=1_000_000)
    assert estimate["requests"] == 400 and estimate["completion_tokens"] == 400
    assert estimate["usd_online"] == pytest.approx((estimate["prompt_tokens"] * 0.15 + 400 * 0.60) / 1e6, rel=1e-4)
    assert estimate["usd_batch"] == pytest.approx(estimate["usd_online"] / 2)
    assert estimate["seconds"] == pytest.approx(40.0) and estimate["limited_by"] == "rpm=600"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer() as fake, backend(fake) as openai_backend:
        scores = openai_backend.score(example, masks(example, 64, 3))
    real = [json.loads(s.raw)["usage"]["prompt_tokens"] for s in scores]
    per_query = OpenAIBackend.estimate([example], 1)["prompt_tokens"]
    assert abs(per_query - np.mean(real)) <= 0.1 * np.mean(real)
    tokens_limited = OpenAIBackend.estimate([example], 1000, rpm=None, tpm=10_000)
    assert tokens_limited["limited_by"] == "tpm=10000"
    assert OpenAIBackend.estimate([example], 10, rpm=None, tpm=None)["seconds"] is None


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "stream"}, "mode"),
        ({"value": "probability"}, "value"),
        ({"labels": ["True"]}, "needs 2 label"),
        ({"labels": [True, False]}, "quote True/False"),
        ({"value": "label_logprob", "labels": ["True", "False"]}, "needs 1 label"),
        ({"user_template": "{context} {answer}"}, "unknown placeholder"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"rpm": 0}, "rpm"),
        ({"max_cost_usd": -1}, "max_cost_usd"),
        ({"batch_discount": 1.5}, "batch_discount"),
        ({"strategy": "blur"}, "strategy"),
        ({"mode": "batch"}, "batch_state_dir"),
        ({"mode": "batch", "value": "answer_logprob", "batch_state_dir": "x"}, "Batch API"),
        ({"limiter": "shared"}, "limiter"),
    ],
)
def test_bad_options_are_refused_with_the_reason(monkeypatch, options, message):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(ValueError, match=message):
        OpenAIBackend(base_url="http://127.0.0.1:9/v1", **options)


def test_build_backend_builds_it_from_a_config_section(server, example):
    spec = {"name": "openai", "base_url": server.base_url, "rpm": None, "labels": ["True", "False"],
            "strategy": "mask_token", "mask_token": "___"}
    with build_backend(spec) as openai_backend:
        assert isinstance(openai_backend, OpenAIBackend)
        keep = np.ones((1, example.n), bool)
        keep[0, 0] = False
        openai_backend.score(example, keep)
    assert "Text: ___ snail" in server.received[0].body["messages"][-1]["content"]
    with pytest.raises(ValueError, match="unknown option"):
        build_backend({"name": "openai", "api_key": "sk-no"})
