"""The Ray job end to end on one local cluster per module (2 CPUs): the demo, bad input, actor
deaths, SIGKILL and resume, and a changed config."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import yaml

from pipelines import resume
from pipelines.config import load_config
from pipelines.executor import LocalExecutor
from pipelines.parts import read_parts
from pipelines.runner import JobMismatchError, run_job
from pipelines.schema import EXPLANATION_SCHEMA, QUERY_LOG_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
# A planted sparse function of the first features: SPEX recovers it exactly (R^2 = 1).
FAKE = {"name": "fake", "terms": [[[0], 1.0], [[1, 2], -0.5], [[3], 0.3]], "constant": 0.2}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _fake_config(tmp_path: Path, name: str, **backend) -> Path:
    """A job on the demo reviews with the fake backend; returns the config path."""
    config = {
        "input": {"path": "package://connectors/data/demo_reviews.jsonl"},
        "backend": {**FAKE, **backend},
        "method": "spex-hard",
        "b": 3,
        "t": 3,
        "holdout": 50,
        "indices": ["fourier", "fbii"],
        "ray": {"num_actors": 2, "batch_size": 32, "flush_seconds": 0.2},
        "output": str(tmp_path / name),
        "progress": False,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _explanations(output: Path) -> list[dict]:
    rows = read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()
    return sorted(rows, key=lambda row: (row["example_id"], row["index"]))


def _query_log(output: Path):
    return read_parts(output / "querylog", QUERY_LOG_SCHEMA)


def _counted(counter: Path) -> int:
    return sum(int(line) for line in counter.read_text().split()) if counter.exists() else 0


def _assert_complete_log(output: Path, expected_rows: int) -> None:
    log = _query_log(output)
    pairs = set(zip(log.column("example_id").to_pylist(), log.column("query_id").to_pylist()))
    assert len(pairs) == log.num_rows, "a query was logged twice"
    assert log.num_rows == expected_rows
    assert log.column("error").null_count == log.num_rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted fake job: its explanation rows and the number of queries it needed."""
    tmp_path = tmp_path_factory.mktemp("reference")
    summary = run_job(load_config(_fake_config(tmp_path, "out")))
    assert summary.examples_ok == 20 and summary.examples_error == 0
    rows = _explanations(tmp_path / "out")
    assert len(rows) == 40
    assert all(row["faithfulness_r2"] == pytest.approx(1.0) for row in rows)
    return rows, summary.queries_sent


def test_the_local_executor_writes_the_ray_jobs_rows_with_as_many_queries(tmp_path, reference):
    reference_rows, needed = reference
    summary = run_job(load_config(_fake_config(tmp_path, "out")), executor=LocalExecutor)
    assert summary.queries_sent == needed
    assert _explanations(tmp_path / "out") == reference_rows


def test_demo_config_writes_schema_conformant_explanations_with_high_faithfulness(tmp_path):
    config = load_config(DEMO)
    config.output = str(tmp_path / "demo")
    config.progress = False
    summary = run_job(config)
    assert (summary.examples_ok, summary.examples_error) == (20, 0)

    (part, *_) = sorted((tmp_path / "demo" / "explanations").glob("part-*.parquet"))
    schema = pq.read_schema(part)
    assert schema.equals(EXPLANATION_SCHEMA, check_metadata=False)
    metadata = {key.decode(): value.decode() for key, value in schema.metadata.items()}
    assert json.loads(metadata["spex_ray.config"])["method"] == "spex-hybrid"
    assert metadata["spex_ray.config_hash"] == config.result_hash()
    assert json.loads(metadata["spex_ray.backend"])["backend"] == "vader"
    assert "ray" in json.loads(metadata["spex_ray.versions"])
    log_part = next((tmp_path / "demo" / "querylog").glob("part-*.parquet"))
    assert pq.read_schema(log_part).equals(QUERY_LOG_SCHEMA, check_metadata=False)

    rows = _explanations(tmp_path / "demo")
    assert len(rows) == 20 * 3 and {row["status"] for row in rows} == {"ok"}
    r2 = np.array([row["faithfulness_r2"] for row in rows if row["index"] == "fourier"])  # the whole fits
    assert np.isfinite(r2).all()
    assert r2.min() > 0.6 and r2.mean() > 0.95 and summary.mean_faithfulness_r2 == pytest.approx(r2.mean())
    fbii = [row for row in rows if row["index"] == "fbii"]
    for row in fbii:
        assert row["n_features"] == len(row["features"]) == len(row["spans"])
        assert row["full_value"] is not None and row["empty_value"] == 0.0  # VADER of an empty text
        orders = [len(term["features"]) for term in row["interactions"]]
        assert max(orders, default=0) <= 2
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["examples_ok"] == 20


def test_bad_input_gets_error_rows_and_every_other_example_completes(tmp_path):
    good = ["a fine and lovely film", "dull , slow and far too long", "the cast shines in every scene here"]
    lines = [json.dumps({"id": f"good-{i}", "text": text}).encode() for i, text in enumerate(good)]
    lines += [
        b'{"id": "empty", "text": ""}',
        b'{"id": "missing"}',
        b'{"id": "bytes", "text": "na\xefve \xff"}',
        b'{"id": "single", "text": "word"}',
        json.dumps({"id": "huge", "text": " ".join(["w"] * 40)}).encode(),
        # the only example with 9 features: its all-kept masks fail in every attempt
        json.dumps({"id": "failing", "text": "one two three four five six seven eight nine"}).encode(),
    ]
    (tmp_path / "input.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config_path = _fake_config(tmp_path, "out", fail_queries=[list(range(9))], fail_mode="raise")
    config = load_config(config_path, [f"input.path={tmp_path / 'input.jsonl'}", "featurizer.max_features=30"])
    summary = run_job(config)
    assert (summary.examples_ok, summary.examples_error) == (3, 6)

    rows = {row["example_id"]: row for row in _explanations(tmp_path / "out") if row["index"] == "fbii"}
    assert len(rows) == 9
    for i in range(3):
        assert rows[f"good-{i}"]["status"] == "ok" and rows[f"good-{i}"]["faithfulness_r2"] == pytest.approx(1.0)
    errors = {key: row["error"] for key, row in rows.items() if row["status"] == "error"}
    assert "empty" in errors["empty"]
    assert errors["missing"] == "missing field 'text'"
    assert "undecodable bytes" in errors["bytes"]
    assert "at least 2 are needed" in errors["single"]
    assert "more than max_features=30" in errors["huge"]
    assert "queries failed after up to 3 attempts" in errors["failing"] and "planted failure" in errors["failing"]
    assert rows["failing"]["n_features"] == 9 and rows["missing"]["n_features"] is None

    log = _query_log(tmp_path / "out").to_pylist()
    failed = [row for row in log if row["error"] is not None]
    assert failed and {(row["example_id"], row["attempts"]) for row in failed} == {("failing", 3)}
    # rows that shared a batch with a failing query were retried alone and succeeded
    assert any(row["attempts"] == 2 and row["error"] is None for row in log)
    assert {row["example_id"] for row in log} == {"good-0", "good-1", "good-2", "failing"}


def test_an_actor_dying_mid_batch_loses_and_doubles_nothing(tmp_path, reference):
    reference_rows, needed = reference
    counter = tmp_path / "counter"
    config = load_config(_fake_config(tmp_path, "out", counter_path=str(counter), die_after_batches=5,
                                      die_marker_dir=str(tmp_path)))
    summary = run_job(config)
    assert (tmp_path / "fake-backend-died").exists(), "no actor died"
    assert summary.examples_ok == 20 and summary.queries_sent == needed
    assert _explanations(tmp_path / "out") == reference_rows
    _assert_complete_log(tmp_path / "out", needed)
    # Scored once more at most: the batches in flight on the dying actor (2 per actor), whose
    # replies may be lost with the process even when the backend had finished them.
    assert needed <= _counted(counter) <= needed + 2 * 32


def _wait_for_free_cpus(timeout: float = 60) -> None:
    """Until the killed driver's actors are gone and both CPUs are free again."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < 2:
        assert time.monotonic() < deadline, "the killed job's actors did not go away"
        time.sleep(0.2)


def test_sigkill_then_rerun_finishes_with_identical_rows_and_only_missing_queries(tmp_path, reference, cluster,
                                                                                 monkeypatch):
    """The rerun also compacts the killed run's query-log parts into one first (threshold lowered)."""
    monkeypatch.setattr(resume, "COMPACT_QUERY_LOG_PARTS", 2)
    reference_rows, needed = reference
    counter = tmp_path / "counter"
    config_path = _fake_config(tmp_path, "out", counter_path=str(counter), sleep_per_batch_s=0.05)
    command = [sys.executable, "-m", "pipelines.cli", "run", str(config_path), "--address", cluster]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    querylog = tmp_path / "out" / "querylog"
    deadline = time.monotonic() + 90
    try:
        while len(list(querylog.glob("part-*.parquet"))) < 3:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the job logged no queries"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
    _wait_for_free_cpus()

    logged = _query_log(tmp_path / "out").num_rows
    assert 0 < logged < needed, "the job was not killed mid-scoring"
    sent_before = _counted(counter)
    summary = run_job(load_config(config_path))
    assert _counted(counter) - sent_before == needed - logged  # only the missing queries were sent
    assert summary.queries_sent == needed - logged
    assert _explanations(tmp_path / "out") == reference_rows
    _assert_complete_log(tmp_path / "out", needed)
    assert len(list(querylog.glob("part-*-compacted.parquet"))) == 1


def test_a_changed_config_is_refused_but_execution_settings_may_change(tmp_path):
    config_path = _fake_config(tmp_path, "out")
    run_job(load_config(config_path, ["input.path=package://connectors/data/demo_reviews.jsonl"]), limit=2)
    with pytest.raises(JobMismatchError, match="changed: b"):
        run_job(load_config(config_path, ["b=4"]), limit=2)
    summary = run_job(load_config(config_path, ["ray.num_actors=1", "ray.batch_size=7"]), limit=3)
    assert summary.examples_skipped == 2 and summary.examples_ok == 3
