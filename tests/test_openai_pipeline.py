"""The puzzles config (GPT-4o mini) run end to end through the Ray job against the local fake
OpenAI server: injected faults, a key that never leaks, a resume that sends nothing, a dollar cap
that stops the job and a higher cap that finishes it."""

import json
import logging
import math
import os
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

pytest.importorskip("openai")
pytest.importorskip("bpe_openai")

from openai_server import FakeOpenAIServer, next_token_logprobs  # noqa: E402

from connectors.backends.openai_values import label_variants, logsumexp  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.inputs import load_examples  # noqa: E402
from pipelines.method import MethodSpec  # noqa: E402
from pipelines.parts import read_parts  # noqa: E402
from pipelines.runner import BATCH_STATE_DIR, run_job  # noqa: E402
from pipelines.schema import EXPLANATION_SCHEMA, QUERY_LOG_SCHEMA  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PUZZLES = ROOT / "configs" / "puzzles-gpt4o-mini.yaml"
KEY = f"sk-test-pipeline-{uuid.uuid4().hex}"
EXAMPLES = 4
QUOTA_WORD = "muffins"  # in puzzle-02's question: every query of it hits an exhausted quota
FAULT_MIX = {"429": 0.05, "429-retry-after": 0.05, "500": 0.05, "503": 0.05, "slow": 0.02, "drop": 0.04,
             "malformed": 0.04, "no-logprobs": 0.04}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    previous = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = KEY  # scorer actors inherit the key from the environment
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield Path(ray._private.worker._global_node.get_session_dir_path())
    ray.shutdown()
    if previous is None:
        del os.environ["OPENAI_API_KEY"]
    else:
        os.environ["OPENAI_API_KEY"] = previous


def _config(server: FakeOpenAIServer, output: Path, *overrides: str):
    """The puzzles config against ``server``, small designs, no rate limits, fast retries."""
    return load_config(PUZZLES, [
        f"backend.base_url={server.base_url}", "backend.rpm=null", "backend.tpm=null", "backend.timeout_s=1.0",
        "backend.backoff_s=0.01", "backend.backoff_max_s=0.05", "backend.max_attempts=4",
        "b=2", "t=3", "holdout=20", "ray.batch_size=32", "ray.max_attempts=2", "ray.flush_seconds=0.2",
        "progress=false", f"output={output}", *overrides,
    ])


def _needed(config) -> dict[str, int]:
    """Query ids per example of the first EXAMPLES inputs."""
    spec = MethodSpec.from_config(config)
    return {e.example_id: spec.layout(e.n).num_queries for e in load_examples(config, EXAMPLES)}


def _log(output: Path) -> list[dict]:
    return read_parts(output / "querylog", QUERY_LOG_SCHEMA).to_pylist()


def _expected_log_odds(user_text: str) -> float:
    """The fake server's label log-odds of a prompt (as in test_openai_backend)."""
    top = dict(next_token_logprobs(user_text)[:20])
    true = [lp for token, lp in top.items() if token in label_variants("True")]
    false = [lp for token, lp in top.items() if token in label_variants("False")]
    floor = min(top.values())
    return (logsumexp(true) if true else floor) - (logsumexp(false) if false else floor)


def test_faulty_server_every_query_ends_once_the_key_never_leaks_and_a_rerun_sends_nothing(
        tmp_path, cluster, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    output = tmp_path / "out"
    with FakeOpenAIServer(api_key=KEY, faults=FAULT_MIX, quota_marker=QUOTA_WORD, retry_after_s=0.05) as server:
        config = _config(server, output)
        needed = _needed(config)
        summary = run_job(config, limit=EXAMPLES)
        sent = len(server.received)
        assert {r.fault for r in server.received} >= {"429", "500", "503", "drop", "malformed", "quota"}
        assert all(r.authorization == f"Bearer {KEY}" for r in server.received)

        rerun = run_job(_config(server, output), limit=EXAMPLES)
        assert len(server.received) == sent, "the re-run sent requests"
    assert (rerun.queries_sent, rerun.examples_skipped) == (0, EXAMPLES)

    assert (summary.examples_ok, summary.examples_error) == (EXAMPLES - 1, 1)
    assert summary.queries_sent == sum(needed.values()) and summary.stopped is None
    log = _log(output)
    assert len({(row["example_id"], row["query_id"]) for row in log}) == len(log) == sum(needed.values())
    for row in log:
        assert (row["value"] is None) != (row["error"] is None), row
        assert (row["error"] is not None) == (row["example_id"] == "puzzle-02"), row
    assert all("quota" in row["error"] for row in log if row["error"] is not None)
    spent = sum(json.loads(row["raw"])["cost_usd"] for row in log)
    assert summary.limiter["spent_usd"] == pytest.approx(spent) and summary.limiter["requests"] >= len(log)
    assert summary.limiter["cost_cap_reached"] is False

    rows = read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()
    by_id = {row["example_id"]: row for row in rows if row["index"] == "fbii"}
    assert by_id["puzzle-02"]["status"] == "error" and "queries failed" in by_id["puzzle-02"]["error"]
    examples = {e.example_id: e for e in load_examples(config, EXAMPLES)}
    for example_id, row in by_id.items():
        if example_id == "puzzle-02":
            continue
        example = examples[example_id]
        user = config.backend["user_template"].format(context=example.text, question=example.question)
        assert row["status"] == "ok" and row["full_value"] == pytest.approx(_expected_log_odds(user), abs=1e-9)
        assert math.isfinite(row["faithfulness_r2"])
    for part in (output / "explanations").glob("part-*.parquet"):
        metadata = pq.read_schema(part).metadata
        assert json.loads(metadata[b"spex_ray.backend"])["system_fingerprints"] == ["fp_fake_0001"]

    captured = capfd.readouterr()
    texts = [caplog.text, captured.out, captured.err]
    files = [path for path in output.rglob("*") if path.is_file()]
    files += [path for path in (cluster / "logs").rglob("*") if path.is_file()]
    assert any(path.suffix == ".parquet" for path in files) and any(path.name == "job.json" for path in files)
    assert any(path.name.startswith("worker-") for path in files)  # the scorer actors' own logs are read too
    for text in texts:
        assert KEY not in text
    for path in files:
        assert KEY.encode() not in path.read_bytes(), f"the key is in {path}"


def test_a_dollar_cap_stops_the_job_and_a_rerun_with_a_higher_cap_finishes_it(tmp_path):
    output = tmp_path / "out"
    with FakeOpenAIServer(api_key=KEY) as server:
        config = _config(server, output, "backend.max_cost_usd=0.003")
        needed = _needed(config)
        first = run_job(config, limit=EXAMPLES)
        assert first.stopped is not None and "max_cost_usd=0.003" in first.stopped and "resumable" in first.stopped
        assert first.limiter["cost_cap_reached"] and first.queries_not_sent > 0
        logged = _log(output)
        assert 0 < len(logged) < sum(needed.values())
        assert all(row["error"] is None and "not_sent" not in row["raw"] for row in logged)
        assert first.examples_ok < EXAMPLES

        again = run_job(_config(server, output, "backend.max_cost_usd=1.0"), limit=EXAMPLES)
        statuses = {r.status for r in server.received}
    assert again.stopped is None and again.examples_ok == EXAMPLES and not again.limiter["cost_cap_reached"]
    assert again.queries_sent == sum(needed.values()) - len(logged)
    log = _log(output)
    assert len({(row["example_id"], row["query_id"]) for row in log}) == len(log) == sum(needed.values())
    assert all(row["error"] is None for row in log)
    # every request the server saw is a logged row: nothing was paid twice or lost
    assert statuses == {200}
    assert len(server.received) == sum("same_as_row" not in row["raw"] for row in log)
    stored = json.loads((output / "job.json").read_text())["config"]["backend"]
    assert "max_cost_usd" not in stored and "model" in stored


def test_batch_mode_keeps_its_batch_ids_in_the_output_folder(tmp_path):
    output = tmp_path / "out"
    with FakeOpenAIServer(api_key=KEY) as server:
        config = _config(server, output, "backend.mode=batch", "backend.batch_poll_s=0.02", "ray.batch_size=256")
        summary = run_job(config, limit=1)
    assert summary.examples_ok == 1
    assert list((output / BATCH_STATE_DIR).glob("batch-*.json"))
    assert {json.loads(row["raw"])["mode"] for row in _log(output)} == {"batch"}
