"""What earlier runs of a job left in its output folder: the examples explained, the queries logged,
the targets made, the answers a killed run journaled and the dollars spent (no Ray).

A finished example is never planned again; a logged query is never sent again; a made target is
reused so that a resumed example keeps it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from pipelines.config import JobConfig
from pipelines.inputs import count_records, load_examples
from pipelines.journal import FoldReport, fold_journals
from pipelines.parts import EXPLANATIONS_DIR, QUERY_LOG_DIR, TARGETS_DIR, compact_parts, group_by_example, read_parts
from pipelines.schema import EXPLANATION_SCHEMA, QUERY_LOG_SCHEMA, TARGETS_SCHEMA
from pipelines.summary import JobSummary
from pipelines.usage import USAGE_COLUMNS, Usage

logger = logging.getLogger(__name__)

# A resumed job first merges the query log into one part when it has this many (read time grows
# with the number of files: an overnight job flushing every 10 s writes thousands).
COMPACT_QUERY_LOG_PARTS = 64


def read_finished(output: Path, summary: JobSummary) -> set[str]:
    """Ids of examples with explanation rows; counts them into ``summary``."""
    table = read_parts(output / EXPLANATIONS_DIR, EXPLANATION_SCHEMA,
                       ["example_id", "status", "faithfulness_r2", "error"])
    seen: set[str] = set()
    for example_id, status, r2, error in zip(*(table.column(name).to_pylist() for name in table.column_names)):
        if example_id not in seen:
            seen.add(example_id)
            summary.count(example_id, status, r2, error)
    return seen


def all_finished(config: JobConfig, finished: set[str], limit: int | None) -> bool:
    """Whether every input record (the first ``limit``) has explanation rows: counted first, then,
    only when the counts allow it, the records' ids read (no model, no Ray)."""
    if not finished:
        return False
    total = count_records(config.input)
    if len(finished) < (total if limit is None else min(total, limit)):
        return False
    return all(item.example_id in finished for item in load_examples(config, limit))


@dataclass
class ResumeState:
    """The work of earlier runs that this run takes over (examples in ``finished`` left out):
    ``logged``: query-log rows by example id (taken with ``take_logged``); ``targets``: targets made
    by the backend, by example id (taken with ``take_target``); ``folded``: what the journals of
    killed runs held; ``usage``: the dollars and fingerprints of the whole query log, plus the
    dollars possibly paid for answers lost in flight (only read for a backend that is charged)."""

    finished: set[str]
    logged: dict[str, pa.Table]
    folded: FoldReport
    targets: dict[str, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)

    @classmethod
    def read(cls, output: Path, run_id: str, finished: set[str], *, makes_targets: bool,
             charged: bool) -> ResumeState:
        """Fold the journals of killed runs into the query log, compact it when it has many parts,
        and read it (and the targets when the backend ``makes_targets``; the dollars when ``charged``)."""
        folded = fold_journals(output, run_id)  # answers a killed run paid for, into the query log
        if folded.recovered or folded.unanswered:
            logger.warning("spex-ray: %s", folded.describe())
        compact_parts(output / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, run_id, min_parts=COMPACT_QUERY_LOG_PARTS)
        logged = group_by_example(read_parts(output / QUERY_LOG_DIR, QUERY_LOG_SCHEMA,
                                             ["example_id", "query_id", "value", "error"], exclude_examples=finished))
        state = cls(finished, logged, folded)
        if makes_targets:
            made = read_parts(output / TARGETS_DIR, TARGETS_SCHEMA, exclude_examples=finished)
            state.targets = dict(zip(*(made.column(c).to_pylist() for c in TARGETS_SCHEMA.names)))
        if charged:
            state.usage.add(read_parts(output / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, USAGE_COLUMNS))
            state.usage.cost_usd += folded.ledger_usd  # possibly paid for answers lost in flight
        return state

    def take_logged(self, example_id: str) -> pa.Table | None:
        """The example's logged query rows (None: none), handed over once."""
        return self.logged.pop(example_id, None)

    def take_target(self, example_id: str) -> str | None:
        """The target an earlier run made for the example (None: none), handed over once."""
        return self.targets.pop(example_id, None)
