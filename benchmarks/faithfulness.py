"""Faithfulness benchmark (issue 6): every method at the same query budget, on planted functions and
on the sentiment reviews explained through the embedded VADER model.

    python benchmarks/faithfulness.py            # default suite (< 30 min on the 2-core machine)
    python benchmarks/faithfulness.py --quick    # < 2 min: the test runs this
    python benchmarks/faithfulness.py --pipeline-output demo-output   # adds a finished job's R²
    python benchmarks/faithfulness.py --setup    # first builds the bench venv (+ shapiq) if absent

For each example and budget (the SPEX query count C·(p+1)·2^b at each b) it measures
- faithfulness R² = 1 − ‖y − ŷ‖²/‖y − ȳ‖² on 1000 held-out uniform masks (planted: against the
  noiseless function, so noise in the training values costs R² only through a worse fit);
- the top-k removal test: rank features by the explanation's first-order value (Banzhaf value
  −2F({i}) for Fourier explanations, the Shapley value for KernelSHAP, the weight for LIME), in
  the direction of f(all kept) − mean f, remove the top k (k = 1..10) from the full input and
  record direction·(f(all kept) − f(removed)): larger = the ranking found what drives the output.

Methods: spex-ray SPEX hard/soft decoding, refit None or "ls"; spex-hybrid (the pipeline's default:
SPEX's support plus boosted-tree terms, chosen by nested cross-validation on the same queries); the reference SPEX
(sparse-transform 0.2.1, hard and soft, no refit — the released package's behaviour) on its own
masks through ``reference_oracle``; ProxySPEX (spex-ray's, LightGBM trees); LASSO and
Faith-Banzhaf of order 1 and 2 (order 2 only while the design has at most ``ORDER2_MAX_ENTRIES``
entries); KernelSHAP (shapiq, in the bench venv, on its own masks); a LIME-style kernel-weighted
ridge on uniform masks. Uniform-mask methods share one nested set of uniform masks; spex-ray's
SPEX designs are nested too, so each example queries its largest b once.

Data: planted parity-type (20 Fourier terms of order ≤ 5) and AND-type (20 Möbius terms of order
≤ 4) functions, noiseless or with Gaussian noise at SNR 10 dB on the training queries; reviews of
../shared/data/sentiment.csv beside the checkout (words as features, VADER compound score, masked words removed)
grouped by n as in the SPEX paper. The default suite samples a few reviews per bucket (fewer for the
long ones, where VADER and the fits cost most) and the tables' ``ex.`` column says how many each
row averages; reviews whose VADER score never changes on 16 probe masks are skipped. KernelSHAP's
R² is that of its additive model v(∅) + Σ φ_i x_i.

Outputs (``--out``, default benchmarks/results): ``faithfulness.parquet`` (one row per example,
method and budget), ``faithfulness.md`` (the Markdown tables, also printed) and
``faithfulness.png`` (R² against queries, one panel per row group; needs matplotlib).
Rows that could not run say why in ``status``/``note`` (skipped for size, reference timeout,
shapiq or the bench venv missing). Tasks not started before ``--time-limit`` minutes are listed as
"not run".
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from planted import evaluate_fourier, mobius_to_fourier, planted_fourier, planted_mobius  # noqa: E402

from benchmarks.faithfulness_methods import additive, first_order, fit_lime, removal_curve  # noqa: E402
from benchmarks.faithfulness_report import write_outputs  # noqa: E402
from benchmarks.reference import ensure_reference_env  # noqa: E402
from benchmarks.reference_oracle import ReferenceOracle, install_shapiq, shapiq_available  # noqa: E402
from spex_ray import Interactions, faithfulness, plan_method, spex_num_queries, uniform_masks  # noqa: E402
from spex_ray.baselines import fit_faith_banzhaf, fit_lasso, fit_proxyspex  # noqa: E402
from spex_ray.design import UniformDesign  # noqa: E402

SENTIMENT_CSV = ROOT.parent / "shared" / "data" / "sentiment.csv"
HOLDOUT = 1000
HOLDOUT_SEED = 12345
MAX_K = 10
#: Masks that probe a review before it is used: one whose VADER score never changes is skipped.
PROBES = 16
NOISY_SNR_DB = 10.0
#: Order-2 LASSO / Faith-Banzhaf run only while masks × terms stays below this (time and memory).
ORDER2_MAX_ENTRIES = 2**24
#: n buckets of the sentiment reviews, as in the SPEX paper: [8, 16), [16, 32), ..., [1024, ∞).
BUCKET_EDGES = (8, 16, 32, 64, 128, 256, 512, 1024)

SPEX_VARIANTS = (("spex-hard", None), ("spex-hard", "ls"), ("spex-soft", None), ("spex-soft", "ls"))
METHODS = ("spex-hybrid", "spex-hard", "spex-hard+ls", "spex-soft", "spex-soft+ls", "ref-spex-hard", "ref-spex-soft",
           "proxyspex", "lasso-1", "lasso-2", "faith-banzhaf-1", "faith-banzhaf-2", "kernelshap", "lime")


@dataclass(frozen=True)
class Suite:
    """What to run. planted: (family, noisy, n, bs); sentiment: bucket low edge -> (examples, bs)."""

    name: str
    planted: tuple[tuple[str, bool, int, tuple[int, ...]], ...]
    sentiment: dict[int, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    reference_timeout_s: float = 90.0
    time_limit_min: float = 29.0


DEFAULT = Suite(
    name="default",
    planted=(
        *((family, noisy, 32, (4, 6, 8) if not noisy else (4, 6)) for family in ("parity", "and") for noisy in (False, True)),
        *((family, noisy, 256, (4, 6)) for family in ("parity", "and") for noisy in (False, True)),
        *((family, False, 1000, (4, 6)) for family in ("parity", "and")),
    ),
    sentiment={8: (3, (4, 6, 8)), 16: (3, (4, 6, 8)), 32: (2, (4, 6, 8)), 64: (2, (4, 6)),
               128: (2, (4, 6)), 256: (1, (4, 6)), 512: (1, (4,)), 1024: (1, (4,))},
    reference_timeout_s=60.0,
)
QUICK = Suite(
    name="quick",
    planted=tuple((family, noisy, 32, (4,)) for family in ("parity", "and") for noisy in (False, True)),
    sentiment={8: (1, (4,))},
    reference_timeout_s=30.0,
    time_limit_min=1.7,
)


@dataclass
class Task:
    """One example: ``value_fn`` answers the methods' queries, ``clean_fn`` the held-out and removal masks."""

    dataset: str
    group: str
    example_id: str
    n: int
    bs: tuple[int, ...]
    value_fn: Callable[[np.ndarray], np.ndarray]
    clean_fn: Callable[[np.ndarray], np.ndarray]
    info: dict


class Counted:
    """A value function that counts its rows and seconds (and caches values by mask when ``cache``)."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], cache: bool = False):
        self.fn, self.cache = fn, {} if cache else None
        self.rows, self.seconds = 0, 0.0

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        masks = np.asarray(masks, dtype=bool)
        if self.cache is None:
            values = np.asarray(self.fn(masks), dtype=np.float64)
            self.rows += len(masks)
        else:
            keys = [row.tobytes() for row in np.packbits(masks, axis=1)]
            missing = {}
            for i, key in enumerate(keys):
                if key not in self.cache and key not in missing:
                    missing[key] = i
            if missing:
                fresh = np.asarray(self.fn(masks[list(missing.values())]), dtype=np.float64)
                self.cache.update(zip(missing, fresh.tolist()))
                self.rows += len(missing)
            values = np.array([self.cache[key] for key in keys])
        self.seconds += time.perf_counter() - start
        return values


def planted_tasks(suite: Suite) -> list[Task]:
    tasks = []
    for family, noisy, n, bs in suite.planted:
        if family == "parity":
            truth = planted_fourier(n, 20, 5, seed=n)
        else:
            truth = mobius_to_fourier(planted_mobius(n, 20, 4, seed=n))
        clean = Counted(lambda masks, truth=truth: evaluate_fourier(truth, masks))
        sigma = 0.0
        if noisy:
            variance = float(np.var(evaluate_fourier(truth, uniform_masks(n, HOLDOUT, seed=HOLDOUT_SEED))))
            sigma = float(np.sqrt(variance / 10 ** (NOISY_SNR_DB / 10)))
        rng = np.random.default_rng([n, 7])
        train = clean if not noisy else Counted(
            lambda masks, truth=truth, sigma=sigma, rng=rng: evaluate_fourier(truth, masks) + rng.normal(0.0, sigma, len(masks))
        )
        label = f"{'AND' if family == 'and' else 'parity'}, n={n}, {f'SNR {NOISY_SNR_DB:.0f} dB' if noisy else 'noiseless'}"
        tasks.append(Task("planted", label, f"{family}-{n}-{'noisy' if noisy else 'clean'}", n, bs, train, clean,
                          {"family": family, "noise_sigma": sigma, "terms": len(truth)}))
    return tasks


def bucket_label(low: int) -> str:
    following = [e for e in BUCKET_EDGES if e > low]
    return f"{low}–{following[0] - 1}" if following else f"{low}+"


def sentiment_tasks(suite: Suite, csv_path: Path = SENTIMENT_CSV) -> list[Task]:
    if not suite.sentiment:
        return []
    from connectors.backends.vader import VaderBackend
    from connectors.base import Example

    csv.field_size_limit(sys.maxsize)
    with open(csv_path, newline="") as handle:
        reviews = [row["review"] for row in csv.DictReader(handle)]
    examples = [Example.from_text(f"review-{i}", text) for i, text in enumerate(reviews)]
    backend = VaderBackend()
    tasks = []
    for low, (count, bs) in sorted(suite.sentiment.items()):
        high = min([e for e in BUCKET_EDGES if e > low], default=sys.maxsize)
        members = [ex for ex in examples if low <= ex.n < high]
        order = np.random.default_rng(low).permutation(len(members))
        chosen, constant = [], 0
        for index in order.tolist():
            if len(chosen) == count:
                break
            example = members[index]

            def vader(masks, example=example):
                return np.array([score.value for score in backend.score(example, masks)], dtype=np.float64)

            fn = Counted(vader, cache=True)
            probe = np.vstack([np.ones((1, example.n), dtype=bool), uniform_masks(example.n, PROBES, seed=1)])
            if np.ptp(fn(probe)) == 0.0:
                constant += 1  # VADER sees no sentiment words: every explanation is trivially exact
                continue
            chosen.append(Task("sentiment", f"sentiment n {bucket_label(low)}", example.example_id, example.n, bs,
                               fn, fn, {"bucket": bucket_label(low), "bucket_size": len(members)}))
        for task in chosen:
            task.info["constant_skipped"] = constant
        tasks += sorted(chosen, key=lambda task: task.n)
    return tasks


class Evaluator:
    """Scores explanations of one task: R² on the held-out masks and the removal curve."""

    def __init__(self, task: Task):
        self.task = task
        self.holdout = uniform_masks(task.n, HOLDOUT, seed=HOLDOUT_SEED)
        self.holdout_values = task.clean_fn(self.holdout)
        self.full_value = float(task.clean_fn(np.ones((1, task.n), dtype=bool))[0])
        self.direction = 1.0 if self.full_value >= float(np.mean(self.holdout_values)) else -1.0

    def score(self, interactions: Interactions) -> tuple[float, list[float]]:
        r2 = faithfulness(interactions, self.holdout, self.holdout_values)
        removal = removal_curve(self.task.clean_fn, first_order(interactions), self.full_value, self.direction, MAX_K)
        return float(r2), removal.tolist()


def _order2_entries(queries: int, n: int) -> int:
    return queries * (1 + n + n * (n - 1) // 2)


def uniform_fits(proxy_backend: str) -> dict[str, Callable]:
    """name -> fit(masks, values) -> Interactions, or a string saying why it is skipped for those masks."""

    def order2(fit):
        def run(masks, values):
            entries = _order2_entries(*masks.shape)
            if entries > ORDER2_MAX_ENTRIES:
                return f"skipped: order-2 design has {entries:,} entries > {ORDER2_MAX_ENTRIES:,}"
            return fit(masks, values)
        return run

    return {
        "proxyspex": lambda m, v: fit_proxyspex(m, v, backend=proxy_backend),
        "lasso-1": lambda m, v: fit_lasso(m, v, order=1),
        "lasso-2": order2(lambda m, v: fit_lasso(m, v, order=2)),
        "faith-banzhaf-1": lambda m, v: fit_faith_banzhaf(m, v, order=1),
        "faith-banzhaf-2": order2(lambda m, v: fit_faith_banzhaf(m, v, order=2)),
        "lime": fit_lime,
    }


def run_task(task: Task, suite: Suite, oracle: ReferenceOracle, use_shapiq: bool, proxy_backend: str,
             log: Callable[[str], None]) -> list[dict]:
    evaluator = Evaluator(task)
    rows: list[dict] = []
    budgets = {b: spex_num_queries(task.n, b) for b in task.bs}

    def add(method, b, queries, fit, note=""):
        row = {"method": method, "b": b, "num_queries": int(queries), "r2": None, "removal": None,
               "fit_s": None, "status": "ok", "note": note}
        start = time.perf_counter()
        try:
            result = fit() if callable(fit) else fit
        except (ValueError, RuntimeError, MemoryError) as err:
            result = f"error: {type(err).__name__}: {err}"
        row["fit_s"] = time.perf_counter() - start
        if isinstance(result, str):
            row["status"], row["note"] = result.split(":", 1)[0], note or result
        else:
            row["r2"], row["removal"] = evaluator.score(result)
        rows.append(row)

    b_max = max(task.bs)
    spex_values = task.value_fn(plan_method("spex-hard", task.n, b=b_max).design.masks())
    for b in task.bs:
        for method, refit in SPEX_VARIANTS:
            plan = plan_method(method, task.n, b=b, refit=refit)
            add(method + ("+ls" if refit else ""), b, plan.num_queries,
                lambda plan=plan: plan.fit(spex_values[: plan.num_queries]))
        plan = plan_method("spex-hybrid", task.n, b=b, trees=proxy_backend)
        add("spex-hybrid", b, plan.num_queries, lambda plan=plan: plan.fit(spex_values[: plan.num_queries]))
    log(f"spex done ({spex_values.size} values)")

    pool = UniformDesign(task.n, budgets[b_max], seed=0).masks()
    pool_values = task.value_fn(pool)
    for b in task.bs:
        q = budgets[b]
        for method, fit in uniform_fits(proxy_backend).items():
            add(method, b, q, lambda fit=fit, q=q: fit(pool[:q], pool_values[:q]))
    log("uniform-mask methods done")

    parts, status = oracle.run({"case": "spex", "n": task.n, "bs": list(task.bs), "decoders": ["hard", "soft"]},
                               task.value_fn, suite.reference_timeout_s)
    done = {(p["decoder"], p["b"]): p for p in parts}
    for decoder in ("hard", "soft"):
        for b in task.bs:
            part = done.get((decoder, b))
            if part is None:
                if status == "timeout":
                    add(f"ref-spex-{decoder}", b, budgets[b], "timeout",
                        f"reference stopped after {suite.reference_timeout_s:.0f} s (hard decodes run first)")
                else:
                    add(f"ref-spex-{decoder}", b, budgets[b], status if status != "ok" else "error: no result")
                continue
            terms = {tuple(k): v for k, v in part["recovered"] if v != 0.0}
            add(f"ref-spex-{decoder}", b, part["num_queries"], lambda terms=terms: Interactions(terms, task.n, "fourier"))
            rows[-1]["fit_s"] = part["seconds"]
    log(f"reference {status}")

    if not use_shapiq:
        for b in task.bs:
            add("kernelshap", b, budgets[b], "skipped: shapiq is not installed in the bench venv")
    else:
        parts, status = oracle.run({"case": "kernelshap", "n": task.n, "budgets": [budgets[b] for b in task.bs]},
                                   task.value_fn, suite.reference_timeout_s)
        done = {p["budget"]: p for p in parts}
        for b in task.bs:
            part = done.get(budgets[b])
            if part is None:
                add("kernelshap", b, budgets[b], "timeout" if status == "timeout" else status)
                continue
            add("kernelshap", b, part["num_queries"], lambda part=part: kernelshap_values(part, task.n))
            rows[-1]["fit_s"] = part["seconds"]
        log(f"kernelshap {status}")

    for row in rows:
        row.update({"dataset": task.dataset, "group": task.group, "example_id": task.example_id, "n": task.n,
                    "info": json.dumps(task.info)})
    return rows


def kernelshap_values(part: dict, n: int) -> Interactions:
    """shapiq's Shapley values as an additive model; ValueError when it returned NaN (e.g. budget < n)."""
    values = np.array(part["values"], dtype=np.float64)
    if not (np.isfinite(values).all() and np.isfinite(part["baseline"])):
        raise ValueError(f"KernelSHAP returned non-finite values ({part['num_queries']} queries for n={n})")
    return additive(part["baseline"], values, n)


def not_run_rows(task: Task, reason: str) -> list[dict]:
    return [{"dataset": task.dataset, "group": task.group, "example_id": task.example_id, "n": task.n,
             "info": json.dumps(task.info), "method": method, "b": b, "num_queries": spex_num_queries(task.n, b),
             "r2": None, "removal": None, "fit_s": None, "status": "not run", "note": reason}
            for b in task.bs for method in METHODS]


def pipeline_rows(output: Path) -> list[dict]:
    """Rows from a finished pipeline job's explanations (its own held-out R²; no removal test)."""
    import pyarrow.parquet as pq

    table = pq.read_table(output / "explanations").to_pylist()
    rows = []
    for row in table:
        if row["index"] != "fourier" or row["status"] != "ok" or row["faithfulness_r2"] is None:
            continue
        rows.append({"dataset": "pipeline", "group": f"pipeline {output.name}", "example_id": row["example_id"],
                     "n": row["n_features"], "info": "{}", "method": row["method"], "b": None,
                     "num_queries": row["num_queries"], "r2": row["faithfulness_r2"], "removal": None,
                     "fit_s": None, "status": "ok", "note": "the job's own held-out masks"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the < 2 minute suite")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", choices=("planted", "sentiment"), help="run one data set")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference SPEX and KernelSHAP")
    parser.add_argument("--time-limit", type=float, help="minutes after which no new task starts")
    parser.add_argument("--pipeline-output", type=Path, help="a finished `spex-ray run` output folder to add")
    parser.add_argument("--setup", action="store_true",
                        help="first create the bench venv (reference SPEX) and pip-install shapiq into it")
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown and plot from --out's Parquet")
    args = parser.parse_args(argv)
    if args.render:
        import pyarrow.parquet as pq

        table = pq.read_table(args.out / "faithfulness.parquet")
        metadata = json.loads((table.schema.metadata or {}).get(b"faithfulness_benchmark", b"{}"))
        print(write_outputs(table.to_pylist(), metadata, args.out))
        return 0

    if args.setup:
        ensure_reference_env()
        if not install_shapiq():
            print("shapiq could not be installed into the bench venv: KernelSHAP rows will say n/a", file=sys.stderr)
    suite = QUICK if args.quick else DEFAULT
    time_limit = (args.time_limit if args.time_limit is not None else suite.time_limit_min) * 60
    started = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    tasks = ([] if args.only == "sentiment" else planted_tasks(suite)) + \
            ([] if args.only == "planted" else sentiment_tasks(suite))
    proxy_backend = "lightgbm"
    oracle = ReferenceOracle()
    if args.no_reference:
        oracle.available = False
    use_shapiq = oracle.available and shapiq_available()
    rows: list[dict] = []
    with oracle:
        for task in tasks:
            if time.perf_counter() - started > time_limit:
                rows += not_run_rows(task, f"not run: the {time_limit / 60:.1f} min time limit was reached")
                continue
            log(f"{task.group} / {task.example_id} (n={task.n}, b={list(task.bs)})")
            task_rows = run_task(task, suite, oracle, use_shapiq, proxy_backend, lambda m: log("  " + m))
            model_rows = task.value_fn.rows + (task.clean_fn.rows if task.clean_fn is not task.value_fn else 0)
            for row in task_rows:
                row["task_model_queries"] = model_rows
            rows += task_rows
    if args.pipeline_output is not None:
        rows += pipeline_rows(args.pipeline_output)
    metadata = {
        "suite": suite.name, "holdout": HOLDOUT, "max_k": MAX_K, "proxyspex_backend": proxy_backend,
        "reference": "sparse-transform 0.2.1 (bench venv)" if oracle.available else "not available",
        "kernelshap": "shapiq (bench venv)" if use_shapiq else "not available",
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "seconds": round(time.perf_counter() - started, 1),
    }
    markdown = write_outputs(rows, metadata, args.out)
    print(markdown)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
