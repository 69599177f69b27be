"""Refits of a Fourier support on all query values, and the cross-validation that chooses a support.

Masks are bool (Q, n), True = feature kept. A support is a list of sorted tuples of feature
indices, ``()`` the constant; its features are the parities (−1)^{⟨k, x⟩}.

Cross-validation must measure what a user measures: the error on masks unlike the queries. SPEX
queries come in cosets (query q = (l·C + c)(p + 1) + r is the mask M_cᵀl ⊕ d_r), and folds that
interleave single queries leave every coset in training: on a 1087-word review an 1088-term
least-squares fit scored 6% below the constant model on such folds and R² −15 on uniform masks.
``delay_folds`` holds out whole delays r instead, i.e. cosets no training query lies in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from spex_ray.design import Design, FilledDesign, SpexDesign
from spex_ray.interactions import Interactions

Refit = Literal["ls", "lasso"] | None
Support = list[tuple[int, ...]]

#: Folds of every cross-validation in the core (refit supports, tree grids, LASSO penalties).
FOLDS = 5
#: Tikhonov jitter of the cross-validation solves and of the final refit, relative to the mean
#: Gram diagonal: keeps a rank-deficient support solvable; the refit's is small enough that exact
#: values give coefficients exact to ~1e-10.
_JITTER = 1e-9
_REFIT_JITTER = 1e-11


def fourier_features(masks: np.ndarray, supports: Sequence[tuple[int, ...]], dtype=np.float64) -> np.ndarray:
    """(Q, S) of ``dtype``: (−1)^{⟨k, x⟩} for masks bool (Q, n) (True = kept) and supports k (tuples of indices)."""
    width = max((len(k) for k in supports), default=0)
    padded = np.full((len(supports), max(width, 1)), masks.shape[1], dtype=np.int64)
    for row, k in enumerate(supports):
        padded[row, : len(k)] = k
    signs = np.ones((len(masks), masks.shape[1] + 1), dtype=dtype)  # the last column: "no feature"
    signs[:, :-1] -= 2 * masks
    features = signs[:, padded[:, 0]]
    for column in range(1, padded.shape[1]):
        features *= signs[:, padded[:, column]]
    return features


def delay_folds(num_values: int, delays: int, coded: int | None = None) -> np.ndarray:
    """int (Q,): the fold of each query. The first ``coded`` queries (default all) are a SPEX design
    with ``delays`` = p + 1 delays per coset: (q mod delays) mod FOLDS, so a fold holds whole
    delays (q mod FOLDS when delays < FOLDS); the queries after them (uniform masks) go round-robin."""
    q = np.arange(num_values)
    coded = num_values if coded is None else coded
    fold = q % FOLDS
    if delays >= FOLDS:
        fold[:coded] = (q[:coded] % delays) % FOLDS
    return fold


def design_folds(design: Design) -> np.ndarray:
    """int (num_queries,): ``delay_folds`` of a design's queries (whole delays of its SPEX part,
    round-robin on uniform masks)."""
    spex = design.spex if isinstance(design, FilledDesign) else design if isinstance(design, SpexDesign) else None
    if spex is None:
        return delay_folds(design.num_queries, 1)
    return delay_folds(design.num_queries, spex.p + 1, coded=spex.num_queries)


def gram(features: np.ndarray) -> np.ndarray:
    """float64 (S, S): FᵀF of ±1 features (Q, S), computed in float32 (exact: integers below 2^24)
    when Q < 2^24, by a symmetric rank-k update (half a matrix product)."""
    if len(features) < 2**24:
        syrk, signs = scipy.linalg.blas.ssyrk, np.ascontiguousarray(features, dtype=np.float32)
    else:
        syrk, signs = scipy.linalg.blas.dsyrk, np.ascontiguousarray(features, dtype=np.float64)
    lower = syrk(1.0, signs.T, lower=1).astype(np.float64)  # signs.T is Fortran-ordered: no copy
    return lower + np.tril(lower, -1).T


def cholesky(gram_matrix: np.ndarray, jitter: float = _JITTER, ridge: float = 0.0) -> np.ndarray:
    """Lower Cholesky factor of ``gram_matrix`` plus ``ridge`` and a Tikhonov jitter relative to its
    mean diagonal on the diagonal (the jitter raised 100-fold until rounding no longer breaks a
    rank-deficient Gram matrix)."""
    scale = max(np.trace(gram_matrix) / max(len(gram_matrix), 1), 1.0)
    while True:
        g = gram_matrix.copy()
        g[np.diag_indices_from(g)] += ridge + jitter * scale
        try:
            return scipy.linalg.cholesky(g, lower=True)
        except np.linalg.LinAlgError:
            jitter *= 100.0


def prefix_cv_errors(features: np.ndarray, values: np.ndarray, fold: np.ndarray, widths: Sequence[int],
                     penalties: Sequence[float] = (0.0,)) -> np.ndarray:
    """float (len(penalties), len(widths)): mean squared held-out error over the folds of ridge
    regression (penalty × the training rows; 0: least squares) on the first w columns of ±1
    ``features`` (Q, S), for each penalty and each w in ``widths``.

    One Gram matrix of all rows serves every fold (a training Gram is it minus the fold's), and one
    Cholesky factor per fold and penalty serves every prefix (the factor of a leading block is the
    leading block of the factor)."""
    width = max(widths)
    features = features[:, :width]
    total, rhs = gram(features), features.T.astype(np.float64) @ values
    errors = np.zeros((len(penalties), len(widths)))
    for k in range(FOLDS):
        test = fold == k
        if not test.any():
            continue
        held = features[test]
        train, train_rhs = total - gram(held), rhs - held.T.astype(np.float64) @ values[test]
        for i, penalty in enumerate(penalties):
            factor = cholesky(train, ridge=penalty * (len(values) - len(held)))
            for j, w in enumerate(widths):
                coef = scipy.linalg.cho_solve((factor[:w, :w], True), train_rhs[:w])
                errors[i, j] += np.sum((values[test] - held[:, :w] @ coef) ** 2)
    return errors / len(values)


def cross_validated_error(features: np.ndarray, values: np.ndarray, fold: np.ndarray) -> float:
    """Mean squared held-out error of least squares on ``features`` (Q, S) (±1) over the folds ``fold`` (Q,)."""
    return float(prefix_cv_errors(features, values, fold, [features.shape[1]])[0, 0])


def choose_support(masks: np.ndarray, values: np.ndarray, candidates: Sequence[Support],
                   fold: np.ndarray) -> tuple[Support, float]:
    """The candidate whose least-squares fit predicts held-out folds best, and its error (first on ties)."""
    errors = [cross_validated_error(fourier_features(masks, keys, np.float32), values, fold) for keys in candidates]
    best = int(np.argmin(errors))
    return list(candidates[best]), errors[best]


def with_singles(support: Support, n: int) -> Support:
    """``support`` followed by every single-feature term it lacks (order kept, no duplicates)."""
    return list(dict.fromkeys([*support, *((i,) for i in range(n))]))


def refit(masks: np.ndarray, values: np.ndarray, keys: Support, method: Refit, seed: int = 0, *,
          penalty: float = 0.0) -> Interactions:
    """Fourier interactions on ``keys`` re-estimated from all values: least squares ("ls"; ridge
    with ``penalty`` × Q when it is above 0) or scikit-learn LassoCV ("lasso", folds shuffled with
    ``seed``); zero coefficients are dropped."""
    if method == "ls":
        features = fourier_features(masks, keys, np.float32)
        factor = cholesky(gram(features), _REFIT_JITTER, ridge=penalty * len(values))
        coef = scipy.linalg.cho_solve((factor, True), features.T.astype(np.float64) @ values)
    else:
        features = fourier_features(masks, keys)
        from sklearn.linear_model import LassoCV
        from sklearn.model_selection import KFold

        model = LassoCV(cv=KFold(FOLDS, shuffle=True, random_state=seed), fit_intercept=False)
        coef = model.fit(features, values).coef_
    return Interactions({k: float(c) for k, c in zip(keys, coef) if c != 0.0}, n=masks.shape[1], index="fourier")
