"""Baseline interaction estimators on uniform masks: LASSO, Faith-Banzhaf and ProxySPEX.

Every function takes ``masks``, bool (Q, n) with True = feature kept, and ``values``, float (Q,),
the model output on each masked input, and returns an :class:`~spex_ray.interactions.Interactions`
with index ``"fourier"``: f(x) = sum_k F(k) (-1)^{<k, x>}, keyed by sorted tuples of feature
indices, () being the constant term.

Memory: the regressions materialise the parity design, Q x (number of terms), as float64 when it
holds at most 2**24 entries and as float32 (exact for +-1 entries) above; designs beyond
``MAX_DESIGN_ENTRIES`` (1 GiB as float32) are refused. For order 2 that is about
8,000 masks at n = 256 (32,896 terms) or 32,000 masks at n = 128; at n = 256 with 8,000 masks
the order-2 LASSO peaks at ~3 GB and takes ~2 minutes on one busy core.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Lasso, LassoCV, RidgeCV
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from spex_ray.interactions import Interactions

__all__ = [
    "MAX_DESIGN_ENTRIES",
    "MIN_MASKS",
    "TreeArrays",
    "fit_faith_banzhaf",
    "fit_lasso",
    "fit_proxyspex",
    "tree_fourier",
]

MAX_DESIGN_ENTRIES = 2**28
MIN_MASKS = 10

_FLOAT64_DESIGN_ENTRIES = 2**24
_N_FOLDS = 5
_N_ALPHAS = 20
_ALPHA_RATIO = 1e-2
_LSTSQ_RIDGE = 1e-9
_RIDGE_ALPHAS = np.logspace(-6.0, 0.0, 13)
_LEAF_BLOCK_ENTRIES = 2**22

Backend = Literal["sklearn", "lightgbm"]


def fit_lasso(
    masks: np.ndarray,
    values: np.ndarray,
    *,
    order: int = 1,
    alpha: float | None = None,
    seed: int = 0,
) -> Interactions:
    """LASSO on the parity basis (-1)^{<k, x>} for all 1 <= |k| <= order, with an unpenalised intercept.

    masks: bool (Q, n), True = kept. values: float (Q,). order: 1 or 2.
    alpha: the L1 weight of scikit-learn's objective ||y - Xw||^2 / (2Q) + alpha ||w||_1; None picks it
    by 5-fold cross-validation (LassoCV, folds shuffled with ``seed``) over 20 values spaced
    geometrically from the smallest alpha that zeroes every term down to 1e-2 of it.
    Returns index "fourier" with max_order = order; terms the LASSO sets to zero are left out.
    """
    x, y = _check_data(masks, values)
    _check_order(order)
    keys = _keys_up_to(x.shape[1], order)
    design = _parity_design(x, keys)
    if alpha is None:
        model = LassoCV(
            alphas=_lasso_alphas(design, y),
            cv=KFold(_N_FOLDS, shuffle=True, random_state=seed),
            copy_X=False,
        )
    else:
        if not (np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a positive finite number or None, got {alpha!r}")
        model = Lasso(alpha=float(alpha), copy_X=False)
    model.fit(design, y)
    return _interactions(keys, model.coef_, float(model.intercept_), x.shape[1], order)


def fit_faith_banzhaf(masks: np.ndarray, values: np.ndarray, *, order: int = 1) -> Interactions:
    """Least squares on the parity basis for all |k| <= order (the constant term included).

    masks: bool (Q, n), True = kept. values: float (Q,). order: 1 or 2.
    The normal equations carry a ridge of 1e-9 times their mean diagonal, so a rank-deficient or
    under-determined design (fewer masks than terms) gets the minimum-norm solution, and a
    well-posed one moves by a relative ~1e-9. Returns index "fourier" with max_order = order;
    its Möbius transform is the Faith-Banzhaf index of that order.
    """
    x, y = _check_data(masks, values)
    _check_order(order)
    keys = _keys_up_to(x.shape[1], order)
    design = _parity_design(x, keys, constant=True)
    coef = _min_norm_lstsq(design, y)
    return _interactions(keys, coef[1:], float(coef[0]), x.shape[1], order)


def fit_proxyspex(
    masks: np.ndarray,
    values: np.ndarray,
    *,
    seed: int = 0,
    energy: float = 0.95,
    max_depth: int | Sequence[int] = (3, 5),
    n_estimators: int | Sequence[int] = (50, 100, 200),
    learning_rate: float | Sequence[float] = 0.2,
    backend: Backend = "sklearn",
) -> Interactions:
    """ProxySPEX: gradient-boosted trees, their exact Fourier transform, energy pruning, ridge refit.

    masks: bool (Q, n), True = kept, drawn uniformly at random. values: float (Q,).
    1. Grid search over max_depth x n_estimators x learning_rate by 5-fold cross-validated
       squared error (folds shuffled with ``seed``), then a refit of the best trees on all masks.
    2. Exact Fourier transform of the fitted ensemble (the sum of its trees' transforms plus the
       base score).
    3. Keep the largest non-constant coefficients that together hold ``energy`` of the
       non-constant Fourier energy sum_{k != ()} F(k)^2.
    4. Refit those terms and the constant on the same masks with RidgeCV (penalty chosen by
       leave-one-out among Q * 10^-6 .. Q * 10^0).
    backend: "sklearn" (HistGradientBoostingRegressor) or "lightgbm" (needs the lightgbm extra;
    3-4x faster here). Other tree settings are the libraries' defaults (at least
    20 masks per leaf); trees grow on one thread.
    Returns index "fourier"; the order of a term is at most the chosen tree depth.
    """
    x, y = _check_data(masks, values)
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    trees = _tree_backend(backend)
    depths = _grid("max_depth", max_depth, int)
    counts = _grid("n_estimators", n_estimators, int)
    rates = _grid("learning_rate", learning_rate, float)
    features = x.astype(np.float64)
    depth, rate, count = _select_trees(trees, features, y, depths, rates, counts, seed)
    forest = trees.fit(features, y, depth=depth, learning_rate=rate, n_estimators=count, seed=seed)
    keys, coef, constant = tree_fourier(trees.read(forest), x.shape[1])
    kept = _energy_support(coef, energy)
    return _ridge_refit(x, y, keys[kept])


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
    keys, coef = _sum_by_key(
        np.concatenate(parts_keys) if parts_keys else np.full((0, depth), n),
        np.concatenate(parts_coef) if parts_coef else np.zeros(0),
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

    def read(self, model) -> TreeArrays:
        nodes = [predictors[0].nodes for predictors in model._predictors]
        return _concat_trees(
            [
                (t["feature_idx"], t["num_threshold"], t["left"], t["right"], t["is_leaf"] == 1, t["value"])
                for t in nodes
            ],
            base=float(np.ravel(model._baseline_prediction)[0]),
        )


class _LightGBMTrees:
    """LightGBM LGBMRegressor; its fitted trees are read from the booster's model dump."""

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

    def read(self, model) -> TreeArrays:
        trees = [_flatten_lightgbm(info["tree_structure"]) for info in model.booster_.dump_model()["tree_info"]]
        return _concat_trees(trees, base=0.0)


def _flatten_lightgbm(root: dict) -> tuple[np.ndarray, ...]:
    """One LightGBM tree dump as (feature, threshold, left, right, is_leaf, value), root at 0."""
    rows: list[list] = []

    def visit(node: dict) -> int:
        index = len(rows)
        if "leaf_value" in node:
            rows.append([0, 0.5, 0, 0, True, float(node["leaf_value"])])
            return index
        if node.get("decision_type", "<=") != "<=":
            raise RuntimeError(f"unsupported LightGBM split {node.get('decision_type')!r}")
        rows.append([int(node["split_feature"]), float(node["threshold"]), 0, 0, False, 0.0])
        rows[index][2] = visit(node["left_child"])
        rows[index][3] = visit(node["right_child"])
        return index

    visit(root)
    columns = list(zip(*rows))
    return tuple(np.asarray(c) for c in columns)


def _tree_backend(backend: str):
    if backend == "sklearn":
        return _SklearnTrees()
    if backend == "lightgbm":
        if importlib.util.find_spec("lightgbm") is None:
            raise ImportError(
                "backend='lightgbm' needs LightGBM: pip install 'spex-ray[lightgbm]'"
            )
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


def _sum_by_key(keys: np.ndarray, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return unique, np.bincount(inverse.ravel(), weights=coef, minlength=len(unique))


def _select_trees(trees, x, y, depths, rates, counts, seed) -> tuple[int, float, int]:
    """The (depth, learning rate, count) with the least 5-fold cross-validated squared error."""
    folds = list(KFold(_N_FOLDS, shuffle=True, random_state=seed).split(x))
    best, best_error = None, np.inf
    for depth in depths:
        for rate in rates:
            errors = np.zeros(len(counts))
            for train, test in folds:
                model = trees.fit(x[train], y[train], depth=depth, learning_rate=rate,
                                  n_estimators=max(counts), seed=seed)
                predictions = trees.staged_predict(model, x[test], counts)
                errors += np.sum((predictions - y[test]) ** 2, axis=1)
            i = int(np.argmin(errors))
            if errors[i] < best_error:
                best, best_error = (depth, rate, counts[i]), errors[i]
    return best


def _energy_support(coef: np.ndarray, energy: float) -> np.ndarray:
    """Indices of the largest |coef| that together hold ``energy`` of sum coef^2.

    A relative 1e-12 slack on the target absorbs rounding in the cumulative sum (energy = 1 keeps all).
    """
    power = coef**2
    total = power.sum()
    if total == 0.0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-power, kind="stable")
    count = int(np.searchsorted(np.cumsum(power[order]), energy * total * (1 - 1e-12))) + 1
    return order[: min(count, len(order))]


def _ridge_refit(x: np.ndarray, y: np.ndarray, keys: np.ndarray) -> Interactions:
    n = x.shape[1]
    if len(keys) == 0:
        return _interactions(keys, np.zeros(0), float(y.mean()), n, None)
    design = _parity_design(x, keys)
    model = RidgeCV(alphas=len(y) * _RIDGE_ALPHAS).fit(design, y)
    return _interactions(keys, model.coef_, float(model.intercept_), n, None)


def _keys_up_to(n: int, order: int) -> np.ndarray:
    """All non-constant terms of order <= order: int (K, order), singletons then pairs, padded with n."""
    singles = np.column_stack([np.arange(n)] + [np.full(n, n)] * (order - 1))
    if order == 1:
        return singles
    i, j = np.triu_indices(n, k=1)
    return np.concatenate([singles, np.column_stack([i, j])])


def _parity_design(x: np.ndarray, keys: np.ndarray, *, constant: bool = False) -> np.ndarray:
    """(-1)^{<k, x>} for each key row (padded with n): (Q, K [+1]), Fortran order; column 0 = 1 if constant."""
    q, n = x.shape
    _check_design_size(q, len(keys) + constant)
    dtype = np.float64 if q * (len(keys) + constant) <= _FLOAT64_DESIGN_ENTRIES else np.float32
    signs = np.ones((q, n + 1), dtype=dtype)
    signs[:, :n] -= 2 * x
    design = np.empty((q, len(keys) + constant), dtype=dtype, order="F")
    if constant:
        design[:, 0] = 1
    block = max(1, _FLOAT64_DESIGN_ENTRIES // max(q, 1))
    for start in range(0, len(keys), block):
        chunk = keys[start : start + block]
        out = design[:, constant + start : constant + start + len(chunk)]
        out[...] = signs[:, chunk[:, 0]] if chunk.shape[1] else 1
        for column in range(1, chunk.shape[1]):
            out *= signs[:, chunk[:, column]]
    return design


def _min_norm_lstsq(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin ||y - X b||^2 + lambda ||b||^2 with lambda = 1e-9 x the mean diagonal of the Gram matrix."""
    q, k = design.shape
    if q >= k:
        gram = (design.T @ design).astype(np.float64)
        rhs = _transpose_times(design, y)
        return scipy.linalg.solve(gram + _LSTSQ_RIDGE * np.trace(gram) / k * np.eye(k), rhs, assume_a="pos")
    gram = (design @ design.T).astype(np.float64)
    dual = scipy.linalg.solve(gram + _LSTSQ_RIDGE * np.trace(gram) / q * np.eye(q), y, assume_a="pos")
    return _transpose_times(design, dual)


def _transpose_times(design: np.ndarray, v: np.ndarray) -> np.ndarray:
    """design.T @ v in float64, a block of columns at a time (the design may be float32)."""
    q, k = design.shape
    block = max(1, _FLOAT64_DESIGN_ENTRIES // max(q, 1))
    return np.concatenate(
        [design[:, s : s + block].T.astype(np.float64) @ v for s in range(0, k, block)]
    )


def _lasso_alphas(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Geometric alpha grid from the smallest alpha that zeroes every coefficient down to 1e-2 of it.

    With an intercept that alpha is max |X_c^T (y - mean y)| / Q for the centred design X_c, and
    X_c^T (y - mean y) = X^T (y - mean y) because the centred y sums to zero.
    """
    alpha_max = np.max(np.abs(_transpose_times(design, y - y.mean()))) / len(y)
    if alpha_max == 0.0:
        alpha_max = 1.0
    return np.geomspace(alpha_max, alpha_max * _ALPHA_RATIO, _N_ALPHAS)


def _interactions(keys: np.ndarray, coef: np.ndarray, constant: float, n: int, max_order: int | None) -> Interactions:
    values: dict[tuple[int, ...], float] = {(): constant}
    for key, c in zip(keys.tolist(), np.asarray(coef, dtype=np.float64).tolist()):
        if c != 0.0:
            values[tuple(i for i in key if i < n)] = c
    return Interactions(values, n, "fourier", max_order=max_order)


def _check_data(masks, values) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(masks)
    if x.ndim != 2:
        raise ValueError(f"masks must be 2-D (Q, n), got shape {x.shape}")
    if x.dtype != bool:
        if not np.all((x == 0) | (x == 1)):
            raise ValueError("masks must be bool or 0/1 (True/1 = feature kept)")
        x = x.astype(bool)
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"values must have shape ({len(x)},) to match masks {x.shape}, got {y.shape}")
    if x.shape[1] < 1:
        raise ValueError("masks must have at least one feature column")
    if len(x) < MIN_MASKS:
        raise ValueError(f"need at least {MIN_MASKS} masks, got {len(x)}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"values must be finite; {int(np.sum(~np.isfinite(y)))} are NaN or infinite")
    return x, y


def _check_order(order: int) -> None:
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")


def _check_design_size(q: int, terms: int) -> None:
    if q * terms > MAX_DESIGN_ENTRIES:
        raise ValueError(
            f"the design would hold {q} masks x {terms} terms = {q * terms:,} entries, "
            f"above the limit of {MAX_DESIGN_ENTRIES:,}; use fewer masks, fewer features or a lower order"
        )


def _grid(name: str, value, kind: type) -> tuple:
    grid = (value,) if np.isscalar(value) else tuple(value)
    if not grid or any(not (np.isfinite(v) and v > 0) for v in grid):
        raise ValueError(f"{name} must be a positive number or a non-empty sequence of them, got {value!r}")
    if kind is int and any(int(v) != v for v in grid):
        raise ValueError(f"{name} must hold integers, got {value!r}")
    return tuple(sorted(kind(v) for v in grid))
