"""``spex-ray report``: one self-contained HTML page of a job's explanations.

The page shows the job (config, example counts, queries, time, dollars, a histogram of the
faithfulness R²), a table of the interactions that recur across examples (by words, with counts
and mean effect), and every example's text with its features shaded by their effect and its
strongest interactions, filtered by example id and paginated. Nothing is fetched from the
network: styles, scripts and the histogram are inline, and the examples are compact JSON that
the page draws one page at a time (``spex_ray/_html``, shared with ``Interactions._repr_html_``).

Effects are effects of *keeping* features, as in ``spex-ray show``: the ``fbii`` row by default
(order 1 shades the words, order 2 and up are the interactions).
"""

from __future__ import annotations

import html
import json
import math
import re
import statistics
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

from pipelines.parts import EXPLANATIONS_DIR, part_files
from spex_ray._html import TOP_INTERACTIONS, asset, effect, example_view, script_json
from pipelines.schema import EXPLANATION_SCHEMA, STATUS_OK

DEFAULT_INDEX = "fbii"
REPORT_FILE = "report.html"
PAGE_SIZE = 20
RECURRING_ROWS = 300
"""Rows of the recurring-interaction table (by total |effect|)."""

_PATCH = re.compile(r"r(\d+)c\d+")
_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")
_COLUMNS = [name for name in ("example_id", "features", "spans", "target", "full_value", "empty_value", "method",
                               "index", "interactions", "faithfulness_r2", "fit_r2", "status", "error")
            if name in EXPLANATION_SCHEMA.names]


def report(output: str | Path, destination: str | Path | None = None, *, index: str | None = None,
           top: int = TOP_INTERACTIONS) -> Path:
    """Write the report of the job in ``output`` to ``destination`` (default ``OUTPUT/report.html``).

    ``index``: the interaction index shown (default ``fbii`` when the job wrote it); ``top``:
    interactions kept per example, which the recurring table counts. Returns the page's path;
    ValueError when the folder holds no explanations.
    """
    output = Path(output)
    table, indices, metadata = read_rows(output, index)
    page = render_page(output, views(table, top), table, indices, metadata, top)
    path = Path(destination) if destination is not None else output / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def read_rows(output: Path, index: str | None) -> tuple[pa.Table, list[str], dict[str, str]]:
    """The explanation rows of one index (one per example, by example id), the indices present, and
    the newest part's Parquet metadata. The one place that reads the stored parts (``views`` takes the
    columns apart)."""
    files = part_files(output / EXPLANATIONS_DIR)
    if not files:
        raise ValueError(f"no explanations in {output}")
    dataset = ds.dataset([str(path) for path in files], format="parquet", schema=EXPLANATION_SCHEMA)
    indices = sorted(i for i in dataset.to_table(columns=["index"])["index"].unique().to_pylist() if i)
    if index is None:
        index = DEFAULT_INDEX if DEFAULT_INDEX in indices else indices[0]
    elif index not in indices:
        raise ValueError(f"no {index!r} rows in {output} (indices there: {', '.join(indices)})")
    table = dataset.to_table(columns=_COLUMNS, filter=pc.field("index") == index).sort_by("example_id")
    raw = pq.read_schema(files[-1]).metadata or {}
    metadata = {key.decode(): value.decode() for key, value in raw.items() if key.startswith(b"spex_ray.")}
    return table, indices, metadata


def views(table: pa.Table, top: int = TOP_INTERACTIONS) -> list[dict]:
    """The compact view of each row of one index (``spex_ray._html.example_view``).

    The terms are taken apart with Arrow and numpy rather than row by row: a 10,000-example job
    holds millions of them."""
    if table.num_rows == 0:
        return []
    index = table["index"][0].as_py()
    words = [w or [] for w in table["features"].to_pylist()]
    word_start = np.concatenate([[0], np.cumsum([len(w) for w in words])]).astype(np.int64)
    # Every stored term, flat: its example, order, features (from first_feature) and effect of keeping.
    interactions = table["interactions"].combine_chunks()
    per_example = pc.fill_null(pc.list_value_length(interactions), 0).to_numpy().astype(np.int64)
    term_features, term_values = pc.list_flatten(interactions).flatten()
    order = pc.list_value_length(term_features).to_numpy().astype(np.int64)
    flat_features = pc.list_flatten(term_features).to_numpy().astype(np.int64)
    first_feature = np.concatenate([[0], np.cumsum(order)[:-1]]).astype(np.int64)
    example = np.repeat(np.arange(table.num_rows), per_example)
    effects = effect(index, order, term_values.to_numpy(zero_copy_only=False))
    # Order 1: one flat array of every example's word effects.
    word_effects = np.zeros(int(word_start[-1]))
    single = order == 1
    word_effects[word_start[example[single]] + flat_features[first_feature[single]]] = effects[single]
    # Order >= 2: the ``top`` strongest of each example, strongest first.
    multi = np.flatnonzero(order >= 2)
    multi = multi[np.lexsort((-np.abs(effects[multi]), example[multi]))]
    rank = np.arange(len(multi)) - np.searchsorted(example[multi], example[multi], side="left")
    multi = multi[rank < top]
    bounds = np.searchsorted(example[multi], np.arange(table.num_rows + 1))
    gap_text = _gaps_column(table, words)
    ok = pc.equal(table["status"], STATUS_OK).to_pylist()
    column = {name: table[name].to_pylist() for name in ("example_id", "target", "full_value", "empty_value", "error")}
    r2, fit = _r2_column(table), _fit_r2_column(table)
    out = []
    for i in range(table.num_rows):
        fields = dict(r2=_finite(r2[i]), fit_r2=_finite(fit[i]), full=_finite(column["full_value"][i]),
                      empty=_finite(column["empty_value"][i]), target=column["target"][i])
        if not ok[i]:
            out.append(example_view(column["example_id"][i], words[i], error=column["error"][i] or "error", **fields))
            continue
        pairs = [(flat_features[first_feature[t]:first_feature[t] + order[t]].tolist(), effects[t])
                 for t in multi[bounds[i]:bounds[i + 1]].tolist()]
        out.append(example_view(column["example_id"][i], words[i], word_effects[word_start[i]:word_start[i + 1]].tolist(),
                                pairs, gaps=gap_text[i], **fields))
    return out


def _r2_column(table: pa.Table) -> list[float | None]:
    """Each row's own R² (of exactly its terms), or where its index has none (an attribution), the
    whole fit's."""
    own = table["faithfulness_r2"].to_pylist()
    return [mine if mine is not None else fit for mine, fit in zip(own, _fit_r2_column(table))]


def _fit_r2_column(table: pa.Table) -> list[float | None]:
    """The R² of each example's whole fit (its ``fourier`` row; before schema 2, the row's own)."""
    if "fit_r2" in table.column_names and table["fit_r2"].null_count < table.num_rows:
        return table["fit_r2"].to_pylist()
    return table["faithfulness_r2"].to_pylist()


def _gaps_column(table: pa.Table, words: list[list[str]]) -> list[str | None]:
    """``gaps`` of each row (None: all spaces), with numpy for the common case of word spans."""
    spans = table["spans"].combine_chunks()
    has_spans = pc.is_valid(spans).to_numpy(zero_copy_only=False)
    span_count = pc.fill_null(pc.list_value_length(spans), 0).to_numpy().astype(np.int64)
    span_start = np.concatenate([[0], np.cumsum(span_count)]).astype(np.int64)
    starts, ends = (column.to_numpy(zero_copy_only=False) for column in pc.list_flatten(spans).flatten())
    adjacent = np.zeros(len(starts), dtype=bool)  # adjacent[k]: span k starts where span k - 1 ends
    adjacent[1:] = starts[1:] <= ends[:-1]
    out: list[str | None] = []
    for i, features in enumerate(words):
        inner = adjacent[span_start[i] + 1:span_start[i + 1]]
        if features and _PATCH.fullmatch(features[0]):
            out.append(gaps(features, table["spans"][i].as_py()))
        elif has_spans[i] and span_count[i] == len(features) and inner.any():
            out.append("".join("0" if a else " " for a in inner.tolist()))
        else:
            out.append(None)
    return out


def gaps(features: Sequence[str], spans: Sequence[dict] | None) -> str:
    """One character per gap between features: " " (the spans leave a gap, or no spans), "0"
    (adjacent spans), "\\n" (image patches: a new grid row)."""
    rows = [_PATCH.fullmatch(feature) for feature in features]
    patches = bool(rows) and all(rows)
    out = []
    for i in range(1, len(features)):
        if patches and rows[i][1] != rows[i - 1][1]:
            out.append("\n")
        elif spans is None or spans[i]["start"] > spans[i - 1]["end"]:
            out.append(" ")
        else:
            out.append("0")
    return "".join(out)


def recurring(views: Sequence[dict], limit: int = RECURRING_ROWS) -> list[list]:
    """Interactions among the strongest of two or more examples, grouped by their words (lower case,
    without surrounding punctuation, in text order).

    Rows ``[label, examples, mean effect, positive, negative, total |effect|, example positions,
    ranks]`` (``ranks``: where the term is in each example's ``x``), by total |effect| descending,
    at most ``limit``. An example counts once per group: with its strongest term there (a view
    lists them strongest first), e.g. when a word is repeated.
    """
    groups: dict[tuple[str, ...], list] = {}
    for position, view in enumerate(views):
        seen = set()
        for rank, (key, value) in enumerate(view.get("x", ())):
            label = tuple(_word_key(view["w"][i]) for i in key)
            if label in seen:
                continue
            seen.add(label)
            group = groups.setdefault(label, [0, 0.0, 0, 0, 0.0, [], []])
            group[0] += 1
            group[1] += value
            group[2 if value > 0 else 3] += value != 0
            group[4] += abs(value)
            group[5].append(position)
            group[6].append(rank)
    rows = [[" \u00d7 ".join(label), g[0], _round(g[1] / g[0]), g[2], g[3], _round(g[4]), g[5], g[6]]
            for label, g in groups.items() if g[0] >= 2]
    rows.sort(key=lambda row: (-row[5], -row[1], row[0]))
    return rows[:limit]


def _word_key(word: str) -> str:
    stripped = _EDGE_PUNCTUATION.sub("", word.lower())
    return stripped or word.lower()


def render_page(output: Path, views: list[dict], table: pa.Table, indices: list[str],
                metadata: dict[str, str], top: int) -> str:
    """The HTML page (a string) of the rows of one index and their views."""
    index = table["index"][0].as_py()
    effects = sorted(abs(value) for view in views for value in view.get("e", ()) if value)
    scale = effects[min(len(effects) - 1, int(0.99 * len(effects)))] if effects else 1.0
    data = {"examples": views, "scale": scale, "top": top, "page": PAGE_SIZE, "recurring": recurring(views)}
    title = f"spex-ray report: {output.resolve().name}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{asset("view.css")}
{asset("report.css")}</style>
</head>
<body class="spx-root">
<div class="spx-page">
<h1>spex-ray report</h1>
<p class="spx-lede">{html.escape(str(output.resolve()))} · index <b>{html.escape(index)}</b>
 (effect of keeping features; indices stored: {html.escape(", ".join(indices))}) ·
 written {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}</p>
{_job_section(output, table, metadata)}
<h2>Interactions that recur across examples</h2>
<p class="spx-note">Interactions among each example's {top} strongest (order 2 and up), grouped by their words
 (lower case, without surrounding punctuation). Click a row to show its examples.</p>
<div class="spx-tools"><input id="spx-find" type="search" placeholder="Find a word" aria-label="find a word in the table">
<button id="spx-csv" title="the table as a CSV file">Download CSV</button></div>
<div class="spx-scroll" id="spx-recurring"></div>
{_examples_section(scale)}
</div>
<script type="application/json" id="spx-data">{script_json(data)}</script>
<script>{asset("view.js")}</script>
<script>{asset("report.js")}</script>
</body>
</html>
"""


def _examples_section(scale: float) -> str:
    """The examples' heading, their filter, sort and paging tools, and the (script-filled) list;
    ``scale``: the dataset-wide colour scale."""
    return f"""<h2 id="spx-examples-head">Examples</h2>
<div class="spx-sticky">
<div class="spx-tools">
<input id="spx-query" type="search" placeholder="Filter by example id" aria-label="filter by example id">
<label>Sort <select id="spx-sort">
<option value="id">by id</option>
<option value="r2up">R² low to high</option>
<option value="r2down">R² high to low</option>
<option value="change">largest output change</option>
</select></label>
<label>Show <select id="spx-status"><option value="all">all</option><option value="ok">explained</option>
<option value="error">errors</option></select></label>
<label>Colour scale <select id="spx-scale"><option value="example">per example</option>
<option value="dataset">same for all (±{html.escape(_short(scale))})</option></select></label>
<span id="spx-only" class="spx-chip" hidden>interaction: <b id="spx-only-label"></b>
<button id="spx-only-clear" title="show all examples" aria-label="clear">×</button></span>
</div>
<div class="spx-tools"><span id="spx-legend"></span><span class="spx-grow"></span><span class="spx-count"></span>
<button class="spx-prev">‹ Prev</button><span class="spx-pageno"></span><button class="spx-next">Next ›</button>
</div>
</div>
<div id="spx-examples"></div>
<div class="spx-tools"><span class="spx-grow"></span><span class="spx-count"></span>
<button class="spx-prev spx-bottom">‹ Prev</button><span class="spx-pageno"></span>
<button class="spx-next spx-bottom">Next ›</button></div>"""


def _link_note(config: dict) -> str:
    """The method card's note on a job's link (``spex_ray.link``): ' · values in logit units', or ''."""
    link = config.get("link") or "identity"
    return "" if link == "identity" else f" · values in {link} units"


def _job_section(output: Path, table: pa.Table, metadata: dict[str, str]) -> str:
    job = _read_json(output / "job.json") or {}
    summary = _read_json(output / "summary.json") or {}
    config = job.get("config") or json.loads(metadata.get("spex_ray.config", "{}"))
    backend = json.loads(metadata.get("spex_ray.backend", "{}"))
    ok = pc.sum(pc.equal(table["status"], STATUS_OK)).as_py() or 0
    r2 = [value for value in _fit_r2_column(table) if _finite(value) is not None]
    limiter = summary.get("limiter") or {}
    model = backend.get("model") or (config.get("backend") or {}).get("name", "?")
    stats = [
        ("examples", f"{ok:,}", f"explained · {table.num_rows - ok:,} error"),
        ("method", table["method"][0].as_py() or "?", f"model {model}{_link_note(config)}"),
        ("mean R²", f"{statistics.fmean(r2):.3f}" if r2 else "n/a",
         f"median {statistics.median(r2):.3f} · {sum(v >= 0.9 for v in r2) / len(r2):.0%} ≥ 0.9" if r2 else ""),
        ("queries sent", f"{summary['queries_sent']:,}" if "queries_sent" in summary else "n/a",
         f"last run · {summary.get('queries_reused', 0):,} reused" if summary else "no summary.json"),
        ("time", _duration(summary["seconds"]) if "seconds" in summary else "n/a", "last run"),
        ("spent", f"${limiter['spent_usd']:,.2f}" if "spent_usd" in limiter else "$0",
         "whole job" if "spent_usd" in limiter else "no paid API"),
    ]
    cells = "\n".join(f'<div class="spx-stat"><span>{html.escape(name)}</span><b>{html.escape(value)}</b>'
                      f"<small>{html.escape(note)}</small></div>" for name, value, note in stats)
    config_hash = job.get("config_hash") or metadata.get("spex_ray.config_hash")
    config_text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True) if config else "(no config found)"
    return f"""<div class="spx-card spx-job">
<div class="spx-stats">{cells}</div>
<figure class="spx-hist" style="margin:0">{histogram_svg(r2)}
<figcaption>Faithfulness: R² of each example's whole fit on held-out random masks ({len(r2):,} examples)</figcaption></figure>
<details><summary>Job config{html.escape(f" (hash {config_hash[:12]})" if config_hash else "")}</summary>
<pre>{html.escape(config_text)}</pre></details>
</div>"""


def histogram_svg(values: Sequence[float], width: int = 440, height: int = 150) -> str:
    """An inline SVG histogram of R² values: 20 bins over [0, 1], and one bin for R² < 0."""
    bins = [0] * 21  # bins[0]: < 0; bins[k]: [(k-1)/20, k/20)
    for value in values:
        bins[0 if value < 0 else min(20, int(value * 20) + 1)] += 1
    tallest = max(bins) or 1
    left, bottom, top, gap = 30, height - 22, 8, 8
    step = (width - left - 6 - gap) / 21

    def x(k: float) -> float:  # the left edge of bin k (the [0, 1] bins sit a gap to the right of "< 0")
        return left + k * step + (gap if k >= 1 else 0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="histogram of R²" font-size="11" fill="#656d76">']
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{width - 6}" y2="{bottom}" stroke="#afb8c1"/>')
    for k, count in enumerate(bins):
        h = (bottom - top) * count / tallest
        colour = "#cf222e" if k <= 14 else "#bf8700" if k <= 18 else "#2da44e"
        label = "R² < 0" if k == 0 else f"R² {(k - 1) / 20:.2f}–{k / 20:.2f}"
        if count:
            parts.append(f'<rect x="{x(k) + 1:.1f}" y="{bottom - h:.1f}" width="{step - 2:.1f}" height="{h:.1f}" '
                         f'fill="{colour}" rx="1.5"><title>{label}: {count}</title></rect>')
    for text, at, anchor in (("<0", x(0) + step / 2, "middle"), ("0", x(1), "start"), ("0.5", x(11), "middle"),
                             ("1", x(21), "end")):
        parts.append(f'<text x="{at:.1f}" y="{bottom + 14}" text-anchor="{anchor}">{html.escape(text)}</text>')
    parts.append(f'<text x="{left - 6}" y="{top + 8}" text-anchor="end">{tallest}</text>')
    parts.append(f'<text x="{left - 6}" y="{bottom}" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _short(value: float) -> str:
    return f"{value:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
