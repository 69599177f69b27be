"""The one-call entry point: explain any Python value function of masks."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from spex_ray.interactions import Interactions
from spex_ray.methods import plan_method

ValueFunction = Callable[[np.ndarray], np.ndarray]


def explain(
    value_fn: ValueFunction,
    n: int,
    *,
    budget: int | None = None,
    method: str = "spex",
    index: str = "fourier",
    order: int | None = None,
    feature_names: Sequence[str] | None = None,
    batch_size: int = 1024,
    progress: bool = False,
    **options,
) -> Interactions:
    """Explain ``value_fn`` over ``n`` features and return its interactions in ``index``.

    ``value_fn`` maps bool masks (B, n) — True = feature kept — to float values (B,); it is called
    on batches of at most ``batch_size`` masks. ``budget`` caps the number of queries (see
    ``plan_method`` for the other ``options``: b, t, groups, seed, max_order, refit).
    """
    if feature_names is not None and len(feature_names) != n:
        raise ValueError(f"got {len(feature_names)} feature names for n={n} features")
    plan = plan_method(method, n, budget=budget, **options)
    values = np.empty(plan.num_queries)
    starts = range(0, plan.num_queries, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{method} queries", unit="batch")
    for start in starts:
        stop = min(start + batch_size, plan.num_queries)
        batch = np.asarray(value_fn(plan.design.masks(start, stop)), dtype=np.float64).reshape(-1)
        if len(batch) != stop - start:
            raise ValueError(f"value_fn returned {len(batch)} values for {stop - start} masks")
        values[start:stop] = batch
    result = plan.fit(values)
    if feature_names is not None:
        result = result.with_feature_names(feature_names)
    return result if index == "fourier" else result.to(index, order=order)
