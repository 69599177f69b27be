"""What a job's query-log rows say about it: the dollars spent and the model fingerprints seen.

Rows carry them as the typed columns ``cost_usd`` and ``fingerprint`` (``connectors.base.Score``).
Rows written before those columns existed have a null ``cost_usd``; their dollars and
fingerprints are read from their raw JSON (``cost_usd``, ``system_fingerprint``), so a job
started before the columns still charges its whole spend against its dollar cap on a resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

# The query-log columns ``Usage.add`` reads.
USAGE_COLUMNS: tuple[str, ...] = ("cost_usd", "fingerprint", "raw")


@dataclass
class Usage:
    """Running totals over query-log rows."""

    cost_usd: float = 0.0
    fingerprints: set[str] = field(default_factory=set)

    def add(self, rows: pa.Table | pa.RecordBatch) -> None:
        """Add the dollars and fingerprints of query-log ``rows`` (at least the USAGE_COLUMNS)."""
        typed = pc.is_valid(rows.column("cost_usd"))
        self.cost_usd += pc.sum(rows.column("cost_usd")).as_py() or 0.0
        self.fingerprints.update(rows.column("fingerprint").drop_null().to_pylist())
        cost, fingerprints = _raw_usage(rows.filter(pc.invert(typed)).column("raw"))
        self.cost_usd += cost
        self.fingerprints |= fingerprints


def _raw_usage(raw: pa.Array | pa.ChunkedArray) -> tuple[float, set[str]]:
    """(dollars, fingerprints) named in raw JSON texts by ``cost_usd`` and ``system_fingerprint``,
    as rows written before the typed columns keep them; nulls and non-JSON are skipped."""
    cost, fingerprints = 0.0, set()
    named = pc.or_(pc.match_substring(raw, '"cost_usd"'), pc.match_substring(raw, '"system_fingerprint"'))
    for text in raw.filter(named).to_pylist():
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        value = record.get("cost_usd")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cost += value
        if isinstance(record.get("system_fingerprint"), str):
            fingerprints.add(record["system_fingerprint"])
    return cost, fingerprints
