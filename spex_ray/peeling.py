"""SPEX decoding: binned Walsh–Hadamard transforms, BCH singleton detection and peeling.

``decode(design, values)`` recovers a sparse Fourier transform F̂ (f(x) = Σ_k F(k)(−1)^{⟨k,x⟩},
x True = kept) from the values of the design's queries. Every step is vectorised across bins:
all bins flagged in a peeling round are detected, BCH-decoded and verified together.

Noise: the noise variance of a bin coefficient is estimated from the data — the low quantile of
the per-bin energies, scaled by the χ² quantile it should have for a bin that holds only noise —
so zeroton and singleton tests adapt to noisy model outputs instead of assuming exact values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.special import chdtri

from spex_ray.design import SpexDesign
from spex_ray.interactions import Interactions
from spex_ray.refit import Refit, Support, choose_support, cross_validated_error, delay_folds, fourier_features, with_singles
from spex_ray.refit import refit as refit_support
from spex_ray.wht import fwht

Decoder = Literal["hard", "soft"]

#: Quantile of the bin energies used to estimate the noise floor (bins that hold only noise are
#: at least this common whenever peeling can succeed).
_NOISE_QUANTILE = 0.1
#: False-alarm probability of the zeroton and residual tests for a bin that holds only noise.
_FALSE_ALARM = 1e-3
#: Energies below this fraction of the largest bin energy are numerically zero.
_RELATIVE_FLOOR = 1e-12
#: A singleton fit is also accepted when it leaves at most this fraction of its bin's energy:
#: real model outputs are only approximately sparse, and their small tail terms make a dominant
#: coefficient's residual exceed any pure-noise threshold. A wrong support explains almost none
#: of a bin (residual ≈ (1 − 1/(p + 1))·energy), so this cannot accept noise.
_RELATIVE_RESIDUAL = 0.5
#: The same bound when peeling as if the values were exact (the reference's "multi-detect" 0.9).
_EXACT_RELATIVE_RESIDUAL = 0.9
#: Peeling re-estimates the noise floor when it stalls, and goes on if it fell below this fraction.
_NOISE_REFINEMENT = 0.5
#: Peeling stops when the set of recovered supports has not grown for this many rounds.
_STALL_ROUNDS = 14


class _Thresholds:
    """Energy thresholds of the zeroton, residual and amplitude tests (per bin-coefficient units)."""

    def __init__(self, energy: np.ndarray, rows: int, scale: float, exact: bool = False):
        # chdtri(k, q) is the χ²_k quantile at 1 − q (scipy.special: far lighter to import than scipy.stats).
        dof_quantile = chdtri(rows, 1 - _NOISE_QUANTILE) / rows
        self.exact, self.scale = exact, scale
        self.noise = 0.0 if exact else float(np.quantile(energy, _NOISE_QUANTILE) / dof_quantile)
        self.relative = _EXACT_RELATIVE_RESIDUAL if exact else _RELATIVE_RESIDUAL
        floor = _RELATIVE_FLOOR * scale
        self.zeroton = max(self.noise * chdtri(rows, _FALSE_ALARM) / rows, floor)
        self.residual = max(self.noise * chdtri(rows - 1, _FALSE_ALARM) / rows, floor)
        self.amplitude = max(self.noise * chdtri(1, _FALSE_ALARM) / rows, floor)


def decode(
    design: SpexDesign,
    values: np.ndarray,
    decoder: Decoder = "hard",
    refit: Refit = None,
    *,
    max_iterations: int = 100,
) -> Interactions:
    """Sparse Fourier coefficients of the value function behind ``values``.

    ``values`` float (design.num_queries,), in query-id order (``design.masks()``). ``decoder``:
    "hard" (sign decisions only) or "soft" (adds a Chase search over the t least reliable parity
    bits, and their complements, when hard decoding fails). ``refit``: None (peeled amplitudes),
    "ls" (least squares of all values on the support chosen by ``select_peeled_support``) or
    "lasso" (scikit-learn LassoCV on it). Returns ``Interactions`` with index "fourier"; ``()``
    holds F(∅).
    """
    if decoder not in ("hard", "soft"):
        raise ValueError(f"decoder must be 'hard' or 'soft', got {decoder!r}")
    if refit not in (None, "ls", "lasso"):
        raise ValueError(f"refit must be None, 'ls' or 'lasso', got {refit!r}")
    values = check_values(values, design.num_queries)
    peeled = peel_candidates(design, values, decoder, max_iterations=max_iterations, exact_too=refit is not None)
    if refit is None:
        return _interactions(design, peeled[0])
    masks = design.masks()
    keys, _ = select_peeled_support(masks, values, peeled, delay_folds(len(values), design.p + 1))
    return refit_support(masks, values, keys, refit, design.seed)


def peel_candidates(design: SpexDesign, values: np.ndarray, decoder: Decoder, *, max_iterations: int = 100,
                    exact_too: bool = True) -> list[dict]:
    """Peeled transforms {support: F̂} of checked ``values``: first with the estimated noise floor;
    then, with ``exact_too`` and when that floor is above zero, peeled again as if the values were
    exact (the reference's assumption) — on values denser than 2^b bins can separate the estimate
    holds signal and stops peeling early, and cross-validation chooses between the two."""
    groups, rows, size = design.groups, design.p + 1, 1 << design.b
    bins = fwht(values.reshape(size, groups, rows)) / size
    bins = np.ascontiguousarray(bins.transpose(1, 0, 2))  # (groups, 2^b, p + 1)
    energy = np.mean(bins**2, axis=2)
    scale = float(energy.max(initial=0.0))
    noise_aware = _Thresholds(energy, rows, scale)
    peeled = [_peel(design, bins.copy(), decoder, noise_aware, max_iterations)]
    if exact_too and noise_aware.noise > 0.0:
        exact = _Thresholds(energy, rows, scale, exact=True)
        peeled.append(_peel(design, bins, decoder, exact, max_iterations))
    return peeled


def select_peeled_support(masks: np.ndarray, values: np.ndarray, peeled: list[dict], fold: np.ndarray) -> tuple[Support, float]:
    """The support (with the constant) to refit, and its cross-validated error over the folds
    ``fold`` (``refit.choose_support``); ``masks`` bool (Q, n) and ``values`` (Q,) may extend past
    the peeled design.

    Candidates: each peeled support; then the best of them plus every single-feature term, when
    there are at least twice as many values as terms — peeling misses first-order terms that
    are too small for their bins' noise floor, and least squares on all values can still see them.
    """
    best, error = choose_support(masks, values, [list(dict.fromkeys([(), *found])) for found in peeled], fold)
    wider = with_singles(best, masks.shape[1])
    if len(wider) > len(best) and len(values) >= 2 * len(wider):
        wider_error = cross_validated_error(fourier_features(masks, wider, np.float32), values, fold)
        if wider_error < error:
            return wider, wider_error
    return best, error


def _peel(design: SpexDesign, bins: np.ndarray, decoder: Decoder, thresholds: _Thresholds, max_iterations: int) -> dict:
    """The peeling loop on bin vectors (groups, 2^b, p + 1), modified in place; {support: F̂}."""
    groups, rows = design.groups, design.p + 1
    energy = np.mean(bins**2, axis=2)
    flagged = energy > thresholds.zeroton
    found: dict[tuple[int, ...], float] = {}
    best_size, stalled = 0, 0
    for _ in range(max_iterations):
        group_idx, bin_idx = np.nonzero(flagged)
        flagged[:] = False
        accepted = np.zeros(0, dtype=bool)
        if len(group_idx):
            supports, amplitudes, accepted = _detect(design, bins[group_idx, bin_idx], group_idx, bin_idx, decoder, thresholds)
        if not accepted.any():
            # Stalled. When the values are denser than 2^b bins can separate, the first noise
            # estimate holds signal; re-estimate it from what peeling left and go on if it fell.
            refined = _Thresholds(energy, rows, thresholds.scale, exact=thresholds.exact)
            if refined.noise >= _NOISE_REFINEMENT * thresholds.noise:
                break
            thresholds = refined
            flagged = energy > thresholds.zeroton
            continue
        unique, inverse = np.unique(supports[accepted], axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        peeled = np.bincount(inverse, weights=amplitudes[accepted]) / np.bincount(inverse)
        contribution = (peeled[None, :] * design.delay_signs(unique)).T  # (D, p + 1)
        targets = design.bins(unique)  # (groups, D)
        for group in range(groups):
            np.subtract.at(bins[group], targets[group], contribution)
            touched = np.unique(targets[group])
            energy[group, touched] = np.mean(bins[group, touched] ** 2, axis=1)
            flagged[group, touched] = energy[group, touched] > thresholds.zeroton
        for support, amplitude in zip(unique, peeled):
            key = tuple(int(i) for i in support if i >= 0)
            found[key] = found.get(key, 0.0) + float(amplitude)
        if len(found) > best_size:
            best_size, stalled = len(found), 0
        else:
            stalled += 1
            if stalled >= _STALL_ROUNDS:
                break
    if () not in found:  # the constant is always reported: the zero bins' residual mean estimates it
        found[()] = float(np.mean(bins[:, 0, 0]))
    return found


def _interactions(design: SpexDesign, found: dict) -> Interactions:
    return Interactions({k: v for k, v in found.items() if v != 0.0}, n=design.n, index="fourier")


def _detect(
    design: SpexDesign,
    vectors: np.ndarray,
    group_idx: np.ndarray,
    bin_idx: np.ndarray,
    decoder: Decoder,
    thresholds: _Thresholds,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Singleton detection for bin vectors (B, p + 1): supports (B, t) padded -1, amplitudes (B,), accepted (B,)."""
    bits = (vectors[:, 1:] * vectors[:, :1]) < 0
    supports, ok = design.code.decode_parity(bits)
    amplitudes, residuals = _verify(design, vectors, supports)
    accepted = ok & _acceptable(design, supports, amplitudes, residuals, vectors, group_idx, bin_idx, thresholds)
    if decoder == "soft" and not accepted.all():
        retry = np.flatnonzero(~accepted)
        chase = _chase(design, vectors[retry], group_idx[retry], bin_idx[retry], thresholds)
        supports[retry], amplitudes[retry], accepted[retry] = chase
    return supports, amplitudes, accepted


def _verify(design: SpexDesign, vectors: np.ndarray, supports: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares amplitude ρ and mean squared residual of each bin vector for its candidate support."""
    signs = design.delay_signs(supports).T  # (B, p + 1)
    amplitudes = np.mean(signs * vectors, axis=1)
    residuals = np.mean((vectors - amplitudes[:, None] * signs) ** 2, axis=1)
    return amplitudes, residuals


def _acceptable(design, supports, amplitudes, residuals, vectors, group_idx, bin_idx, thresholds) -> np.ndarray:
    """The singleton tests: the support hashes to its bin, the residual is noise-sized, the amplitude is significant."""
    in_bin = design.bins(supports)[group_idx, np.arange(len(supports))] == bin_idx
    bin_energy = np.mean(vectors**2, axis=1)
    small_residual = residuals <= np.maximum(thresholds.residual, thresholds.relative * bin_energy)
    return in_bin & small_residual & (amplitudes**2 > thresholds.amplitude)


def _chase(design, vectors, group_idx, bin_idx, thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chase-II soft decoding: flip every subset of the t least reliable bits (and the complement of
    each candidate, in case the zero-delay sign is wrong); keep the accepted candidate with the
    smallest residual."""
    batch, p, t = len(vectors), design.p, design.t
    flips = min(t, p)
    bits = (vectors[:, 1:] * vectors[:, :1]) < 0
    weakest = np.argpartition(np.abs(vectors[:, 1:]), flips - 1, axis=1)[:, :flips]  # (B, flips)
    patterns = ((np.arange(1 << flips)[:, None] >> np.arange(flips)) & 1).astype(bool)  # (P, flips)
    flip_masks = np.zeros((batch, len(patterns), p), dtype=bool)
    rows = np.arange(batch)[:, None, None]
    flip_masks[rows, np.arange(len(patterns))[None, :, None], weakest[:, None, :]] = patterns[None]
    candidates = bits[:, None, :] ^ flip_masks
    candidates = np.concatenate([candidates, ~candidates], axis=1)  # (B, 2P, p)
    per_row = candidates.shape[1]
    supports, ok = design.code.decode_parity(candidates.reshape(-1, p))
    repeated = np.repeat(np.arange(batch), per_row)
    amplitudes, residuals = _verify(design, vectors[repeated], supports)
    accepted = ok & _acceptable(
        design, supports, amplitudes, residuals, vectors[repeated], group_idx[repeated], bin_idx[repeated], thresholds
    )
    score = np.where(accepted, residuals, np.inf).reshape(batch, per_row)
    best = np.argmin(score, axis=1)
    pick = np.arange(batch) * per_row + best
    return supports[pick], amplitudes[pick], accepted[pick]


def check_values(values, expected: int) -> np.ndarray:
    """``values`` as float64 (expected,); ValueError when the count is wrong or any is not finite."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) != expected:
        hint = " (for a nested design at a smaller b, pass values[:design.num_queries])" if len(values) > expected else ""
        raise ValueError(f"expected {expected} values, one per query of the design, got {len(values)}{hint}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"values must be finite: {int(bad.sum())} are NaN or infinite (first at query {int(np.argmax(bad))})")
    return values
