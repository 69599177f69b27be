"""The job's steps on the local executor: one process, no Ray cluster, the same output folder."""

import subprocess
import sys
from pathlib import Path

import pytest
import ray

from connectors.base import Backend, RateLimits, Score
from pipelines.config import JobConfig, config_from_dict
from pipelines.executor import LOCAL_NODE, LocalExecutor
from pipelines.parts import read_parts
from pipelines.runner import run_job
from pipelines.schema import EXPLANATION_SCHEMA

FAKE = {"name": "fake", "terms": [[[0], 1.0], [[1, 2], -0.5], [[3], 0.3]], "constant": 0.2}


def _config(output: Path) -> JobConfig:
    return config_from_dict({
        "input": {"path": "package://connectors/data/demo_reviews.jsonl"}, "backend": FAKE,
        "method": "spex-hard", "b": 3, "t": 3, "holdout": 50, "indices": ["fourier", "fbii"],
        "ray": {"num_actors": 2, "batch_size": 32}, "output": str(output), "progress": False,
    })


def _explanations(output: Path) -> list[dict]:
    rows = read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()
    return sorted(rows, key=lambda row: (row["example_id"], row["index"]))


def test_a_local_run_explains_every_example_without_ray(tmp_path):
    summary = run_job(_config(tmp_path / "out"), executor=LocalExecutor)
    assert not ray.is_initialized()
    assert (summary.examples_ok, summary.examples_error) == (20, 0)
    assert all(row["faithfulness_r2"] == pytest.approx(1.0) for row in _explanations(tmp_path / "out"))
    assert summary.nodes == {LOCAL_NODE: summary.queries_sent} and (tmp_path / "out" / "summary.json").exists()


def test_a_local_run_resumes_sending_only_the_missing_queries(tmp_path):
    first = run_job(_config(tmp_path / "out"), limit=5, executor=LocalExecutor)
    second = run_job(_config(tmp_path / "out"), executor=LocalExecutor)
    assert (second.examples_skipped, second.examples_ok) == (5, 20)
    whole = run_job(_config(tmp_path / "whole"), executor=LocalExecutor)
    assert first.queries_sent + second.queries_sent == whole.queries_sent
    assert _explanations(tmp_path / "out") == _explanations(tmp_path / "whole")


def test_a_fit_that_raises_is_that_examples_error_row_and_the_run_goes_on(tmp_path, monkeypatch):
    import pipelines
    import pipelines.executor

    real = pipelines.executor.run_fit

    def run_fit(call):
        if call.example.example_id == "review-01":
            raise MemoryError("out of memory in the fit")
        return real(call)

    monkeypatch.setattr(pipelines.executor, "run_fit", run_fit)
    summary = pipelines.run_job(_config(tmp_path / "out"), limit=3, executor=LocalExecutor)  # the package's entry
    assert (summary.examples_ok, summary.examples_error) == (2, 1)
    failed = [row for row in _explanations(tmp_path / "out") if row["status"] != "ok"]
    assert {row["example_id"] for row in failed} == {"review-01"}
    assert "the fit failed: out of memory in the fit" in failed[0]["error"]


def test_the_local_path_imports_no_ray():
    code = ("import sys, pipelines.job, pipelines.executor, pipelines.runner; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


class _Shared(Backend):
    """Declares a shared rate limit unless its options say otherwise."""

    def __init__(self, shared: bool = True) -> None:
        pass

    @classmethod
    def shared_limits(cls, options):
        return RateLimits(rpm=60, tpm=None, max_cost_usd=None) if options.get("shared", True) else None

    def _score(self, example, keep):
        return [Score(0.0, "{}") for _ in keep]


def test_the_local_executor_refuses_only_a_backend_that_declares_a_shared_limit(tmp_path):
    executor = LocalExecutor(_config(tmp_path / "out"))
    with pytest.raises(ValueError, match="needs Ray"):
        executor.shared_limiter(_Shared, {"name": "x:_Shared"}, 0.0)
    assert executor.shared_limiter(_Shared, {"name": "x:_Shared", "shared": False}, 0.0) == (
        {"name": "x:_Shared", "shared": False}, None)
