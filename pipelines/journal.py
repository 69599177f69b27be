"""The scorers' journal: every answer on disk the moment it arrives, so a kill loses only the
requests in flight, and a resumed job pays for nothing twice.

Each scorer actor appends to its own file ``OUTPUT/journal/<run>-<pid>-<tag>.jsonl``, one JSON
object per line, each line one ``write`` to a file opened for appending (in the OS's hands as
soon as the call returns: it survives a kill of the job, though not a power cut):

    {"q": [example_id, query_id], "sent": usd}      a request is about to go (estimated dollars)
    {"q": [example_id, query_id], "row": {...}}     the query's final row (query-log columns)

A resumed job first folds the journals of unfinished runs (``fold_journals``): their rows
missing from the query log become one query-log part, and the queries sent but never answered are added to
``OUTPUT/journal/unanswered.jsonl``, a ledger of dollars possibly paid for answers nobody
received (charged against the job's dollar cap by every later run); then the journals go. A
line torn by a kill is skipped. A run that ends normally deletes its own journals (``close_run``):
every row in them is in the query log. Pure Python and pyarrow, no Ray.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.parts import QUERY_LOG_DIR, PartWriter, read_parts
from pipelines.usage import Usage
from pipelines.schema import QUERY_LOG_SCHEMA

JOURNAL_DIR = "journal"
UNANSWERED_FILE = "unanswered.jsonl"
_ROW_FIELDS = ("value", "raw", "error", "attempts", "latency_ms", "cost_usd", "fingerprint")


class Journal:
    """One scorer's append-only journal (thread-safe: the OpenAI backend answers from its own loop)."""

    def __init__(self, folder: Path, run_id: str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{run_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def sent(self, example_id: str, query_id: int, usd: float) -> None:
        """A request for the query is about to be sent; ``usd``: what it will cost if answered."""
        self._write([{"q": [example_id, int(query_id)], "sent": float(usd)}])

    def row(self, example_id: str, query_id: int, **fields: Any) -> None:
        """One query's final row: its query-log fields ``value, raw, error, attempts, latency_ms,
        cost_usd, fingerprint``."""
        self._write([{"q": [example_id, int(query_id)], "row": {k: fields[k] for k in _ROW_FIELDS}}])

    def rows(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Final query-log rows (QUERY_LOG_SCHEMA), in one write."""
        self._write([{"q": [row["example_id"], row["query_id"]], "row": {k: row[k] for k in _ROW_FIELDS}}
                     for row in batch.to_pylist()])

    def _write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        data = "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records)
        view = memoryview(data.encode("ascii"))
        with self._lock:
            while view:
                view = view[os.write(self._fd, view):]


@dataclass
class JournalContents:
    """What journals hold: final rows by query key (the last one wins), and the queries a journal
    sent without writing their final row (in flight when its scorer died), with the estimated
    dollars of one request each (a query lost by two scorers is listed twice)."""

    rows: dict[tuple[str, int], dict[str, Any]]
    unanswered: list[tuple[tuple[str, int], float]]

    def table(self, keys: Iterable[tuple[str, int]] | None = None) -> pa.Table:
        """The rows (of ``keys``, default all) as a query-log table, in key order; a field missing
        from a row (a journal written before the field existed) is null."""
        keys = sorted(self.rows if keys is None else keys)
        columns: dict[str, list[Any]] = {"example_id": [k[0] for k in keys], "query_id": [k[1] for k in keys]}
        for name in _ROW_FIELDS:
            columns[name] = [self.rows[key].get(name) for key in keys]
        return pa.Table.from_pydict(columns, schema=QUERY_LOG_SCHEMA)


def journal_files(folder: Path, run_id: str | None = None) -> list[Path]:
    """The journals in ``folder`` (only run ``run_id``'s when given), the ledger left out."""
    pattern = f"{run_id}-*.jsonl" if run_id else "*.jsonl"
    return sorted(path for path in Path(folder).glob(pattern) if path.name != UNANSWERED_FILE)


def read_journals(paths: Iterable[Path], example_id: str | None = None) -> JournalContents:
    """The records of ``paths`` (only ``example_id``'s when given); torn or unreadable lines skipped."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    unanswered: list[tuple[tuple[str, int], float]] = []
    for path in paths:
        sent: dict[tuple[str, int], float] = {}
        answered: set[tuple[str, int]] = set()
        for record in _records(path, example_id):
            key = (record["q"][0], record["q"][1])
            if "row" in record:
                rows[key] = record["row"]
                answered.add(key)
            else:
                sent[key] = float(record.get("sent") or 0.0)
        unanswered += [(key, usd) for key, usd in sent.items() if key not in answered]
    return JournalContents(rows, unanswered)


@dataclass
class FoldReport:
    """What ``fold_journals`` found: answers recovered into the query log (and their dollars),
    requests lost in flight at a kill or an actor death (and their estimated dollars), and the
    ledger's dollars in all."""

    recovered: int = 0
    recovered_usd: float = 0.0
    unanswered: int = 0
    unanswered_usd: float = 0.0
    ledger_usd: float = 0.0

    def describe(self) -> str:
        text = (f"recovered {self.recovered} answers (${self.recovered_usd:.4f}) from the journal of a run that did "
                "not finish")
        if self.unanswered:
            text += (f"; {self.unanswered} requests were in flight when it or one of its scorer actors died: their "
                     f"answers are lost, their queries sent again, and the ${self.unanswered_usd:.4f} they may have "
                     "cost is counted as spent")
        return text


def fold_journals(output: Path, run_id: str, own: bool = False) -> FoldReport:
    """Fold the journals in ``output/journal`` (``own``: only run ``run_id``'s) into the query log
    (as part ``part-<run_id>-journal-*``) and the ledger, then delete them; returns what was found,
    with the ledger's dollars in all."""
    folder = Path(output) / JOURNAL_DIR
    report = FoldReport()
    paths = journal_files(folder, run_id if own else None)
    if paths:
        contents = read_journals(paths)
        logged = read_parts(Path(output) / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, ["example_id", "query_id"])
        known = set(zip(logged.column("example_id").to_pylist(), logged.column("query_id").to_pylist()))
        new = [key for key in contents.rows if key not in known]
        if new:
            table = contents.table(new)
            # a fold of its own name: a run may fold twice (at start, and at its end after an actor death)
            writer = PartWriter(Path(output) / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, f"{run_id}-journal-{uuid.uuid4().hex[:8]}")
            for batch in table.to_batches():
                writer.append(batch)
            writer.flush()
            usage = Usage()
            usage.add(table)
            report.recovered, report.recovered_usd = len(new), usage.cost_usd
        if contents.unanswered:
            _append_ledger(folder / UNANSWERED_FILE, run_id, contents.unanswered)
            report.unanswered = len(contents.unanswered)
            report.unanswered_usd = sum(usd for _, usd in contents.unanswered)
        for path in paths:
            path.unlink()
    report.ledger_usd = sum(float(record.get("usd") or 0.0) for record in _records(folder / UNANSWERED_FILE))
    return report


def close_run(output: Path, run_id: str, scorers: list[dict[str, Any]]) -> None:
    """After a run that ended normally (every row it received is in the query log): delete its
    journals, first folding them when a scorer died (its requests in flight go to the ledger)."""
    if any(scorer.get("deaths") for scorer in scorers):
        fold_journals(output, run_id, own=True)
    for path in journal_files(Path(output) / JOURNAL_DIR, run_id):
        path.unlink(missing_ok=True)


def summarize_recovery(report: FoldReport, scorers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a kill or dead scorers lost and what was redone, for the job summary (None: nothing):
    ``report``'s counts, actor deaths, answers recovered from their journals and queries sent
    again, and a ``note`` saying it in words."""
    deaths = sum(scorer.get("deaths", 0) for scorer in scorers)
    if not (report.recovered or report.unanswered or deaths):
        return None
    notes = [report.describe()] if report.recovered or report.unanswered else []
    counts = {key: sum(scorer.get(key, 0) for scorer in scorers) for key in ("recovered", "resent")}
    if deaths:
        notes.append(f"scorer actors died {deaths} times: {counts['recovered']} answers of their batches recovered "
                     f"from the journal, {counts['resent']} queries sent again")
    return {**asdict(report), "actor_deaths": deaths, "recovered_after_deaths": counts["recovered"],
            "resent_after_deaths": counts["resent"], "note": "; ".join(notes)}


def _append_ledger(path: Path, run_id: str, lost: list[tuple[tuple[str, int], float]]) -> None:
    lines = "".join(json.dumps({"q": list(key), "usd": usd, "folded_by": run_id}) + "\n" for key, usd in lost)
    with open(path, "a", encoding="utf-8") as ledger:
        ledger.write(lines)
        ledger.flush()
        os.fsync(ledger.fileno())


def _records(path: Path, example_id: str | None = None) -> Iterator[dict[str, Any]]:
    """The whole JSON records of ``path`` (a torn last line skipped), optionally of one example."""
    if not path.exists():
        return
    needle = None if example_id is None else json.dumps([example_id])[:-1] + ","
    with open(path, encoding="ascii", errors="replace") as lines:
        for line in lines:
            if not line.endswith("\n") or (needle is not None and needle not in line):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("q"), list) and len(record["q"]) == 2:
                if example_id is None or record["q"][0] == example_id:
                    yield record
