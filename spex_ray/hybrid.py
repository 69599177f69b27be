"""SPEX with a tree proxy: SPEX's coded queries, with a second source of support from boosted trees.

``fit_spex_hybrid(design, values)`` spends no query beyond the design's. Candidate supports,
compared by the same 5-fold cross-validated squared error (folds of whole delays, ``refit.delay_folds``):

1. SPEX's own (``peeling.select_peeled_support``): the peeled supports, with all single-feature
   terms when least squares can afford them;
2. that support plus the m largest Fourier terms of gradient-boosted trees fit to the same masks
   and values (ProxySPEX's proxy, ``trees.tree_fourier``), m = 8, 16, 32, … up to min(Q/8, 1024).

Peeling is exact for sparse transforms but stalls when more terms of similar size share the
2^b bins than they can separate (many small AND-type terms, long inputs at a small b); trees
find such dense low-order structure. The tree terms are ranked from the values themselves, so
their cross-validation is nested: each fold refits the trees on its training queries and ranks
their terms again. Scoring a support chosen from all queries on folds of the same queries rewards
size, and on the structured SPEX masks a large support then generalises badly to other masks.
The chosen support is refit by least squares on all values.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from spex_ray.design import SpexDesign
from spex_ray.interactions import Interactions
from spex_ray.peeling import Decoder, check_values, peel_candidates, select_peeled_support
from spex_ray.refit import FOLDS, Support, delay_folds, fourier_features, refit
from spex_ray.trees import GRID_COUNTS, GRID_DEPTHS, GRID_RATES, TreeBackend, select_trees, tree_backend, tree_fourier

#: The numbers of tree terms offered: from 8, doubling, up to an eighth of the queries and 1024
#: (the nested least squares cost queries x terms^2 per fold).
_MIN_TREE_TERMS = 8
_MAX_TREE_TERMS_PER_QUERY = 1 / 8
_MAX_TREE_TERMS = 1024
#: Tikhonov jitter of the nested least-squares solves, relative to the mean Gram diagonal.
_JITTER = 1e-9


def fit_spex_hybrid(
    design: SpexDesign,
    values: np.ndarray,
    decoder: Decoder = "soft",
    *,
    backend: TreeBackend = "lightgbm",
    max_iterations: int = 100,
) -> Interactions:
    """Fourier interactions from the values of ``design``'s queries, float (num_queries,) in
    query-id order: SPEX's support or SPEX's plus tree terms, whichever predicts held-out folds
    best, refit by least squares. ``backend``: "lightgbm" or "sklearn" trees (one thread each)."""
    values = check_values(values, design.num_queries)
    masks = design.masks()
    peeled = peel_candidates(design, values, decoder, max_iterations=max_iterations)
    keys, error = select_peeled_support(design, masks, values, peeled)
    sizes = tree_term_counts(len(values))
    if sizes:
        trees = tree_backend(backend)
        x = masks.astype(np.float64)
        setting = select_trees(trees, x, values, GRID_DEPTHS, GRID_RATES, GRID_COUNTS, design.seed)
        fold = delay_folds(len(values), design.p + 1)
        errors = _nested_errors(trees, setting, x, masks, values, fold, keys, sizes, design.seed)
        best = int(np.argmin(errors))
        if errors[best] < error:
            ranked = _ranked_tree_terms(trees, setting, x, values, design.seed)
            keys = _union_prefixes(keys, ranked, sizes[best : best + 1])[0]
    return refit(masks, values, keys, "ls")


def tree_term_counts(num_values: int) -> list[int]:
    """The numbers of tree terms offered for ``num_values`` queries: 8, 16, … ≤ min(num_values / 8, 1024)."""
    counts, m = [], _MIN_TREE_TERMS
    while m <= min(num_values * _MAX_TREE_TERMS_PER_QUERY, _MAX_TREE_TERMS):
        counts.append(m)
        m *= 2
    return counts


def _ranked_tree_terms(trees, setting, x: np.ndarray, values: np.ndarray, seed: int) -> Support:
    """Non-constant Fourier terms of trees fit to (x, values), largest |coefficient| first."""
    depth, rate, count = setting
    forest = trees.fit(x, values, depth=depth, learning_rate=rate, n_estimators=count, seed=seed)
    keys, coef, _ = tree_fourier(trees.read(forest), x.shape[1])
    order = np.argsort(-np.abs(coef), kind="stable")
    n = x.shape[1]
    return [tuple(int(i) for i in row if i < n) for row in keys[order]]


def _union_prefixes(base: Support, ranked: Support, sizes: list[int]) -> list[Support]:
    """For each size m: ``base`` followed by the first m ranked terms it lacks."""
    present = set(base)
    extra = [key for key in dict.fromkeys(ranked) if key not in present]
    return [base + extra[:m] for m in sizes]


def _nested_errors(trees, setting, x, masks, values, fold, base: Support, sizes: list[int], seed: int) -> np.ndarray:
    """float (len(sizes),): cross-validated mean squared error of least squares on ``base`` plus
    the m top tree terms, with the trees refit and re-ranked inside each training fold."""
    errors = np.zeros(len(sizes))
    for k in range(FOLDS):
        train, test = fold != k, fold == k
        ranked = _ranked_tree_terms(trees, setting, x[train], values[train], seed)
        supports = _union_prefixes(base, ranked, sizes)
        features = fourier_features(masks, supports[-1])
        errors += _prefix_errors(features[train], values[train], features[test], values[test], [len(s) for s in supports])
    return errors / len(values)


def _prefix_errors(train_x, train_y, test_x, test_y, widths: list[int]) -> np.ndarray:
    """Held-out squared error of least squares on the first w columns, for each w in ``widths``.

    One Cholesky factor of the training Gram matrix serves every prefix: the factor of a leading
    block is the leading block of the factor. The columns are ±1, so the Gram matrix holds integers
    below 2^24 and float32 computes it exactly, twice as fast.
    """
    exact = np.float32 if len(train_x) < 2**24 else np.float64
    signs = train_x.astype(exact)
    gram = (signs.T @ signs).astype(np.float64)
    gram[np.diag_indices_from(gram)] += _JITTER * max(np.trace(gram) / len(gram), 1.0)
    factor = scipy.linalg.cholesky(gram, lower=True)
    rhs = train_x.T @ train_y
    errors = np.empty(len(widths))
    for i, w in enumerate(widths):
        coef = scipy.linalg.cho_solve((factor[:w, :w], True), rhs[:w])
        errors[i] = np.sum((test_y - test_x[:, :w] @ coef) ** 2)
    return errors
