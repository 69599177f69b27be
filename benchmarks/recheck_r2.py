"""Re-check every stored explanation of a VADER job against the R² its row reports.

    spex-ray run configs/demo.yaml --output demo-output
    python benchmarks/recheck_r2.py demo-output            # 500 fresh masks per example

Each ok row with a ``faithfulness_r2`` is rebuilt with ``Interactions.from_row`` and scored two
ways: on the job's own held-out masks (their values read back from the query log: must equal the
row's R² to rounding), and on fresh uniform masks scored by VADER again, which agrees up to the
sampling error of both estimates: ``z`` is the gap over its bootstrap standard error (resampling
the masks of each). Prints one line per row and the largest gaps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.backends.vader import VaderBackend  # noqa: E402
from pipelines.config import config_from_dict  # noqa: E402
from pipelines.inputs import load_examples  # noqa: E402
from pipelines.method import MethodSpec  # noqa: E402
from pipelines.parts import read_parts  # noqa: E402
from spex_ray import Interactions, faithfulness, uniform_masks  # noqa: E402
from pipelines.schema import EXPLANATION_SCHEMA, QUERY_LOG_SCHEMA  # noqa: E402

FRESH_SEED = 2025
BOOTSTRAP = 1000


def r2_and_se(predicted: np.ndarray, values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """R² of ``predicted`` against ``values`` and its bootstrap standard error over the masks."""
    def r2(p, y):
        return 1.0 - np.sum((y - p) ** 2, axis=-1) / np.sum((y - y.mean(axis=-1, keepdims=True)) ** 2, axis=-1)

    picks = rng.integers(0, len(values), size=(BOOTSTRAP, len(values)))
    return float(r2(predicted, values)), float(np.std(r2(predicted[picks], values[picks])))


def recheck(output: Path, fresh: int) -> list[dict]:
    """One dict per ok row with an R²: example, index, stored R², R² on the logged held-out values
    and on ``fresh`` new masks."""
    config = config_from_dict(json.loads((output / "job.json").read_text())["config"])
    spec = MethodSpec.from_config(config)
    examples = {example.example_id: example for example in load_examples(config)}
    log = read_parts(output / "querylog", QUERY_LOG_SCHEMA, ["example_id", "query_id", "value"]).to_pylist()
    logged: dict[str, dict[int, float]] = {}
    for row in log:
        logged.setdefault(row["example_id"], {})[row["query_id"]] = row["value"]
    backend = VaderBackend(**{k: v for k, v in config.backend.items() if k != "name"})
    results, truth, rng = [], {}, np.random.default_rng(0)
    for row in read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist():
        if row["status"] != "ok" or row["faithfulness_r2"] is None:
            continue
        example = examples[row["example_id"]]
        layout = spec.layout(example.n)
        held_out = np.array([logged[example.example_id][q] for q in range(layout.num_design, layout.full_id)])
        masks = uniform_masks(example.n, fresh, seed=FRESH_SEED)
        if example.example_id not in truth:
            truth[example.example_id] = np.array([s.value for s in backend.score(example, masks)])
        interactions = Interactions.from_row(row)
        _, stored_se = r2_and_se(interactions.predict(layout.holdout_masks()), held_out, rng)
        fresh_r2, fresh_se = r2_and_se(interactions.predict(masks), truth[example.example_id], rng)
        results.append({
            "example_id": row["example_id"], "index": row["index"], "stored": row["faithfulness_r2"],
            "query_log": faithfulness(interactions, layout.holdout_masks(), held_out), "fresh": fresh_r2,
            "z": (fresh_r2 - row["faithfulness_r2"]) / max(np.hypot(stored_se, fresh_se), 1e-12),
        })
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="a VADER job's output folder")
    parser.add_argument("--fresh", type=int, default=500, help="fresh uniform masks per example")
    args = parser.parse_args()
    results = recheck(args.output, args.fresh)
    for r in results:
        print(f"{r['example_id']:12s} {r['index']:8s} stored {r['stored']:.4f}  query log {r['query_log']:.4f}  "
              f"fresh {r['fresh']:.4f}  z {r['z']:+.1f}")
    log_gap = max(abs(r["query_log"] - r["stored"]) for r in results)
    fresh_gap = np.array([abs(r["fresh"] - r["stored"]) for r in results])
    print(f"{len(results)} rows: largest |query log - stored| {log_gap:.2e}; |fresh - stored|: "
          f"max {fresh_gap.max():.3f}, median {np.median(fresh_gap):.3f}, {int((fresh_gap > 0.05).sum())} above 0.05; "
          f"|z| max {max(abs(r['z']) for r in results):.1f}, {sum(abs(r['z']) > 2 for r in results)} above 2")


if __name__ == "__main__":
    main()
