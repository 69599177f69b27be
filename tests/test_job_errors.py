"""How a job ends when things go wrong, on one local Ray cluster: a finished job is recognised
without Ray, a job whose every example failed exits non-zero with the reason, --fail-fast stops at
the first error row, and a failing clean-up never hides the error that stopped the job."""

from pathlib import Path

import pytest
import ray
import yaml

from pipelines.cli import main
from pipelines.config import load_config
from pipelines.ray_executor import RayExecutor
from pipelines.runner import run_job

FAKE = {"name": "fake", "terms": [[[0], 1.0], [[1, 2], -0.5]], "constant": 0.2}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _config(tmp_path: Path, records: list[str], **changes) -> Path:
    (tmp_path / "in.jsonl").write_text("".join(record + "\n" for record in records))
    config = {"input": {"path": str(tmp_path / "in.jsonl")}, "backend": FAKE, "method": "spex-hard", "b": 2,
              "t": 2, "holdout": 10, "indices": ["fourier"], "output": str(tmp_path / "out"), "progress": False,
              "ray": {"num_actors": 1, "flush_seconds": 0.1}, **changes}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


GOOD = ['{"id": "a", "text": "one two three four five"}', '{"id": "b", "text": "six seven eight nine"}']


def test_a_finished_job_is_recognised_without_starting_ray(tmp_path):
    config = load_config(_config(tmp_path, GOOD))
    assert run_job(config).examples_ok == 2

    def no_ray(config):
        raise AssertionError("an executor (Ray, scorer actors) was made for a finished job")

    summary = run_job(load_config(_config(tmp_path, GOOD)), executor=no_ray)
    assert (summary.examples_ok, summary.examples_skipped, summary.queries_sent) == (2, 2, 0)


def test_a_job_whose_every_example_failed_exits_non_zero_with_the_reason(tmp_path, capsys):
    path = _config(tmp_path, GOOD, input={"path": str(tmp_path / "in.jsonl"), "text_field": "body"})
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert "every example failed (2 error rows)" in err and "'body'" in err


def test_fail_fast_stops_at_the_first_error_row(tmp_path, capsys):
    path = _config(tmp_path, ['{"id": "bad", "text": ""}', *GOOD])
    assert main(["run", str(path), "--fail-fast"]) == 1
    assert "--fail-fast: example 'bad' failed: " in capsys.readouterr().err
    assert main(["run", str(path)]) == 0  # without it, the others complete


def test_a_failing_clean_up_does_not_hide_the_error_that_stopped_the_job(tmp_path):
    class Broken(RayExecutor):
        def wait(self):
            raise ValueError("the first error")

        def stats(self):
            raise RuntimeError("a second error while cleaning up")

    with pytest.raises(ValueError, match="the first error"):
        run_job(load_config(_config(tmp_path, GOOD)), executor=Broken)
