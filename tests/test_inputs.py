"""Input reading without Ray: every bad record becomes a BadInput naming the record while the rest
are read; folders and glob patterns read as one dataset with stable record numbers."""

import csv
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base import Example
from pipelines import inputs
from pipelines.config import ConfigError, config_from_dict
from pipelines.inputs import BadInput, count_records, load_examples
from pipelines.plan import describe, plan_job

GOOD = "a fine and lovely film"


def _config(path, **input_fields):
    return config_from_dict({"input": {"path": str(path), **input_fields}, "backend": {"name": "fake"},
                             "output": str(path.parent / "out")})


def _read(config):
    items = list(load_examples(config))
    assert count_records(config.input) == len(items)
    return items


def _errors(items):
    return {item.example_id: item.error for item in items if isinstance(item, BadInput)}


def test_lone_surrogates_in_a_jsonl_text_or_id_are_bad_records_with_an_encodable_id(tmp_path):
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "ok", "text": GOOD, "q": "why?"}),
        '{"id": "text", "text": "a fine \\ud83d film", "q": "why?"}',
        '{"id": "emoji\\ud83d", "text": "a fine film", "q": "why?"}',
        '{"id": "question", "text": "a fine film", "q": "why \\udc9f?"}',
        '{"id": "label-is-ignored", "text": "a fine film", "q": "why?", "label": "\\ud83d"}',
    ]) + "\n")
    items = _read(_config(path, question_field="q"))
    assert [item.example_id for item in items if isinstance(item, Example)] == ["ok", "label-is-ignored"]
    errors = _errors(items)
    assert errors["text"] == "record 1 (line 2): field 'text' has a lone surrogate U+D83D at character 7"
    assert errors["emoji\\ud83d"].startswith("record 2 (line 3): field 'id' (the example id) has a lone surrogate")
    assert errors["question"].startswith("record 3 (line 4): field 'q' has")
    for example_id, error in errors.items():
        (example_id + error).encode("utf-8")  # printable and writable


def test_undecodable_bytes_in_a_csv_id_are_a_bad_record_under_the_escaped_id(tmp_path):
    path = tmp_path / "input.csv"
    path.write_bytes(b"id,text\nok," + GOOD.encode() + b"\ncaf\xe9,a fine film\n")
    ok, bad = _read(_config(path))
    assert isinstance(ok, Example)
    assert bad.example_id == "caf\\xe9"
    assert bad.error.startswith("record 1 (line 3): field 'id' (the example id) has undecodable bytes")


def test_blank_ids_are_bad_records_in_csv_and_jsonl_alike(tmp_path):
    csv_path = tmp_path / "input.csv"
    csv_path.write_text(f"id,text\nok,{GOOD}\n,{GOOD}\n  ,{GOOD}\n")
    jsonl_path = tmp_path / "input.jsonl"
    jsonl_path.write_text("\n".join(json.dumps({"id": i, "text": GOOD}) for i in ["ok", "", "  "]) + "\n")
    for path in (csv_path, jsonl_path):
        errors = _errors(_read(_config(path)))
        blank = "field 'id' (the example id) is blank"
        assert errors == {"row-1": blank, "row-2": blank}


def test_csv_fields_beyond_pythons_default_limit_are_read(tmp_path):
    path = tmp_path / "input.csv"
    long_text = " ".join(["word"] * 40_000)  # 200k characters: over the csv module's 131,072 default
    path.write_text(f'id,text,notes\nnoted,"{GOOD}","{long_text}"\nlong,"{long_text}",x\nlast,{GOOD},x\n')
    noted, long, last = _read(_config(path))
    assert isinstance(noted, Example) and isinstance(last, Example)
    assert long.error == "example has 40000 features, more than max_features=256"


def test_a_csv_field_over_the_limit_is_a_bad_record_and_reading_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "CSV_FIELD_LIMIT", 1000)
    path = tmp_path / "input.csv"
    path.write_text(f'id,text\nfirst,{GOOD}\nhuge,"{"w " * 1000}"\nlast,{GOOD}\n')
    first, huge, last = _read(_config(path))
    assert isinstance(first, Example) and isinstance(last, Example)
    assert huge.example_id == "row-1"
    assert huge.error.startswith("record 1 (line 3): cannot be read as CSV: field larger")
    assert csv.field_size_limit() != 1000  # the process-wide limit is restored


def test_broken_csv_quoting_is_a_bad_record_not_mangled_text(tmp_path):
    path = tmp_path / "input.csv"
    path.write_text(
        "id,text,label\n"
        f"ok,{GOOD},1\n"
        'quote,"He said "hi" to me and left",1\n'
        f"extra,{GOOD},1,2\n"
        f"short,{GOOD}\n"
        "\n"
        f"last,{GOOD},1\n"
        'open,"never closed, to the end\n'
    )
    items = _read(_config(path))
    assert [item.example_id for item in items if isinstance(item, Example)] == ["ok", "last"]
    errors = _errors(items)
    assert errors["row-1"] == "record 1 (line 3): cannot be read as CSV: ',' expected after '\"'"
    assert errors["row-2"].startswith("record 2 (line 4): has 4 fields where the header has 3")
    assert errors["row-3"].startswith("record 3 (line 5): has 2 fields where the header has 3")
    assert errors["row-5"] == "record 5 (line 8): cannot be read as CSV: unexpected end of data"


def test_plan_lists_the_bad_records_and_plans_the_rest(tmp_path):
    path = tmp_path / "input.csv"
    path.write_text(f'id,text\nok,{GOOD}\n,{GOOD}\nquote,"a "b" c"\n')
    config = _config(path)
    plan = plan_job(config)
    assert plan.examples == 3 and len(plan.features) == 1
    assert plan.errors == [("row-1", "field 'id' (the example id) is blank"),
                           ("row-2", "record 2 (line 4): cannot be read as CSV: ',' expected after '\"'")]
    assert "error: row-2: record 2 (line 4)" in describe(config, plan)


def _dataset(folder):
    (folder / "b").mkdir(parents=True)
    (folder / "a.jsonl").write_text(f'{json.dumps({"id": "a0", "text": GOOD})}\n\n{{not json\n')
    (folder / "b" / "c.jsonl").write_text(json.dumps({"id": "c0", "text": GOOD}) + "\n")
    (folder / "b2.jsonl").write_text(json.dumps({"id": "b0", "text": GOOD}) + "\n")
    (folder / ".hidden.jsonl").write_text("ignored\n")
    (folder / "_SUCCESS").write_text("")


def test_a_folder_reads_as_one_dataset_in_path_order_with_stable_record_numbers(tmp_path):
    _dataset(tmp_path / "data")
    config = _config(tmp_path / "data", id_field=None)
    assert config.input.format == "jsonl"
    items = _read(config)
    assert [item.example_id for item in items] == ["row-0", "row-1", "row-2", "row-3"]
    assert [item.text for item in items if isinstance(item, Example)] == [GOOD] * 3
    assert items[1].error.startswith("record 1 (a.jsonl line 3): not valid JSON")
    assert [item.example_id for item in load_examples(config)] == ["row-0", "row-1", "row-2", "row-3"]
    assert [item.example_id for item in load_examples(config, limit=3)] == ["row-0", "row-1", "row-2"]
    plan = plan_job(config)
    assert plan.examples == 4 and len(plan.features) == 3


def test_a_glob_pattern_names_the_files_it_matches(tmp_path):
    _dataset(tmp_path / "data")
    config = config_from_dict({"input": {"path": "data/**/*.jsonl"}, "backend": {"name": "fake"}}, base_dir=tmp_path)
    assert config.input.path == str(tmp_path / "data" / "**" / "*.jsonl")
    assert [item.example_id for item in _read(config)] == ["a0", "row-1", "c0", "b0"]


def test_a_folder_of_parquet_files_names_each_record_by_file_and_row(tmp_path):
    (tmp_path / "data").mkdir()
    for name, ids in [("1.parquet", ["p", "q"]), ("2.parquet", ["r", "q"])]:
        pq.write_table(pa.table({"id": ids, "text": [GOOD] * len(ids)}), tmp_path / "data" / name)
    items = _read(_config(tmp_path / "data"))
    assert [item.example_id for item in items] == ["p", "q", "r", "q (row 3)"]


@pytest.mark.parametrize(("files", "message"), [
    ({"a.jsonl": "{}", "b.csv": "id"}, "holds files of several formats: csv (b.csv), jsonl (a.jsonl)"),
    ({"a.jsonl": "{}", "notes.txt": ""}, "cannot infer 'input.format' from 'notes.txt'"),
    ({}, "holds no data files"),
])
def test_a_folder_whose_format_cannot_be_told_is_refused_with_the_reason(tmp_path, files, message):
    (tmp_path / "data").mkdir()
    for name, text in files.items():
        (tmp_path / "data" / name).write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(tmp_path / "data")


def test_an_explicit_format_reads_every_file_of_a_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0").write_text(json.dumps({"id": "x", "text": GOOD}) + "\n")
    (tmp_path / "data" / "part-1").write_text(json.dumps({"id": "y", "text": GOOD}) + "\n")
    assert [item.example_id for item in _read(_config(tmp_path / "data", format="jsonl"))] == ["x", "y"]


def test_a_pattern_that_matches_nothing_is_not_found(tmp_path):
    with pytest.raises(ConfigError, match="'input.path' 'data/\\*.jsonl' not found"):
        config_from_dict({"input": {"path": "data/*.jsonl"}, "backend": {"name": "fake"}}, base_dir=tmp_path)
