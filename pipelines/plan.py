"""Dry run: what a job would query, without querying anything.

Counts examples, features per example, queries per example and in total (design, held-out,
full/empty). A backend class may give its own estimate (prompt tokens, dollars, seconds) from
its classmethod ``Backend.estimate(examples, num_queries, **options)``: ``examples`` the
plannable Examples, ``num_queries`` their query counts (same order), ``options`` the config's
backend options with the masking settings the backend takes. Without one, the time is estimated
from the latencies in the output folder's query log (a previous or partial run of the same job)
when there is one, else, for a backend cheap to run here (``Backend.timed_in_process``), from a
few calls timed in this process.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from connectors.base import Example, backend_class, build_backend
from pipelines.backends import backend_options
from pipelines.config import JobConfig
from pipelines.inputs import BadInput, load_examples
from pipelines.method import MethodSpec
from pipelines.parts import QUERY_LOG_DIR, read_parts
from pipelines.schema import QUERY_LOG_SCHEMA

_SHOWN_ERRORS = 5
# Seconds from `spex-ray run` to the first query: a fresh local Ray (2-core machine: ray.init,
# two scorer actors importing their backend, and the shutdown at the end), or joining a cluster.
RAY_START_SECONDS = 20.0
RAY_JOIN_SECONDS = 5.0
_TIMED_EXAMPLES = 4
_TIMED_MASKS = 64


@dataclass
class JobPlan:
    """The numbers of a dry run."""

    examples: int = 0
    features: list[int] = field(default_factory=list)
    design_queries: list[int] = field(default_factory=list)
    holdout: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    estimate: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float | None = None  # CPU-s of one fit of the median-size example, timed here
    ray_start_seconds: float = 0.0  # Ray's start-up and the scorer actors' (or joining a cluster)
    fit_cpus: int = 1  # fits run at once: at most one per scorer actor, at most the CPUs here

    def wall_seconds(self, scoring: float | None, cpu_bound: bool) -> float | None:
        """The job's wall time: Ray's start-up, the scoring (``scoring`` seconds over the actors)
        and the fitting spread over ``fit_cpus``; a CPU-bound backend's scoring shares the
        CPUs with the fitting (the times add), another's overlaps it (the longer counts, plus
        the last fit). None without a scoring estimate."""
        if scoring is None:
            return None
        fitting = (self.fit_seconds or 0.0) * len(self.features) / self.fit_cpus
        busy = scoring + fitting if cpu_bound else max(scoring, fitting) + (self.fit_seconds or 0.0)
        return self.ray_start_seconds + busy

    @property
    def total_queries(self) -> int:
        return sum(self.design_queries) + (self.holdout + 2) * len(self.design_queries)


def plan_job(config: JobConfig, limit: int | None = None) -> JobPlan:
    """Featurize and plan every example (at most ``limit``); nothing is sent to the backend."""
    spec = MethodSpec.from_config(config)
    plan = JobPlan(holdout=config.holdout)
    plannable: list[Example] = []
    for item in load_examples(config, limit):
        plan.examples += 1
        if isinstance(item, BadInput):
            plan.errors.append((item.example_id, item.error))
            continue
        try:
            queries = spec.method_for(item.n).num_queries
        except ValueError as err:
            plan.errors.append((item.example_id, f"cannot plan {config.method}: {err}"))
            continue
        plannable.append(item)
        plan.features.append(item.n)
        plan.design_queries.append(queries)
    plan.estimate = _estimate(config, plannable, [q + config.holdout + 2 for q in plan.design_queries])
    if plannable:
        median = sorted(plannable, key=lambda example: example.n)[len(plannable) // 2]
        plan.fit_seconds = _time_fit(config, spec, median)
    plan.ray_start_seconds = RAY_JOIN_SECONDS if config.ray.address else RAY_START_SECONDS
    plan.fit_cpus = max(1, min(config.ray.num_actors, os.cpu_count() or 1))
    return plan


def _time_fit(config: JobConfig, spec: MethodSpec, example: Example) -> float:
    """CPU seconds of one fit of the method on ``example``'s design. A fit's cost depends on the
    values (tree searches grow with the structure they find), so the values are the backend's own
    where it is cheap to run here (``timed_in_process``), else a planted sparse function."""
    method = spec.method_for(example.n)
    masks = method.design.masks()
    if backend_class(config.backend["name"]).timed_in_process:
        backend = build_backend(config.backend_spec(backend_options(config.backend["name"])))
        try:
            values = np.array([score.value for score in backend.score(example, masks)], dtype=float)
        finally:
            backend.close()
    else:
        values = _planted_values(masks)
    begin = time.process_time()
    method.fit(values)
    return time.process_time() - begin


def _planted_values(masks: np.ndarray) -> np.ndarray:
    """A sparse function of the masks (half the features and n/4 pairs, 5% noise) to time a fit on."""
    rng = np.random.default_rng(0)
    n = masks.shape[1]
    linear = rng.normal(size=n) * (rng.random(n) < 0.5)
    pairs = rng.integers(0, n, size=(max(1, n // 4), 2))
    weights = 0.5 * rng.normal(size=len(pairs))
    values = masks @ linear + (weights * masks[:, pairs[:, 0]] * masks[:, pairs[:, 1]]).sum(axis=1)
    return values + 0.05 * rng.normal(size=len(masks))


def _estimate(config: JobConfig, examples: list[Example], num_queries: list[int]) -> dict[str, Any]:
    name = config.backend["name"]
    spec = config.backend_spec(backend_options(name))
    options = {key: value for key, value in spec.items() if key != "name"}
    cls = backend_class(name)
    estimate = cls.estimate(examples, num_queries, **options)
    if estimate is not None:
        return dict(estimate)
    latency = read_parts(Path(config.output) / QUERY_LOG_DIR, QUERY_LOG_SCHEMA, ["latency_ms"]).column("latency_ms")
    measured = latency.drop_null().to_numpy()
    if measured.size:
        per_query = float(np.mean(measured)) / 1e3
        basis = f"{measured.size} logged queries in {config.output}"
    elif cls.timed_in_process and examples:
        per_query, timed = _time_in_process(spec, examples)
        basis = f"{timed} queries timed in this process"
    else:
        return {}
    return {
        "seconds": per_query * sum(num_queries) / config.ray.num_actors,
        "basis": f"{basis}, {per_query * 1e3:.3g} ms each, {config.ray.num_actors} actors",
    }


def _time_in_process(spec: dict[str, Any], examples: list[Example]) -> tuple[float, int]:
    """(seconds per query, queries timed): a backend built here scores random masks (each feature
    kept with probability 1/2) of the first few examples."""
    rng = np.random.default_rng(0)
    backend = build_backend(spec)
    try:
        seconds = 0.0
        timed = 0
        for example in examples[:_TIMED_EXAMPLES]:
            keep = rng.random((_TIMED_MASKS, example.n)) < 0.5
            begin = time.perf_counter()
            backend.score(example, keep)
            seconds += time.perf_counter() - begin
            timed += len(keep)
    finally:
        backend.close()
    return seconds / timed, timed


def describe(config: JobConfig, plan: JobPlan) -> str:
    """The plan as text for a terminal."""
    sizing = f"budget={config.budget}" if config.budget is not None else f"b={config.b}, t={config.t}"
    sizing += ", adaptive: the design queries are a cap" if config.adaptive else ""
    lines = [
        f"input: {config.input.path} ({config.input.format})",
        f"examples: {plan.examples} ({len(plan.features)} plannable, {len(plan.errors)} with errors)",
        f"method: {config.method} ({sizing}); indices: {', '.join(config.indices)} up to order {config.max_order}",
        f"backend: {config.backend['name']}; {config.ray.num_actors} actors",
    ]
    if plan.features:
        lines.append(f"features per example ({config.featurizer.unit}): {_spread(plan.features)}")
        lines.append(f"design queries per example: {_spread(plan.design_queries)}")
        lines.append(f"held-out queries per example: {plan.holdout} (+2: all kept, all masked)")
        held_out = (plan.holdout + 2) * len(plan.design_queries)
        lines.append(f"total queries: {plan.total_queries:,} (design {sum(plan.design_queries):,}, "
                     f"held-out and full/empty {held_out:,})")
    for example_id, error in plan.errors[:_SHOWN_ERRORS]:
        lines.append(f"error: {example_id}: {error}")
    if len(plan.errors) > _SHOWN_ERRORS:
        lines.append(f"... and {len(plan.errors) - _SHOWN_ERRORS} more errors")
    if plan.fit_seconds is not None:
        total = plan.fit_seconds * len(plan.features)
        lines.append(f"fit: {plan.fit_seconds:.2g} s per example on one CPU (timed on the median-size "
                     f"example); {total:,.0f} CPU-s in all, {plan.fit_cpus} at once")
    lines += _estimate_lines(config, plan)
    return "\n".join(lines)


def _estimate_lines(config: JobConfig, plan: JobPlan) -> list[str]:
    """The headline wall time (Ray's start-up, scoring, fitting), dollars as dollars, the rest."""
    estimate = dict(plan.estimate)
    scoring = estimate.pop("seconds", None)
    cpu_bound = backend_class(config.backend["name"]).timed_in_process
    lines = []
    wall = plan.wall_seconds(scoring, cpu_bound)
    if wall is not None:
        fitting = (plan.fit_seconds or 0.0) * len(plan.features)
        lines.append(f"estimate: wall time: {_duration(wall)} = Ray start-up ~{plan.ray_start_seconds:.0f} s + "
                     f"scoring {_duration(scoring)} on {config.ray.num_actors} actors "
                     f"{'+' if cpu_bound else 'beside'} fitting {fitting:,.0f} CPU-s over {plan.fit_cpus} CPUs")
    else:
        lines.append("estimate: wall time unknown (the backend gives no estimate and no earlier run has logged "
                     "latencies); Ray start-up and fitting alone: "
                     f"{_duration(plan.wall_seconds(0.0, True) or 0.0)}")
    if "usd_online" in estimate:
        lines.append(f"estimate: dollars: ${estimate.pop('usd_online'):,.2f} online, "
                     f"${estimate.pop('usd_batch', float('nan')):,.2f} with the Batch API")
    lines += [f"estimate: {key}: {_format(key, value)}" for key, value in estimate.items()]
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds < 120 else f"{seconds:,.0f} s ({seconds / 3600:.2f} h)"


def _spread(values: list[int]) -> str:
    return f"min {min(values):,} / median {float(np.median(values)):,.0f} / max {max(values):,}"


def _format(key: str, value: Any) -> str:
    if ("dollars" in key or "usd" in key) and isinstance(value, (int, float)):
        return f"${value:,.2f}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
