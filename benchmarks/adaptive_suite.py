"""Adaptive budgets on the faithfulness suite: queries saved at equal R² against the fixed design.

    python benchmarks/adaptive_suite.py            # the faithfulness suite's tasks and b's
    python benchmarks/adaptive_suite.py --quick    # its quick suite

For every task of ``benchmarks/faithfulness.py`` (planted functions; reviews of
../shared/data/sentiment.csv scored by VADER) and each of its b, spex-hybrid's SPEX design at b is
fitted whole (the fixed design) and with adaptive budgets capped at it (``fit_adaptive``: stages
that reuse every earlier query; stop after the first stage that raises the cross-validated R² by
less than 0.01), on the same values. R² on the suite's 1,000 held-out uniform masks against the
noiseless function. Prints one row per group and b: queries of both, the share saved, mean R² of
both and the largest R² lost by one example.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.faithfulness import (  # noqa: E402
    DEFAULT, HOLDOUT, HOLDOUT_SEED, QUICK, SENTIMENT_CSV, planted_tasks, sentiment_tasks)
from spex_ray import faithfulness, plan_method, uniform_masks  # noqa: E402
from spex_ray.adaptive import fit_adaptive  # noqa: E402


def suite_designs(tasks) -> Iterator[tuple]:
    """(task, b, method, values, holdout, truth) per task and b: spex-hybrid at SPEX's design at b,
    the task's values of its queries, the suite's held-out masks and their noiseless values."""
    for task in tasks:
        holdout = uniform_masks(task.n, HOLDOUT, seed=HOLDOUT_SEED)
        truth = task.clean_fn(holdout)
        for b in task.bs:
            method = plan_method("spex-hybrid", task.n, b=b)
            yield task, b, method, task.value_fn(method.design.masks()), holdout, truth


def run(tasks, log) -> list[dict]:
    """One row per task and b: queries and R² of the fixed design and of adaptive budgets."""
    rows = []
    for task, b, method, values, holdout, truth in suite_designs(tasks):
        start = time.process_time()
        fixed = method.fit(values)
        fixed_s = time.process_time() - start
        adaptive = fit_adaptive(method, lambda first, last, values=values: values[first:last])
        rows.append({"group": task.group, "id": task.example_id, "n": task.n, "b": b,
                     "fixed_queries": method.num_queries, "adaptive_queries": adaptive.queries,
                     "fixed_r2": faithfulness(fixed, holdout, truth),
                     "adaptive_r2": faithfulness(adaptive.interactions, holdout, truth),
                     "fixed_fit_s": fixed_s, "adaptive_fit_s": time.process_time() - start - fixed_s})
        log(rows[-1])
    return rows


def row_groups(rows: list[dict]) -> Iterator[tuple[str, int | None, list[dict]]]:
    """(group, b, its rows) for each group and b in order of appearance, then ("all", None, rows)."""
    for group, b in dict.fromkeys((row["group"], row["b"]) for row in rows):
        yield group, b, [row for row in rows if (row["group"], row["b"]) == (group, b)]
    yield "all", None, rows


def summary(rows: list[dict]) -> str:
    """The Markdown table: per group and b, and a total line."""
    lines = ["| group | b | ex. | queries fixed | queries adaptive | saved | mean R² fixed | mean R² adaptive "
             "| largest R² lost |", "|---|---|---|---|---|---|---|---|---|"]
    for group, b, part in row_groups(rows):
        fixed, adaptive = sum(r["fixed_queries"] for r in part), sum(r["adaptive_queries"] for r in part)
        lost = max(r["fixed_r2"] - r["adaptive_r2"] for r in part)
        lines.append(f"| {group} | {'' if b is None else b} | {len(part)} | {fixed:,} | {adaptive:,} | "
                     f"{1 - adaptive / fixed:.0%} | {np.mean([r['fixed_r2'] for r in part]):.3f} | "
                     f"{np.mean([r['adaptive_r2'] for r in part]):.3f} | {lost:+.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the faithfulness suite's quick tasks")
    parser.add_argument("--only", choices=("planted", "sentiment"), help="run one data set")
    args = parser.parse_args(argv)
    suite = QUICK if args.quick else DEFAULT
    tasks = [] if args.only == "sentiment" else planted_tasks(suite)
    if args.only != "planted":
        if SENTIMENT_CSV.exists():
            tasks += sentiment_tasks(suite)
        else:
            print(f"skipping the reviews: {SENTIMENT_CSV} is absent", file=sys.stderr)
    rows = run(tasks, lambda row: print(row, file=sys.stderr, flush=True))
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
