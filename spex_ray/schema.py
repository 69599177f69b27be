"""Arrow schemas of the tables a job writes: the query log, the targets and the explanation rows.

Query log: one row per scored query ``(example_id, query_id)``. Masks are not stored: they are a
deterministic function of the example's design parameters and ``query_id``.

Targets: one row per example whose target the backend made (e.g. an open model's own answer to
the unmasked input); a resumed job scores the rest of its queries against the same target.

Explanations: one row per example and interaction index. ``interactions`` holds
``(features, value)`` pairs sorted by ``|value|``, descending; ``features`` are sorted feature
indices in ``[0, n_features)`` and ``[]`` is the constant term. ``status`` is ``"ok"`` or
``"error"``; ``error`` holds the reason (null when ok).
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
        pa.field("method", pa.string()),
        pa.field("index", pa.string()),
        pa.field("max_order", pa.int8()),
        pa.field("interactions", pa.list_(TERM_TYPE)),
        pa.field("num_queries", pa.int64()),
        pa.field("faithfulness_r2", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]
)

STATUS_OK = "ok"
STATUS_ERROR = "error"
