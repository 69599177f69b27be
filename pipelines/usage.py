"""What scored rows' raw outputs say about a job: the dollars spent and the model fingerprints seen.

Backends that pay per query put the dollars a row cost in its raw JSON as ``cost_usd``; API
backends put the serving model's ``system_fingerprint`` there. Only raw texts naming one of these
keys are parsed, so rows of other backends cost a substring scan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

COST_KEY = "cost_usd"
FINGERPRINT_KEY = "system_fingerprint"


@dataclass
class Usage:
    """Running totals over query-log ``raw`` columns."""

    cost_usd: float = 0.0
    fingerprints: set[str] = field(default_factory=set)

    def add(self, raw: pa.Array | pa.ChunkedArray) -> None:
        """Add the ``cost_usd`` and ``system_fingerprint`` of raw JSON texts (nulls and non-JSON skipped)."""
        named = pc.or_(pc.match_substring(raw, f'"{COST_KEY}"'), pc.match_substring(raw, f'"{FINGERPRINT_KEY}"'))
        for text in raw.filter(named).to_pylist():
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            cost = record.get(COST_KEY)
            if isinstance(cost, (int, float)) and not isinstance(cost, bool):
                self.cost_usd += cost
            fingerprint = record.get(FINGERPRINT_KEY)
            if isinstance(fingerprint, str):
                self.fingerprints.add(fingerprint)
