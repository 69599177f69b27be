"""The explanation dataset as a product: every stored row's R² re-checked against the query log of a
real (local Ray, VADER) job, the long DataFrame of ``read_explanations``, ``Interactions`` from rows
and JSON files, and Ray Data / Hugging Face ``datasets`` reading the Parquet as it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray

import spex_ray
from connectors.backends.fake import FakeBackend
from connectors.base import Example
from pipelines.config import load_config
from pipelines.method import MethodSpec
from pipelines.parts import PartWriter, read_parts
from pipelines.reduce import fit_example, rows_to_batch
from pipelines.runner import run_job
from spex_ray import Interactions, faithfulness
from spex_ray.interactions import INDICES, PREDICTABLE
from spex_ray.results import FRAME_COLUMNS
from pipelines.schema import EXPLANATION_SCHEMA, EXPLANATION_SCHEMA_VERSION, QUERY_LOG_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
REVIEWS = 4


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The demo job (VADER) on 4 reviews and one empty text, writing every index up to order 1, so
    that each fit's pairs lie above ``max_order`` (a truncated fourier row would miss its R²)."""
    tmp_path = tmp_path_factory.mktemp("job")
    lines = (ROOT / "connectors" / "data" / "demo_reviews.jsonl").read_text().splitlines()[:REVIEWS]
    (tmp_path / "in.jsonl").write_text("\n".join([*lines, json.dumps({"id": "empty", "text": ""})]) + "\n")
    config = load_config(DEMO, [f"input.path={tmp_path / 'in.jsonl'}", f"indices={json.dumps(list(INDICES))}",
                                "method=spex-hard", "b=3", "max_order=1", "holdout=100", "ray.num_actors=1", "progress=false",
                                f"output={tmp_path / 'out'}"])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        summary = run_job(config)
        assert (summary.examples_ok, summary.examples_error) == (REVIEWS, 1)
        yield config, tmp_path / "out"
    finally:
        ray.shutdown()


def test_every_stored_row_reproduces_its_r2_from_the_query_log(job):
    config, output = job
    spec = MethodSpec.from_config(config)
    for part in (output / "explanations").glob("part-*.parquet"):
        assert pq.read_schema(part).metadata[b"spex_ray.schema_version"] == EXPLANATION_SCHEMA_VERSION.encode()
    rows = read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()
    log = read_parts(output / "querylog", QUERY_LOG_SCHEMA).to_pylist()
    values = {(row["example_id"], row["query_id"]): row["value"] for row in log}
    by_example: dict[str, list[dict]] = {}
    for row in rows:
        by_example.setdefault(row["example_id"], []).append(row)
    assert [row["index"] for row in by_example["empty"]] == list(INDICES)  # error rows: fourier first too
    beyond_max_order = 0
    for example_id, example_rows in by_example.items():
        if example_id == "empty":
            continue
        fourier = example_rows[0]
        assert [row["index"] for row in example_rows] == list(INDICES) and fourier["index"] == "fourier"
        fit = Interactions.from_row(fourier)
        beyond_max_order += fit.max_order > config.max_order
        layout = spec.layout(fourier["n_features"])
        held_out = np.array([values[example_id, q] for q in range(layout.num_design, layout.full_id)])
        for row in example_rows:
            interactions = Interactions.from_row(row)
            assert row["fit_r2"] == fourier["faithfulness_r2"] and row["baseline_value"] == fit.baseline_value
            assert row["index"] == "fourier" or interactions.max_order <= config.max_order
            if row["index"] not in PREDICTABLE:
                assert row["faithfulness_r2"] is None
                continue
            r2 = faithfulness(interactions, layout.holdout_masks(), held_out)
            assert r2 == pytest.approx(row["faithfulness_r2"], abs=1e-9), (example_id, row["index"])
    assert beyond_max_order > 0, "no fit with terms above max_order: the check would not see a truncated row"


def test_read_explanations_gives_one_row_per_stored_term(job):
    _, output = job
    frame = spex_ray.read_explanations(output)
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert not [column for column in frame.columns if hasattr(pd.DataFrame, column)]
    table = read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()
    ok = [row for row in table if row["status"] == "ok"]
    assert len(frame) == sum(len(row["interactions"]) for row in ok)
    assert "empty" not in set(frame["example_id"]) and set(frame["index_name"]) == set(INDICES)
    row = next(row for row in ok if row["example_id"] == "review-04" and row["index"] == "fbii")
    mine = frame[(frame["example_id"] == "review-04") & (frame["index_name"] == "fbii")]
    expected = Interactions.from_row(row).to_frame()
    assert sorted(zip(mine["features"], mine["words"], mine["value"])) == \
        sorted(zip(expected["features"], expected["words"], expected["value"]))
    assert (mine["faithfulness_r2"] == row["faithfulness_r2"]).all() and (mine["fit_r2"] == row["fit_r2"]).all()
    assert (mine["order"] == mine["features"].map(len)).all()
    assert list(mine["value"].abs()) == sorted(mine["value"].abs(), reverse=True)
    shapley = spex_ray.read_explanations(output / "explanations", index="shapley")
    assert set(shapley["index_name"]) == {"shapley"} and shapley["order"].max() == 1 and len(shapley)
    assert shapley["faithfulness_r2"].isna().all() and shapley["fit_r2"].notna().all()
    parts = sorted((output / "explanations").glob("part-*.parquet"))
    assert sum(len(spex_ray.read_explanations(part)) for part in parts) == len(frame)
    pairs = frame[(frame["index_name"] == "fourier") & (frame["order"] == 2)].groupby("words")["value"].mean()
    assert len(pairs) > 0  # word tuples are hashable: group interactions by words across examples


def test_ray_data_reads_the_dataset_as_it_is(job):
    _, output = job
    rows = ray.data.read_parquet(str(output / "explanations")).take_all()
    table = read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()
    assert len(rows) == len(table)
    expected = {(row["example_id"], row["index"]): row for row in table}
    for row in rows:
        if row["status"] == "ok":
            assert Interactions.from_row(row) == Interactions.from_row(expected[row["example_id"], row["index"]])


def test_hugging_face_datasets_reads_the_dataset_as_it_is(job, tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed")
    _, output = job
    files = [str(path) for path in sorted((output / "explanations").glob("part-*.parquet"))]
    dataset = datasets.Dataset.from_parquet(files, cache_dir=str(tmp_path / "hf-cache"))
    table = read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()
    assert dataset.num_rows == len(table)
    expected = {(row["example_id"], row["index"]): row for row in table}
    for row in dataset:
        if row["status"] == "ok":
            assert Interactions.from_row(row) == Interactions.from_row(expected[row["example_id"], row["index"]])


# ---------------------------------------------------------------------------------------------
# Without Ray: rows written by the reducer, JSON files.


@pytest.fixture
def explained(tmp_path):
    """One explanation part of a planted function over a text with a repeated word."""
    example = Example.from_text("ex", "not bad , not bad at all")
    spec = MethodSpec("spex-hard", None, 3, 2, 0, 2, "ls", 30, ("fbii", "sii"))
    layout = spec.layout(example.n)
    backend = FakeBackend(terms=[[[1], -0.8], [[0, 1], 0.5], [[4], 0.2]], constant=0.1)
    values = np.array([s.value for s in backend.score(example, layout.masks(0, layout.num_queries))])
    writer = PartWriter(tmp_path / "explanations", EXPLANATION_SCHEMA, "run")
    writer.append(rows_to_batch(fit_example(example, spec, layout, values)))
    writer.flush()
    return tmp_path


def test_from_row_accepts_pandas_rows_and_rejects_error_rows(explained):
    frame = pd.read_parquet(explained / "explanations")
    assert list(frame["index"]) == ["fourier", "fbii", "sii"]
    rows = read_parts(explained / "explanations", EXPLANATION_SCHEMA).to_pylist()
    for (_, series), row in zip(frame.iterrows(), rows):
        assert Interactions.from_row(series) == Interactions.from_row(row)
    sii = Interactions.from_row(frame.iloc[2])
    assert sii.baseline_value == pytest.approx(Interactions.from_row(rows[0]).baseline_value)
    assert sii.feature_labels == ("not#1", "bad#1", ",", "not#2", "bad#2", "at", "all")
    assert Interactions.from_row(rows[0]).top(1, order=1, names=True) == [(("bad#1",), pytest.approx(1.6))]
    with pytest.raises(ValueError, match="error row: the fit failed"):
        Interactions.from_row({**rows[0], "status": "error", "error": "the fit failed"})


def test_json_save_and_load_round_trip(explained, tmp_path):
    rows = read_parts(explained / "explanations", EXPLANATION_SCHEMA).to_pylist()
    for row in rows:
        interactions = Interactions.from_row(row)
        path = tmp_path / f"{row['index']}.json"
        interactions.save(path)
        back = Interactions.load(path)
        assert back == interactions and back.to_arrays()[1].tolist() == interactions.to_arrays()[1].tolist()
        assert (back.index, back.max_order, back.feature_names, back.baseline_value) == \
            (interactions.index, interactions.max_order, interactions.feature_names, interactions.baseline_value)
    (tmp_path / "other.json").write_text('{"terms": []}')
    with pytest.raises(ValueError, match="not a spex-ray interactions file"):
        Interactions.load(tmp_path / "other.json")


def test_to_frame_lists_terms_with_words():
    f = Interactions({(): 0.5, (0, 2): -1.0, (1,): 2.0}, 3, "mobius", feature_names=["a", "b", "a"])
    frame = f.to_frame()
    assert list(frame.columns) == ["index_name", "order", "features", "words", "value"]
    assert frame.to_dict("records") == [
        {"index_name": "mobius", "order": 0, "features": (), "words": (), "value": 0.5},
        {"index_name": "mobius", "order": 1, "features": (1,), "words": ("b",), "value": 2.0},
        {"index_name": "mobius", "order": 2, "features": (0, 2), "words": ("a", "a"), "value": -1.0},
    ]
    assert Interactions({(1,): 1.0}, 2).to_frame()["words"].tolist() == [None]


def test_read_explanations_reads_schema_version_1_parts(explained, tmp_path):
    table = pq.read_table(next((explained / "explanations").glob("part-*.parquet")))
    old = table.drop_columns(["fit_r2", "baseline_value"])
    (tmp_path / "v1").mkdir()
    pq.write_table(old, tmp_path / "v1" / "part-old.parquet")
    frame = spex_ray.read_explanations(tmp_path / "v1", index="fbii")
    assert len(frame) == len(table.to_pylist()[1]["interactions"]) and frame["fit_r2"].isna().all()
    with pytest.raises(FileNotFoundError, match="no explanation Parquet files"):
        spex_ray.read_explanations(tmp_path / "nothing-here")


def test_import_spex_ray_loads_no_table_library():
    code = ("import sys, spex_ray; print(sorted(m for m in ('pandas', 'pyarrow', 'shapiq', 'ray', 'datasets') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr

