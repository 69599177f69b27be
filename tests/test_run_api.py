"""spex_ray.run from Python on one local Ray cluster: a config as a dict, a YAML path or a JobConfig
with keyword overrides; examples given as a list of dicts, a pandas DataFrame or a datasets.Dataset
(resumed by id when run again with more rows); a backend of one's own by import path in the scorer
actors; the Hugging Face classifier backend in a whole job."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import yaml

import spex_ray
from connectors.base import Example, build_backend
from pipelines.config import ConfigError, load_config
from pipelines.runner import JobMismatchError

TESTS = Path(__file__).resolve().parent
PHRASE = {"name": "custom_backend:PhraseBackend", "weights": {"good": 1.0, "bad": -1.0},
          "phrase": ["not", "bad"], "bonus": 2.0}
JOB = {"backend": PHRASE, "method": "spex-hard", "b": 3, "t": 2, "holdout": 20, "indices": ["mobius"],
       "progress": False, "ray": {"num_actors": 1, "flush_seconds": 0.1}}
RECORDS = [{"id": "a", "text": "the film is not bad at all"}, {"id": "b", "text": "good but bad"}]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    with pytest.MonkeyPatch.context() as patch:  # the scorer actors import custom_backend from here
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _terms(output, example_id):
    df = spex_ray.read_explanations(output, index="mobius")
    rows = df[df.example_id == example_id]
    return {tuple(words): value for words, value in zip(rows.words, rows.value)}


def test_records_run_with_a_backend_by_path_and_a_rerun_with_more_rows_resumes(tmp_path):
    out = tmp_path / "out"
    first = spex_ray.run(JOB, data=RECORDS, output=str(out))
    assert (first.examples_ok, first.examples_error) == (2, 0)
    terms = _terms(first.output, "a")
    assert terms[("not", "bad")] == pytest.approx(2.0) and terms[("bad",)] == pytest.approx(-1.0)
    metadata = pq.read_schema(next((out / "explanations").glob("*.parquet"))).metadata
    assert json.loads(metadata[b"spex_ray.backend"])["backend"] == "custom_backend:PhraseBackend"

    again = spex_ray.run(JOB, data=[*RECORDS, {"id": "c", "text": "good good"}], output=str(out))
    assert (again.examples_ok, again.examples_skipped) == (3, 2)
    assert again.queries_sent == first.queries_sent // 2  # only c's queries
    assert pq.read_table(out / "input.parquet").column("id").to_pylist() == ["a", "b", "c"]

    with pytest.raises(JobMismatchError, match="changed: b"):  # another job's folder keeps its data
        spex_ray.run(JOB, data=RECORDS[:1], output=str(out), b=2)
    assert pq.read_table(out / "input.parquet").num_rows == 3
    changed = [{"id": "a", "text": "the film is good"}, *RECORDS[1:]]
    with pytest.raises(ValueError, match="holds explanations of other data"):  # same ids, other texts
        spex_ray.run(JOB, data=changed, output=str(out))
    assert pq.read_table(out / "input.parquet").column("text").to_pylist()[0] == RECORDS[0]["text"]


def test_a_yaml_path_with_keyword_overrides(tmp_path):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**JOB, "input": {"path": "in.jsonl"}, "b": 5, "holdout": 0}))
    summary = spex_ray.run(path, output=tmp_path / "out", b=2, holdout=10, ray__batch_size=16,
                           backend__bonus=4.0, limit=1)
    assert summary.examples_ok == 1
    recorded = json.loads((tmp_path / "out" / "job.json").read_text())["config"]
    assert (recorded["b"], recorded["holdout"], recorded["backend"]["bonus"]) == (2, 10, 4.0)
    assert recorded["input"]["path"] == str(tmp_path / "in.jsonl")
    assert _terms(summary.output, "a")[("not", "bad")] == pytest.approx(4.0)
    config = load_config(path, ["b=2", "holdout=10", "backend.bonus=4.0"])
    resumed = spex_ray.run(config, output=str(tmp_path / "out"))  # a JobConfig: the same job, past the limit
    assert (resumed.examples_skipped, resumed.examples_ok) == (1, 2)


def test_a_dataframe_without_ids_and_a_dataset(tmp_path):
    pandas = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    frame = pandas.DataFrame({"review": ["not bad", "bad bad good"], "stars": [4, 2]}, index=[10, 20])
    summary = spex_ray.run(JOB, data=frame, output=str(tmp_path / "frame"), input__text_field="review",
                           input__id_field=None)
    assert summary.examples_ok == 2
    assert set(spex_ray.read_explanations(summary.output).example_id) == {"row-0", "row-1"}

    dataset = datasets.Dataset.from_list([*RECORDS, {"id": "c", "text": "good good"}]).select([2, 0])
    summary = spex_ray.run(JOB, data=dataset, output=str(tmp_path / "dataset"))
    assert set(spex_ray.read_explanations(summary.output).example_id) == {"c", "a"}


def test_mistakes_are_reported_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="'input.id_field' is 'id' but the data has no such field .*input__id_field"):
        spex_ray.run(JOB, data=[{"text": "a b"}], output=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="'input.text_field' is 'body'"):
        spex_ray.run(JOB, data=RECORDS, output=str(tmp_path / "x"), input__text_field="body")
    with pytest.raises(TypeError, match="data must be a list of dicts"):
        spex_ray.run(JOB, data="a b c", output=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="mixed types"):
        spex_ray.run(JOB, data=[{"id": "a", "text": "x y"}, {"id": 2, "text": "x y"}], output=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="unknown key 'ray.num_actor'"):
        spex_ray.run(JOB, data=RECORDS, output=str(tmp_path / "x"), ray__num_actor=2)
    with pytest.raises(ConfigError, match="'method' is not a mapping"):
        spex_ray.run(JOB, data=RECORDS, output=str(tmp_path / "x"), method__name="lasso")
    assert not (tmp_path / "x" / "input.parquet").exists()
    with pytest.raises(RuntimeError, match="every example failed .*the first: a: .*empty"):
        spex_ray.run(JOB, data=[{"id": "a", "text": " "}], output=str(tmp_path / "y"))


def test_a_hugging_face_classifier_job(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_classifier import save_tiny_bert

    model = save_tiny_bert(tmp_path / "bert")
    backend = {"name": "transformers-classifier", "model": str(model), "label": "positive", "value": "logprob"}
    summary = spex_ray.run({**JOB, "backend": backend, "masking": {"strategy": "mask_token"}},
                           data=RECORDS[:1], output=str(tmp_path / "out"))
    assert summary.examples_ok == 1 and summary.mean_faithfulness_r2 is not None
    row = pq.read_table(tmp_path / "out" / "explanations").to_pylist()[0]
    example = Example.from_text("a", RECORDS[0]["text"])
    with build_backend({**backend, "strategy": "mask_token"}) as direct:
        full = direct.score(example, np.ones((1, example.n), dtype=bool))[0].value
    assert row["full_value"] == pytest.approx(full, abs=1e-4) and full < 0
