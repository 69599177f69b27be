"""How big and how quick is ``spex-ray report`` at 10,000 examples?

Writes a synthetic job (``fbii`` and ``fourier`` rows, 20–120 words per example from a Zipf
vocabulary, every word an order-1 term and ~40 pairs per example, a few pairs planted to recur
with a consistent sign), builds its report, and opens it in headless Chromium (Debian's
``chromium``, driven over the DevTools pipe by ``tests/headless.py``): time to the load event and
to the first page drawn, then the time of a keystroke in the id filter, of the next page, and of
a click on the recurring table. Prints a Markdown table for BENCHMARKS.md.

    python benchmarks/bench_report.py [--examples 10000] [--folder /tmp/bench-report] [--screenshot FILE] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from headless import Browser  # noqa: E402
from pipelines.parts import EXPLANATIONS_DIR, PartWriter  # noqa: E402
from pipelines.reduce import rows_to_batch  # noqa: E402
from pipelines.report import report  # noqa: E402
from pipelines.schema import EXPLANATION_SCHEMA  # noqa: E402

PLANTED = [("not", "good", 0.4), ("not", "bad", 0.5), ("very", "boring", -0.3), ("waste", "time", -0.35)]


def synthetic_job(folder: Path, examples: int, seed: int = 0) -> None:
    """An output folder with ``examples`` explained examples (and a few error rows)."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{k}" for k in range(3000)]
    vocabulary[:8] = ["not", "good", "bad", "very", "boring", "waste", "time", "the"]
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    writer = PartWriter(folder / EXPLANATIONS_DIR, EXPLANATION_SCHEMA, "bench",
                        {"spex_ray.backend": json.dumps({"backend": "synthetic", "model": "synthetic"})})
    for k in range(examples):
        n = int(rng.integers(20, 121))
        words = [vocabulary[i] for i in rng.choice(len(vocabulary), size=n, p=weights)]
        spans, start = [], 0
        for word in words:
            spans.append({"start": start, "end": start + len(word)})
            start += len(word) + 1
        terms = {(i,): float(rng.normal(0, 0.1)) for i in range(n)}
        for _ in range(40):
            pair = tuple(sorted(rng.choice(n, size=2, replace=False).tolist()))
            terms[pair] = float(rng.normal(0, 0.05))
        position = {word: i for i, word in enumerate(words)}
        for first, second, value in PLANTED:
            if first in position and second in position and position[first] != position[second]:
                terms[tuple(sorted((position[first], position[second])))] = value * float(rng.uniform(0.7, 1.3))
        ordered = sorted(terms.items(), key=lambda item: -abs(item[1]))
        base = {"example_id": f"doc-{k:05d}", "n_features": n, "features": words, "spans": spans, "target": None,
                "full_value": float(rng.normal()), "empty_value": 0.0, "method": "spex-hybrid", "max_order": 2,
                "num_queries": 1344, "status": "ok", "error": None}
        base["faithfulness_r2"] = base["fit_r2"] = float(min(1.0, rng.beta(8, 1.2)))
        error = k % 997 == 5
        rows = []
        for index in ("fbii", "fourier"):
            row = dict(base, index=index, interactions=[{"features": list(key), "value": value} for key, value in ordered])
            if error:
                row.update(interactions=None, faithfulness_r2=None, fit_r2=None, status="error",
                           error="queries failed after 3 attempts")
            rows.append(row)
        writer.append(rows_to_batch(rows))
        if writer.buffered_rows >= 2000:
            writer.flush()
    writer.flush()
    (folder / "summary.json").write_text(json.dumps({"queries_sent": examples * 1546, "queries_reused": 0,
                                                     "seconds": 3600.0, "limiter": None}))


def measure(page_path: Path, opens: int, screenshot: Path | None) -> dict:
    """Open the page ``opens`` times in fresh tabs; time the load, the first draw and three actions."""
    results: dict[str, list[float]] = {"load": [], "ready": [], "filter": [], "next": [], "recurring": []}
    with Browser(timeout=120) as browser:
        for attempt in range(opens):
            begin = time.perf_counter()
            page = browser.open(page_path.as_uri(), height=1000)
            page.wait_for(lambda: page.errors or page.evaluate("document.body.dataset.ready") is not None,
                          "the first draw")
            results["load"].append(time.perf_counter() - begin)
            results["ready"].append(float(page.evaluate("document.body.dataset.ready")) / 1000)
            results["filter"].append(page.evaluate(
                "(() => { const q = document.querySelector('#spx-query'), t = performance.now();"
                " q.value = '77'; q.dispatchEvent(new Event('input')); return performance.now() - t; })()") / 1000)
            assert page.evaluate("document.querySelectorAll('#spx-examples .spx-card').length") > 0
            page.evaluate("(() => { const q = document.querySelector('#spx-query'); q.value = '';"
                          " q.dispatchEvent(new Event('input')); })()")
            results["next"].append(page.evaluate(
                "(() => { const t = performance.now(); document.querySelector('.spx-next').click();"
                " return performance.now() - t; })()") / 1000)
            results["recurring"].append(page.evaluate(
                "(() => { const t = performance.now(); document.querySelector('#spx-recurring tbody tr').click();"
                " return performance.now() - t; })()") / 1000)
            errors = page.errors
            if errors:
                raise SystemExit(f"console errors: {errors}")
            if screenshot is not None and attempt == 0:
                page.evaluate("document.querySelector('#spx-only-clear').click(); window.scrollTo(0, 0)")
                page.screenshot(str(screenshot))
            page.send("Page.close")
        # The comparison: one page that draws every example at once (what a static page would be).
        page = browser.open(page_path.as_uri(), height=1000)
        page.wait_for(lambda: page.errors or page.evaluate("document.body.dataset.ready") is not None, "the first draw")
        heap = page.evaluate("performance.memory.usedJSHeapSize") / 1e6
        everything = page.evaluate(
            "(() => { const t = performance.now(), box = document.getElementById('spx-examples');"
            " const data = JSON.parse(document.getElementById('spx-data').textContent); box.textContent = '';"
            " data.examples.forEach(ex => box.appendChild(SpexView.card(ex))); box.offsetHeight;"
            " return performance.now() - t; })()", timeout=900) / 1000
        if page.errors:
            raise SystemExit(f"console errors: {page.errors}")
    return ({key: statistics.median(values) for key, values in results.items()}
            | {"first_load": results["load"][0], "heap_mb": heap, "everything": everything})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench-report"))
    parser.add_argument("--opens", type=int, default=3)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--reuse", action="store_true", help="report on the synthetic job already in --folder")
    args = parser.parse_args()
    begin = time.perf_counter()
    if not args.reuse:
        if (args.folder / EXPLANATIONS_DIR).exists():
            raise SystemExit(f"{args.folder} already holds explanations; pick another --folder or --reuse it")
        synthetic_job(args.folder, args.examples)
    written = time.perf_counter() - begin
    begin = time.perf_counter()
    path = report(args.folder)
    built = time.perf_counter() - begin
    size = path.stat().st_size
    timing = measure(path, args.opens, args.screenshot)
    if not args.reuse:
        print(f"synthetic job: {args.examples:,} examples written in {written:.1f} s")
    print("| measure | value |\n|---|---|")
    print(f"| `spex-ray report` (read Parquet, build the page) | {built:.1f} s |")
    print(f"| page size | {size / 1e6:.1f} MB |")
    print(f"| open to first page drawn, first open (median of {args.opens}) | "
          f"{timing['first_load']:.2f} s ({timing['load']:.2f} s) |")
    print(f"| of which in the page's script (parse JSON, draw 20 examples) | {timing['ready']:.2f} s |")
    print(f"| keystroke in the id filter | {timing['filter'] * 1000:.0f} ms |")
    print(f"| next page | {timing['next'] * 1000:.0f} ms |")
    print(f"| click on a recurring interaction | {timing['recurring'] * 1000:.0f} ms |")
    print(f"| JavaScript heap after the first draw | {timing['heap_mb']:.0f} MB |")
    print(f"| comparison: draw every example at once (a static page's DOM, with layout) | {timing['everything']:.1f} s |")


if __name__ == "__main__":
    main()
