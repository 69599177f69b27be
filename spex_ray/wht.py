"""Fast Walsh–Hadamard transform in natural (Hadamard) order."""

from __future__ import annotations

import numpy as np


def fwht(values: np.ndarray) -> np.ndarray:
    """Unnormalised WHT along axis 0: out[j] = Σ_l (−1)^{popcount(j & l)} values[l].

    ``values`` has shape (2^b, ...); trailing axes are transformed independently (batched).
    Returns a new float64 array of the same shape. O(b·2^b) per column.
    """
    data = np.array(values, dtype=np.float64, copy=True)
    size = data.shape[0]
    if size & (size - 1):
        raise ValueError(f"WHT length must be a power of two, got {size}")
    tail = data.shape[1:]
    half = 1
    while half < size:
        view = data.reshape(size // (2 * half), 2, half, *tail)
        low = view[:, 0].copy()
        view[:, 0] += view[:, 1]
        view[:, 1] = low - view[:, 1]
        half *= 2
    return data
