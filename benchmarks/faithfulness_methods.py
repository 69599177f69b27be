"""Pieces of the faithfulness benchmark that are not spex-ray methods: LIME, attributions, removal.

Masks are bool (rows, n), True = feature kept. Every explanation here is an ``Interactions``:
Fourier for the SPEX-family, regression and tree methods, Möbius of order 1 (an additive model
a(∅) + Σ a({i}) x_i) for Shapley values and LIME.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.linear_model import Ridge

from spex_ray import Interactions

#: LIME's text defaults: cosine distance to the unmasked input, scaled by 100, kernel width 25.
LIME_KERNEL_WIDTH = 25.0
LIME_RIDGE_ALPHA = 1.0


def fit_lime(masks: np.ndarray, values: np.ndarray, *, kernel_width: float = LIME_KERNEL_WIDTH,
             alpha: float = LIME_RIDGE_ALPHA) -> Interactions:
    """LIME-style surrogate: kernel-weighted ridge regression of values on the 0/1 masks.

    masks: bool (Q, n), True = kept (here uniform masks, not LIME's own sampler); values: float (Q,).
    Weight of a mask with m of n features kept: sqrt(exp(-d²/width²)) with d = 100·(1 − sqrt(m/n)),
    the cosine distance to the all-kept input as ``lime.LimeTextExplainer`` computes it; the
    regression is ``Ridge(alpha)`` with an intercept, LIME's default. Returns index "mobius",
    max_order 1: the intercept as a(∅) and the coefficients as a({i}).
    """
    x = np.asarray(masks, dtype=np.float64)
    n = x.shape[1]
    distance = 100.0 * (1.0 - np.sqrt(x.sum(axis=1) / n))
    weights = np.sqrt(np.exp(-(distance**2) / kernel_width**2))
    model = Ridge(alpha=alpha).fit(x, values, sample_weight=weights)
    return additive(float(model.intercept_), model.coef_, n)


def additive(constant: float, values: np.ndarray, n: int) -> Interactions:
    """The additive model constant + Σ values[i]·x_i as Möbius interactions of order 1."""
    terms = {(): constant, **{(i,): float(v) for i, v in enumerate(np.asarray(values, dtype=np.float64))}}
    return Interactions(terms, n, "mobius", max_order=1)


def first_order(interactions: Interactions) -> np.ndarray:
    """float (n,): one attribution per feature used to rank features for removal.

    Fourier interactions give Banzhaf values (−2·F({i}), equal to order-1 Faith-Banzhaf of the
    order-1 truncation); additive Möbius models give their own coefficients (the Shapley values
    of KernelSHAP, LIME's weights).
    """
    source = interactions if interactions.index == "mobius" and interactions.max_order <= 1 else interactions.to("banzhaf")
    out = np.zeros(interactions.n)
    for key, value in source.items():
        if len(key) == 1:
            out[key[0]] = value
    return out


def removal_masks(attribution: np.ndarray, direction: float, max_k: int) -> np.ndarray:
    """bool (K, n), K = min(max_k, n): row k−1 keeps everything except the k features ranked highest.

    Rank = direction·attribution, descending (ties by feature index): with direction the sign of
    f(all kept) − mean f, the top features are those the explanation says push the output the
    way it is, so removing them should move it most.
    """
    n = len(attribution)
    order = np.argsort(-direction * np.asarray(attribution), kind="stable")
    count = min(max_k, n)
    masks = np.ones((count, n), dtype=bool)
    for k in range(1, count + 1):
        masks[k - 1, order[:k]] = False
    return masks


def removal_curve(value_fn: Callable[[np.ndarray], np.ndarray], attribution: np.ndarray,
                  full_value: float, direction: float, max_k: int = 10) -> np.ndarray:
    """float (K,): direction·(f(all kept) − f(top-k removed)) for k = 1..K (larger = better ranking)."""
    values = np.asarray(value_fn(removal_masks(attribution, direction, max_k)), dtype=np.float64)
    return direction * (full_value - values)
