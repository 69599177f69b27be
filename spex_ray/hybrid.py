"""SPEX with a tree proxy: SPEX's coded queries, with a second source of support from boosted trees.

``fit_spex_hybrid(design, values)`` spends no query beyond the design's: a ``SpexDesign``, a
``FilledDesign`` (SPEX's queries, then uniform masks up to a budget) or a ``UniformDesign``.
Candidate supports, compared by the same 5-fold cross-validated squared error (folds of whole
delays on the coded queries, round-robin on uniform masks, ``refit.delay_folds``):

1. SPEX's own: the peeled supports (noise-aware and as if exact, ``peeling.peel_candidates``;
   the constant alone with no coded queries), each alone and followed by every single-feature
   term when there are at most as many terms as queries;
2. the best peeled support, and it with every single-feature term, followed by the m largest
   Fourier terms of gradient-boosted trees fit to the same masks and values (ProxySPEX's proxy,
   ``trees.tree_fourier``), m = 8, 16, 32, … up to min(Q/2, 512). The peeled support alone goes
   on to the tree terms only with fewer than 8 queries per feature: on long inputs least squares
   on every single feature costs more than it explains (on a 641-word review at 2,448 queries
   the held-out R² rose from 0.70 to 0.76, ProxySPEX's 0.756).

Every candidate is fit by ridge regression with a penalty of 0, 0.001, 0.01 or 0.1 per query.

Peeling is exact for sparse transforms but stalls when more terms of similar size share the
2^b bins than they can separate (many small AND-type terms, long inputs at a small b); trees
find such dense low-order structure. The tree terms are ranked from the values themselves, so
their cross-validation is nested: each fold ranks the terms of trees fit to its training queries
only. Those are the fold models of the trees' own grid search (``trees.cross_validate_trees``),
so the nesting costs no extra tree fit, and the final ranking sums the five fold models'
transforms (a bagged ensemble) instead of fitting the trees again: 10 tree fits in all, one fewer
than ProxySPEX (same or better held-out R² than a final fit on 8 reviews at 1,000–5,000 queries).
Scoring a support chosen from all queries on folds of the same queries rewards size, and on the
structured SPEX masks a large support then generalises badly to other masks. The chosen support
is refit on all values with the chosen penalty. Ridge lets few queries carry many tree terms: at 1,000
uniform masks on reviews scored by VADER the median held-out R² rose from 0.72 (least squares,
at most Q/8 terms) to 0.79.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from spex_ray.design import FilledDesign, SpexDesign, UniformDesign
from spex_ray.interactions import Interactions
from spex_ray.peeling import Decoder, check_values, peel_candidates
from spex_ray.refit import Support, cholesky, design_folds, fourier_features, gram, prefix_cv_errors, refit, with_singles
from spex_ray.trees import GRID_COUNTS, GRID_DEPTHS, GRID_RATES, TreeBackend, cross_validate_trees, sum_by_key, tree_backend, tree_fourier

#: The numbers of tree terms offered: from 8, doubling, up to half the queries and 512
#: (the nested fits cost queries x terms^2 per fold).
_MIN_TREE_TERMS = 8
_MAX_TREE_TERMS_PER_QUERY = 1 / 2
_MAX_TREE_TERMS = 512
#: Ridge penalties offered with the tree terms, per query (the Gram diagonal is the query count).
_PENALTIES = (0.0, 1e-3, 1e-2, 1e-1)
#: Cross-validated errors within this fraction of the values' variance are ties, won by the
#: simpler candidate (exact values fit exactly by several supports differ by rounding only).
_TIE = 1e-9
#: Values per feature from which every single-feature term stays in the support the tree terms
#: extend (fewer: the tree terms also extend the peeled support alone, which long inputs need).
_SINGLES_ALWAYS = 8


def fit_spex_hybrid(
    design: SpexDesign | FilledDesign | UniformDesign,
    values: np.ndarray,
    decoder: Decoder = "soft",
    *,
    backend: TreeBackend = "lightgbm",
    max_iterations: int = 100,
) -> Interactions:
    """Fourier interactions from the values of ``design``'s queries, float (num_queries,) in
    query-id order: SPEX's support or SPEX's plus tree terms, whichever predicts held-out folds
    best, refit by least squares or ridge on every value. A ``FilledDesign``'s uniform masks inform
    the trees, the cross-validation and the refit; peeling reads the SPEX part.
    ``backend``: "lightgbm" or "sklearn" trees (one thread each)."""
    return fit_spex_hybrid_cv(design, values, decoder, backend=backend, max_iterations=max_iterations)[0]


def fit_spex_hybrid_cv(
    design: SpexDesign | FilledDesign | UniformDesign,
    values: np.ndarray,
    decoder: Decoder = "soft",
    *,
    backend: TreeBackend = "lightgbm",
    max_iterations: int = 100,
) -> tuple[Interactions, float]:
    """``fit_spex_hybrid``'s interactions and the cross-validated mean squared error of the chosen
    support (the nested error when tree terms were chosen)."""
    values = check_values(values, design.num_queries)
    masks = design.masks()
    spex = design.spex if isinstance(design, FilledDesign) else design if isinstance(design, SpexDesign) else None
    fold = design_folds(design)
    peeled = [{}] if spex is None else peel_candidates(spex, values[: spex.num_queries], decoder,
                                                         max_iterations=max_iterations)
    tolerance = _TIE * float(np.var(values))
    bases, base_errors = _base_supports(masks, values, peeled, fold, tolerance)
    b, i = _first_best(base_errors, tolerance)
    keys, error, penalty = bases[b], float(base_errors[b, i]), _PENALTIES[i]
    # a support that already fits the held-out folds exactly (error within the tie) cannot be beaten
    # by tree terms: no tree is fit (6 of the demo's 20 reviews; a fifth of its fit CPU)
    sizes = tree_term_counts(len(values)) if error > tolerance else []
    if sizes:
        trees = tree_backend(backend)
        (_, _, count), fold_models = cross_validate_trees(
            trees, masks.astype(np.float32), values, fold, GRID_DEPTHS, GRID_RATES, GRID_COUNTS, design.seed)
        if len(values) >= _SINGLES_ALWAYS * design.n:
            bases = bases[-1:]
        limit = len(bases[-1]) + sizes[-1]
        transforms = [tree_fourier(trees.read(model, count), design.n)[:2] for model in fold_models]
        errors = sum(_nested_errors(masks, values, fold == k, bases, _ranked_terms(*transform, design.n, limit), sizes)
                     for k, transform in enumerate(transforms)) / len(values)
        b, i, j = _first_best(errors, tolerance)
        if errors[b, i, j] < error - tolerance:
            width = max(keys.shape[1] for keys, _ in transforms)  # the fold models' trees may differ in depth
            padded = [np.pad(keys, ((0, 0), (0, width - keys.shape[1])), constant_values=design.n)
                      for keys, _ in transforms]
            summed = sum_by_key(np.concatenate(padded), np.concatenate([coef for _, coef in transforms]), design.n)
            keys = _extended(bases[b], _ranked_terms(*summed, design.n, limit), sizes[j])
            penalty, error = _PENALTIES[i], float(errors[b, i, j])
    return refit(masks, values, keys, "ls", penalty=penalty), error


def _first_best(errors: np.ndarray, tolerance: float) -> tuple[int, ...]:
    """The first index (C order: simplest first) whose error is within ``tolerance`` of the least."""
    return np.unravel_index(np.argmax(errors.ravel() <= errors.min() + tolerance), errors.shape)


def _base_supports(masks: np.ndarray, values: np.ndarray, peeled: list[dict], fold: np.ndarray,
                   tolerance: float) -> tuple[list[Support], np.ndarray]:
    """SPEX's supports: the peeled support (with the constant) that predicts held-out folds best,
    and that support followed by every single-feature term when there are at most as many terms
    as values; their cross-validated errors (len(supports), len(_PENALTIES)) with ridge."""
    best, best_errors = None, None
    for found in peeled:
        support = list(dict.fromkeys([(), *found]))
        wider = with_singles(support, masks.shape[1])
        widths = [len(support)] + ([len(wider)] if len(support) < len(wider) <= len(values) else [])
        errors = prefix_cv_errors(fourier_features(masks, wider[: widths[-1]], np.float32), values, fold, widths, _PENALTIES)
        if best is None or errors[:, 0].min() < best_errors[:, 0].min() - tolerance:
            best, best_errors = [wider[:w] for w in widths], errors
    return best, best_errors.T


def _nested_errors(masks, values, test, bases: list[Support], ranked: Support, sizes: list[int]) -> np.ndarray:
    """float (len(bases), len(_PENALTIES), len(sizes)): squared error on the ``test`` rows of ridge
    fits to the other rows on each base followed by the first m ``ranked`` terms it lacks, for each
    penalty and m in ``sizes``. One Gram matrix of every column serves all, and one Cholesky factor
    per base and penalty every m (the factor of a leading block is the leading block of the factor)."""
    columns = list(dict.fromkeys([*bases[-1], *_extended(bases[-1], ranked, sizes[-1])]))
    position = {key: i for i, key in enumerate(columns)}
    features = fourier_features(masks, columns, np.float32)
    train, test = ~test, np.flatnonzero(test)
    training = features[train]
    total_gram, total_rhs = gram(training), values[train] @ training
    errors = np.empty((len(bases), len(_PENALTIES), len(sizes)))
    for b, base in enumerate(bases):
        order = np.array([position[key] for key in _extended(base, ranked, sizes[-1])])
        widths = [min(len(base) + m, len(order)) for m in sizes]
        block, rhs, held = total_gram[np.ix_(order, order)], total_rhs[order], features[np.ix_(test, order)]
        for i, penalty in enumerate(_PENALTIES):
            factor = cholesky(block, ridge=penalty * train.sum())
            for j, w in enumerate(widths):
                coef = scipy.linalg.cho_solve((factor[:w, :w], True), rhs[:w])
                errors[b, i, j] = np.sum((values[test] - held[:, :w] @ coef) ** 2)
    return errors


def tree_term_counts(num_values: int) -> list[int]:
    """The numbers of tree terms offered for ``num_values`` queries: 8, 16, … ≤ min(num_values / 2, 512)."""
    counts, m = [], _MIN_TREE_TERMS
    while m <= min(num_values * _MAX_TREE_TERMS_PER_QUERY, _MAX_TREE_TERMS):
        counts.append(m)
        m *= 2
    return counts


def _ranked_terms(keys: np.ndarray, coef: np.ndarray, n: int, limit: int) -> Support:
    """The ``limit`` terms with the largest |coef|, largest first; ``keys`` int (K, D) padded with n."""
    order = np.argsort(-np.abs(coef), kind="stable")[:limit]
    return [tuple(int(i) for i in row if i < n) for row in keys[order]]


def _extended(base: Support, ranked: Support, m: int) -> Support:
    """``base`` followed by the first m ``ranked`` terms it lacks."""
    present = set(base)
    return base + [key for key in dict.fromkeys(ranked) if key not in present][:m]
