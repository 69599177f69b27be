"""Print explanations readably: the text with important features marked, and the top interactions.

Values are shown as effects of *keeping* features: for the ``fourier`` index a term F(T) is shown
as (-2)^|T| F(T) (the Banzhaf interaction); other indices are shown as stored. A feature among the
``top`` order-1 effects is marked ``[[word]]+`` (keeping it raises the output) or ``[[word]]-``.
The text is rebuilt from the features and their spans (gaps become single spaces); image patches
are laid out as their grid.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc

from pipelines.parts import EXPLANATIONS_DIR, read_parts
from spex_ray.schema import EXPLANATION_SCHEMA, STATUS_OK

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
    features = row["features"]
    terms = [(tuple(term["features"]), _effect(row["index"], term)) for term in row["interactions"]]
    terms = sorted((term for term in terms if term[0]), key=lambda term: -abs(term[1]))
    marks = {key[0]: value for key, value in [t for t in terms if len(t[0]) == 1][:top]}
    r2 = "n/a" if row["faithfulness_r2"] is None else f"{row['faithfulness_r2']:.3f}"
    lines = [
        f"{row['example_id']}  (n={row['n_features']}, {row['method']}, {row['index']} up to order "
        f"{row['max_order']}, R^2 {r2}, full {row['full_value']:.4g}, empty {row['empty_value']:.4g})",
        "  " + _marked_text(features, row["spans"], marks),
        f"  top {min(top, len(terms))} terms (effect of keeping):",
    ]
    for key, value in terms[:top]:
        lines.append(f"    {value:+.4f}  {' x '.join(features[i] for i in key)}")
    return "\n".join(lines)


def _effect(index: str, term: dict) -> float:
    order = len(term["features"])
    return (-2.0) ** order * term["value"] if index == "fourier" else term["value"]


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
