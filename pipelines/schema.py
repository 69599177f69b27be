"""Arrow schemas of the tables a job writes: the query log, the targets and the explanation rows.

Query log: one row per scored query ``(example_id, query_id)``. Masks are not stored: they are a
deterministic function of the example's design parameters and ``query_id``. ``cost_usd`` and
``fingerprint`` are the row's ``Score.cost_usd`` and ``Score.fingerprint``; both are null in
rows written before they were columns (``pipelines.usage`` then reads the raw JSON).

Targets: one row per example whose target the backend made (e.g. an open model's own answer to
the unmasked input); a resumed job scores the rest of its queries against the same target.

Explanations (schema version ``EXPLANATION_SCHEMA_VERSION``, in each part's Parquet metadata under
``spex_ray.schema_version``): one row per example and interaction index. Every example has a
``fourier`` row first, then one row per other index of the config's ``indices``.

- The ``fourier`` row holds the whole fitted explanation: every term the method found, of any
  order (``max_order`` is the highest present). It is the object the faithfulness describes, and
  every other row is derived from it.
- The other rows are limited to the config's ``max_order`` (``banzhaf``/``shapley``: order 1).
- ``faithfulness_r2``: R² on the example's held-out uniform masks of exactly the terms stored in
  the row, read as a function (``Interactions.from_row(row).predict``): the whole fit for
  ``fourier``; for ``mobius`` its expansion truncated to ``max_order``; for ``fbii``/``fsii`` the
  order-``max_order`` polynomial they define. Null for ``bii``, ``sii``, ``stii``, ``banzhaf`` and
  ``shapley`` (attributions, not approximations of f) and when ``holdout`` is 0.
- ``fit_r2``: the ``fourier`` row's R², repeated on each row of the example.
- ``num_queries``: the design queries the fit used (held-out, full and empty not counted): the
  method's design, or with adaptive budgets the prefix of it that the example stopped at; on the
  error row of an example whose queries failed, every query of its layout.
- ``baseline_value``: the fit at the all-masked mask, f̂(∅) (shapiq's ``baseline_value``);
  ``empty_value`` and ``full_value`` are the model's measured values with all features masked/kept.
- ``link``: the config's ``link`` (``spex_ray.link``): the row's terms (and ``baseline_value``) are
  in its units and predict g(terms); ``identity`` (null in parts written before version 3) is the
  output's own units.

``interactions`` holds ``(features, value)`` pairs sorted by ``|value|``, descending; ``features``
are sorted feature positions in ``[0, n_features)`` (the row's ``features`` column holds their
texts) and ``[]`` is the constant term. Values are stored as their index defines them: a
``fourier`` term F(T) multiplies (-1)^{|T ∩ kept|}, so its effect of keeping T is (-2)^{|T|} F(T).
``status`` is ``"ok"`` or ``"error"``; ``error`` holds the reason (null when ok).
"""

from __future__ import annotations

import pyarrow as pa

QUERY_LOG_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("query_id", pa.int64(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("raw", pa.string()),
        pa.field("error", pa.string()),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("latency_ms", pa.float32()),
        pa.field("cost_usd", pa.float64()),
        pa.field("fingerprint", pa.string()),
    ]
)

TARGETS_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("target", pa.string(), nullable=False),
    ]
)

SPAN_TYPE = pa.struct([pa.field("start", pa.int32()), pa.field("end", pa.int32())])
TERM_TYPE = pa.struct([pa.field("features", pa.list_(pa.int32())), pa.field("value", pa.float64())])

EXPLANATION_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("n_features", pa.int32()),
        pa.field("features", pa.list_(pa.string())),
        pa.field("spans", pa.list_(SPAN_TYPE)),
        pa.field("target", pa.string()),
        pa.field("full_value", pa.float64()),
        pa.field("empty_value", pa.float64()),
        pa.field("baseline_value", pa.float64()),
        pa.field("link", pa.string()),
        pa.field("method", pa.string()),
        pa.field("index", pa.string()),
        pa.field("max_order", pa.int8()),
        pa.field("interactions", pa.list_(TERM_TYPE)),
        pa.field("num_queries", pa.int64()),
        pa.field("faithfulness_r2", pa.float64()),
        pa.field("fit_r2", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]
)

#: Version 2: the fourier row holds the whole fit; per-row faithfulness_r2; fit_r2 and baseline_value.
#: Version 3: link.
EXPLANATION_SCHEMA_VERSION = "3"

STATUS_OK = "ok"
STATUS_ERROR = "error"
