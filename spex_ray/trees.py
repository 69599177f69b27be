"""Gradient-boosted trees on 0/1 masks and their exact Fourier transform.

Masks are bool (Q, n), True = feature kept; a tree splits feature i at a threshold in [0, 1), so
x_i = 0 goes left. ``tree_backend`` fits ensembles with scikit-learn's HistGradientBoostingRegressor
or LightGBM (one thread each: callers parallelise across examples), ``select_trees`` and
``cross_validate_trees`` pick their size by cross-validation (the latter on given folds, keeping
the fold models) and ``tree_fourier`` turns a fitted ensemble into Fourier coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from spex_ray.refit import FOLDS

__all__ = ["GRID_COUNTS", "GRID_DEPTHS", "GRID_RATES", "TreeArrays", "TreeBackend", "cross_validate_trees",
           "select_trees", "sum_by_key", "tree_backend", "tree_fourier"]

TreeBackend = Literal["lightgbm", "sklearn"]

#: ProxySPEX's grid of tree settings, searched by ``select_trees``: depth, learning rate, trees.
GRID_DEPTHS = (3, 5)
GRID_RATES = (0.2,)
GRID_COUNTS = (50, 100, 200)

_LEAF_BLOCK_ENTRIES = 2**22


@dataclass(frozen=True)
class TreeArrays:
    """Nodes of an ensemble of binary trees on 0/1 features, all trees concatenated.

    feature, left, right: int (nodes,), the split feature and the child indices (into these arrays)
    for x_feature = 0 (left) and x_feature = 1 (right); ignored at leaves.
    is_leaf: bool (nodes,). value: float (nodes,), the leaf outputs, already scaled by the learning
    rate. roots: int (trees,), the root of each tree. base: the constant added to the tree sum.
    """

    feature: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    base: float


def tree_fourier(trees: TreeArrays, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact Fourier transform of base + sum of the trees, as (keys, coef, constant).

    keys: int (K, D), each row the sorted features of one non-constant term, padded with n;
    coef: float (K,); constant: F(()).
    A leaf reached by the conditions x_i = d_i, i in P, is the product of the indicators
    [x_i = d_i] = (1 + (-1)^{d_i} (-1)^{x_i}) / 2, so its value v spreads as
    v 2^{-|P|} (-1)^{sum_{i in T} d_i} onto every T subset of P. This is the split recursion
    F(S) = (F_L(S) + F_R(S)) / 2, F(S xor {i}) = (F_L(S) - F_R(S)) / 2 unrolled. A feature split
    again below a split on it repeats a condition: the same direction is the same indicator
    (dropped), the opposite direction makes the leaf unreachable (zero).
    """
    leaves, path_features, path_dirs = _leaf_paths(trees, n)
    path_features, reachable = _dedupe_paths(path_features, path_dirs, n)
    leaves, path_features, path_dirs = leaves[reachable], path_features[reachable], path_dirs[reachable]
    depth = path_features.shape[1]
    values = trees.value[leaves] * 0.5 ** np.sum(path_features < n, axis=1)
    subsets = (np.arange(2**depth)[:, None] >> np.arange(depth)) & 1 == 1
    block = max(1, _LEAF_BLOCK_ENTRIES // (2**depth * max(depth, 1)))
    parts_keys, parts_coef = [], []
    for start in range(0, len(leaves), block):
        feats = path_features[start : start + block, None, :]
        dirs = path_dirs[start : start + block, None, :]
        used = subsets[None, :, :]
        valid = ~np.any(used & (feats == n), axis=2)
        keys = np.sort(np.where(used, feats, n), axis=2)
        signs = 1.0 - 2.0 * (np.sum(used & dirs, axis=2) % 2)
        coef = values[start : start + block, None] * signs
        parts_keys.append(keys[valid])
        parts_coef.append(coef[valid])
    keys, coef = sum_by_key(
        np.concatenate(parts_keys) if parts_keys else np.full((0, depth), n),
        np.concatenate(parts_coef) if parts_coef else np.zeros(0),
        n,
    )
    is_constant = np.all(keys == n, axis=1)
    constant = trees.base + float(coef[is_constant].sum())
    keys, coef = keys[~is_constant], coef[~is_constant]
    nonzero = coef != 0.0
    return keys[nonzero], coef[nonzero], constant


class _SklearnTrees:
    """scikit-learn HistGradientBoostingRegressor; its fitted trees are read from its predictors.

    The predictors (``_predictors``, ``_baseline_prediction``) are private attributes, stable since
    scikit-learn 0.21; tests check that the extracted transform reproduces ``predict`` exactly.

    Fits and predictions run on one OpenMP thread: callers parallelise across examples, and
    OpenMP's spinning threads make these small fits 10-30x slower on a busy machine.
    """

    def fit(self, x, y, *, depth, learning_rate, n_estimators, seed):
        model = HistGradientBoostingRegressor(
            learning_rate=learning_rate,
            max_iter=n_estimators,
            max_depth=depth,
            max_leaf_nodes=None,
            max_bins=2,
            early_stopping=False,
            random_state=seed,
        )
        with threadpool_limits(limits=1, user_api="openmp"):
            return model.fit(x, y)

    def staged_predict(self, model, x, counts):
        wanted = set(counts)
        with threadpool_limits(limits=1, user_api="openmp"):
            stages = [p for i, p in enumerate(model.staged_predict(x), start=1) if i in wanted]
        return np.stack(stages)

    def read(self, model, count: int | None = None) -> TreeArrays:
        nodes = [predictors[0].nodes for predictors in model._predictors[:count]]
        return _concat_trees(
            [
                (t["feature_idx"], t["num_threshold"], t["left"], t["right"], t["is_leaf"] == 1, t["value"])
                for t in nodes
            ],
            base=float(np.ravel(model._baseline_prediction)[0]),
        )


class _LightGBMTrees:
    """LightGBM LGBMRegressor; its fitted trees are read from the booster's text model."""

    def __init__(self):
        import lightgbm

        self._lightgbm = lightgbm

    def fit(self, x, y, *, depth, learning_rate, n_estimators, seed):
        model = self._lightgbm.LGBMRegressor(
            n_estimators=n_estimators,
            learning_rate=learning_rate,
            max_depth=depth,
            num_leaves=2**depth,
            random_state=seed,
            n_jobs=1,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        return model.fit(x, y)

    def staged_predict(self, model, x, counts):
        return np.stack([model.predict(x, num_iteration=c) for c in counts])

    def read(self, model, count: int | None = None) -> TreeArrays:
        text = model.booster_.model_to_string(num_iteration=count)
        return _concat_trees([_parse_lightgbm_tree(block) for block in text.split("\nTree=")[1:]], base=0.0)


def _parse_lightgbm_tree(block: str) -> tuple[np.ndarray, ...]:
    """One tree of LightGBM's text model as (feature, threshold, left, right, is_leaf, value): its
    k internal nodes first (root at 0), then its k + 1 leaves (a child c < 0 is leaf -c - 1)."""
    fields = dict(line.split("=", 1) for line in block.split("\n") if "=" in line)
    leaves = np.array(fields["leaf_value"].split(), dtype=np.float64)
    k = len(leaves) - 1
    if k == 0:
        return np.zeros(1, np.int64), np.full(1, 0.5), np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, bool), leaves

    def ints(name):
        return np.array(fields[name].split(), dtype=np.int64)

    if np.any(ints("decision_type") & 1):
        raise RuntimeError("unsupported LightGBM split: categorical")
    children = [np.where(c >= 0, c, k - c - 1) for c in (ints("left_child"), ints("right_child"))]
    pad = np.zeros(k + 1, np.int64)
    return (
        np.concatenate([ints("split_feature"), pad]),
        np.concatenate([np.array(fields["threshold"].split(), dtype=np.float64), np.full(k + 1, 0.5)]),
        np.concatenate([children[0], pad]),
        np.concatenate([children[1], pad]),
        np.concatenate([np.zeros(k, bool), np.ones(k + 1, bool)]),
        np.concatenate([np.zeros(k), leaves]),
    )


def tree_backend(backend: str):
    """The tree library named ``backend``: "sklearn" or "lightgbm"."""
    if backend == "sklearn":
        return _SklearnTrees()
    if backend == "lightgbm":
        return _LightGBMTrees()
    raise ValueError(f"backend must be 'sklearn' or 'lightgbm', got {backend!r}")


def _concat_trees(trees: list[tuple[np.ndarray, ...]], base: float) -> TreeArrays:
    """Concatenate per-tree (feature, threshold, left, right, is_leaf, value) arrays.

    Splits must send x = 0 left and x = 1 right, i.e. 0 <= threshold < 1 for the rule x <= threshold.
    """
    offsets = np.cumsum([0] + [len(t[0]) for t in trees])
    feature, threshold, left, right, is_leaf, value = (
        np.concatenate([np.asarray(t[j]) for t in trees]) for j in range(6)
    )
    is_leaf = is_leaf.astype(bool)
    shift = np.repeat(offsets[:-1], np.diff(offsets))
    split_thresholds = threshold[~is_leaf]
    if np.any((split_thresholds < 0) | (split_thresholds >= 1)):
        raise RuntimeError("a tree split a 0/1 feature at a threshold outside [0, 1)")
    return TreeArrays(
        feature=feature.astype(np.int64),
        left=left.astype(np.int64) + shift,
        right=right.astype(np.int64) + shift,
        is_leaf=is_leaf,
        value=value.astype(np.float64),
        roots=offsets[:-1],
        base=base,
    )


def _leaf_paths(trees: TreeArrays, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leaves and their root paths: (leaves (L,), features (L, D) padded with n, directions (L, D))."""
    nodes = len(trees.feature)
    parent = np.full(nodes, -1)
    direction = np.zeros(nodes, dtype=bool)
    internal = np.flatnonzero(~trees.is_leaf)
    parent[trees.left[internal]] = internal
    parent[trees.right[internal]] = internal
    direction[trees.right[internal]] = True
    leaves = np.flatnonzero(trees.is_leaf)
    features, directions = [], []
    node = leaves
    while True:
        up = parent[node]
        active = up >= 0
        if not active.any():
            break
        features.append(np.where(active, trees.feature[np.maximum(up, 0)], n))
        directions.append(active & direction[node])
        node = np.where(active, up, node)
    if not features:
        return leaves, np.full((len(leaves), 0), n), np.zeros((len(leaves), 0), dtype=bool)
    return leaves, np.stack(features, axis=1), np.stack(directions, axis=1)


def _dedupe_paths(features: np.ndarray, directions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated conditions on a path; a leaf whose path asks x_i = 0 and x_i = 1 is unreachable."""
    if features.shape[1] < 2:
        return features, np.ones(len(features), dtype=bool)
    order = np.argsort(features, axis=1, kind="stable")
    sorted_f = np.take_along_axis(features, order, axis=1)
    sorted_d = np.take_along_axis(directions, order, axis=1)
    repeat = (sorted_f[:, 1:] == sorted_f[:, :-1]) & (sorted_f[:, 1:] < n)
    conflict = repeat & (sorted_d[:, 1:] != sorted_d[:, :-1])
    sorted_f[:, 1:][repeat] = n
    deduped = np.empty_like(features)
    np.put_along_axis(deduped, order, sorted_f, axis=1)
    return deduped, ~conflict.any(axis=1)


def sum_by_key(keys: np.ndarray, coef: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique key rows (entries in [0, n]) and the summed coefficients of each; rows are read as
    base-(n + 1) integers when they fit in int64 (a 1-D unique is far faster than a row unique)."""
    depth = keys.shape[1]
    if depth * np.log2(n + 1) < 62:
        codes = keys.astype(np.int64) @ ((n + 1) ** np.arange(depth - 1, -1, -1, dtype=np.int64))
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        unique = keys[first]
    else:
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return unique, np.bincount(inverse.ravel(), weights=coef, minlength=len(unique))


def select_trees(trees, x, y, depths, rates, counts, seed) -> tuple[int, float, int]:
    """The (depth, learning rate, count) with the least 5-fold cross-validated squared error (folds shuffled with ``seed``)."""
    fold = np.empty(len(y), dtype=np.int64)
    for k, (_, test) in enumerate(KFold(FOLDS, shuffle=True, random_state=seed).split(x)):
        fold[test] = k
    return cross_validate_trees(trees, x, y, fold, depths, rates, counts, seed)[0]


def cross_validate_trees(trees, x, y, fold, depths, rates, counts, seed) -> tuple[tuple[int, float, int], list]:
    """The (depth, learning rate, count) with the least cross-validated squared error over the folds
    ``fold`` (int (Q,), 0..4), and the models of that depth and rate fit to each fold's training rows
    with max(counts) trees (``trees.read(model, count)`` reads the first ``count``)."""
    best, best_error, best_models = None, np.inf, []
    for depth in depths:
        for rate in rates:
            errors, models = np.zeros(len(counts)), []
            for k in range(FOLDS):
                train, test = fold != k, fold == k
                model = trees.fit(x[train], y[train], depth=depth, learning_rate=rate,
                                  n_estimators=max(counts), seed=seed)
                models.append(model)
                if test.any():
                    errors += np.sum((trees.staged_predict(model, x[test], counts) - y[test]) ** 2, axis=1)
            i = int(np.argmin(errors))
            if errors[i] < best_error:
                best, best_error, best_models = (depth, rate, counts[i]), errors[i], models
    return best, best_models
