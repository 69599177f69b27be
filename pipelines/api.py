"""Run a job from Python: ``spex_ray.run(config, **overrides)``, its examples in a file or given as
Python data (a list of dicts, a pandas DataFrame, a pyarrow Table, a ``datasets.Dataset``)."""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipelines.config import PATCHES, ConfigError, JobConfig, config_from_dict

if TYPE_CHECKING:
    import pyarrow as pa

    from pipelines.summary import JobSummary

#: Where ``run(..., data=...)`` keeps the examples it was given, inside the output folder.
DATA_FILE = "input.parquet"
#: Separates the parts of a nested key in a keyword override: ``ray__num_actors=4`` sets ``ray.num_actors``.
NESTING = "__"


def run(
    config: JobConfig | Mapping[str, Any] | str | Path,
    /,
    *,
    data: Any = None,
    limit: int | None = None,
    fail_fast: bool = False,
    **overrides: Any,
) -> JobSummary:
    """Run (or resume) a job and return its ``JobSummary`` (``summary.output`` is the output folder:
    ``spex_ray.read_explanations(summary.output)`` reads the explanations).

    ``config``: a YAML file's path, its content as a mapping, or a ``JobConfig``.
    ``overrides``: config keys, set as ``spex-ray run --set`` does but with Python values:
    ``output="out"``, ``b=3``; a double underscore names a nested key (``ray__num_actors=4`` sets
    ``ray.num_actors``, ``backend__label="positive"`` sets ``backend.label``). A value replaces the
    key's whole value: ``ray={"num_actors": 4}`` resets the other ``ray`` keys to their defaults.
    ``data``: the examples instead of ``input.path``: a list (any iterable) of dicts, a pandas
    DataFrame (its index is not a field), a pyarrow Table or a ``datasets.Dataset``. They are
    written to ``OUTPUT/input.parquet`` and read from there as any input file (the ``input``
    fields name their columns), so a re-run with the same data, or more rows after them, resumes;
    a folder holding another job's results keeps its data, and the run is refused.
    ``limit``: only the first N records. ``fail_fast``: raise ``FailFast`` at the first error row.

    Raises ConfigError (naming the key) for a bad config, before Ray starts; RuntimeError when
    every example failed (with the first reason) or another run writes to the output folder;
    ``JobMismatchError`` when the output folder holds results of a config that would give
    different results.
    """
    raw, base_dir = _config_data(config)
    for key, value in overrides.items():
        _set(raw, key.split(NESTING), value)
    if data is None:
        job = config_from_dict(raw, base_dir)
    else:
        job = _with_data(raw, base_dir, _table(data))
    from pipelines.runner import run_job

    summary = run_job(job, limit=limit, fail_fast=fail_fast)
    if summary.examples_ok == 0 and summary.examples_error > 0:
        raise RuntimeError(f"every example failed ({summary.examples_error} error rows); the first: "
                           f"{summary.first_error}")
    return summary


def _config_data(config: JobConfig | Mapping[str, Any] | str | Path) -> tuple[dict[str, Any], Path | None]:
    """The config as plain data, and the folder its relative ``input.path`` starts from."""
    if isinstance(config, JobConfig):
        return config.to_dict(), None
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config)), None
    path = Path(config)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"config: cannot read {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping, got {type(data).__name__}")
    return data, path.resolve().parent


def _set(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set the nested key ``parts`` of ``data`` to ``value`` (a path: its text) in place."""
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"config: cannot set {'.'.join(parts)!r}: {where!r} is not a mapping")
        node = child
    node[parts[-1]] = os.fspath(value) if isinstance(value, os.PathLike) else value


def _table(data: Any) -> pa.Table:
    """``data`` as an Arrow table; TypeError for data that is no records, ValueError for no records or
    records that do not make a table (a field of mixed types)."""
    import pyarrow as pa

    kind = type(data)
    package = kind.__module__.partition(".")[0]
    try:
        if isinstance(data, pa.Table):
            table = data
        elif package == "pandas" and kind.__name__ == "DataFrame":
            table = pa.Table.from_pandas(data, preserve_index=False)
        elif package == "datasets" and kind.__name__ == "Dataset":
            table = data.with_format("arrow")[:]
        elif isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
            raise TypeError(f"data must be a list of dicts, a pandas DataFrame, a pyarrow Table or a "
                            f"datasets.Dataset, got {kind.__name__}")
        else:
            records = list(data)
            for number, record in enumerate(records):
                if not isinstance(record, Mapping):
                    raise TypeError(f"data record {number} must be a dict, got {type(record).__name__}")
            table = pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"data does not make a table (a field of mixed types?): {err}") from None
    if table.num_rows == 0:
        raise ValueError("data holds no records")
    return table


def _with_data(raw: dict[str, Any], base_dir: Path | None, table: pa.Table) -> JobConfig:
    """The config reading ``table`` from ``OUTPUT/input.parquet``, written there (atomically, under
    the output folder's lock) unless the folder holds another job's results."""
    import pyarrow.parquet as pq

    from pipelines.folder import JOB_FILE, locked
    from pipelines.parts import TEMP_PREFIX

    output = raw.get("output", JobConfig.output)
    if not isinstance(output, str):
        raise ConfigError(f"config: 'output' must be a string, got {output!r}")
    output = Path(output).resolve()
    staged = output / DATA_FILE
    fresh = output / f"{TEMP_PREFIX}{uuid.uuid4().hex}.parquet"
    raw["input"] = {**(raw.get("input") or {}), "path": str(fresh), "format": "parquet"}
    with locked(output):
        try:
            pq.write_table(table, fresh)
            job = config_from_dict(raw, base_dir)
            _check_fields(job, table.column_names)
            job.input.path = str(staged)
            recorded = output / JOB_FILE
            if not recorded.exists() or json.loads(recorded.read_text()).get("config_hash") == job.result_hash():
                if recorded.exists() and staged.exists():
                    _check_extends(pq.read_table(staged), table, output)
                fresh.replace(staged)
        finally:
            fresh.unlink(missing_ok=True)
    return job


def _check_extends(old: pa.Table, new: pa.Table, output: Path) -> None:
    """ValueError unless ``new`` is the data ``output`` was explained from (``old``), possibly with
    rows added after it: rows that changed would mix two datasets' explanations under one id."""
    same = new.num_rows >= old.num_rows and new.column_names == old.column_names
    if not same or not new.slice(0, old.num_rows).cast(old.schema, safe=False).equals(old):
        raise ValueError(f"{output} holds explanations of other data (its {DATA_FILE} is not the start of the "
                         "data given); results would be mixed. Use another output, or delete the folder to start over.")


def _check_fields(job: JobConfig, columns: list[str]) -> None:
    """ConfigError naming each ``input``/``featurizer`` field the data does not have."""
    source = job.input
    content = ("image_field" if job.featurizer.unit == PATCHES
               else "documents_field" if source.documents_field is not None else "text_field")
    keys = {f"input.{content}": getattr(source, content), "input.id_field": source.id_field,
            "input.question_field": source.question_field, "input.target_field": source.target_field,
            "featurizer.spans_field": job.featurizer.spans_field}
    missing = [f"config: {key!r} is {field!r} but the data has no such field (fields: {', '.join(columns)})"
               + ("; set input__id_field=None to call the records row-0, row-1, ..." if key == "input.id_field" else "")
               for key, field in keys.items() if field is not None and field not in columns]
    if missing:
        raise ConfigError("\n".join(missing))
