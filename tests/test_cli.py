"""The ``spex-ray`` command without a Ray cluster: plan, show, and the errors of run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from connectors.backends.fake import FakeBackend
from connectors.base import BACKENDS, Backend, Example, Score
from pipelines.cli import main
from pipelines.config import load_config
from pipelines.inputs import BadInput
from pipelines.method import MethodSpec
from pipelines.parts import PartWriter
from pipelines.reduce import error_rows, fit_example, rows_to_batch
from pipelines.scoring import BatchScorer
from spex_ray.methods import plan_method
from pipelines.schema import EXPLANATION_SCHEMA, QUERY_LOG_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


class EstimatingBackend(Backend):
    """A stand-in API backend that prices its queries."""

    name = "estimating"

    def __init__(self, *, price_per_query: float = 0.001):
        self.price = price_per_query

    @classmethod
    def estimate(cls, examples, num_queries, *, price_per_query: float = 0.001):
        return {"prompt_tokens": sum(e.n * q for e, q in zip(examples, num_queries)),
                "dollars": price_per_query * sum(num_queries)}

    def _score(self, example, keep):
        return [Score(value=0.0, raw="{}") for _ in keep]


def test_plan_prints_examples_features_and_queries_without_scoring(tmp_path, capsys):
    # --output: a demo run left in the working folder (the README's first command) must not change the plan
    assert main(["plan", str(DEMO), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in (ROOT / "connectors" / "data" / "demo_reviews.jsonl").read_text().splitlines()]
    sizes = [len(row["text"].split()) for row in rows]
    design = [plan_method("spex-hard", n, b=4).num_queries for n in sizes]
    total = sum(design) + len(design) * (200 + 2)
    assert f"examples: {len(rows)} ({len(rows)} plannable, 0 with errors)" in out
    assert f"features per example (words): min {min(sizes)} / median {np.median(sizes):.0f} / max {max(sizes)}" in out
    assert "held-out queries per example: 200" in out
    assert f"total queries: {total:,}" in out
    assert "estimate: wall time: " in out and "Ray start-up" in out and "timed in this process" in out
    fit = re.search(r"fit: ([0-9.e+-]+) s per example on one CPU .*; ([0-9,]+) CPU-s in all", out)
    assert fit and float(fit.group(1)) > 0


def test_plan_asks_the_backend_class_for_its_estimate(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "estimating", f"{__name__}:EstimatingBackend")
    code = main(["plan", str(DEMO), "--limit", "3", "--output", str(tmp_path / "out"), "--set", "backend={name: estimating, price_per_query: 0.01}",
                 "--set", "holdout=0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "examples: 3 (3 plannable" in out
    total = int(out.split("total queries: ")[1].split()[0].replace(",", ""))
    assert f"estimate: dollars: ${0.01 * total:,.2f}" in out
    assert "estimate: prompt_tokens: " in out


def test_plan_estimates_time_from_an_earlier_query_log(tmp_path, capsys):
    config = load_config(DEMO)
    layout = MethodSpec.from_config(config).layout(6)
    example = Example.from_text("e", "one two three four five six")
    writer = PartWriter(tmp_path / "out" / "querylog", QUERY_LOG_SCHEMA, "run")
    writer.append(BatchScorer(FakeBackend()).score(example, layout, 0, 100))
    writer.flush()
    assert main(["plan", str(DEMO), "--output", str(tmp_path / "out")]) == 0
    assert "estimate: wall time: " in capsys.readouterr().out


def test_plan_lists_bad_examples(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "fine words here"}\n{"id": "b", "text": ""}\n')
    config = {"input": {"path": "in.jsonl"}, "backend": {"name": "vader"}, "b": 3}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    assert main(["plan", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "examples: 2 (1 plannable, 1 with errors)" in out and "error: b: example text is empty" in out


@pytest.fixture
def explained(tmp_path):
    """An output folder with one explained example and one error row."""
    example = Example.from_text("ex-1", "this is not good at all")
    spec = MethodSpec("spex-hard", None, 3, 2, 0, 2, "ls", 20, ("fourier", "fbii"))
    layout = spec.layout(example.n)
    backend = FakeBackend(terms=[[[3], -0.8], [[2, 3], 0.5], [[0], 0.05]])
    values = np.array([s.value for s in backend.score(example, layout.masks(0, layout.num_queries))])
    writer = PartWriter(tmp_path / "explanations", EXPLANATION_SCHEMA, "run")
    writer.append(rows_to_batch(fit_example(example, spec, layout, values)))
    writer.append(rows_to_batch(error_rows(BadInput("ex-2", "missing field 'text'"), spec, "missing field 'text'")))
    writer.flush()
    return tmp_path


def test_show_marks_features_and_lists_interactions_with_words(explained, capsys):
    assert main(["show", str(explained), "--example", "ex-1", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ex-1  (n=6, spex-hard, fbii up to order 2, R^2 1.000")
    # Moebius effects: not x good +2.0, not -1.0, good +0.6, this -0.1
    assert "  [[this]]- is [[not]]- [[good]]+ at all\n" in out
    assert "+2.0000  not x good\n    -1.0000  not\n    +0.6000  good\n" in out


def test_show_fourier_as_effects_and_error_rows(explained, capsys):
    assert main(["show", str(explained), "--index", "fourier", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "+1.6000  good" in out  # -2 x F({good}) = -2 x -0.8
    assert "+2.0000  not x good" in out  # (-2)^2 x 0.5
    assert "ex-2: error: missing field 'text'" in out


def test_show_reports_what_is_missing(explained, capsys):
    assert main(["show", str(explained), "--example", "nope"]) == 1
    assert "no explanation of example 'nope'" in capsys.readouterr().err
    assert main(["show", str(explained), "--index", "shapley"]) == 1
    assert "no 'shapley' rows" in capsys.readouterr().err
    assert main(["show", str(explained / "empty")]) == 1


def test_run_rejects_a_bad_config_before_starting_anything(tmp_path, capsys):
    assert main(["run", str(DEMO), "--set", "input.txt_field=x"]) == 2
    assert "config: unknown key 'input.txt_field'" in capsys.readouterr().err


def test_run_refuses_an_output_folder_of_another_config(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "job.json").write_text(json.dumps({"config_hash": "0" * 64, "config": {"method": "lasso"}}))
    assert main(["run", str(DEMO), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "holds results of a different config" in err and "method" in err


def test_module_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "{run,plan,show,report" in result.stdout


def test_plan_prints_dollars_as_dollars_and_a_wall_time_with_ray_and_fitting(tmp_path, capsys):
    pytest.importorskip("openai")
    puzzles = ROOT / "configs" / "puzzles-gpt4o-mini.yaml"
    assert main(["plan", str(puzzles), "--limit", "3", "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"estimate: dollars: \$[0-9.]+ online, \$[0-9.]+ with the Batch API", out)
    wall = re.search(r"estimate: wall time: ([0-9,]+) s .*Ray start-up ~([0-9]+) s \+ scoring ([0-9,]+) s", out)
    assert wall and int(wall.group(1).replace(",", "")) >= int(wall.group(2)) + int(wall.group(3).replace(",", ""))
