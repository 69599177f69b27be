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

from collections.abc import Sequence

import numpy as np
import scipy.linalg
from sklearn.linear_model import Lasso, LassoCV, RidgeCV
from sklearn.model_selection import KFold

from spex_ray.interactions import Interactions
from spex_ray.refit import FOLDS
from spex_ray.trees import GRID_COUNTS, GRID_DEPTHS, GRID_RATES, TreeBackend, select_trees, tree_backend, tree_fourier

__all__ = [
    "MAX_DESIGN_ENTRIES",
    "MIN_MASKS",
    "fit_faith_banzhaf",
    "fit_lasso",
    "fit_proxyspex",
]

MAX_DESIGN_ENTRIES = 2**28
MIN_MASKS = 10

_FLOAT64_DESIGN_ENTRIES = 2**24
_N_ALPHAS = 20
_ALPHA_RATIO = 1e-2
_LSTSQ_RIDGE = 1e-9
_RIDGE_ALPHAS = np.logspace(-6.0, 0.0, 13)


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
            cv=KFold(FOLDS, shuffle=True, random_state=seed),
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
    max_depth: int | Sequence[int] = GRID_DEPTHS,
    n_estimators: int | Sequence[int] = GRID_COUNTS,
    learning_rate: float | Sequence[float] = GRID_RATES,
    backend: TreeBackend = "lightgbm",
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
    backend: "lightgbm" (3-4x faster here) or "sklearn" (HistGradientBoostingRegressor). Other tree settings are the libraries' defaults (at least
    20 masks per leaf); trees grow on one thread.
    Returns index "fourier"; the order of a term is at most the chosen tree depth.
    """
    x, y = _check_data(masks, values)
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    trees = tree_backend(backend)
    depths = _grid("max_depth", max_depth, int)
    counts = _grid("n_estimators", n_estimators, int)
    rates = _grid("learning_rate", learning_rate, float)
    features = x.astype(np.float64)
    depth, rate, count = select_trees(trees, features, y, depths, rates, counts, seed)
    forest = trees.fit(features, y, depth=depth, learning_rate=rate, n_estimators=count, seed=seed)
    keys, coef, _ = tree_fourier(trees.read(forest), x.shape[1])
    kept = _energy_support(coef, energy)
    return _ridge_refit(x, y, keys[kept])



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
