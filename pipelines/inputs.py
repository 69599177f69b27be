"""Read examples from JSONL / Parquet / CSV files one record at a time and featurize them: a text
field, a field of documents (a list of ``{title, text}`` records; JSON text in CSV) or an image path.

``input.path`` names one file, a folder or a glob pattern (``pipelines.sources``); records are
numbered R = 0, 1, ... across the files in reading order, blank lines left out. A record that
cannot become an Example yields a ``BadInput`` with the reason instead, and reading goes on:

- a record that cannot be read or encoded gets a reason that starts with where it is,
  ``record R (line L)`` (with the file's name when there are several): invalid JSON, undecodable
  bytes, broken CSV quoting, a CSV row whose field count differs from the header's, a CSV field
  over ``CSV_FIELD_LIMIT`` characters, or a used field that is not valid Unicode (undecodable
  bytes or a lone surrogate such as a JSON ``"\\ud83d"``);
- any other reason names the field or the example: a missing or null field, an empty text, too
  many or too few features, a duplicate id.

Example ids are the id field's value as text. A record without one (no ``id_field``) is called
``row-<R>``; so is a record whose id is missing, null or blank, and it is an error. An id that is
not valid Unicode is an error too, and its BadInput carries the id escaped (``\\xNN`` for an
undecodable byte, ``\\uXXXX`` for a lone surrogate), so that it can be written and printed.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from connectors.base import Example
from connectors.features.documents import documents_example
from connectors.features.image import image_example
from pipelines.config import PACKAGE_SCHEME, PATCHES, InputConfig, JobConfig, package_path
from pipelines.sources import data_files

#: Longest CSV field read, in characters; a longer one (often an unterminated quote) is an error.
CSV_FIELD_LIMIT = 1 << 24
# Lone surrogates: what Python makes of undecodable bytes (surrogateescape, U+DC80..U+DCFF) and
# of JSON escapes such as "\ud83d"; no UTF-8 text holds them.
_SURROGATE = re.compile("[\ud800-\udfff]")
_PARQUET_BATCH_ROWS = 1024
# What a file reader yields per record: (fields or None, error or None, line number or None).
_Row = tuple[dict[str, Any] | None, str | None, int | None]


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
    error: str | None
    where: str  # "record R (file line L)"
    path: Path


def input_files(config: InputConfig) -> list[Path]:
    """The files to read, in reading order (``package://`` references resolved)."""
    if config.path.startswith(PACKAGE_SCHEME):
        return [package_path(config.path)]
    return data_files(config.path)


def count_records(config: InputConfig) -> int:
    """Number of records ``load_examples`` yields without a limit (CSV is parsed, not interpreted)."""
    total = 0
    for path in input_files(config):
        if config.format == "parquet":
            total += pq.ParquetFile(path).metadata.num_rows
        elif config.format == "csv":
            total += sum(1 for _ in _csv_rows(path))
        else:
            with open(path, "rb") as handle:
                total += sum(1 for line in handle if line.strip())
    return total


def load_examples(config: JobConfig, limit: int | None = None) -> Iterator[Example | BadInput]:
    """Examples in reading order (at most ``limit`` records), each an Example or a BadInput."""
    seen: set[str] = set()
    used = _used_fields(config)
    for record in _records(config.input):
        if limit is not None and record.row >= limit:
            return
        yield _example(config, record, used, seen)


def _used_fields(config: JobConfig) -> tuple[str, ...]:
    """The record fields an example is made of, besides its id."""
    source = config.input
    if config.featurizer.unit == PATCHES:
        content = source.image_field
    elif source.documents_field is not None:
        content = source.documents_field
    else:
        content = source.text_field
    names = (content, source.question_field, source.target_field, config.featurizer.spans_field)
    return tuple(name for name in names if name is not None)


def _example(config: JobConfig, record: _Record, used: tuple[str, ...], seen: set[str]) -> Example | BadInput:
    fields = _decoded(record.fields or {}, used)
    example_id, id_error = _example_id(config.input, record, fields)
    if example_id in seen:
        duplicate = f"{example_id} (row {record.row})"
        return BadInput(duplicate, f"duplicate example id {example_id!r} (first seen earlier in the input)")
    seen.add(example_id)
    if record.error is not None:
        return BadInput(example_id, f"{record.where}: {record.error}")
    if id_error is not None:
        return BadInput(example_id, id_error)
    for name in used:
        problem = _not_unicode(fields.get(name))
        if problem is not None:
            return BadInput(example_id, f"{record.where}: field {name!r} {problem}")
    target = None
    try:
        question = _text_field(fields, config.input.question_field)
        target = _text_field(fields, config.input.target_field)
        if config.featurizer.unit == PATCHES:
            image = _text_field(fields, config.input.image_field, required=True)
            rows, cols = config.featurizer.grid
            return image_example(example_id, image, rows, cols, base_dir=record.path.parent,
                                 question=question, target=target)
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


def _decoded(fields: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``fields`` with the bytes (Parquet binary columns) of the named fields decoded as UTF-8,
    undecodable bytes kept as lone surrogates for ``_not_unicode`` to report."""
    if not any(isinstance(fields.get(name), bytes) for name in names):
        return fields
    return {key: value.decode("utf-8", "surrogateescape") if key in names and isinstance(value, bytes) else value
            for key, value in fields.items()}


def _example_id(config: InputConfig, record: _Record, fields: dict[str, Any]) -> tuple[str, str | None]:
    """``(example id, error or None)``; see the module docstring."""
    fallback = f"row-{record.row}"
    name = config.id_field
    if name is None:
        return fallback, None
    value = fields.get(name)
    if value is None:
        return fallback, f"missing field {name!r} (the example id)"
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
    if not text.strip():
        return fallback, f"field {name!r} (the example id) is blank"
    problem = _not_unicode(text)
    if problem is not None:
        return _escaped(text), f"{record.where}: field {name!r} (the example id) {problem}; the id is written escaped"
    return text, None


def _not_unicode(value: Any) -> str | None:
    """Why ``value`` (a text, or lists and records of texts) is not valid Unicode, or None."""
    if isinstance(value, str):
        match = _SURROGATE.search(value)
        if match is None:
            return None
        code = ord(match.group())
        what = "undecodable bytes (not UTF-8)" if 0xDC80 <= code <= 0xDCFF else f"a lone surrogate U+{code:04X}"
        return f"has {what} at character {match.start()}"
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple)):
        for item in value:
            problem = _not_unicode(item)
            if problem is not None:
                return problem
    return None


def _escaped(text: str) -> str:
    """``text`` with each lone surrogate written as ``\\xNN`` (an undecodable byte) or ``\\uXXXX``."""
    def escape(match: re.Match) -> str:
        code = ord(match.group())
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    return _SURROGATE.sub(escape, text)


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
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, got {type(value).__name__}")
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
        problem = _not_unicode(value)
        if problem is not None:
            raise ValueError(f"field {name!r}: its JSON text {problem}")
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
    """Every record of every file, numbered; each reader yields ``(fields, error, line or None)``."""
    files = input_files(config)
    read = {"parquet": _parquet_rows, "csv": _csv_rows}.get(config.format, _jsonl_rows)
    root = Path(os.path.commonpath([path.parent for path in files]))
    row = 0
    for path in files:
        label = path.relative_to(root).as_posix() if len(files) > 1 else None
        for local, (fields, error, line) in enumerate(read(path)):
            place = f"line {line}" if line is not None else f"row {local}" if label else None
            where = " ".join(part for part in (label, place) if part)
            yield _Record(row, fields, error, f"record {row} ({where})" if where else f"record {row}", path)
            row += 1


def _jsonl_rows(path: Path) -> Iterator[_Row]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            error = None
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                text = line.decode("utf-8", "surrogateescape")
                error = f"undecodable bytes (not UTF-8: {err.reason} at byte {err.start})"
            try:
                fields = json.loads(text)
            except json.JSONDecodeError as err:
                yield None, error or f"not valid JSON: {err.msg} (column {err.colno})", number
            else:
                if isinstance(fields, dict):
                    yield fields, error, number
                else:
                    yield None, f"must hold a JSON object, got {type(fields).__name__}", number


def _csv_rows(path: Path) -> Iterator[_Row]:
    """Rows read strictly (a stray quote is an error, not text), blank lines left out; ``.tsv``
    files are tab-separated. Python's CSV field limit is ``CSV_FIELD_LIMIT`` while reading."""
    previous_limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            reader = csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",", strict=True)
            try:
                header = next(reader, None)
            except csv.Error as err:
                raise ValueError(f"input {path}: cannot read the CSV header (line 1): {err}") from None
            if header is None:
                return
            while True:
                line = reader.line_num + 1
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    yield None, f"cannot be read as CSV: {err}", line
                    continue
                if not values:
                    continue
                if len(values) != len(header):
                    yield None, (f"has {len(values)} fields where the header has {len(header)} "
                                 "(broken quoting or a stray delimiter)"), line
                else:
                    yield dict(zip(header, values)), None, line
    finally:
        csv.field_size_limit(previous_limit)


def _parquet_rows(path: Path) -> Iterator[_Row]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for fields in batch.to_pylist():
            yield fields, None, None
