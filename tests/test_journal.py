"""The scorers' journal without Ray: answers on disk as they arrive, torn lines, folding into the
query log on resume, the ledger of requests lost in flight, and batch scoring around it."""

import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from connectors.base import Backend, Example, Score
from pipelines.journal import (
    JOURNAL_DIR,
    UNANSWERED_FILE,
    Journal,
    close_run,
    fold_journals,
    journal_files,
    read_journals,
    summarize_recovery,
)
from pipelines.method import MethodSpec
from pipelines.parts import QUERY_LOG_DIR, PartWriter, read_parts
from pipelines.scoring import BatchScorer
from pipelines.usage import USAGE_COLUMNS, Usage
from pipelines.watchdog import processes
from pipelines.schema import QUERY_LOG_SCHEMA

EXAMPLE = Example.from_text("ex", "one two three four five six seven eight")
LAYOUT = MethodSpec(method="spex-hard", budget=None, b=3, t=2, seed=0, max_order=2, refit="ls", holdout=10,
                    indices=("fbii",)).layout(EXAMPLE.n)


def rows(example_id, ids, cost=0.01, fingerprint=None, schema=QUERY_LOG_SCHEMA):
    columns = {"example_id": [example_id] * len(ids), "query_id": ids, "value": [float(i) for i in ids],
               "raw": [json.dumps({"cost_usd": cost}) for _ in ids], "error": [None] * len(ids),
               "attempts": [1] * len(ids), "latency_ms": [1.0] * len(ids), "cost_usd": [cost] * len(ids),
               "fingerprint": [fingerprint] * len(ids)}
    return pa.RecordBatch.from_pydict({name: columns[name] for name in schema.names}, schema=schema)


class Streaming(Backend):
    """Answers rows one by one through ``on_score`` (its journal already holding the earlier ones),
    then fails the call (as a process dying mid-call would) when ``fail`` is set."""

    name = "streaming"
    streams_scores = True

    def __init__(self, journal_path=None, fail=False):
        self.journal_path, self.fail, self.rows_sent = journal_path, fail, 0

    def _score(self, example, keep, *, on_send=None, on_score=None):
        scores = []
        for row in range(len(keep)):
            on_send(row, 0.5)
            self.rows_sent += 1
            score = Score(value=float(keep[row].sum()), raw=json.dumps({"cost_usd": 0.5}), cost_usd=0.5)
            on_score(row, score)
            lines = self.journal_path.read_text().splitlines() if self.journal_path else []
            assert sum('"row"' in line for line in lines) == row + 1  # on disk before the next request
            scores.append(score)
        if self.fail:
            raise RuntimeError("the replica died")
        return scores


def test_a_journal_keeps_rows_and_requests_and_a_torn_last_line_is_skipped(tmp_path):
    journal = Journal(tmp_path, "run1")
    journal.sent("ex", 3, 0.25)
    journal.sent("ex", 4, 0.5)
    journal.rows(rows("ex", [3]))
    journal.sent("other", 1, 0.125)
    with open(journal.path, "a") as torn:
        torn.write('{"q":["ex",4],"row":{"value":')  # a kill in the middle of a write
    contents = read_journals([journal.path])
    assert list(contents.rows) == [("ex", 3)] and contents.rows[("ex", 3)]["value"] == 3.0
    assert contents.unanswered == [(("ex", 4), 0.5), (("other", 1), 0.125)]
    assert read_journals([journal.path], "other").unanswered == [(("other", 1), 0.125)]
    assert journal_files(tmp_path, "run1") == [journal.path] and journal_files(tmp_path, "run2") == []


def test_fold_adds_the_missing_rows_once_records_lost_requests_and_removes_the_journals(tmp_path):
    writer = PartWriter(tmp_path / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, "old")
    writer.append(rows("ex", [0, 1]))
    writer.flush()
    first = Journal(tmp_path / JOURNAL_DIR, "killed")
    for query_id in (1, 2, 3, 4):
        first.sent("ex", query_id, 0.01)
    first.rows(rows("ex", [1, 2, 3]))  # 1 reached the query log already; 4 was in flight
    second = Journal(tmp_path / JOURNAL_DIR, "killed")  # a restarted actor of the same run
    second.sent("ex", 4, 0.01)
    second.rows(rows("ex", [4]))

    report = fold_journals(tmp_path, "resumed")
    log = read_parts(tmp_path / QUERY_LOG_DIR, QUERY_LOG_SCHEMA)
    assert sorted(log.column("query_id").to_pylist()) == [0, 1, 2, 3, 4]
    assert (report.recovered, report.unanswered) == (3, 1)
    assert report.recovered_usd == pytest.approx(0.03) and report.ledger_usd == pytest.approx(0.01)
    assert journal_files(tmp_path / JOURNAL_DIR) == []
    ledger = (tmp_path / JOURNAL_DIR / UNANSWERED_FILE).read_text().splitlines()
    assert [json.loads(line)["q"] for line in ledger] == [["ex", 4]]
    again = fold_journals(tmp_path, "later")  # nothing new, the ledger still counts
    assert (again.recovered, again.unanswered, again.ledger_usd) == (0, 0, pytest.approx(0.01))
    note = summarize_recovery(report, [{"deaths": 1, "recovered": 5, "resent": 7}])
    assert note["recovered"] == 3 and note["actor_deaths"] == 1
    assert all(part in note["note"] for part in ("recovered 3 answers", "5 answers", "7 queries sent again"))
    assert summarize_recovery(again, [{"deaths": 0}]) is None


def test_two_folds_in_one_run_keep_both_parts(tmp_path):
    """A run folds at its start (a killed run's journal) and again at its end (a dead actor's)."""
    Journal(tmp_path / JOURNAL_DIR, "killed").rows(rows("ex", [0, 1]))
    fold_journals(tmp_path, "this-run")
    Journal(tmp_path / JOURNAL_DIR, "this-run").rows(rows("ex", [2]))
    fold_journals(tmp_path, "this-run", own=True)
    log = read_parts(tmp_path / QUERY_LOG_DIR, QUERY_LOG_SCHEMA)
    assert sorted(log.column("query_id").to_pylist()) == [0, 1, 2]


def test_a_finished_run_removes_its_journals_folding_them_when_an_actor_died(tmp_path):
    journal = Journal(tmp_path / JOURNAL_DIR, "run")
    journal.sent("ex", 0, 0.02)  # in flight when the actor died; sent again by another one
    close_run(tmp_path, "run", [{"deaths": 0}])
    assert not journal.path.exists() and not (tmp_path / JOURNAL_DIR / UNANSWERED_FILE).exists()
    journal = Journal(tmp_path / JOURNAL_DIR, "run")
    journal.sent("ex", 0, 0.02)
    close_run(tmp_path, "run", [{"deaths": 1}])
    assert not journal.path.exists() and fold_journals(tmp_path, "next").ledger_usd == pytest.approx(0.02)


def test_two_folds_in_one_run_keep_both_parts(tmp_path):
    """A resumed run folds a killed run's journal at its start, and its own at its end when an
    actor died: the second part must not replace the first."""
    Journal(tmp_path / JOURNAL_DIR, "killed").rows(rows("ex", [0, 1]))
    assert fold_journals(tmp_path, "resumed").recovered == 2
    Journal(tmp_path / JOURNAL_DIR, "resumed").rows(rows("ex", [2]))  # rows of a batch given up after deaths
    close_run(tmp_path, "resumed", [{"deaths": 3}])
    log = read_parts(tmp_path / QUERY_LOG_DIR, QUERY_LOG_SCHEMA)
    assert sorted(log.column("query_id").to_pylist()) == [0, 1, 2]


def test_a_streaming_backend_journals_each_answer_at_once_and_a_failed_call_keeps_them(tmp_path):
    journal = Journal(tmp_path, "run")
    backend = Streaming(journal.path, fail=True)
    batch = BatchScorer(backend, max_attempts=2, journal=journal).score(EXAMPLE, LAYOUT, 0, 6)
    assert batch.column("error").to_pylist() == [None] * 6 and batch.column("cost_usd").to_pylist() == [0.5] * 6
    assert backend.rows_sent == 6, "answers of the failed call were sent again"
    contents = read_journals([journal.path])
    assert sorted(contents.rows) == [("ex", i) for i in range(6)] and contents.unanswered == []
    assert len(journal.path.read_text().splitlines()) == 12  # each row journaled once, each request once


def test_recovered_rows_are_returned_not_sent_again_and_other_rows_are_journaled_per_call(tmp_path):
    class Counting(Backend):
        name = "counting"
        masks = 0

        def _score(self, example, keep):
            Counting.masks += len(keep)
            return [Score(value=1.0, raw="{}") for _ in keep]

    journal = Journal(tmp_path, "run")
    recovered = rows("ex", [2, 3, 7])
    batch = BatchScorer(Counting(), journal=journal).score(EXAMPLE, LAYOUT, 0, 10, recovered)
    assert Counting.masks == 7
    assert batch.column("query_id").to_pylist() == list(range(10))
    assert batch.column("value").to_pylist()[2:4] == [2.0, 3.0]
    assert sorted(read_journals([journal.path]).rows) == [("ex", i) for i in (0, 1, 4, 5, 6, 8, 9)]


def test_the_watchdog_kills_the_ray_processes_of_a_killed_driver_and_only_those():
    driver = """
import subprocess, sys, time
from pipelines.reaper import child_pids, reap_on_exit
other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
before = child_pids()
sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
ray_like = subprocess.Popen([sys.executable, "-c",
    f"import subprocess, time; subprocess.Popen({sleeper!r}); time.sleep(60)"])
time.sleep(1.0)
reap_on_exit(exclude=before)
print(other.pid, ray_like.pid, flush=True)
time.sleep(60)
"""
    process = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    other, ray_like = map(int, process.stdout.readline().split())
    time.sleep(1.5)  # the watchdog's first look at the process tree
    family = {pid: start for pid, (parent, start) in processes().items() if pid == ray_like or parent == ray_like}
    assert len(family) == 2
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while any(processes().get(pid, (0, ""))[1] == start for pid, start in family.items()):
        assert time.monotonic() < deadline, "the watchdog left the processes started after the snapshot running"
        time.sleep(0.1)
    assert other in processes(), "the watchdog killed a child that was there before"
    os.kill(other, 9)


def test_a_batch_given_up_keeps_the_answers_its_dead_replicas_journaled():
    from pipelines.calls import Batch, failed_rows

    batch = Batch("ex", 0, 5, None, failures=3, recovered=rows("ex", [1, 3]))
    logged = failed_rows(batch, "scorer actor died 3 times")
    by_id = dict(zip(logged.column("query_id").to_pylist(), logged.column("error").to_pylist()))
    assert sorted(by_id) == [0, 1, 2, 3, 4]
    assert by_id[1] is None and by_id[3] is None and by_id[0] == "scorer actor died 3 times"


# The query log as written before it had the typed columns cost_usd and fingerprint.
BEFORE_TYPED_COLUMNS = pa.schema([field for field in QUERY_LOG_SCHEMA if field.name not in ("cost_usd", "fingerprint")])


def test_usage_reads_the_typed_columns_and_the_raw_json_of_rows_logged_before_them(tmp_path):
    new = PartWriter(tmp_path, QUERY_LOG_SCHEMA, "new")
    new.append(rows("ex", [0, 1], cost=0.25, fingerprint="fp_new"))
    new.flush()
    old = PartWriter(tmp_path, BEFORE_TYPED_COLUMNS, "old")
    old.append(rows("ex", [2, 3], cost=0.5, schema=BEFORE_TYPED_COLUMNS))
    old.append(pa.RecordBatch.from_pydict(
        {"example_id": ["ex"] * 3, "query_id": [4, 5, 6], "value": [1.0] * 3,
         "raw": [json.dumps({"cost_usd": 0.125, "system_fingerprint": "fp_old"}), None, "{not json"],
         "error": [None] * 3, "attempts": [1] * 3, "latency_ms": [1.0] * 3}, schema=BEFORE_TYPED_COLUMNS))
    old.flush()
    usage = Usage()
    usage.add(read_parts(tmp_path, QUERY_LOG_SCHEMA, USAGE_COLUMNS))
    assert usage.cost_usd == pytest.approx(2 * 0.25 + 2 * 0.5 + 0.125)
    assert usage.fingerprints == {"fp_new", "fp_old"}


def test_a_journal_written_before_the_typed_columns_folds_with_the_dollars_of_its_raw_json(tmp_path):
    (tmp_path / JOURNAL_DIR).mkdir()
    lines = [{"q": ["ex", i], "row": {"value": 1.0, "raw": json.dumps({"cost_usd": 0.5}), "error": None,
                                      "attempts": 1, "latency_ms": 1.0}} for i in (0, 1)]
    (tmp_path / JOURNAL_DIR / "killed-1-abcdef.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = fold_journals(tmp_path, "resumed")
    assert report.recovered == 2 and report.recovered_usd == pytest.approx(1.0)
    assert read_parts(tmp_path / QUERY_LOG_DIR, QUERY_LOG_SCHEMA).column("cost_usd").null_count == 2
