"""Run a job: plan -> score -> fit, streaming, resumable.

Examples are read and planned a few at a time; an example without a target whose backend makes
one (``backend.target``, e.g. the model's own answer) gets it from one replica first; its missing
query ids go to the scorer replicas as ``(example_id, start, stop)`` batches; scored rows are
appended to the query log; an example whose values are all in is fitted while scoring goes on;
explanation rows are written as Parquet parts. A re-run of the same job reads the explanations
(finished examples are skipped) and the query log (logged queries are never sent again).

Backends with rate limits and a dollar cap share one job-wide limiter, charged with the dollars
the query log records. Queries a backend does not send (its cap is spent) are not logged; the run
then stops submitting, finishes what is in flight and returns with ``JobSummary.stopped`` set:
re-running the job (e.g. with a higher cap) sends them.

The stages, one module each: ``pipelines.resume`` (what earlier runs left), ``pipelines.job``
(the steps and the main loop), ``pipelines.scheduler`` (queues), ``pipelines.example_state``
(one example's values), ``pipelines.outputs`` (writers, flush order), ``pipelines.summary``; the
calls run on an executor: ``pipelines.ray_executor.RayExecutor`` (default) or
``pipelines.executor.LocalExecutor`` (in this process, no Ray).

Output folder::

    job.json          the result-relevant config and its hash (a changed config is refused)
    querylog/         part-*.parquet, QUERY_LOG_SCHEMA
    targets/          part-*.parquet, TARGETS_SCHEMA: targets the backend made (written before the
                      queries scored against them, so a resumed example keeps its target)
    explanations/     part-*.parquet, EXPLANATION_SCHEMA, config/versions/backend in metadata
    summary.json      the last run's summary, with the scorer actors' nodes
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.base import Backend, backend_class
from pipelines.config import JobConfig
from pipelines.executor import Executor
from pipelines.folder import JobMismatchError, check_job_file, locked, record_job_file
from pipelines.inputs import count_records, load_examples
from pipelines.job import FailFast, Job
from pipelines.journal import JOURNAL_DIR, close_run, summarize_recovery
from pipelines.outputs import Outputs
from pipelines.parts import TEMP_PREFIX
from pipelines.progress import Progress
from pipelines.resume import ResumeState, all_finished, read_finished
from pipelines.summary import JobSummary

__all__ = ["BATCH_STATE_DIR", "FailFast", "JobMismatchError", "JobSummary", "run_job"]

logger = logging.getLogger(__name__)

# Where a backend with a ``state_dir_option`` (OpenAI Batch API) keeps its batch ids, unless set.
BATCH_STATE_DIR = "openai-batches"


def run_job(config: JobConfig, *, limit: int | None = None, fail_fast: bool = False,
            executor: Callable[[JobConfig], Executor] | None = None) -> JobSummary:
    """Run (or resume) ``config`` into ``config.output``.

    A job whose every input record is explained already returns its summary without making an
    executor (no Ray). ``fail_fast``: stop at the first error row, raising FailFast with its reason
    (for debugging a config; the rows written so far stay, and a re-run resumes). ``executor``:
    makes the executor from the config (default ``RayExecutor``: connects to or starts Ray as
    needed; ``pipelines.executor.LocalExecutor`` runs everything in this process).
    """
    output = Path(config.output)
    with locked(output):
        for stale in output.glob(TEMP_PREFIX + "*"):
            stale.unlink(missing_ok=True)  # left by a killed run
        check_job_file(config, output)
        summary = JobSummary(output=str(output))
        finished = read_finished(output, summary)
        if all_finished(config, finished, limit):
            summary.examples_skipped = len(finished) if limit is None else min(limit, len(finished))
            summary.finish(output)
            logger.info("spex-ray: nothing to do, every example is explained already: %s", summary.describe())
            return summary
        if executor is None:
            from pipelines.ray_executor import RayExecutor  # Ray and the scorer actors, loaded when used

            executor = RayExecutor
        with executor(config) as running:
            return _run(config, output, limit, summary, finished, fail_fast, running)


def _run(config: JobConfig, output: Path, limit: int | None, summary: JobSummary, finished: set[str],
         fail_fast: bool, executor: Executor) -> JobSummary:
    """Read what earlier runs left, start the backend replicas, run the job, close it, finish the summary."""
    begin = time.monotonic()
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    name = config.backend["name"]
    cls = backend_class(name)
    makes_targets = cls.makes_targets
    spec = _backend_spec(config, output, cls)
    resume = ResumeState.read(output, run_id, finished, makes_targets=makes_targets,
                              charged=cls.shared_limits(spec) is not None)
    spec, limiter = executor.shared_limiter(cls, spec, resume.usage.cost_usd)
    journal = None if limiter is None else ((output / JOURNAL_DIR).resolve(), run_id)
    outputs = None
    try:
        infos = executor.start(name, spec, journal)
        record_job_file(config, output)
        outputs = Outputs(config, output, run_id, infos[0]["backend"], resume.usage, summary, makes_targets)
        total = count_records(config.input)
        total = total if limit is None else min(total, limit)
        with Progress(total, config.progress, begin) as progress:
            job = Job(config, executor, resume, outputs, progress, summary, limiter=limiter,
                      makes_targets=makes_targets, fail_fast=fail_fast)
            job.run(load_examples(config, limit))
    except BaseException:
        _close(outputs, executor, limiter, summary, quiet=True)
        raise
    _close(outputs, executor, limiter, summary, quiet=False)
    close_run(output, run_id, summary.scorers)
    summary.recovery = summarize_recovery(resume.folded, summary.scorers)
    summary.seconds = time.monotonic() - begin
    if job.stop_reason is not None:
        summary.stopped = (f"{job.stop_reason}; {total - progress.handled} examples are unfinished and the job "
                           "is resumable: run it again to finish them")
    summary.finish(output)
    logger.info("spex-ray: %s", summary.describe())
    return summary


def _backend_spec(config: JobConfig, output: Path, cls: type[Backend]) -> dict[str, Any]:
    """The config's backend section with the masking options it takes and, for a backend that
    keeps state on disk (``Backend.state_dir_option``), that option in the output folder unless set."""
    spec = config.backend_spec(cls.option_names())
    if cls.state_dir_option is not None and spec.get(cls.state_dir_option) is None:
        spec[cls.state_dir_option] = str((output / BATCH_STATE_DIR).resolve())
    return spec


def _close(outputs: Outputs | None, executor: Executor, limiter: Any | None, summary: JobSummary, *,
           quiet: bool) -> None:
    """Flush the writers, stop the executor's replicas and the limiter, their counters into the
    summary. Every step runs; a failing one is logged, and raised after the rest only when not
    ``quiet`` (with ``quiet`` an error is already on its way out, and a clean-up failure must not
    hide it)."""
    def flush() -> None:
        if outputs is not None:
            outputs.flush()

    def stop_replicas() -> None:
        summary.scorers = executor.stats()
        executor.shutdown()

    def stop_limiter() -> None:
        if limiter is not None:
            summary.limiter = limiter.stats()
            limiter.shutdown()

    failures = []
    for step in (flush, stop_replicas, stop_limiter):
        try:
            step()
        except Exception as err:  # every step still runs
            logger.warning("spex-ray: clean-up step %s failed: %s: %s", step.__name__, type(err).__name__, err)
            failures.append(err)
    if failures and not quiet:
        raise failures[0]
