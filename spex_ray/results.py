"""Explanations as tables and files: a job's Parquet rows as a long pandas DataFrame, one
``Interactions`` from one row, and JSON files of one ``Interactions``.

pandas and pyarrow are imported inside the functions that use them (``import spex_ray`` stays
numpy/scipy only). The Parquet columns are described in ``pipelines/schema.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from spex_ray.interactions import Interactions

__all__ = ["FRAME_COLUMNS", "read_explanations"]

#: Columns of ``read_explanations``, in order. ``index_name`` is the Parquet column ``index``
#: (renamed so that it does not hide ``DataFrame.index``).
FRAME_COLUMNS = ("example_id", "index_name", "method", "link", "order", "features", "words", "value",
                 "faithfulness_r2", "fit_r2")
_JSON_FORMAT = "spex-ray/interactions"
_JSON_VERSION = 2
#: Versions ``load`` reads (1: before links).
_JSON_READS = (1, 2)


def read_explanations(path: str | Path, index: str | None = None):
    """Every stored term of a job's explanations as a long pandas DataFrame, one row per term.

    Args:
        path: a job's output folder, its ``explanations/`` folder, or one Parquet file.
        index: only the rows of this interaction index (e.g. ``"fbii"``); None: all.

    Columns (``FRAME_COLUMNS``): ``example_id``, ``index_name`` (the row's index), ``method``,
    ``link`` (the units of ``value``: "identity", the output's own, or a link's, ``spex_ray.link``),
    ``order`` (|T|; 0 is the constant term), ``features`` (tuple of feature positions),
    ``words`` (tuple of the features' texts, same order), ``value`` (as stored: for ``fourier``
    F(T), whose effect of keeping is (-2)^|T| F(T)), ``faithfulness_r2`` (the R² of the row's own
    terms, null where the index is not an approximation of f) and ``fit_r2`` (the R² of the
    example's whole fit). Rows come by example id, then index, then |value| descending. Examples
    whose rows are errors have no terms and are left out; read the Parquet's ``status`` and
    ``error`` for them.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _ok_rows(_parquet_files(Path(path)), index)
    terms = table.column("interactions").combine_chunks()
    row_of_term = pc.list_parent_indices(terms).to_numpy()
    flat = pc.list_flatten(terms)
    keys = pc.struct_field(flat, "features")
    order = pc.list_value_length(keys).to_numpy(zero_copy_only=False).astype(np.int64)
    positions = pc.list_flatten(keys).to_numpy(zero_copy_only=False).astype(np.int64)
    words = table.column("features").combine_chunks()
    offsets = words.offsets.to_numpy()
    word_starts = offsets[:-1] - offsets[0]
    row_of_position = np.repeat(row_of_term, order)
    key_words = pc.list_flatten(words).take(pa.array(word_starts[row_of_position] + positions))
    bounds = np.concatenate([[0], np.cumsum(order)])
    per_row = {name: table.column(name).to_numpy(zero_copy_only=False) for name in ("example_id", "index", "method")}
    links = np.array([_link(link) for link in table.column("link").to_pylist()], dtype=object)
    return pd.DataFrame(
        {
            "example_id": per_row["example_id"][row_of_term],
            "index_name": per_row["index"][row_of_term],
            "method": per_row["method"][row_of_term],
            "link": links[row_of_term],
            "order": order,
            "features": _tuples(positions.tolist(), bounds),
            "words": _tuples(key_words.to_pylist(), bounds),
            "value": pc.struct_field(flat, "value").to_numpy(zero_copy_only=False),
            "faithfulness_r2": table.column("faithfulness_r2").to_numpy()[row_of_term],
            "fit_r2": table.column("fit_r2").to_numpy()[row_of_term],
        },
        columns=list(FRAME_COLUMNS),
    )


def _ok_rows(files: list[Path], index: str | None):
    """The ``ok`` rows of ``files`` (of ``index``; None: all) as a pyarrow Table sorted by example id
    then index, with the columns ``read_explanations`` reads (``fit_r2`` null in schema version 1,
    ``link`` before version 3)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    schema = pa.unify_schemas([pq.read_schema(file) for file in files])
    if "fit_r2" not in schema.names:  # schema version 1
        schema = schema.append(pa.field("fit_r2", pa.float64()))
    if "link" not in schema.names:  # before schema version 3
        schema = schema.append(pa.field("link", pa.string()))
    row_filter = pc.field("status") == "ok"
    if index is not None:
        row_filter &= pc.field("index") == index
    table = ds.dataset([str(file) for file in files], format="parquet", schema=schema).to_table(
        columns=["example_id", "index", "method", "link", "features", "interactions", "faithfulness_r2", "fit_r2"],
        filter=row_filter,
    )
    return table.sort_by([("example_id", "ascending"), ("index", "ascending")])


def interactions_from_row(row: Mapping) -> Interactions:
    """``Interactions.from_row``: the row's ``index``, ``n_features``, ``max_order``, terms
    (``interactions``), words (``features``) and, where stored, ``baseline_value`` and ``link``."""
    if row.get("status", "ok") != "ok":
        raise ValueError(f"row of example {row.get('example_id')!r} is an error row: {row.get('error')}")
    index = row["index"]
    words = row.get("features")
    baseline = _optional_float(row.get("baseline_value")) if index not in ("fourier", "mobius") else None
    return _from_terms(row["interactions"], int(row["n_features"]), index, _optional_int(row.get("max_order")),
                       None if words is None else [str(word) for word in words], baseline, _link(row.get("link")))


def interactions_to_frame(interactions: Interactions):
    """``Interactions.to_frame``: one row per term, columns ``index_name, order, features, words, value``."""
    import pandas as pd

    keys, values = interactions.to_arrays()
    names = interactions.feature_names
    return pd.DataFrame(
        {
            "index_name": [interactions.index] * len(keys),
            "order": np.array([len(key) for key in keys], dtype=np.int64),
            "features": keys,
            "words": [None if names is None else tuple(names[i] for i in key) for key in keys],
            "value": values,
        },
        columns=["index_name", "order", "features", "words", "value"],
    )


def save_interactions(interactions: Interactions, path: str | Path) -> None:
    """``Interactions.save``: JSON with the index, n, max_order, baseline value, link, feature names and
    terms as ``{"features": [...], "value": ...}`` objects (the Parquet ``interactions`` layout)."""
    keys, values = interactions.to_arrays()
    document = {
        "format": _JSON_FORMAT,
        "version": _JSON_VERSION,
        "index": interactions.index,
        "n": interactions.n,
        "max_order": interactions.max_order,
        "baseline_value": interactions.baseline_value,
        "link": interactions.link,
        "feature_names": None if interactions.feature_names is None else list(interactions.feature_names),
        "terms": [{"features": list(key), "value": value} for key, value in zip(keys, values.tolist())],
    }
    Path(path).write_text(json.dumps(document, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def load_interactions(path: str | Path) -> Interactions:
    """``Interactions.load``: read a file written by ``save_interactions``."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format") != _JSON_FORMAT:
        raise ValueError(f"{path} is not a spex-ray interactions file (no \"format\": \"{_JSON_FORMAT}\")")
    if document.get("version") not in _JSON_READS:
        raise ValueError(f"{path} has version {document.get('version')!r}; this spex-ray reads "
                         f"{', '.join(map(str, _JSON_READS))}")
    index = document["index"]
    baseline = document.get("baseline_value") if index not in ("fourier", "mobius") else None
    return _from_terms(document["terms"], document["n"], index, document["max_order"], document["feature_names"],
                       baseline, document.get("link", "identity"))


def _from_terms(terms, n: int, index: str, max_order: int | None, names, baseline: float | None,
                link: str = "identity") -> Interactions:
    """Interactions from ``{"features": [...], "value": ...}`` terms."""
    values = {tuple(int(i) for i in term["features"]): float(term["value"]) for term in terms}
    return Interactions(values, n, index, max_order=max_order, feature_names=names, baseline_value=baseline, link=link)


def _parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a job folder, an explanations folder or a file."""
    if path.is_file():
        return [path]
    folder = path / "explanations" if (path / "explanations").is_dir() else path
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no explanation Parquet files in {folder}")
    return files


def _tuples(items: list, bounds: np.ndarray) -> list[tuple]:
    """``items`` cut at ``bounds`` (m + 1 offsets) into m tuples."""
    return [tuple(items[start:stop]) for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def _link(value) -> str:
    """A row's link: "identity" where none is stored (parts before schema version 3)."""
    return value if isinstance(value, str) else "identity"


def _optional_float(value) -> float | None:
    """None for a missing value (None, or NaN as pandas reads a null)."""
    if value is None or math.isnan(float(value)):
        return None
    return float(value)


def _optional_int(value) -> int | None:
    return None if _optional_float(value) is None else int(value)
