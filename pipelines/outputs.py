"""What a run writes as it goes: the query log, the targets the backend made, the explanations
(Parquet parts, ``pipelines.parts``), each example's outcome counted into the summary (no Ray).

Flush order: targets, then the query log scored against them, then explanations, so that a part
on disk never depends on one that is not. A flush is due every ``ray.flush_seconds`` or when a
writer holds many rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.config import JobConfig
from pipelines.metadata import file_metadata
from pipelines.parts import EXPLANATIONS_DIR, QUERY_LOG_DIR, TARGETS_DIR, PartWriter
from pipelines.reduce import rows_to_batch
from pipelines.schema import EXPLANATION_SCHEMA, QUERY_LOG_SCHEMA, TARGETS_SCHEMA
from pipelines.summary import JobSummary
from pipelines.usage import Usage

# The backend identity's list of the model fingerprints seen (API backends).
IDENTITY_FINGERPRINTS = "system_fingerprints"
EXPLANATION_FLUSH_ROWS = 2000
QUERY_LOG_FLUSH_ROWS = 100_000


class Outputs:
    """The run's writers. ``identity``: the backend identity written into the explanation parts'
    metadata, with the fingerprints ``usage`` has seen added before each flush; ``summary``:
    where each example's outcome is counted; ``makes_targets``: whether there is a targets writer."""

    def __init__(self, config: JobConfig, output: Path, run_id: str, identity: dict[str, Any], usage: Usage,
                 summary: JobSummary, makes_targets: bool) -> None:
        self._config = config
        self._identity = identity
        self._usage = usage
        self._summary = summary
        self._fingerprints: set[str] = set()
        self._flushed = time.monotonic()
        self.querylog = PartWriter(output / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, run_id,
                                   {"spex_ray.config_hash": config.result_hash()})
        self.targets = PartWriter(output / TARGETS_DIR, TARGETS_SCHEMA, run_id) if makes_targets else None
        self.explanations = PartWriter(output / EXPLANATIONS_DIR, EXPLANATION_SCHEMA, run_id,
                                       file_metadata(config, identity))

    def log_target(self, example_id: str, target: str) -> None:
        self.targets.append(pa.RecordBatch.from_pydict({"example_id": [example_id], "target": [target]},
                                                       schema=TARGETS_SCHEMA))

    def log_queries(self, rows: pa.RecordBatch) -> None:
        self.querylog.append(rows)

    def explain(self, rows: list[dict]) -> None:
        """Buffer one example's explanation rows and count its outcome."""
        self.explanations.append(rows_to_batch(rows))
        first = rows[0]
        self._summary.count(first["example_id"], first["status"], first["faithfulness_r2"], first["error"])

    def flush_if_due(self) -> None:
        now = time.monotonic()
        if (now - self._flushed >= self._config.ray.flush_seconds
                or self.querylog.buffered_rows >= QUERY_LOG_FLUSH_ROWS
                or self.explanations.buffered_rows >= EXPLANATION_FLUSH_ROWS):
            self.flush()
            self._flushed = now

    def flush(self) -> None:
        """Targets, then the query log, then explanations; each a new atomic part."""
        if self.targets is not None:
            self.targets.flush()
        self.querylog.flush()
        self._add_fingerprints()
        self.explanations.flush()

    def _add_fingerprints(self) -> None:
        """Put the model fingerprints seen in raw outputs so far into the backend identity of the
        explanation parts to come (``system_fingerprints``)."""
        if self._usage.fingerprints <= self._fingerprints:
            return
        self._fingerprints = set(self._usage.fingerprints)
        known = set(self._identity.get(IDENTITY_FINGERPRINTS) or ())
        identity = {**self._identity, IDENTITY_FINGERPRINTS: sorted(known | self._fingerprints)}
        self.explanations.set_metadata(file_metadata(self._config, identity))
