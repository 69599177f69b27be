"""A run's steps and its main loop, on whichever executor runs the calls (no Ray here).

An example is planned (its query layout); if the backend makes targets and the example has none,
one replica makes it first; its logged queries are taken in and the missing ones queued as
batches; scored rows go to the query log and into the example's state; an example whose queries
are all in is fitted (or, if some failed for good, written as error rows); explanation rows are
written and counted. With adaptive budgets an example's queries go out stage by stage: a stage's
fit either gives its rows or sends the example back for the next stage's queries. Queries the
backend does not send (its dollar cap is spent) stop the run: nothing more is sent, what is in
flight and the fits finish.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pyarrow as pa

from connectors.base import Example
from pipelines.calls import BatchResult, FitCall, FitResult, TargetCall, TargetResult, failed_rows
from pipelines.config import JobConfig
from pipelines.example_state import ExampleState
from pipelines.executor import Executor, Result
from pipelines.inputs import BadInput
from pipelines.layout import QueryLayout
from pipelines.method import MethodSpec
from pipelines.outputs import Outputs
from pipelines.progress import Progress
from pipelines.reduce import error_rows
from pipelines.resume import ResumeState
from pipelines.scheduler import Scheduler
from pipelines.schema import STATUS_OK
from pipelines.summary import JobSummary

logger = logging.getLogger(__name__)


class FailFast(RuntimeError):
    """``fail_fast`` was set and an example got an error row."""


class Job:
    """One run over the examples: ``run`` drives the steps until every example is written, or the
    run stopped (``stop_reason``) and what was in flight is in. ``limiter``: the job-wide limiter
    (its counters name a spent dollar cap), or None; ``makes_targets``: the backend makes targets."""

    def __init__(self, config: JobConfig, executor: Executor, resume: ResumeState, outputs: Outputs,
                 progress: Progress, summary: JobSummary, *, limiter: Any | None, makes_targets: bool,
                 fail_fast: bool) -> None:
        self.config = config
        self.spec = MethodSpec.from_config(config)
        self.executor = executor
        self.scheduler = Scheduler(config.ray.num_actors)
        self.resume = resume
        self.outputs = outputs
        self.progress = progress
        self.summary = summary
        self.limiter = limiter
        self.makes_targets = makes_targets
        self.fail_fast = fail_fast
        self.scoring: dict[str, ExampleState] = {}
        self.awaiting: dict[str, tuple[QueryLayout, pa.Table | None]] = {}  # waiting for their target
        self.staged: dict[str, ExampleState] = {}  # adaptive: a stage's fit is running
        if self.spec.adaptive:
            summary.queries_saved = 0
        self.exhausted = False
        self.stop_reason: str | None = None

    def run(self, examples: Iterator[Example | BadInput]) -> None:
        """Take in examples while there is room, hand queued calls to the executor, take in what
        comes back, flush when due; until done."""
        while True:
            if self.stop_reason is None:
                self._admit(examples)
            self.scheduler.dispatch(self.executor, sending=self.stop_reason is None)
            if self.executor.idle():
                if self._done():
                    return
                continue
            for result in self.executor.wait():
                self._take(result)
            self.outputs.flush_if_due()
            spent = None if self.limiter is None else self.resume.usage.cost_usd
            self.progress.show(self.summary, self.scheduler.fitting, spent, self.executor.losses())

    def _done(self) -> bool:
        """Nothing left to take in or to fit (once stopped, nothing left to fit)."""
        drained = self.exhausted and not self.scoring and not self.awaiting
        return (self.stop_reason is not None or drained) and not self.scheduler.fit_backlog

    def _admit(self, examples: Iterator[Example | BadInput]) -> None:
        """Take in input records while the scheduler admits them; skip those finished before."""
        while not self.exhausted and self.scheduler.admits(self._open()):
            item = next(examples, None)
            if item is None:
                self.exhausted = True
            elif item.example_id in self.resume.finished:
                self.summary.examples_skipped += 1
                self.progress.advance()
            else:
                self._start(item)

    def _open(self) -> int:
        """Open examples: scored, waiting for their target, or (adaptive) waiting for a stage's fit."""
        return len(self.scoring) + len(self.awaiting) + len(self.staged)

    def _take(self, result: Result) -> None:
        if isinstance(result, FitResult):
            self.scheduler.fitted()
            self._fitted(result)
        elif isinstance(result, TargetResult):
            self._targeted(result)
        else:
            self._scored(result)

    def _start(self, item: Example | BadInput) -> None:
        """Plan an example; ask for its target or queue its missing queries (or record why it cannot run)."""
        logged = self.resume.take_logged(item.example_id)
        if isinstance(item, BadInput):
            self._write(error_rows(item, self.spec, item.error))
            return
        try:
            layout = self.spec.layout(item.n)
        except ValueError as err:
            self._write(error_rows(item, self.spec, f"cannot plan {self.spec.method}: {err}"))
            return
        if self.makes_targets and item.target is None:
            made = self.resume.take_target(item.example_id)  # by an earlier run of the job
            if made is None:
                self.awaiting[item.example_id] = (layout, logged)
                self.scheduler.targets.append(TargetCall(item))
                return
            item = replace(item, target=made)
        self._begin(item, layout, logged)

    def _targeted(self, result: TargetResult) -> None:
        """An example's target is in: score the example with it (or record why there is none)."""
        example = result.call.example
        layout, logged = self.awaiting.pop(example.example_id)
        if result.error is not None:
            self._write(error_rows(example, self.spec, result.error))
            return
        if result.target is not None:
            example = replace(example, target=result.target)
            self.outputs.log_target(example.example_id, result.target)
        self._begin(example, layout, logged)

    def _begin(self, example: Example, layout: QueryLayout, logged: pa.Table | None) -> None:
        """Take in the example's logged queries (adaptive: pick up at the stage they reached) and
        queue the missing ones."""
        state = ExampleState(example, layout, self.executor.share(example, layout))
        if logged is not None:
            self.summary.queries_reused += state.record(logged)
        if self.spec.adaptive:
            state.start_stages()
        self._score(state)

    def _score(self, state: ExampleState) -> None:
        """Queue the example's missing (wanted) queries as batches; with none missing, complete it."""
        self.scoring[state.example.example_id] = state
        batches = state.missing_batches(self.config.ray.batch_size)
        if not batches:
            self._complete(state)
            return
        self.scheduler.batches.extend(batches)

    def _scored(self, result: BatchResult) -> None:
        """Log a batch's rows and record them; queries left out were not sent (see ``_not_sent``)."""
        batch = result.batch
        rows = result.rows
        if rows is None:
            rows = failed_rows(batch, result.error)
            if batch.recovered is not None:
                self.resume.usage.add(batch.recovered)
        else:
            self.summary.queries_sent += rows.num_rows
            self.resume.usage.add(rows)
            if rows.num_rows < batch.stop - batch.start:
                self._not_sent(batch.stop - batch.start - rows.num_rows)
        self.outputs.log_queries(rows)
        state = self.scoring[batch.example_id]
        state.record(rows)
        if state.remaining == 0:
            self._complete(state)

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

    def _complete(self, state: ExampleState) -> None:
        """All (wanted) queries of ``state`` are in: queue its fit, or write why it cannot be fitted."""
        del self.scoring[state.example.example_id]
        failure = state.failure(self.config.ray.max_attempts)
        if failure is not None:
            self._write(error_rows(state.example, self.spec, failure, num_queries=state.done.size))
            return
        if state.stage is not None:
            self.staged[state.example.example_id] = state
        self.scheduler.fit_backlog.append(FitCall(state.example, self.spec, state.layout, state.values,
                                                  state.stage, state.previous_r2))

    def _fitted(self, result: FitResult) -> None:
        """Write a fit's rows; an adaptive stage that goes on queues the next stage's queries instead."""
        state = self.staged.pop(result.call.example.example_id, None)
        if result.goes_on:
            state.previous_r2 = result.r2
            state.open_stage(state.stage + 1)
            self._score(state)
            return
        rows = result.rows
        if rows is None:
            rows = error_rows(result.call.example, self.spec, result.error)
        elif state is not None and rows[0]["status"] == STATUS_OK:
            self.summary.queries_saved += state.layout.num_design - rows[0]["num_queries"]
        self._write(rows)

    def _write(self, rows: list[dict]) -> None:
        """Write one example's explanation rows; it is done."""
        self.outputs.explain(rows)
        self.progress.advance()
        if self.fail_fast and rows[0]["status"] != STATUS_OK:
            raise FailFast(f"--fail-fast: example {rows[0]['example_id']!r} failed: {rows[0]['error']}")
