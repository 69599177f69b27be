"""Held-out check of ``spex_ray.explain``'s defaults on reviews written for this project.

    python benchmarks/heldout_check.py                     # budgets 1000 and 5000: the default, ProxySPEX
    python benchmarks/heldout_check.py --methods spex-soft --budgets 1000 --limit 4

Reviews: ``benchmarks/data/heldout_reviews.jsonl`` (16 film reviews of 63–170 words, written for
this check before any method was measured on them, never part of the faithfulness suite).
Features are words, masked words are removed, the value is VADER's compound score. Every call is
``spex_ray.explain(value_fn, n, budget=B)`` with the defaults but ``method`` ("default": none
given; "adaptive": none given and ``adaptive=True``, the budget a cap; "identity": none given and
``link="identity"``, no link weighed). R² is measured on 500 uniform masks drawn apart from every design; the table gives the
queries each call used (rows the value function saw), the median and lowest R², and the CPU
seconds of the fit (explain's time less the value function's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.backends.vader import VaderBackend  # noqa: E402
from connectors.base import Example  # noqa: E402
from spex_ray import explain, faithfulness, uniform_masks  # noqa: E402

REVIEWS = ROOT / "benchmarks" / "data" / "heldout_reviews.jsonl"
HOLDOUT = 500
HOLDOUT_SEED = 2024


def load_examples(path: Path = REVIEWS) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Example.from_text(row["id"], row["text"]) for row in rows]


def run(examples: list[Example], budgets: list[int], methods: list[str]) -> list[dict]:
    """One row per (example, budget, method): queries used, R² on the held-out masks, fit CPU seconds."""
    backend = VaderBackend()
    for method in methods:  # imports (scikit-learn, LightGBM) out of the first row's fit time
        explain(lambda masks: masks.sum(axis=1).astype(float), 20, budget=300, **_options(method))
    rows = []
    for example in examples:
        def vader(masks, example=example):
            return np.array([s.value for s in backend.score(example, masks)])

        holdout = uniform_masks(example.n, HOLDOUT, seed=HOLDOUT_SEED)
        truth = vader(holdout)
        for budget in budgets:
            for method in methods:
                used, scoring = [0], [0.0]

                def counted(masks):
                    start = time.process_time()
                    used[0] += len(masks)
                    values = vader(masks)
                    scoring[0] += time.process_time() - start
                    return values

                start = time.process_time()
                result = explain(counted, example.n, budget=budget, **_options(method))
                rows.append({"id": example.example_id, "n": example.n, "budget": budget, "method": method,
                             "used": used[0], "r2": faithfulness(result, holdout, truth),
                             "fit_cpu_s": time.process_time() - start - scoring[0]})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _options(method: str) -> dict:
    """explain's keyword arguments for a ``--methods`` name."""
    named = {"default": {}, "adaptive": {"adaptive": True}, "identity": {"link": "identity"},
             "proxyspex-identity": {"method": "proxyspex", "link": "identity"}}
    return named.get(method, {"method": method})


def summary(rows: list[dict], budgets: list[int], methods: list[str]) -> str:
    lines = ["| method | budget | queries used (min–max) | used / budget | median R² | lowest R² | fit CPU s (median) |",
             "|---|---|---|---|---|---|---|"]
    for method in methods:
        for budget in budgets:
            part = [r for r in rows if r["budget"] == budget and r["method"] == method]
            used, r2 = [r["used"] for r in part], [r["r2"] for r in part]
            lines.append(f"| {method} | {budget:,} | {min(used):,}–{max(used):,} | "
                         f"{min(used) / budget:.1%}–{max(used) / budget:.1%} | {np.median(r2):.3f} | {min(r2):.3f} | "
                         f"{np.median([r['fit_cpu_s'] for r in part]):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--methods", nargs="+", default=["default", "proxyspex"],
                        help="explain's methods ('default': explain's default; 'adaptive': it with adaptive=True; "
                             "'identity': it with link='identity'; 'proxyspex-identity')")
    parser.add_argument("--limit", type=int, help="first N reviews only")
    args = parser.parse_args(argv)
    rows = run(load_examples()[: args.limit], args.budgets, args.methods)
    print(summary(rows, args.budgets, args.methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
