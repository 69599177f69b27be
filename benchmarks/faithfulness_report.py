"""Outputs of the faithfulness benchmark: the Parquet table, the Markdown tables and the R² plot.

``write_outputs(rows, metadata, out)`` writes ``out/faithfulness.parquet`` (one row per example,
method and budget; ``metadata`` as JSON in the schema metadata), ``out/faithfulness.md`` and
``out/faithfulness.png`` (skipped, with a line in the Markdown, when matplotlib is missing), and
returns the Markdown. Table cells are means over the row's examples of the rows with status "ok";
the other statuses show as "skip" (design too large for the method), "t/o" (reference timeout),
"n/a" (not available here), "err" or "not run".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("dataset", pa.string()), ("group", pa.string()), ("example_id", pa.string()), ("n", pa.int32()),
    ("info", pa.string()), ("method", pa.string()), ("b", pa.int8()), ("num_queries", pa.int64()),
    ("r2", pa.float64()), ("removal", pa.list_(pa.float64())), ("fit_s", pa.float64()),
    ("status", pa.string()), ("note", pa.string()), ("task_model_queries", pa.int64()),
])
LABELS = {
    "spex-hybrid": "ours hybrid", "spex-hard": "ours hard", "spex-hard+ls": "ours hard+ls", "spex-soft": "ours soft",
    "spex-soft+ls": "ours soft+ls", "ref-spex-hard": "ref hard", "ref-spex-soft": "ref soft",
    "proxyspex": "ProxySPEX", "lasso-1": "LASSO-1", "lasso-2": "LASSO-2", "faith-banzhaf-1": "FB-1",
    "faith-banzhaf-2": "FB-2", "kernelshap": "KernelSHAP", "lime": "LIME",
}
_SHORT_STATUS = {"skipped": "skip", "timeout": "t/o", "error": "err", "not run": "not run"}


def write_outputs(rows: list[dict], metadata: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{name: row.get(name) for name in SCHEMA.names} for row in rows], schema=SCHEMA)
    table = table.replace_schema_metadata({"faithfulness_benchmark": json.dumps(metadata)})
    pq.write_table(table, out / "faithfulness.parquet")
    markdown = markdown_tables(rows, metadata)
    plot_note = plot_r2(rows, out / "faithfulness.png")
    if plot_note:
        markdown += f"\n{plot_note}\n"
    (out / "faithfulness.md").write_text(markdown)
    return markdown


def _methods(rows: list[dict]) -> list[str]:
    present = list(dict.fromkeys(row["method"] for row in rows))
    return [m for m in LABELS if m in present] + [m for m in present if m not in LABELS]


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["group"], row["b"]), []).append(row)
    return groups


def _cell(cell_rows: list[dict], value) -> tuple[str, float | None]:
    ok = [value(r) for r in cell_rows if r["status"] == "ok"]
    if ok:
        mean = float(np.mean(ok))
        partial = "*" if len(ok) < len(cell_rows) else ""
        return f"{mean:.3f}{partial}", mean
    if not cell_rows:
        return "", None
    status = cell_rows[0]["status"]
    if "bench venv" in (cell_rows[0]["note"] or "") or "not installed" in (cell_rows[0]["note"] or ""):
        return "n/a", None
    return _SHORT_STATUS.get(status, status), None


def _table(rows: list[dict], title: str, value) -> list[str]:
    methods = _methods(rows)
    lines = [f"### {title}", "",
             "| rows | n | b | queries | ex. | " + " | ".join(LABELS.get(m, m) for m in methods) + " |",
             "|---|---|---|---|---|" + "---|" * len(methods)]
    for (group, b), group_rows in _groups(rows).items():
        examples = sorted({r["example_id"] for r in group_rows})
        ns = sorted({r["n"] for r in group_rows})
        n_text = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        design = [r["num_queries"] for r in group_rows if r["method"] == "spex-hard"] or \
            [r["num_queries"] for r in group_rows if r["num_queries"] is not None]
        queries = f"{np.mean(design):,.0f}" if design else ""
        cells = [_cell([r for r in group_rows if r["method"] == m], value) for m in methods]
        best = max((c[1] for c in cells if c[1] is not None), default=None)
        texts = [f"**{text}**" if mean is not None and mean == best else text for text, mean in cells]
        lines.append(f"| {group} | {n_text} | {'' if b is None else b} | {queries} | {len(examples)} | "
                     + " | ".join(texts) + " |")
    return lines


def markdown_tables(rows: list[dict], metadata: dict) -> str:
    lines = _table(rows, "Faithfulness R² on 1000 held-out uniform masks (higher is better)", lambda r: r["r2"])
    removal_rows = [r for r in rows if r["dataset"] != "pipeline"]
    if removal_rows:
        lines += [""] + _table(
            removal_rows, "Top-k removal: mean over k = 1..10 of the output change (higher is better)",
            lambda r: float(np.mean(r["removal"])),
        )
    lines += [""] + _versus(rows)
    lines += ["", "Cells: mean over the row's examples (`ex.`); `*` = some examples of the row failed or were "
              "skipped for that method; `skip` = order-2 design too large; `t/o` = reference past its time "
              "limit; `n/a` = not available here. `queries` = the SPEX design C·(p+1)·2^b at that b "
              "(t = 5, C = 3), the budget every method gets. Bold = best in the row.",
              "", f"Run: {json.dumps(metadata)}"]
    return "\n".join(lines) + "\n"


_SPEX_OURS = ("spex-hard", "spex-hard+ls", "spex-soft", "spex-soft+ls")
_RIVALS = (("our SPEX", _SPEX_OURS), ("ProxySPEX", ("proxyspex",)), ("LASSO", ("lasso-1", "lasso-2")),
           ("ref SPEX", ("ref-spex-hard", "ref-spex-soft")))


def _versus(rows: list[dict]) -> list[str]:
    """Per row: spex-hybrid's R² minus each rival's best (positive = hybrid wins), and spex-ray's
    best SPEX variant minus the reference's best (the goal "ours at least matches the reference")."""
    lines = ["### spex-hybrid minus each rival's best R² (positive = hybrid better); our SPEX minus the reference's",
             "", "| rows | b | hybrid | " + " | ".join(f"− {name}" for name, _ in _RIVALS) + " | our SPEX − ref SPEX |",
             "|---|---|---|" + "---|" * (len(_RIVALS) + 1)]
    for (group, b), group_rows in _groups(rows).items():
        def best(methods):
            means = [_cell([r for r in group_rows if r["method"] == m], lambda r: r["r2"])[1] for m in methods]
            means = [m for m in means if m is not None]
            return max(means) if means else None

        def diff(a, c):
            return "—" if a is None or c is None else f"{a - c:+.3f}"

        hybrid, spex, reference = best(("spex-hybrid",)), best(_SPEX_OURS), best(_RIVALS[-1][1])
        if hybrid is None and spex is None:
            continue
        cells = [diff(hybrid, best(methods)) for _, methods in _RIVALS] + [diff(spex, reference)]
        lines.append(f"| {group} | {b} | {'—' if hybrid is None else f'{hybrid:.3f}'} | " + " | ".join(cells) + " |")
    return lines


def plot_r2(rows: list[dict], path: Path) -> str | None:
    """R² against queries (log scale), one panel per row group; returns a note when it cannot plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(No plot: matplotlib is not installed — `pip install matplotlib`.)"
    groups = list(dict.fromkeys(row["group"] for row in rows if row["b"] is not None and row["status"] == "ok"))
    if not groups:
        return None
    methods = _methods(rows)
    cols = min(4, len(groups))
    nrows = -(-len(groups) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    colors = plt.get_cmap("tab20")
    for ax, group in zip(axes.flat, groups):
        budgets = sorted({row["num_queries"] for row in rows if row["group"] == group and row["method"] == "spex-hard"})
        for i, method in enumerate(methods):
            points = {}
            for row in rows:
                if row["group"] == group and row["method"] == method and row["status"] == "ok":
                    points.setdefault(row["b"], []).append((row["num_queries"], row["r2"]))
            if not points:
                continue
            xs = [np.mean([p[0] for p in v]) for _, v in sorted(points.items())]
            ys = [np.mean([p[1] for p in v]) for _, v in sorted(points.items())]
            style = "-" if method.startswith("spex") else "--" if method.startswith("ref") else ":"
            ax.plot(xs, np.clip(ys, -0.2, 1.0), style, marker="o", ms=3, color=colors(i), label=LABELS.get(method, method))
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if budgets:
            ax.set_xticks(budgets, [f"{q:,}" for q in budgets], fontsize=8)
        ax.set_ylim(-0.22, 1.02)
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("queries")
        ax.set_ylabel("R² (clipped at −0.2)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, loc="lower center", ncol=min(7, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
