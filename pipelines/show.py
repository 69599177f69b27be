"""Print explanations readably: the text with important features marked, and the top interactions.

Values are shown as effects of *keeping* features, as ``Interactions.top`` gives them: for the
``fourier`` index a term F(T) is shown as (-2)^|T| F(T) (the Banzhaf interaction); other indices
are shown as stored. A feature among the ``top`` order-1 effects is marked ``[[word]]+`` (keeping
it raises the output) or ``[[word]]-``; a repeated word is listed as ``word#k`` (its k-th
occurrence). The text is rebuilt from the features and their spans (gaps become single spaces);
image patches are laid out as their grid. The header gives the R^2 of the row's own terms (n/a for
indices that are attributions) and of the whole fit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc

from pipelines.parts import EXPLANATIONS_DIR, read_parts
from spex_ray.interactions import Interactions
from pipelines.schema import EXPLANATION_SCHEMA, STATUS_OK

DEFAULT_INDEX = "fbii"
_PATCH = re.compile(r"r(\d+)c\d+")


def show(output: str | Path, *, example_id: str | None = None, index: str | None = None, top: int = 10) -> str:
    """Text of the explanations in ``output`` (one example, or all); ValueError when none match."""
    table = read_parts(Path(output) / EXPLANATIONS_DIR, EXPLANATION_SCHEMA)
    if table.num_rows == 0:
        raise ValueError(f"no explanations in {output}")
    if example_id is not None:
        table = table.filter(pc.equal(table["example_id"], example_id))
        if table.num_rows == 0:
            raise ValueError(f"no explanation of example {example_id!r} in {output}")
    available = table["index"].unique().to_pylist()
    chosen = index or (DEFAULT_INDEX if DEFAULT_INDEX in available else next(i for i in available if i))
    if index is not None and index not in available:
        raise ValueError(f"no {index!r} rows in {output} (indices there: {', '.join(i for i in available if i)})")
    blocks = [_describe(row, top) for row in _rows(table, chosen)]
    return "\n\n".join(blocks)


def _rows(table, index: str) -> Iterator[dict]:
    """One row per example, its ``index`` row, by example id."""
    rows = {row["example_id"]: row for row in table.filter(pc.equal(table["index"], index)).to_pylist()}
    for example_id in sorted(rows):
        yield rows[example_id]


def _describe(row: dict, top: int) -> str:
    if row["status"] != STATUS_OK:
        return f"{row['example_id']}: error: {row['error']}"
    interactions = Interactions.from_row(row)
    labels = interactions.feature_labels
    marks = {key[0]: value for key, value in interactions.top(top, order=1)}
    terms = interactions.top(top)
    lines = [
        f"{row['example_id']}  (n={row['n_features']}, {row['method']}, {row['index']} up to order "
        f"{row['max_order']}, R^2 {_r2(row['faithfulness_r2'])}, fit R^2 {_r2(row['fit_r2'])}, "
        f"full {row['full_value']:.4g}, empty {row['empty_value']:.4g})",
        "  " + _marked_text(row["features"], row["spans"], marks),
        f"  top {len(terms)} terms (effect of keeping):",
    ]
    for key, value in terms:
        lines.append(f"    {value:+.4f}  {' x '.join(labels[i] for i in key)}")
    return "\n".join(lines)


def _r2(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _marked_text(features: list[str], spans: list[dict] | None, marks: dict[int, float]) -> str:
    """The features in order, marked; image patches ("r<row>c<col>") one grid row per line."""
    rows = [_PATCH.fullmatch(feature) for feature in features]
    pieces = []
    for i, feature in enumerate(features):
        if i and all(rows) and rows[i][1] != rows[i - 1][1]:
            pieces.append("\n  ")
        elif i and (spans is None or spans[i]["start"] > spans[i - 1]["end"]):
            pieces.append(" ")
        pieces.append(f"[[{feature}]]{'+' if marks[i] > 0 else '-'}" if i in marks else feature)
    return "".join(pieces)
