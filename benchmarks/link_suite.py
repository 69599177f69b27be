"""The link choice on the faithfulness suite's reviews: spex-hybrid with and without it.

    python benchmarks/link_suite.py            # the faithfulness suite's reviews and b's
    python benchmarks/link_suite.py --quick    # its quick suite

For every review task of ``benchmarks/faithfulness.py`` (../shared/data/sentiment.csv, VADER's
compound score, words removed) and each of its b, spex-hybrid's SPEX design at b is fitted on the
same values twice: in the output's units (``link="identity"``, what the suite's table measures)
and through ``fit_with_link(..., "auto")`` (``explain``'s default). R² on the suite's 1,000
held-out uniform masks; fit CPU seconds (process time) of both. Prints one row per group and b.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.adaptive_suite import row_groups, suite_designs  # noqa: E402
from benchmarks.faithfulness import DEFAULT, QUICK, SENTIMENT_CSV, sentiment_tasks  # noqa: E402
from spex_ray import faithfulness  # noqa: E402
from spex_ray.link_fit import fit_with_link  # noqa: E402


def run(tasks, log) -> list[dict]:
    """One row per task and b: R² and fit CPU seconds without and with the link choice."""
    rows = []
    for task, b, method, values, holdout, truth in suite_designs(tasks):
        start = time.process_time()
        plain = method.fit(values)
        middle = time.process_time()
        linked = fit_with_link(method, values, "auto")
        rows.append({"group": task.group, "id": task.example_id, "n": task.n, "b": b,
                     "queries": method.num_queries, "link": linked.link,
                     "identity_r2": faithfulness(plain, holdout, truth),
                     "auto_r2": faithfulness(linked, holdout, truth),
                     "identity_fit_s": middle - start, "auto_fit_s": time.process_time() - middle})
        log(rows[-1])
    return rows


def summary(rows: list[dict]) -> str:
    """The Markdown table: per group and b, and a total line."""
    lines = ["| group | b | ex. | queries | links chosen | mean R² identity | mean R² auto | fit CPU s identity "
             "| fit CPU s auto |", "|---|---|---|---|---|---|---|---|---|"]
    for group, b, part in row_groups(rows):
        links = ", ".join(f"{name} {count}" for name, count in Counter(r["link"] for r in part).most_common())
        lines.append(f"| {group} | {'' if b is None else b} | {len(part)} | "
                     f"{int(np.mean([r['queries'] for r in part])):,} | {links} | "
                     f"{np.mean([r['identity_r2'] for r in part]):.3f} | {np.mean([r['auto_r2'] for r in part]):.3f} | "
                     f"{sum(r['identity_fit_s'] for r in part):.1f} | {sum(r['auto_fit_s'] for r in part):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the faithfulness suite's quick tasks")
    args = parser.parse_args(argv)
    if not SENTIMENT_CSV.exists():
        print(f"{SENTIMENT_CSV} is absent: no reviews to run", file=sys.stderr)
        return 1
    rows = run(sentiment_tasks(QUICK if args.quick else DEFAULT), lambda row: print(row, file=sys.stderr, flush=True))
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
