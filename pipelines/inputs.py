"""Read examples from JSONL / Parquet / CSV one record at a time and featurize them: a text field,
a field of documents (a list of ``{title, text}`` records; JSON text in CSV) or an image path.

A record that cannot become an Example (missing field, undecodable bytes, empty text, too many
or too few features, duplicate id) yields a ``BadInput`` with the reason instead; reading goes on.
A record without an id (no ``id_field``, or the field missing) is called ``row-<R>``, R being its
0-based position in the file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from connectors.base import Example
from connectors.documents import documents_example
from connectors.image import image_example
from pipelines.config import PACKAGE_SCHEME, PATCHES, InputConfig, JobConfig, package_path

# Python decodes undecodable bytes to these lone surrogates with errors="surrogateescape".
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class BadInput:
    """A record that cannot be explained, and why."""

    example_id: str
    error: str
    target: str | None = None


@dataclass(frozen=True)
class _Record:
    row: int
    fields: dict[str, Any] | None
    error: str | None = None


def input_file(config: InputConfig) -> Path:
    """The file to read (``package://`` references resolved)."""
    if config.path.startswith(PACKAGE_SCHEME):
        return package_path(config.path)
    return Path(config.path)


def count_records(config: InputConfig) -> int:
    """Number of records in the input, without parsing them (CSV: rows parsed, not interpreted)."""
    path = input_file(config)
    if config.format == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if config.format == "csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            return max(sum(1 for _ in csv.reader(handle)) - 1, 0)
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def load_examples(config: JobConfig, limit: int | None = None) -> Iterator[Example | BadInput]:
    """Examples in file order (at most ``limit`` records), each an Example or a BadInput."""
    seen: set[str] = set()
    for record in _records(config.input):
        if limit is not None and record.row >= limit:
            return
        yield _example(config, record, seen)


def _example(config: JobConfig, record: _Record, seen: set[str]) -> Example | BadInput:
    fields = record.fields or {}
    example_id, id_error = _example_id(config.input, record.row, fields)
    if example_id in seen:
        duplicate = f"{example_id} (row {record.row})"
        return BadInput(duplicate, f"duplicate example id {example_id!r} (first seen earlier in the input)")
    seen.add(example_id)
    if record.error is not None:
        return BadInput(example_id, record.error)
    if id_error is not None:
        return BadInput(example_id, id_error)
    target = None
    try:
        question = _text_field(fields, config.input.question_field)
        target = _text_field(fields, config.input.target_field)
        if config.featurizer.unit == PATCHES:
            image = _text_field(fields, config.input.image_field, required=True)
            rows, cols = config.featurizer.grid
            base_dir = input_file(config.input).parent
            return image_example(example_id, image, rows, cols, base_dir=base_dir, question=question, target=target)
        if config.input.documents_field is not None:
            example = documents_example(
                example_id,
                _documents(fields, config.input.documents_field),
                config.featurizer.unit,
                max_features=config.featurizer.max_features,
                question=question,
                target=target,
            )
        else:
            example = Example.from_text(
                example_id,
                _text_field(fields, config.input.text_field, required=True),
                config.featurizer.unit,
                spans=_spans(fields, config.featurizer.spans_field),
                max_features=config.featurizer.max_features,
                question=question,
                target=target,
            )
    except ValueError as err:
        return BadInput(example_id, str(err), target)
    if example.n < 2:
        return BadInput(example_id, f"example has {example.n} feature; at least 2 are needed", target)
    return example


def _example_id(config: InputConfig, row: int, fields: dict[str, Any]) -> tuple[str, str | None]:
    fallback = f"row-{row}"
    if config.id_field is None:
        return fallback, None
    value = fields.get(config.id_field)
    if value is None:
        return fallback, f"missing field {config.id_field!r} (the example id)"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _ESCAPED_BYTE.sub("\ufffd", str(value)), None


def _text_field(fields: dict[str, Any], name: str | None, required: bool = False) -> str | None:
    if name is None:
        return None
    if name not in fields:
        raise ValueError(f"missing field {name!r}")
    value = fields[name]
    if value is None:
        if required:
            raise ValueError(f"field {name!r} is null")
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            reason = f"not UTF-8: {err.reason} at byte {err.start}"
            raise ValueError(f"field {name!r} has undecodable bytes ({reason})") from None
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, got {type(value).__name__}")
    if _ESCAPED_BYTE.search(value):
        raise ValueError(f"field {name!r} has undecodable bytes (not UTF-8)")
    return value


def _json_list(fields: dict[str, Any], name: str, expected: str) -> list[Any]:
    """The list in field ``name`` (a JSON text in CSV files); ``expected`` names its items for errors."""
    if name not in fields:
        raise ValueError(f"missing field {name!r}")
    value = fields[name]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"field {name!r} must be a list of {expected}, got {value[:80]!r}") from None
    if not isinstance(value, list):
        raise ValueError(f"field {name!r} must be a list of {expected}, got {type(value).__name__}")
    return value


def _documents(fields: dict[str, Any], name: str) -> list[Any]:
    """The list of document records in field ``name``."""
    return _json_list(fields, name, "{title, text} records")


def _spans(fields: dict[str, Any], name: str | None) -> list[tuple[int, int]] | None:
    if name is None:
        return None
    value = _json_list(fields, name, "[start, end] pairs")
    return [tuple(span.values()) if isinstance(span, dict) else tuple(span) for span in value]


def _records(config: InputConfig) -> Iterator[_Record]:
    path = input_file(config)
    if config.format == "parquet":
        yield from _parquet_records(path)
    elif config.format == "csv":
        yield from _csv_records(path)
    else:
        yield from _jsonl_records(path)


def _jsonl_records(path: Path) -> Iterator[_Record]:
    row = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            error = None
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                text = line.decode("utf-8", "surrogateescape")
                error = f"line {number} has undecodable bytes (not UTF-8: {err.reason} at byte {err.start})"
            try:
                fields = json.loads(text)
            except json.JSONDecodeError as err:
                yield _Record(row, None, error or f"line {number} is not valid JSON: {err.msg} (column {err.colno})")
            else:
                if isinstance(fields, dict):
                    yield _Record(row, fields, error)
                else:
                    yield _Record(row, None, f"line {number} must hold a JSON object, got {type(fields).__name__}")
            row += 1


def _csv_records(path: Path) -> Iterator[_Record]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        for row, fields in enumerate(csv.DictReader(handle)):
            yield _Record(row, dict(fields))


def _parquet_records(path: Path) -> Iterator[_Record]:
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for fields in batch.to_pylist():
            yield _Record(row, fields)
            row += 1
