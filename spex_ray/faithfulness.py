"""Faithfulness of an explanation: R² of its predictions on held-out masks."""

from __future__ import annotations

import numpy as np

from spex_ray.interactions import Interactions, _check_int

__all__ = ["faithfulness", "uniform_masks"]


def uniform_masks(n: int, count: int, seed: int = 0) -> np.ndarray:
    """Masks with each feature kept independently with probability 1/2: bool (count, n), True = kept.

    Deterministic: the same (n, count, seed) always gives the same masks
    (``numpy.random.default_rng(seed)``).
    """
    n = _check_int(n, "n", minimum=1)
    count = _check_int(count, "count", minimum=0)
    return np.random.default_rng(seed).integers(0, 2, size=(count, n), dtype=np.uint8).astype(bool)


def faithfulness(interactions: Interactions, masks: np.ndarray, values: np.ndarray) -> float:
    """R² = 1 - ||y - ŷ||² / ||y - mean(y)||² of ``interactions.predict(masks)`` against ``values``.

    Args:
        interactions: over n features, of an index that ``Interactions.predict`` evaluates
            (``PREDICTABLE``: fourier, mobius, fbii, fsii).
        masks: bool (B, n), True = kept, B >= 1.
        values: float (B,), the true function values at the masks; must be finite.

    When the values are constant (zero variance) R² is undefined; following scikit-learn's
    ``r2_score`` this returns 1.0 if the predictions match them up to floating-point rounding
    (``np.allclose`` with rtol=1e-9, atol=1e-12) and 0.0 otherwise.
    """
    y = np.asarray(values, dtype=np.float64)
    rows = np.shape(masks)[0] if np.ndim(masks) >= 1 else None
    if y.ndim != 1 or y.shape[0] != rows:
        raise ValueError(f"values must have shape ({rows},) to match masks, got {y.shape}")
    if rows == 0:
        raise ValueError("faithfulness needs at least one mask")
    if not np.isfinite(y).all():
        raise ValueError("values must be finite")
    predicted = interactions.predict(masks)
    if not np.isfinite(predicted).all():
        raise ValueError("predictions are not finite")
    if np.ptp(y) == 0.0:
        return 1.0 if np.allclose(predicted, y, rtol=1e-9, atol=1e-12) else 0.0
    residual = float(np.sum((y - predicted) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - residual / total

