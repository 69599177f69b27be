"""What a run did (``JobSummary``), counted as explanation rows are read or written, and kept in
the output folder as ``summary.json``."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.parts import TEMP_PREFIX
from pipelines.schema import STATUS_OK

SUMMARY_FILE = "summary.json"


@dataclass
class JobSummary:
    """What a run did. Example counts cover the whole output folder (earlier runs included);
    ``nodes`` maps node id -> queries scored there; ``limiter`` holds the job-wide rate limiter's
    counters (requests, tokens, spent_usd over the whole job, cost_cap_reached, rpm, tpm) for
    backends that use one. ``queries_not_sent``: queries the backend declined (not logged);
    ``stopped``: why the run ended before every example was done (a re-run resumes it);
    ``first_error``: the first error row's example id and reason; ``recovery``: what a killed
    run or dead scorer actors lost and what this run redid (``pipelines.journal.summarize_recovery``);
    ``queries_saved``: with adaptive budgets (else None, and left out of ``summary.json``), the
    design queries that this run's examples explained (ok) left unsent by stopping early."""

    output: str
    examples_ok: int = 0
    examples_error: int = 0
    examples_skipped: int = 0
    queries_sent: int = 0
    queries_reused: int = 0
    seconds: float = 0.0
    mean_faithfulness_r2: float | None = None
    scorers: list[dict[str, Any]] = field(default_factory=list)
    nodes: dict[str, int] = field(default_factory=dict)
    limiter: dict[str, Any] | None = None
    queries_not_sent: int = 0
    stopped: str | None = None
    first_error: str | None = None
    recovery: dict[str, Any] | None = None
    queries_saved: int | None = None
    r2_values: list[float] = field(default_factory=list, repr=False)  # per example, for the mean

    def describe(self) -> str:
        r2 = "n/a" if self.mean_faithfulness_r2 is None else f"{self.mean_faithfulness_r2:.3f}"
        spent = "" if self.limiter is None else f"; spent: ${self.limiter['spent_usd']:.4f} in total"
        saved = "" if self.queries_saved is None else f", {self.queries_saved} of the budget saved (adaptive)"
        text = (
            f"examples: {self.examples_ok} ok, {self.examples_error} error "
            f"({self.examples_skipped} already done); queries: {self.queries_sent} sent, "
            f"{self.queries_reused} reused from the query log{saved}; time: {self.seconds:.1f} s{spent}; "
            f"mean faithfulness R^2: {r2}; output: {self.output}"
        )
        text = text if self.recovery is None else f"{text}; {self.recovery['note']}"
        return text if self.stopped is None else f"{text}; stopped early: {self.stopped}"

    def count(self, example_id: str, status: str, r2: float | None, error: str | None) -> None:
        """Count one example's outcome (its first explanation row's fields)."""
        if status == STATUS_OK:
            self.examples_ok += 1
            if r2 is not None:
                self.r2_values.append(r2)
            return
        self.examples_error += 1
        if self.first_error is None:
            self.first_error = f"{example_id}: {error}"

    def finish(self, output: Path) -> None:
        """Fill in the mean R^2 and the queries per node; write ``output/summary.json`` atomically."""
        finite = [r2 for r2 in self.r2_values if math.isfinite(r2)]
        self.mean_faithfulness_r2 = float(np.mean(finite)) if finite else None
        nodes: dict[str, int] = {}
        for scorer in self.scorers:
            for node_id, queries in scorer["queries_by_node"].items():
                nodes[node_id] = nodes.get(node_id, 0) + queries
        self.nodes = nodes
        record = {key: value for key, value in asdict(self).items()
                  if key != "r2_values" and not (key == "queries_saved" and value is None)}
        temporary = output / f"{TEMP_PREFIX}{uuid.uuid4().hex}.json"
        temporary.write_text(json.dumps(record, indent=2))
        temporary.replace(output / SUMMARY_FILE)
