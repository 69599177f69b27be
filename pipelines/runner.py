"""Run a job: plan -> score -> reduce, streaming, resumable.

Examples are read and planned a few at a time; an example without a target whose backend makes
one (``backend.target``, e.g. the model's own answer) gets it from one replica first; its missing
query ids go to the scorer pool as ``(example_id, start, stop)`` batches; scored rows are
appended to the query log; an example whose values are all in is decoded by a Ray task while
scoring goes on; explanation rows are written as Parquet parts. A re-run of the same job reads
the explanations (finished examples are skipped) and the query log (logged queries are never
sent again).

Backends with rate limits and a dollar cap share one job-wide limiter, charged with the dollars
the query log records. Queries a backend does not send (its cap is spent) are not logged; the run
then stops submitting, finishes what is in flight and returns with ``JobSummary.stopped`` set:
re-running the job (e.g. with a higher cap) sends them.

Output folder::

    job.json          the result-relevant config and its hash (a changed config is refused)
    querylog/         part-*.parquet, QUERY_LOG_SCHEMA
    targets/          part-*.parquet, TARGETS_SCHEMA: targets the backend made (written before the
                      queries scored against them, so a resumed example keeps its target)
    explanations/     part-*.parquet, EXPLANATION_SCHEMA, config/versions/backend in metadata
    summary.json      the last run's summary, with the scorer actors' nodes
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from tqdm.auto import tqdm  # a widget in a notebook

from connectors.base import Example, backend_class
from pipelines.actors import Batch, BatchResult, ScorerPool, TargetCall, TargetResult, submit_decode
from pipelines.backends import backend_options, default_gpus
from pipelines.config import JobConfig, changed_keys
from pipelines.inputs import BadInput, count_records, load_examples
from pipelines.journal import JOURNAL_DIR, close_run, fold_journals, summarize_recovery
from pipelines.layout import QueryLayout
from pipelines.metadata import file_metadata, library_versions
from pipelines.method import MethodSpec
from pipelines.parts import (
    EXPLANATIONS_DIR,
    QUERY_LOG_DIR,
    TARGETS_DIR,
    TEMP_PREFIX,
    PartWriter,
    compact_parts,
    group_by_example,
    read_parts,
)
from pipelines.shared_limiter import attach_shared_limiter, takes_shared_limiter
from pipelines.reaper import child_pids, reap_now, reap_on_exit
from pipelines.reduce import error_rows, failed_queries_message, rows_to_batch
from pipelines.usage import Usage
from pipelines.schema import EXPLANATION_SCHEMA, QUERY_LOG_SCHEMA, STATUS_OK, TARGETS_SCHEMA

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
# Where a backend that takes ``batch_state_dir`` (OpenAI Batch API) keeps its batch ids, unless set.
BATCH_STATE_OPTION = "batch_state_dir"
BATCH_STATE_DIR = "openai-batches"
# The backend identity's list of the model fingerprints seen (API backends).
IDENTITY_FINGERPRINTS = "system_fingerprints"
_EXPLANATION_FLUSH_ROWS = 2000
_QUERY_LOG_FLUSH_ROWS = 100_000
# A resumed job first merges the query log into one part when it has this many (read time grows
# with the number of files: an overnight job flushing every 10 s writes thousands).
_COMPACT_QUERY_LOG_PARTS = 64
_WAIT_SECONDS = 0.5


class JobMismatchError(ValueError):
    """The output folder holds results of a config that would give different results."""


@dataclass
class JobSummary:
    """What a run did. Example counts cover the whole output folder (earlier runs included);
    ``nodes`` maps node id -> queries scored there; ``limiter`` holds the job-wide rate limiter's
    counters (requests, tokens, spent_usd over the whole job, cost_cap_reached, rpm, tpm) for
    backends that use one. ``queries_not_sent``: queries the backend declined (not logged);
    ``stopped``: why the run ended before every example was done (a re-run resumes it);
    ``first_error``: the first error row's example id and reason; ``recovery``: what a killed
    run or dead scorer actors lost and what this run redid (``pipelines.journal.summarize_recovery``)."""

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
    r2_values: list[float] = field(default_factory=list, repr=False)  # per example, for the mean

    def describe(self) -> str:
        r2 = "n/a" if self.mean_faithfulness_r2 is None else f"{self.mean_faithfulness_r2:.3f}"
        spent = "" if self.limiter is None else f"; spent: ${self.limiter['spent_usd']:.4f} in total"
        text = (
            f"examples: {self.examples_ok} ok, {self.examples_error} error "
            f"({self.examples_skipped} already done); queries: {self.queries_sent} sent, "
            f"{self.queries_reused} reused from the query log; time: {self.seconds:.1f} s{spent}; "
            f"mean faithfulness R^2: {r2}; output: {self.output}"
        )
        text = text if self.recovery is None else f"{text}; {self.recovery['note']}"
        return text if self.stopped is None else f"{text}; stopped early: {self.stopped}"


@dataclass
class _Active:
    """An example being scored: its values so far (NaN = missing) and its failed query ids."""

    example: Example
    layout: QueryLayout
    work: ray.ObjectRef
    values: np.ndarray
    done: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return int(self.done.size - np.count_nonzero(self.done))


class FailFast(RuntimeError):
    """``fail_fast`` was set and an example got an error row."""


def run_job(config: JobConfig, *, limit: int | None = None, fail_fast: bool = False) -> JobSummary:
    """Run (or resume) ``config`` into ``config.output``; connects to or starts Ray as needed.

    A job whose every input record is explained already returns its summary without starting Ray.
    ``fail_fast``: stop at the first error row, raising FailFast with its reason (for debugging a
    config; the rows written so far stay, and a re-run resumes).
    """
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    with open(output / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another spex-ray run is writing to {output}") from None
        for stale in output.glob(TEMP_PREFIX + "*"):
            stale.unlink(missing_ok=True)  # left by a killed run
        _check_job_file(config, output)
        summary = JobSummary(output=str(output))
        finished = _read_finished(output, summary)
        if _all_finished(config, finished, limit):
            summary.examples_skipped = len(finished) if limit is None else min(limit, len(finished))
            _finish_summary(summary, output)
            logger.info("spex-ray: nothing to do, every example is explained already: %s", summary.describe())
            return summary
        started_ray = _init_ray(config.ray.address)
        try:
            return _Job(config, output, limit, summary, finished, fail_fast).run()
        finally:
            if started_ray:
                ray.shutdown()
                reap_now()


def _all_finished(config: JobConfig, finished: set[str], limit: int | None) -> bool:
    """Whether every input record (the first ``limit``) has explanation rows: counted first, then,
    only when the counts allow it, the records' ids read (no model, no Ray)."""
    if not finished:
        return False
    total = count_records(config.input)
    if len(finished) < (total if limit is None else min(total, limit)):
        return False
    return all(item.example_id in finished for item in load_examples(config, limit))


def _init_ray(address: str | None) -> bool:
    """Connect to ``address`` (else ``$RAY_ADDRESS``, else a new local cluster) unless Ray is up.

    Returns True if this call connected. ``ray.init(address=None)`` would silently join a cluster
    left behind by ``ray start --head``; "local" always starts a fresh one.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    before = child_pids()
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    if address == "local":
        reap_on_exit(exclude=before)  # its processes end with this one, even on SIGKILL
    return True


def _check_job_file(config: JobConfig, output: Path) -> None:
    """Refuse to run when ``job.json`` records a config that would give different results."""
    job_file = output / JOB_FILE
    if not job_file.exists():
        return
    stored = json.loads(job_file.read_text())
    if stored.get("config_hash") != config.result_hash():
        changed = changed_keys(stored.get("config", {}), config.result_config()) or ["(unknown)"]
        raise JobMismatchError(
            f"{output} holds results of a different config (changed: {', '.join(changed)}); "
            "results would be mixed. Use another --output, or delete the folder to start over."
        )


def _record_job_file(config: JobConfig, output: Path) -> None:
    """Write ``job.json`` (the result-relevant config and its hash) unless it is there."""
    job_file = output / JOB_FILE
    if job_file.exists():
        return
    record = {"config_hash": config.result_hash(), "config": config.result_config(), "versions": library_versions()}
    temporary = output / f"{TEMP_PREFIX}{uuid.uuid4().hex}.json"
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True))
    temporary.replace(job_file)


class _Job:
    def __init__(self, config: JobConfig, output: Path, limit: int | None, summary: JobSummary,
                 finished: set[str], fail_fast: bool) -> None:
        self.config = config
        self.output = output
        self.limit = limit
        self.spec = MethodSpec.from_config(config)
        self.summary = summary
        self.finished = finished
        self.fail_fast = fail_fast
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.active: dict[str, _Active] = {}
        self.awaiting: dict[str, tuple[QueryLayout, pa.Table | None]] = {}  # examples waiting for their target
        self.queue: deque[Batch] = deque()
        self.target_queue: deque[TargetCall] = deque()
        self.decoding: dict[ray.ObjectRef, _Active] = {}
        self.decode_backlog: deque[_Active] = deque()
        self.max_decodes = max(1, config.ray.num_actors)
        self.active_limit = 2 * config.ray.num_actors + 2
        self.makes_targets = False
        self.handled = 0
        self.usage = Usage()
        self.limiter = None
        self.stop_reason: str | None = None
        self.identity: dict[str, Any] = {}
        self.fingerprints_written: set[str] = set()
        self.querylog: PartWriter | None = None
        self.targets: PartWriter | None = None
        self.known_targets: dict[str, str] = {}
        self.explanations: PartWriter | None = None

    def run(self) -> JobSummary:
        begin = time.monotonic()
        finished = self.finished
        folded = fold_journals(self.output, self.run_id)  # answers a killed run paid for, into the query log
        if folded.recovered or folded.unanswered:
            logger.warning("spex-ray: %s", folded.describe())
        compact_parts(self.output / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, self.run_id, min_parts=_COMPACT_QUERY_LOG_PARTS)
        logged = group_by_example(
            read_parts(self.output / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, ["example_id", "query_id", "value", "error"],
                       exclude_examples=finished)
        )
        name = self.config.backend["name"]
        cls = backend_class(name)
        self.makes_targets = callable(getattr(cls, "target", None))
        if self.makes_targets:
            made = read_parts(self.output / TARGETS_DIR, TARGETS_SCHEMA, exclude_examples=finished)
            self.known_targets = dict(zip(*(made.column(c).to_pylist() for c in TARGETS_SCHEMA.names)))
        spec = self._backend_spec(name)
        if takes_shared_limiter(cls, spec):
            self.usage.add(read_parts(self.output / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, ["raw"]).column("raw"))
            self.usage.cost_usd += folded.ledger_usd  # possibly paid for answers lost in flight
        spec, self.limiter = attach_shared_limiter(cls, spec, spent_usd=self.usage.cost_usd)
        gpus = self.config.ray.num_gpus_per_actor
        pool = ScorerPool(
            spec,
            num_actors=self.config.ray.num_actors,
            num_cpus=self.config.ray.num_cpus_per_actor,
            num_gpus=default_gpus(name, spec) if gpus is None else gpus,
            max_restarts=self.config.ray.max_restarts,
            max_attempts=self.config.ray.max_attempts,
            journal=None if self.limiter is None else ((self.output / JOURNAL_DIR).resolve(), self.run_id),
        )
        try:
            infos = pool.start()
            _record_job_file(self.config, self.output)
            self.identity = infos[0]["backend"]
            self.querylog = PartWriter(self.output / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, self.run_id,
                                       {"spex_ray.config_hash": self.config.result_hash()})
            if self.makes_targets:
                self.targets = PartWriter(self.output / TARGETS_DIR, TARGETS_SCHEMA, self.run_id)
            self.explanations = PartWriter(self.output / EXPLANATIONS_DIR, EXPLANATION_SCHEMA, self.run_id,
                                           file_metadata(self.config, self.identity))
            total = count_records(self.config.input)
            total = total if self.limit is None else min(total, self.limit)
            with tqdm(total=total, unit="ex", desc="spex-ray", file=sys.stderr,
                      disable=not self.config.progress, dynamic_ncols=True, miniters=0) as progress:
                self._loop(pool, load_examples(self.config, self.limit), finished, logged, progress, begin)
        except BaseException:
            self._close(pool, quiet=True)
            raise
        self._close(pool, quiet=False)
        close_run(self.output, self.run_id, self.summary.scorers)
        self.summary.recovery = summarize_recovery(folded, self.summary.scorers)
        self.summary.seconds = time.monotonic() - begin
        if self.stop_reason is not None:
            unfinished = total - self.handled
            self.summary.stopped = (f"{self.stop_reason}; {unfinished} examples are unfinished and the job is "
                                    "resumable: run it again to finish them")
        _finish_summary(self.summary, self.output)
        logger.info("spex-ray: %s", self.summary.describe())
        return self.summary

    def _close(self, pool: ScorerPool, *, quiet: bool) -> None:
        """Flush the writers, stop the pool and the limiter, their counters into the summary. Every
        step runs; a failing one is logged, and raised after the rest only when not ``quiet`` (with
        ``quiet`` an error is already on its way out, and a clean-up failure must not hide it)."""
        def stop_pool() -> None:
            self.summary.scorers = pool.stats()
            pool.shutdown()

        def stop_limiter() -> None:
            if self.limiter is not None:
                self.summary.limiter = self.limiter.stats()
                self.limiter.shutdown()

        failures = []
        for step in (self._flush, stop_pool, stop_limiter):
            try:
                step()
            except Exception as err:  # every step still runs
                logger.warning("spex-ray: clean-up step %s failed: %s: %s", step.__name__, type(err).__name__, err)
                failures.append(err)
        if failures and not quiet:
            raise failures[0]

    def _backend_spec(self, name: str) -> dict[str, Any]:
        """The config's backend section with the masking options it takes and, for a backend that
        keeps batch state, ``batch_state_dir`` in the output folder unless the config sets one."""
        options = backend_options(name)
        spec = self.config.backend_spec(options)
        if BATCH_STATE_OPTION in options and spec.get(BATCH_STATE_OPTION) is None:
            spec[BATCH_STATE_OPTION] = str((self.output / BATCH_STATE_DIR).resolve())
        return spec

    def _loop(self, pool: ScorerPool, examples: Iterator[Example | BadInput], finished: set[str],
              logged: dict[str, pa.Table], progress: tqdm, begin: float) -> None:
        exhausted = False
        last_flush = time.monotonic()
        while True:
            if self.stop_reason is None:
                while (not exhausted and len(self.active) + len(self.awaiting) < self.active_limit
                       and len(self.decode_backlog) < self.max_decodes):
                    item = next(examples, None)
                    if item is None:
                        exhausted = True
                    elif item.example_id in finished:
                        self.summary.examples_skipped += 1
                        self._advance(progress)
                    else:
                        self._start(item, logged.pop(item.example_id, None), progress)
                while pool.retry:
                    call = pool.retry.pop()
                    (self.target_queue if isinstance(call, TargetCall) else self.queue).appendleft(call)
                while self.target_queue and pool.has_capacity():
                    pool.submit(self.target_queue.popleft())
                while self.queue and pool.has_capacity():
                    pool.submit(self.queue.popleft())
            else:  # stopping: send nothing more, let what is in flight and the decodes finish
                pool.retry.clear()
                self.target_queue.clear()
                self.queue.clear()
            while self.decode_backlog and len(self.decoding) < self.max_decodes:
                state = self.decode_backlog.popleft()
                ref = submit_decode(state.example, self.spec, state.layout, state.values,
                                   num_cpus=self.config.ray.num_cpus_per_decode)
                self.decoding[ref] = state
            refs = pool.refs() + list(self.decoding)
            if not refs:
                done = self.stop_reason is not None or (exhausted and not self.active and not self.awaiting)
                if done and not self.decode_backlog:
                    return
                continue
            ready, rest = ray.wait(refs, num_returns=1, timeout=_WAIT_SECONDS)
            if ready and rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            for ref in ready:
                if not pool.owns(ref):
                    self._decoded(ref, progress)
                    continue
                result = pool.collect(ref)
                if isinstance(result, TargetResult):
                    self._targeted(result, progress)
                elif isinstance(result, BatchResult):
                    self._scored(result, progress)
            now = time.monotonic()
            if (now - last_flush >= self.config.ray.flush_seconds
                    or self.querylog.buffered_rows >= _QUERY_LOG_FLUSH_ROWS
                    or self.explanations.buffered_rows >= _EXPLANATION_FLUSH_ROWS):
                self._flush()
                last_flush = now
            rate = self.summary.queries_sent / max(now - begin, 1e-9)
            fitting = len(self.decoding) + len(self.decode_backlog)
            status = f"{self.summary.queries_sent:,} queries, {rate:,.0f} q/s, {fitting} fitting"
            if self.limiter is not None:
                status += f", ${self.usage.cost_usd:,.4f} spent"
            status += pool.losses()
            progress.set_postfix_str(status, refresh=False)
            progress.update(0)  # redraws the queries at most every mininterval, between examples too

    def _start(self, item: Example | BadInput, logged: pa.Table | None, progress: tqdm) -> None:
        """Plan an example; ask for its target or queue its missing queries (or record why it cannot run)."""
        if isinstance(item, BadInput):
            self._write(error_rows(item, self.spec, item.error), progress)
            return
        try:
            layout = self.spec.layout(item.n)
        except ValueError as err:
            self._write(error_rows(item, self.spec, f"cannot plan {self.spec.method}: {err}"), progress)
            return
        if self.makes_targets and item.target is None:
            made = self.known_targets.pop(item.example_id, None)  # by an earlier run of the job
            if made is None:
                self.awaiting[item.example_id] = (layout, logged)
                self.target_queue.append(TargetCall(item))
                return
            item = replace(item, target=made)
        self._begin(item, layout, logged, progress)

    def _targeted(self, result: TargetResult, progress: tqdm) -> None:
        """An example's target is in: score the example with it (or record why there is none)."""
        example = result.call.example
        layout, logged = self.awaiting.pop(example.example_id)
        if result.error is not None:
            self._write(error_rows(example, self.spec, result.error), progress)
            return
        if result.target is not None:
            example = replace(example, target=result.target)
            self.targets.append(pa.RecordBatch.from_pydict(
                {"example_id": [example.example_id], "target": [result.target]}, schema=TARGETS_SCHEMA))
        self._begin(example, layout, logged, progress)

    def _begin(self, example: Example, layout: QueryLayout, logged: pa.Table | None, progress: tqdm) -> None:
        """Take in the example's logged queries and queue the missing ones as batches."""
        state = _Active(
            example=example,
            layout=layout,
            work=ray.put((example, layout)),
            values=np.full(layout.num_queries, np.nan),
            done=np.zeros(layout.num_queries, dtype=bool),
        )
        if logged is not None:
            self.summary.queries_reused += self._record(state, logged)
        self.active[example.example_id] = state
        missing = np.flatnonzero(~state.done)
        if missing.size == 0:
            self._complete(state, progress)
            return
        runs = np.split(missing, np.flatnonzero(np.diff(missing) != 1) + 1)
        for run in runs:
            for start in range(int(run[0]), int(run[-1]) + 1, self.config.ray.batch_size):
                stop = min(start + self.config.ray.batch_size, int(run[-1]) + 1)
                self.queue.append(Batch(example.example_id, start, stop, state.work))

    def _record(self, state: _Active, rows: pa.Table | pa.RecordBatch) -> int:
        """Put query-log rows into ``state``; returns how many were new."""
        ids = rows.column("query_id").to_numpy()
        values = rows.column("value").to_numpy(zero_copy_only=False)
        errors = rows.column("error").to_pylist()
        new = 0
        for query_id, value, error in zip(ids, values, errors):
            if query_id >= state.done.size or state.done[query_id]:
                continue
            state.done[query_id] = True
            new += 1
            if error is None:
                state.values[query_id] = value
            else:
                state.errors[int(query_id)] = error
        return new

    def _scored(self, result: BatchResult, progress: tqdm) -> None:
        """Log a batch's rows and record them; queries left out were not sent (see ``_not_sent``)."""
        batch = result.batch
        rows = result.rows
        if rows is None:
            rows = _failed_rows(batch, result.error)
            if batch.recovered is not None:
                self.usage.add(batch.recovered.column("raw"))
        else:
            self.summary.queries_sent += rows.num_rows
            self.usage.add(rows.column("raw"))
            if rows.num_rows < batch.stop - batch.start:
                self._not_sent(batch.stop - batch.start - rows.num_rows)
        self.querylog.append(rows)
        state = self.active[batch.example_id]
        self._record(state, rows)
        if state.remaining == 0:
            self._complete(state, progress)

    def _not_sent(self, count: int) -> None:
        """The backend declined ``count`` queries (its dollar cap is spent): stop sending."""
        self.summary.queries_not_sent += count
        if self.stop_reason is not None:
            return
        self.stop_reason = f"the backend did not send {count} queries"
        if self.limiter is not None:
            stats = self.limiter.stats()
            if stats["cost_cap_reached"]:
                self.stop_reason = (f"the job's dollar cap backend.max_cost_usd={stats['max_cost_usd']:g} is reached "
                                    f"(${stats['spent_usd']:.4f} spent); raise it to go on")
        logger.warning("spex-ray: %s: sending no more queries, finishing those in flight", self.stop_reason)

    def _complete(self, state: _Active, progress: tqdm) -> None:
        """All queries of ``state`` are in: decode it, or write why it cannot be."""
        del self.active[state.example.example_id]
        if state.errors:
            failed = sorted(state.errors)
            message = failed_queries_message(failed, [state.errors[i] for i in failed], state.done.size,
                                             self.config.ray.max_attempts)
            self._write(error_rows(state.example, self.spec, message, num_queries=state.done.size), progress)
            return
        self.decode_backlog.append(state)

    def _decoded(self, ref: ray.ObjectRef, progress: tqdm) -> None:
        state = self.decoding.pop(ref)
        try:
            rows = ray.get(ref)
        except ray.exceptions.RayError as err:
            rows = error_rows(state.example, self.spec, f"decoding task failed: {err}")
        self._write(rows, progress)

    def _write(self, rows: list[dict], progress: tqdm) -> None:
        """Buffer one example's explanation rows and count it."""
        self.explanations.append(rows_to_batch(rows))
        _count(self.summary, rows[0]["example_id"], rows[0]["status"], rows[0]["faithfulness_r2"], rows[0]["error"])
        self._advance(progress)
        if self.fail_fast and rows[0]["status"] != STATUS_OK:
            raise FailFast(f"--fail-fast: example {rows[0]['example_id']!r} failed: {rows[0]['error']}")

    def _advance(self, progress: tqdm) -> None:
        """One more input record is done (explained, failed or skipped)."""
        self.handled += 1
        progress.update(1)

    def _flush(self) -> None:
        """Targets, then the query log scored against them, then explanations; each a new atomic part."""
        if self.targets is not None:
            self.targets.flush()
        if self.querylog is not None:
            self.querylog.flush()
        if self.explanations is not None:
            self._add_fingerprints()
            self.explanations.flush()

    def _add_fingerprints(self) -> None:
        """Put the model fingerprints seen in raw outputs so far into the backend identity of the
        explanation parts to come (``system_fingerprints``)."""
        if self.usage.fingerprints <= self.fingerprints_written:
            return
        self.fingerprints_written = set(self.usage.fingerprints)
        known = set(self.identity.get(IDENTITY_FINGERPRINTS) or ())
        identity = {**self.identity, IDENTITY_FINGERPRINTS: sorted(known | self.fingerprints_written)}
        self.explanations.set_metadata(file_metadata(self.config, identity))


def _count(summary: JobSummary, example_id: str, status: str, r2: float | None, error: str | None) -> None:
    """Count one example's outcome into ``summary`` (its R^2 into ``summary.r2_values``)."""
    if status == STATUS_OK:
        summary.examples_ok += 1
        if r2 is not None:
            summary.r2_values.append(r2)
        return
    summary.examples_error += 1
    if summary.first_error is None:
        summary.first_error = f"{example_id}: {error}"


def _read_finished(output: Path, summary: JobSummary) -> set[str]:
    """Ids of examples with explanation rows; counts them into ``summary``."""
    table = read_parts(output / EXPLANATIONS_DIR, EXPLANATION_SCHEMA,
                       ["example_id", "status", "faithfulness_r2", "error"])
    seen: set[str] = set()
    for example_id, status, r2, error in zip(*(table.column(name).to_pylist() for name in table.column_names)):
        if example_id not in seen:
            seen.add(example_id)
            _count(summary, example_id, status, r2, error)
    return seen


def _finish_summary(summary: JobSummary, output: Path) -> None:
    """Mean R^2 and queries per node into ``summary``; write it to ``summary.json``."""
    finite = [r2 for r2 in summary.r2_values if math.isfinite(r2)]
    summary.mean_faithfulness_r2 = float(np.mean(finite)) if finite else None
    nodes: dict[str, int] = {}
    for scorer in summary.scorers:
        for node_id, queries in scorer["queries_by_node"].items():
            nodes[node_id] = nodes.get(node_id, 0) + queries
    summary.nodes = nodes
    record = {key: value for key, value in asdict(summary).items() if key != "r2_values"}
    temporary = output / f"{TEMP_PREFIX}{uuid.uuid4().hex}.json"
    temporary.write_text(json.dumps(record, indent=2))
    temporary.replace(output / SUMMARY_FILE)


def _failed_rows(batch: Batch, error: str | None) -> pa.RecordBatch:
    """Query-log rows recording that a batch could not be scored; the answers its dead replicas
    journaled (paid for) are kept as they are."""
    recovered = batch.recovered
    known = set() if recovered is None else set(recovered.column("query_id").to_pylist())
    ids = np.array([q for q in range(batch.start, batch.stop) if q not in known], dtype=np.int64)
    failed = pa.RecordBatch.from_pydict(
        {
            "example_id": [batch.example_id] * ids.size,
            "query_id": ids,
            "value": [None] * ids.size,
            "raw": [None] * ids.size,
            "error": [error] * ids.size,
            "attempts": np.full(ids.size, batch.failures, dtype=np.int32),
            "latency_ms": [None] * ids.size,
        },
        schema=QUERY_LOG_SCHEMA,
    )
    if recovered is None:
        return failed
    return pa.Table.from_batches([recovered.cast(QUERY_LOG_SCHEMA), failed]).combine_chunks().to_batches()[0]
