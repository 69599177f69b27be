"""Parquet part files: append record batches atomically, read finished work back.

A part is written under a temporary name and moved into place with ``os.replace``, so a reader
(or a resumed job after SIGKILL) sees whole parts or nothing. Parts are named
``part-<run>-<seq>.parquet``; leftover temporaries (``.tmp-*``) are deleted at start. A folder
that has collected many parts (a long job flushes every few seconds, each resume adds more) is
compacted into one part by ``compact_parts``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

QUERY_LOG_DIR = "querylog"
EXPLANATIONS_DIR = "explanations"
TARGETS_DIR = "targets"
PART_GLOB = "part-*.parquet"
TEMP_PREFIX = ".tmp-"


class PartWriter:
    """Buffers record batches of ``schema`` and writes them as one new part per ``flush()``."""

    def __init__(self, folder: Path, schema: pa.Schema, run_id: str, metadata: Mapping[str, str] | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(TEMP_PREFIX + "*"):
            stale.unlink(missing_ok=True)
        self.schema = schema.with_metadata(dict(metadata)) if metadata else schema
        self.run_id = run_id
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0
        self._sequence = 0

    @property
    def buffered_rows(self) -> int:
        return self._rows

    def set_metadata(self, metadata: Mapping[str, str]) -> None:
        """The key-value metadata of the parts written from now on."""
        self.schema = self.schema.with_metadata(dict(metadata))

    def append(self, batch: pa.RecordBatch) -> None:
        """Buffer ``batch`` (its schema must equal the writer's, metadata aside)."""
        if not batch.schema.equals(self.schema, check_metadata=False):
            raise ValueError(f"record batch schema differs from the part schema:\n{batch.schema}")
        if batch.num_rows:
            self._batches.append(batch)
            self._rows += batch.num_rows

    def flush(self) -> Path | None:
        """Write the buffered rows as one part; returns its path (None when nothing was buffered)."""
        if not self._batches:
            return None
        table = pa.Table.from_batches(self._batches).replace_schema_metadata(self.schema.metadata)
        final = self.folder / f"part-{self.run_id}-{self._sequence:06d}.parquet"
        temporary = self.folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}.parquet"
        pq.write_table(table, temporary)
        os.replace(temporary, final)
        self._sequence += 1
        self._batches.clear()
        self._rows = 0
        return final


def compact_parts(folder: Path, schema: pa.Schema, run_id: str, min_parts: int = 2) -> int:
    """Merge the parts in ``folder`` into one (streamed batch by batch) when there are at least
    ``min_parts``; returns how many parts were merged (0: none).

    The merged part is in place before the old ones are deleted: a crash in between leaves every
    row twice, which readers that key rows (query log: ``(example_id, query_id)``) ignore. The
    merged part keeps the newest part's key-value metadata.
    """
    files = part_files(folder)
    if len(files) < max(min_parts, 2):
        return 0
    metadata = pq.read_schema(files[-1]).metadata or {}
    final = Path(folder) / f"part-{run_id}-compacted.parquet"
    temporary = Path(folder) / f"{TEMP_PREFIX}{uuid.uuid4().hex}.parquet"
    dataset = ds.dataset([str(path) for path in files], format="parquet", schema=schema)
    with pq.ParquetWriter(temporary, schema.with_metadata(metadata)) as writer:
        for batch in dataset.to_batches():
            writer.write_batch(batch)
    os.replace(temporary, final)
    for path in files:
        path.unlink()
    return len(files)


def part_files(folder: Path) -> list[Path]:
    """The finished parts in ``folder``, sorted by name."""
    return sorted(Path(folder).glob(PART_GLOB))


def read_parts(folder: Path, schema: pa.Schema, columns: Iterable[str] | None = None,
               exclude_examples: Iterable[str] = ()) -> pa.Table:
    """All rows of the parts in ``folder`` (optionally only ``columns``), minus ``exclude_examples``."""
    files = part_files(folder)
    columns = list(columns) if columns is not None else schema.names
    if not files:
        return schema.empty_table().select(columns)
    dataset = ds.dataset([str(path) for path in files], format="parquet", schema=schema)
    excluded = list(exclude_examples)
    row_filter = ~pc.field("example_id").isin(excluded) if excluded else None
    return dataset.to_table(columns=columns, filter=row_filter)


def group_by_example(table: pa.Table) -> dict[str, pa.Table]:
    """Split ``table`` by ``example_id`` (order within an example kept)."""
    if table.num_rows == 0:
        return {}
    ids = table.column("example_id").to_numpy(zero_copy_only=False)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    bounds = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
    groups = {}
    for rows in np.split(order, bounds):
        groups[str(ids[rows[0]])] = table.take(pa.array(rows))
    return groups
