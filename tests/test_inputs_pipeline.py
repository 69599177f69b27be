"""The Ray job on bad records (one local cluster for the module, 2 CPUs): each gets its error rows
naming the record while every other example completes, a re-run skips them, and a folder of
files runs as one dataset whose ``row-<R>`` ids survive a resume."""

import json

import pytest
import ray

from pipelines.config import config_from_dict
from pipelines.parts import read_parts
from pipelines.plan import plan_job
from pipelines.runner import run_job
from pipelines.schema import EXPLANATION_SCHEMA

FAKE = {"name": "fake", "terms": [[[0], 1.0], [[1, 2], -0.5], [[3], 0.3]], "constant": 0.2}
GOOD = ["a fine and lovely film indeed", "dull slow and far too long", "the cast shines in every scene"]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _config(tmp_path, path, **input_fields):
    return config_from_dict({
        "input": {"path": str(path), **input_fields},
        "backend": FAKE,
        "method": "spex-hard",
        "b": 3,
        "t": 3,
        "holdout": 20,
        "indices": ["fbii"],
        "ray": {"num_actors": 2, "batch_size": 64, "flush_seconds": 0.2},
        "output": str(tmp_path / "out"),
        "progress": False,
    })


def _rows(tmp_path):
    rows = [row for row in read_parts(tmp_path / "out" / "explanations", EXPLANATION_SCHEMA).to_pylist()
            if row["index"] == "fbii"]
    by_id = {row["example_id"]: row for row in rows}
    assert len(by_id) == len(rows)  # one fbii row per example
    return by_id


def _errors(rows):
    return {example_id: row["error"] for example_id, row in rows.items() if row["status"] == "error"}


def test_lone_surrogates_in_a_jsonl_text_or_id_and_blank_ids_get_error_rows_in_run_and_plan(tmp_path):
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "good-0", "text": GOOD[0]}),
        '{"id": "text", "text": "a fine \\ud83d and lovely film"}',
        '{"id": "emoji\\ud83d", "text": "a fine and lovely film"}',
        json.dumps({"id": "", "text": GOOD[1]}),
        json.dumps({"id": "good-1", "text": GOOD[2]}),
    ]) + "\n")
    config = _config(tmp_path, path)
    expected = {
        "text": "record 1 (line 2): field 'text' has a lone surrogate U+D83D at character 7",
        "emoji\\ud83d": "record 2 (line 3): field 'id' (the example id) has a lone surrogate U+D83D at character 5; "
                        "the id is written escaped",
        "row-3": "field 'id' (the example id) is blank",
    }
    assert dict(plan_job(config).errors) == expected

    summary = run_job(config)
    assert (summary.examples_ok, summary.examples_error) == (2, 3)
    rows = _rows(tmp_path)
    assert _errors(rows) == expected
    assert rows["good-0"]["status"] == rows["good-1"]["status"] == "ok"
    assert rows["good-0"]["faithfulness_r2"] == pytest.approx(1.0)

    again = run_job(config)  # the escaped and row-<R> ids are stable: nothing is redone
    assert again.queries_sent == 0 and _rows(tmp_path) == rows


def test_huge_fields_empty_ids_and_broken_quoting_in_csv_get_error_rows_while_the_rest_complete(tmp_path):
    long_notes = " ".join(["note"] * 30_000)  # 150k characters: over the csv module's default field limit
    path = tmp_path / "input.csv"
    path.write_text(
        "id,text,notes\n"
        f'noted,{GOOD[0]},"{long_notes}"\n'
        f",{GOOD[1]},x\n"
        'quote,"He said "hi" to me and left",x\n'
        f"extra,{GOOD[1]},x,y\n"
        f"last,{GOOD[2]},x\n"
    )
    config = _config(tmp_path, path)
    expected = {
        "row-1": "field 'id' (the example id) is blank",
        "row-2": "record 2 (line 4): cannot be read as CSV: ',' expected after '\"'",
        "row-3": "record 3 (line 5): has 4 fields where the header has 3 (broken quoting or a stray delimiter)",
    }
    assert dict(plan_job(config).errors) == expected

    summary = run_job(config)
    assert (summary.examples_ok, summary.examples_error) == (2, 3)
    rows = _rows(tmp_path)
    assert _errors(rows) == expected
    assert rows["noted"]["status"] == rows["last"]["status"] == "ok"


def test_a_folder_input_runs_as_one_dataset_and_resumes_by_record_number(tmp_path):
    folder = tmp_path / "data"
    (folder / "later").mkdir(parents=True)
    (folder / "a.jsonl").write_text(json.dumps({"text": GOOD[0]}) + "\n" + json.dumps({"text": "one"}) + "\n")
    (folder / "b.csv.jsonl").write_text(json.dumps({"text": GOOD[1]}) + "\n")
    (folder / "later" / "c.jsonl").write_text(json.dumps({"text": GOOD[2]}) + "\n")
    config = _config(tmp_path, folder, id_field=None)
    assert plan_job(config).examples == 4

    first = run_job(config, limit=2)
    assert (first.examples_ok, first.examples_error) == (1, 1)
    summary = run_job(config)
    assert summary.examples_skipped == 2 and (summary.examples_ok, summary.examples_error) == (3, 1)
    rows = _rows(tmp_path)
    assert {example_id: row["features"][0] if row["features"] else None for example_id, row in rows.items()} == {
        "row-0": "a", "row-1": None, "row-2": "dull", "row-3": "the"}
