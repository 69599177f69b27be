import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("openai")
pytest.importorskip("bpe_openai")

from openai_server import FakeOpenAIServer  # noqa: E402

from connectors import Example  # noqa: E402
from connectors.backends.openai_backend import OpenAIBackend  # noqa: E402
from connectors.backends.openai_batch import BatchRequest, batch_jsonl  # noqa: E402

KEY = "sk-test-batch-key-000000000000000000"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY, batch_polls=3) as fake:
        yield fake


@pytest.fixture
def example():
    text = "Two fathers and two sons go fishing; each catches one fish and they bring home three fish."
    return Example.from_text("fish", text, "words", question="True or False: they could be three people.")


def masks(example, rows, seed=0):
    keep = np.random.default_rng(seed).random((rows, example.n)) < 0.5
    keep[0] = True
    return keep


def backend(server, tmp_path, **options):
    options = {"base_url": server.base_url, "rpm": None, "tpm": None, "backoff_s": 0.01, "mode": "batch",
               "batch_state_dir": str(tmp_path / "batches"), "batch_poll_s": 0.01, **options}
    return OpenAIBackend(**options)


def test_batch_gives_the_online_values_at_half_price(server, example, tmp_path):
    keep = masks(example, 24)
    with backend(server, tmp_path, mode="online") as online:
        expected = online.score(example, keep)
    with backend(server, tmp_path) as batch:
        scores = batch.score(example, keep)
    assert [s.value for s in scores] == [s.value for s in expected]
    assert all(s.error is None for s in scores)
    for score, reference in zip(scores, expected):
        raw, online_raw = json.loads(score.raw), json.loads(reference.raw)
        assert raw["cache_key"] == online_raw["cache_key"] and raw["mode"] == "batch"
        assert raw["cost_usd"] == pytest.approx(online_raw["cost_usd"] / 2)
        assert raw["batch_id"].startswith("batch_")
    (batch_record,) = server.batches.values()
    assert batch_record.record["status"] == "completed" and batch_record.polls >= 3
    lines = [json.loads(line) for line in server.files[batch_record.record["input_file_id"]][1].splitlines()]
    assert len(lines) == 24 and len({line["custom_id"] for line in lines}) == 24
    assert all(line["method"] == "POST" and line["url"] == "/v1/chat/completions" for line in lines)


def test_failed_batch_lines_become_row_errors(server, example, tmp_path):
    server.fail_marker = "fathers"
    keep = masks(example, 10, seed=1)
    with backend(server, tmp_path) as batch:
        scores = batch.score(example, keep)
    for score, row in zip(scores, keep):
        assert (score.value is None) != (score.error is None)
        assert (score.error is not None) == bool(row[1])  # feature 1 is the word "fathers"
    assert any(s.error and "HTTP 500" in s.error for s in scores)


def test_a_running_batch_is_resumed_not_paid_twice(server, example, tmp_path):
    server.hold_batches = True
    keep = masks(example, 8, seed=2)
    first = backend(server, tmp_path)
    outcome = {}

    def run():
        try:
            outcome["scores"] = first.score(example, keep)
        except BaseException as err:  # the "killed" run ends with a cancellation
            outcome["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while not any(b.polls for b in server.batches.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    first.close()
    worker.join(timeout=10)
    assert "error" in outcome and "scores" not in outcome
    states = list((tmp_path / "batches").glob("batch-*.json"))
    assert len(states) == 1 and json.loads(states[0].read_text())["status"] in ("validating", "in_progress")
    server.hold_batches = False
    with backend(server, tmp_path) as second:
        scores = second.score(example, keep)
    assert all(s.error is None for s in scores)
    assert len(server.batches) == 1 and len([f for f in server.files if f.startswith("file-")]) == 2  # input + output
    with backend(server, tmp_path, mode="online") as online:
        assert [s.value for s in scores] == [s.value for s in online.score(example, keep)]


def test_batch_mode_respects_the_cost_cap(server, example, tmp_path):
    keep = masks(example, 6, seed=3)
    with backend(server, tmp_path, max_cost_usd=1e-9) as batch:
        first = batch.score(example, keep[:3])
        assert all(s.error is None for s in first)
        second = batch.score(example, keep[3:])
    assert all(json.loads(s.raw)["not_sent"] and s.error.startswith("not sent") for s in second)
    assert len(server.batches) == 1


def test_batch_input_needs_unique_custom_ids():
    request = BatchRequest("same", "/v1/chat/completions", {"model": "m"})
    with pytest.raises(ValueError, match="unique"):
        batch_jsonl([request, request])
