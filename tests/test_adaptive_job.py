"""Adaptive budgets in the job (``adaptive: true``): an example's queries go out in stages that are
prefixes of its design, and it stops once a stage's fit stops raising the cross-validated R²."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray

from pipelines.config import ConfigError, config_from_dict
from pipelines.executor import LocalExecutor
from pipelines.layout import QueryLayout
from pipelines.method import MethodSpec
from pipelines.parts import read_parts
from pipelines.runner import run_job
from pipelines.schema import EXPLANATION_SCHEMA, QUERY_LOG_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
N = 12  # words per example: the stages of a 5,000-query budget are 1,344, 2,688 and 5,000 queries
BUDGET = 5000
HOLDOUT = 50
# Sparse, with noise: the cross-validated R² is 0.938 after the first stage and 0.939 after the
# second, which therefore is the last.
SPARSE = {"name": "fake", "terms": [[[0], 1.0], [[1, 2], -0.5], [[3], 0.3]], "constant": 0.2, "noise": 0.3}


def _dense_terms() -> list:
    """Every term of order 1-4 of the 12 features (793), normal coefficients: the cross-validated
    R² rises 0.70 -> 0.92 -> 0.95 over the three stages."""
    rng = np.random.default_rng(0)
    return [[list(k), float(rng.normal())] for order in range(1, 5) for k in itertools.combinations(range(N), order)]


def _input(tmp_path: Path, examples: int) -> Path:
    path = tmp_path / "input.jsonl"
    lines = [json.dumps({"id": f"ex-{i}", "text": " ".join(f"w{i}{j}" for j in range(N))}) for i in range(examples)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path: Path, name: str, *, adaptive: bool = True, examples: int = 2, **changes):
    data = {"input": {"path": str(_input(tmp_path, examples))}, "backend": SPARSE, "budget": BUDGET,
            "adaptive": adaptive, "holdout": HOLDOUT, "indices": ["fourier", "fbii"],
            "ray": {"num_actors": 1, "batch_size": 128, "flush_seconds": 0}, "output": str(tmp_path / name),
            "progress": False, **changes}
    return config_from_dict(data)


def _explanations(output: Path) -> list[dict]:
    rows = read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()
    return sorted(rows, key=lambda row: (row["example_id"], row["index"]))


def _logged_ids(output: Path) -> dict[str, list[int]]:
    log = read_parts(output / "querylog", QUERY_LOG_SCHEMA)
    ids: dict[str, list[int]] = {}
    for example_id, query_id in zip(log.column("example_id").to_pylist(), log.column("query_id").to_pylist()):
        ids.setdefault(example_id, []).append(query_id)
    return {key: sorted(value) for key, value in ids.items()}


def _stage_ids(used: int) -> list[int]:
    """The query ids a job that stopped after ``used`` design queries sent: those, then the held-out,
    full and empty ones."""
    return [*range(used), *range(BUDGET, BUDGET + HOLDOUT + 2)]


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
    """The sparse job with adaptive budgets, uninterrupted, on the local executor."""
    tmp_path = tmp_path_factory.mktemp("adaptive")
    summary = run_job(_config(tmp_path, "out"), executor=LocalExecutor)
    return summary, _explanations(tmp_path / "out"), _logged_ids(tmp_path / "out")


def test_a_sparse_function_stops_early_and_fits_as_well_as_the_whole_budget(tmp_path, adaptive_run):
    summary, rows, logged = adaptive_run
    fixed = run_job(_config(tmp_path, "fixed", adaptive=False), executor=LocalExecutor)
    fixed_rows = _explanations(tmp_path / "fixed")
    assert (summary.examples_ok, summary.examples_error) == (2, 0)
    assert {row["num_queries"] for row in rows} == {2688} and {row["num_queries"] for row in fixed_rows} == {BUDGET}
    assert summary.queries_saved == 2 * (BUDGET - 2688) and fixed.queries_saved is None
    assert summary.queries_sent == 2 * (2688 + HOLDOUT + 2) < fixed.queries_sent
    assert logged == {f"ex-{i}": _stage_ids(2688) for i in range(2)}  # nothing past the stage it stopped at
    for row, whole in zip(rows, fixed_rows):
        assert row["index"] == whole["index"]
        if row["faithfulness_r2"] is not None:
            assert row["faithfulness_r2"] >= whole["faithfulness_r2"] - 0.01
    assert summary.mean_faithfulness_r2 > 0.9
    assert f"{2 * (BUDGET - 2688)} of the budget saved (adaptive)" in summary.describe()
    assert json.loads((tmp_path / "fixed" / "summary.json").read_text()).keys().isdisjoint({"queries_saved"})


def test_an_exact_fit_stops_after_the_first_stage(tmp_path):
    summary = run_job(_config(tmp_path, "out", examples=1, backend={**SPARSE, "noise": 0.0}), executor=LocalExecutor)
    rows = _explanations(tmp_path / "out")
    assert {row["num_queries"] for row in rows} == {1344} and rows[0]["faithfulness_r2"] == pytest.approx(1.0)
    assert summary.queries_saved == BUDGET - 1344
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["queries_saved"] == BUDGET - 1344


def test_a_dense_function_spends_the_whole_budget(tmp_path):
    config = _config(tmp_path, "out", examples=1, backend={"name": "fake", "terms": _dense_terms()})
    summary = run_job(config, executor=LocalExecutor)
    assert summary.examples_ok == 1 and summary.queries_saved == 0
    assert summary.queries_sent == BUDGET + HOLDOUT + 2
    assert {row["num_queries"] for row in _explanations(tmp_path / "out")} == {BUDGET}


def test_a_killed_adaptive_job_resumes_at_its_stages_and_sends_nothing_twice(tmp_path, adaptive_run):
    """Killed after 27 batches: the first example's first stage (12 batches: 11 of the design, 1
    held-out), the second's, then 3 of the first's second stage. The re-run picks the first up in
    its second stage (judged against the first stage's R², fitted again), the second after its
    first stage, and writes the uninterrupted run's rows."""
    summary, rows, logged = adaptive_run
    counter = tmp_path / "counter"
    backend = {**SPARSE, "counter_path": str(counter), "die_after_batches": 27, "die_marker_dir": str(tmp_path)}
    config = _config(tmp_path, "out", backend=backend)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    script = ("import json, sys; from pipelines.config import config_from_dict; from pipelines.executor import "
              "LocalExecutor; from pipelines.runner import run_job; "
              "run_job(config_from_dict(json.load(open(sys.argv[1]))), executor=LocalExecutor)")
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "config.json")], cwd=ROOT,
                            capture_output=True, text=True)
    assert killed.returncode == 1 and (tmp_path / "fake-backend-died").exists(), killed.stderr

    before = _logged_ids(tmp_path / "out")
    assert before == {"ex-0": _stage_ids(1344 + 3 * 128), "ex-1": _stage_ids(1344)}
    scored = sum(int(line) for line in counter.read_text().split())
    assert scored == sum(map(len, before.values()))  # every answer of the killed run was logged
    resumed = run_job(config, executor=LocalExecutor)
    assert resumed.queries_reused == scored and resumed.queries_sent == summary.queries_sent - scored
    assert sum(int(line) for line in counter.read_text().split()) == summary.queries_sent  # nothing sent twice
    assert _logged_ids(tmp_path / "out") == logged
    assert _explanations(tmp_path / "out") == rows
    assert resumed.queries_saved == summary.queries_saved


def test_the_ray_executor_runs_the_same_stages(tmp_path, adaptive_run):
    summary, rows, logged = adaptive_run
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        on_ray = run_job(_config(tmp_path, "out"))
    finally:
        ray.shutdown()
    assert (on_ray.queries_sent, on_ray.queries_saved) == (summary.queries_sent, summary.queries_saved)
    assert _explanations(tmp_path / "out") == rows and _logged_ids(tmp_path / "out") == logged


@pytest.mark.parametrize("changes, message", [
    ({"method": "proxyspex"}, "'adaptive' needs method spex-hybrid"),
    ({"budget": None}, "'adaptive' needs 'budget' (or 'b')"),
    ({"adaptive": "yes please"}, "'adaptive' must be true or false"),
])
def test_adaptive_config_errors_name_the_key(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _config(tmp_path, "out", **changes)


def test_adaptive_is_in_the_result_hash_only_when_set(tmp_path):
    fixed = _config(tmp_path, "out", adaptive=False)
    data = {key: value for key, value in fixed.to_dict().items() if key != "adaptive"}
    assert config_from_dict(data).result_hash() == fixed.result_hash() and "adaptive" not in fixed.result_config()
    assert _config(tmp_path, "out").result_hash() != fixed.result_hash()
    assert _config(tmp_path, "out", budget=None, b=4).adaptive  # b caps the queries too
    assert MethodSpec.from_config(_config(tmp_path, "out")).adaptive


def test_a_stage_wants_its_design_prefix_and_every_other_query():
    layout = QueryLayout(n=N, design=MethodSpec("spex-hybrid", BUDGET, None, 5, 0, 2, "ls", HOLDOUT, ("fbii",))
                         .method_for(N).design.params(), holdout=HOLDOUT, seed=0)
    assert layout.stages() == [1344, 2688, BUDGET]
    assert np.flatnonzero(layout.stage_ids(1344)).tolist() == _stage_ids(1344)
