"""The HotpotQA config with the transformers backend on a tiny saved model, through the Ray job:
the model's own answer is made once per example and is the target of every query."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_lm import save_tiny_llama  # noqa: E402

from connectors.base import build_backend  # noqa: E402
from pipelines.backends import backend_options  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.inputs import load_examples  # noqa: E402
from pipelines.parts import PartWriter, read_parts  # noqa: E402
from pipelines.runner import run_job  # noqa: E402
from pipelines.schema import EXPLANATION_SCHEMA, TARGETS_SCHEMA  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOTPOTQA = ROOT / "configs" / "hotpotqa-vllm.yaml"
EXAMPLES = 2


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _config(model: Path, output: Path):
    """The HotpotQA config on the transformers backend: its prompt options, the tiny model, float32,
    one CPU actor (the config's GPU request dropped: the backend's default is no GPU)."""
    prompt_options = yaml.safe_load(HOTPOTQA.read_text())["backend"]
    accepted = backend_options("transformers")
    backend = {key: value for key, value in prompt_options.items() if key in accepted}
    backend.update(name="transformers", model=str(model), dtype="float32")
    return load_config(HOTPOTQA, [
        f"backend={json.dumps(backend)}", "b=3", "holdout=20", "ray.num_actors=1", "ray.num_cpus_per_actor=1",
        "ray.num_gpus_per_actor=null", "ray.flush_seconds=0.2", "progress=false", f"output={output}",
    ])


def test_the_generated_answer_is_the_target_of_every_query_and_a_rerun_scores_nothing(tmp_path):
    model = save_tiny_llama(tmp_path / "model")
    config = _config(model, tmp_path / "out")
    summary = run_job(config, limit=EXAMPLES)
    assert (summary.examples_ok, summary.examples_error) == (EXAMPLES, 0) and summary.queries_sent > 0

    rows = read_parts(tmp_path / "out" / "explanations", EXPLANATION_SCHEMA).to_pylist()
    assert len(rows) == EXAMPLES * len(config.indices) and {row["status"] for row in rows} == {"ok"}
    backend = build_backend(config.backend_spec(backend_options("transformers")))
    for example in load_examples(config, EXAMPLES):
        assert example.target is None
        target = backend.target(example)
        full = backend.score(replace(example, target=target), np.ones((1, example.n), dtype=bool))[0].value
        for row in (row for row in rows if row["example_id"] == example.example_id):
            assert row["target"] == target and target
            assert row["full_value"] == pytest.approx(full, abs=1e-4)

    made = read_parts(tmp_path / "out" / "targets", TARGETS_SCHEMA).to_pylist()
    assert {(row["example_id"], row["target"]) for row in made} == {(r["example_id"], r["target"]) for r in rows}

    rerun = run_job(_config(model, tmp_path / "out"), limit=EXAMPLES)
    assert (rerun.queries_sent, rerun.examples_skipped) == (0, EXAMPLES)


def test_a_resumed_example_keeps_the_target_its_logged_queries_were_scored_against(tmp_path):
    """Sampling (or a changed kernel) can make a second generation differ: a resumed example must
    use the logged target, not generate one again."""
    model = save_tiny_llama(tmp_path / "model")
    config = _config(model, tmp_path / "out")
    first = next(iter(load_examples(config, 1)))
    logged = PartWriter(tmp_path / "out" / "targets", TARGETS_SCHEMA, "earlier-run")
    logged.append(pa.RecordBatch.from_pydict({"example_id": [first.example_id], "target": ["Paris"]}, schema=TARGETS_SCHEMA))
    logged.flush()

    summary = run_job(config, limit=EXAMPLES)
    assert summary.examples_ok == EXAMPLES
    rows = read_parts(tmp_path / "out" / "explanations", EXPLANATION_SCHEMA).to_pylist()
    targets = {row["example_id"]: row["target"] for row in rows}
    assert targets[first.example_id] == "Paris"
    assert len(targets) == EXAMPLES and all(targets.values())
