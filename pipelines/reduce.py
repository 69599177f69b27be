"""Reduce one example's query values to explanation rows: the whole fit as a ``fourier`` row, then
one row per other requested index (the data contract is in ``pipelines/schema.py``).

``values`` is float (L,) over the example's query ids (see ``pipelines.layout``): the design's
values feed ``method.fit``, the held-out ones measure the R^2 of each row's terms, the last two are
the full and empty values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from connectors.base import Example
from pipelines.inputs import BadInput
from pipelines.layout import QueryLayout
from pipelines.method import MethodSpec
from spex_ray.faithfulness import faithfulness
from spex_ray.interactions import PREDICTABLE, Interactions
from pipelines.schema import EXPLANATION_SCHEMA, STATUS_ERROR, STATUS_OK

#: Indices that are per-feature values (order 1 whatever ``max_order`` is).
VALUE_INDICES: tuple[str, ...] = ("banzhaf", "shapley")


def fit_example(example: Example, spec: MethodSpec, layout: QueryLayout, values: np.ndarray) -> list[dict]:
    """Explanation rows of ``example`` (``row_indices(spec)``); an exception while fitting (or
    converting to one index) becomes error rows (that index's row) instead of ending the job."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (layout.num_queries,):
        raise ValueError(f"expected {layout.num_queries} values, got shape {values.shape}")
    full, empty = float(values[layout.full_id]), float(values[layout.empty_id])
    holdout = (layout.holdout_masks(), values[layout.num_design : layout.full_id]) if layout.holdout else None
    try:
        method = spec.method_for(example.n)
        fit = method.fit(values[: method.num_queries]).with_feature_names(list(example.features))
        fit_r2 = _r2(fit, holdout)
    except Exception as err:  # one example's decoding failure must not end the job
        return error_rows(example, spec, f"decoding failed: {type(err).__name__}: {err}", full=full, empty=empty)
    rows = []
    for index in row_indices(spec):
        if index == "fourier":
            rows.append(_row(example, spec, fit, full, empty, method.num_queries, fit_r2, fit_r2, fit.baseline_value))
            continue
        try:
            converted = fit.to(index, order=index_order(index, spec.max_order))
            r2 = _r2(converted, holdout)
        except Exception as err:  # a failed conversion only fails its own row
            rows.extend(error_rows(example, spec, f"conversion to {index} failed: {type(err).__name__}: {err}",
                                   full=full, empty=empty, num_queries=method.num_queries, indices=(index,)))
            continue
        rows.append(_row(example, spec, converted, full, empty, method.num_queries, r2, fit_r2, fit.baseline_value))
    return rows


def row_indices(spec: MethodSpec) -> tuple[str, ...]:
    """The indices an example's rows hold, in order: ``fourier`` (the whole fit), then the others asked for."""
    return ("fourier", *(index for index in spec.indices if index != "fourier"))


def index_order(index: str, max_order: int) -> int:
    """The order to convert ``index`` at: 1 for the per-feature values (banzhaf, shapley)."""
    return 1 if index in VALUE_INDICES else max_order


def error_rows(item: Example | BadInput, spec: MethodSpec, message: str, *, full: float | None = None,
               empty: float | None = None, num_queries: int | None = None,
               indices: Sequence[str] | None = None) -> list[dict]:
    """One ``status="error"`` row per index (default ``row_indices(spec)``), carrying what is known
    of the example; a character of ``message`` that UTF-8 cannot hold (a lone surrogate) is written
    escaped."""
    example = item if isinstance(item, Example) else None
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    rows = []
    for index in indices or row_indices(spec):
        rows.append(
            {
                **_example_fields(item.example_id, example, item.target),
                "full_value": full,
                "empty_value": empty,
                "baseline_value": None,
                "method": spec.method,
                "index": index,
                "max_order": None if index == "fourier" else index_order(index, spec.max_order),
                "interactions": None,
                "num_queries": num_queries,
                "faithfulness_r2": None,
                "fit_r2": None,
                "status": STATUS_ERROR,
                "error": message,
            }
        )
    return rows


def failed_queries_message(query_ids: Sequence[int], errors: Sequence[str], total: int, max_attempts: int) -> str:
    """The error of an example some of whose queries failed for good."""
    return (
        f"{len(query_ids)} of {total} queries failed after up to {max_attempts} attempts; "
        f"first: query {query_ids[0]}: {errors[0]}"
    )


def rows_to_batch(rows: Sequence[dict]) -> pa.RecordBatch:
    """Explanation rows as a record batch of ``EXPLANATION_SCHEMA``."""
    return pa.RecordBatch.from_pylist(list(rows), schema=EXPLANATION_SCHEMA)


def _row(example: Example, spec: MethodSpec, interactions: Interactions, full: float, empty: float,
         num_queries: int, r2: float | None, fit_r2: float | None, baseline: float) -> dict:
    terms = sorted(((key, float(value)) for key, value in interactions.items() if value != 0), key=_magnitude)
    return {
        **_example_fields(example.example_id, example, example.target),
        "full_value": full,
        "empty_value": empty,
        "baseline_value": baseline,
        "method": spec.method,
        "index": interactions.index,
        "max_order": interactions.max_order,
        "interactions": [{"features": list(key), "value": value} for key, value in terms],
        "num_queries": num_queries,
        "faithfulness_r2": r2,
        "fit_r2": fit_r2,
        "status": STATUS_OK,
        "error": None,
    }


def _r2(interactions: Interactions, holdout: tuple[np.ndarray, np.ndarray] | None) -> float | None:
    """R^2 of ``interactions`` on the held-out ``(masks, values)``; None when they are not a function
    (``PREDICTABLE``), there is no holdout, or R^2 is not finite."""
    if holdout is None or interactions.index not in PREDICTABLE:
        return None
    r2 = float(faithfulness(interactions, *holdout))
    return r2 if math.isfinite(r2) else None


def _magnitude(term: tuple[tuple[int, ...], float]) -> tuple[float, int, tuple[int, ...]]:
    key, value = term
    return (-abs(value), len(key), key)


def _example_fields(example_id: str, example: Example | None, target: str | None) -> dict:
    if example is None:
        return {"example_id": example_id, "n_features": None, "features": None, "spans": None, "target": target}
    spans = None
    if example.spans is not None:
        spans = [{"start": start, "end": end} for start, end in example.spans]
    return {
        "example_id": example_id,
        "n_features": example.n,
        "features": list(example.features),
        "spans": spans,
        "target": example.target,
    }
