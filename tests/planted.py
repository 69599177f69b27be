"""Planted sparse functions for tests and benchmarks (mask convention: True = kept)."""

from __future__ import annotations

import numpy as np

from spex_ray.refit import fourier_features


def random_supports(n: int, count: int, max_order: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``count`` distinct non-empty supports of order 1..max_order."""
    supports: set[tuple[int, ...]] = set()
    while len(supports) < count:
        order = int(rng.integers(1, max_order + 1))
        supports.add(tuple(sorted(rng.choice(n, order, replace=False).tolist())))
    return sorted(supports)


def planted_fourier(n: int, count: int, max_order: int, seed: int) -> dict[tuple[int, ...], float]:
    """A parity-type function: F(k) = ±U[1, 2] on ``count`` supports, plus a constant 0.5."""
    rng = np.random.default_rng(seed)
    terms = {k: float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0)) for k in random_supports(n, count, max_order, rng)}
    terms[()] = 0.5
    return terms


def planted_mobius(n: int, count: int, max_order: int, seed: int) -> dict[tuple[int, ...], float]:
    """An AND-type function f(x) = Σ a(S) Π_{i∈S} x_i with a(S) = ±U[1, 2]."""
    rng = np.random.default_rng(seed)
    return {k: float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0)) for k in random_supports(n, count, max_order, rng)}


def mobius_to_fourier(mobius: dict[tuple[int, ...], float]) -> dict[tuple[int, ...], float]:
    """F(k) = Σ_{S ⊇ k} a(S)·(−1)^{|k|}/2^{|S|} (Π x_i = 2^{−|S|} Σ_{k⊆S} (−1)^{|k|}(−1)^{⟨k,x⟩})."""
    fourier: dict[tuple[int, ...], float] = {}
    for support, value in mobius.items():
        size = len(support)
        for bits in range(1 << size):
            k = tuple(support[i] for i in range(size) if bits >> i & 1)
            fourier[k] = fourier.get(k, 0.0) + value * (-1) ** len(k) / 2**size
    return {k: v for k, v in fourier.items() if abs(v) > 1e-15}


def evaluate_fourier(terms: dict[tuple[int, ...], float], masks: np.ndarray) -> np.ndarray:
    """f(masks) for a Fourier-basis function: float (B,)."""
    keys = list(terms)
    return fourier_features(masks, keys) @ np.array([terms[k] for k in keys])


def evaluate_mobius(terms: dict[tuple[int, ...], float], masks: np.ndarray) -> np.ndarray:
    """f(masks) for a Möbius-basis (AND-type) function: float (B,)."""
    total = np.zeros(len(masks))
    for support, value in terms.items():
        total += value * np.all(masks[:, list(support)], axis=1)
    return total
