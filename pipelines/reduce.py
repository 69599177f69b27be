"""Reduce one example's query values to explanation rows: the whole fit as a ``fourier`` row, then
one row per other requested index (the data contract is in ``pipelines/schema.py``); with adaptive
budgets, the fit of one stage, which gives the rows only when the example stops there.

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
from pipelines.calls import FitCall
from pipelines.inputs import BadInput
from pipelines.layout import QueryLayout
from pipelines.method import MethodSpec
from spex_ray.adaptive import prefix_design, stages, stops
from spex_ray.faithfulness import faithfulness
from spex_ray.interactions import PREDICTABLE, Interactions
from spex_ray.link import get_link
from spex_ray.link_fit import fit_with_link, linked_values
from spex_ray.methods import Method
from pipelines.schema import EXPLANATION_SCHEMA, STATUS_ERROR, STATUS_OK

#: Indices that are per-feature values (order 1 whatever ``max_order`` is).
VALUE_INDICES: tuple[str, ...] = ("banzhaf", "shapley")


def run_fit(call: FitCall) -> tuple[list[dict] | None, float | None]:
    """What a fit call gives back: the example's explanation rows (None: an adaptive stage that goes
    on to the next) and, with adaptive budgets, the stage's cross-validated R²."""
    if call.stage is None:
        return fit_example(call.example, call.spec, call.layout, call.values), None
    return fit_stage(call)


def fit_example(example: Example, spec: MethodSpec, layout: QueryLayout, values: np.ndarray) -> list[dict]:
    """Explanation rows of ``example`` (``row_indices(spec)``); an exception while fitting (or
    converting to one index) becomes error rows (that index's row) instead of ending the job."""
    values = _checked(values, layout)
    try:
        method = spec.method_for(example.n)
        fit = fit_with_link(method, values[: method.num_queries], spec.link)
    except Exception as err:  # one example's failed fit must not end the job
        return _fit_failed(example, spec, layout, values, err)
    return explanation_rows(example, spec, layout, values, fit, method.num_queries)


def fit_stage(call: FitCall) -> tuple[list[dict] | None, float | None]:
    """An adaptive stage (``call.stage``): its fit and cross-validated R² on the design's first
    queries; its rows when the example stops there (``spex_ray.adaptive.stops``, or the last stage),
    else None. A failing fit gives error rows."""
    example, spec, layout = call.example, call.spec, call.layout
    values = _checked(call.values, layout)
    try:
        method = spec.method_for(example.n)
        counts = stages(method.design)
        staged = method.with_design(prefix_design(method.design, counts[call.stage]))
        link = get_link(spec.link)
        linked = linked_values(values[: staged.num_queries], link)
        fit, r2 = staged.fit_cv(linked)
        if call.stage < len(counts) - 1 and not stops(r2, _previous_r2(call, method, counts, linked, r2)):
            return None, r2
        fit = fit.with_link(link.name)
    except Exception as err:  # one example's failed fit must not end the job
        return _fit_failed(example, spec, layout, values, err), None
    return explanation_rows(example, spec, layout, values, fit, staged.num_queries), r2


def _previous_r2(call: FitCall, method: Method, counts: list[int], values: np.ndarray, r2: float) -> float | None:
    """The cross-validated R² of the stage before ``call.stage`` (None: it is the first), computed
    again when this run did not judge it (a resumed example) and the rule needs it; ``values``:
    the design's, in the link's space."""
    if call.previous_r2 is not None or call.stage == 0 or stops(r2, None):
        return call.previous_r2
    earlier = method.with_design(prefix_design(method.design, counts[call.stage - 1]))
    return earlier.fit_cv(values[: earlier.num_queries])[1]


def explanation_rows(example: Example, spec: MethodSpec, layout: QueryLayout, values: np.ndarray,
                     fit: Interactions, num_queries: int) -> list[dict]:
    """The rows of ``fit``, the fit of the design's first ``num_queries`` values: the ``fourier``
    row, then one per other index (a failed conversion fails only its row)."""
    full, empty = float(values[layout.full_id]), float(values[layout.empty_id])
    holdout = (layout.holdout_masks(), values[layout.num_design : layout.full_id]) if layout.holdout else None
    try:
        fit = fit.with_feature_names(list(example.features))
        fit_r2 = _r2(fit, holdout)
    except Exception as err:  # one example's failed fit must not end the job
        return _fit_failed(example, spec, layout, values, err)
    rows = []
    for index in row_indices(spec):
        if index == "fourier":
            rows.append(_row(example, spec, fit, full, empty, num_queries, fit_r2, fit_r2, fit.baseline_value))
            continue
        try:
            converted = fit.to(index, order=index_order(index, spec.max_order))
            r2 = _r2(converted, holdout)
        except Exception as err:  # a failed conversion only fails its own row
            rows.extend(error_rows(example, spec, f"conversion to {index} failed: {type(err).__name__}: {err}",
                                   full=full, empty=empty, num_queries=num_queries, indices=(index,)))
            continue
        rows.append(_row(example, spec, converted, full, empty, num_queries, r2, fit_r2, fit.baseline_value))
    return rows


def _checked(values: np.ndarray, layout: QueryLayout) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (layout.num_queries,):
        raise ValueError(f"expected {layout.num_queries} values, got shape {values.shape}")
    return values


def _fit_failed(example: Example, spec: MethodSpec, layout: QueryLayout, values: np.ndarray,
                     err: Exception) -> list[dict]:
    return error_rows(example, spec, f"the fit failed: {type(err).__name__}: {err}",
                      full=float(values[layout.full_id]), empty=float(values[layout.empty_id]))


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
                "link": spec.link,
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
        "link": interactions.link,
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
