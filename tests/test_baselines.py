"""Baselines: LASSO, Faith-Banzhaf and ProxySPEX on planted functions; exact tree -> Fourier."""

import itertools
import time

import numpy as np
import pytest

from spex_ray import baselines
from spex_ray.baselines import fit_faith_banzhaf, fit_lasso, fit_proxyspex
from spex_ray.trees import TreeArrays, tree_backend, tree_fourier
from spex_ray.faithfulness import faithfulness, uniform_masks
from spex_ray.interactions import Interactions


def fourier_values(masks, terms):
    """f(x) = sum_k F(k) (-1)^{<k, x>} for terms {key: F(k)}."""
    x = np.asarray(masks, dtype=np.int64)
    return sum(c * (1 - 2 * (x[:, list(k)].sum(axis=1) % 2)) for k, c in terms.items())


def planted_pairs(n, seed):
    """Constant, every singleton, and four pairs, with coefficients bounded away from zero."""
    rng = np.random.default_rng(seed)
    terms = {(): 0.7}
    terms.update({(i,): rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) for i in range(0, n, 2)})
    pairs = rng.choice(n, size=(4, 2), replace=False)
    terms.update({tuple(sorted(map(int, p))): rng.choice([-1, 1]) * rng.uniform(1.0, 2.0) for p in pairs})
    return terms


def and_function(n, seed, orders=(1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4)):
    """f(x) = sum_S a_S prod_{i in S} x_i over random S with the given orders (Möbius / AND terms)."""
    rng = np.random.default_rng(seed)
    terms = [(rng.choice(n, size=k, replace=False), rng.choice([-1, 1]) * rng.uniform(1.0, 3.0)) for k in orders]
    return lambda masks: sum(a * masks[:, s].all(axis=1) for s, a in terms).astype(np.float64)


def assert_coefficients(fit, terms, atol):
    for key, value in terms.items():
        assert fit.get(key, 0.0) == pytest.approx(value, abs=atol), key
    for key, value in fit.items():
        if key not in terms:
            assert abs(value) <= atol, key


def test_faith_banzhaf_recovers_planted_pairs():
    terms = planted_pairs(12, seed=1)
    masks = uniform_masks(12, 300, seed=2)
    fit = fit_faith_banzhaf(masks, fourier_values(masks, terms), order=2)
    assert fit.index == "fourier" and fit.max_order == 2 and fit.n == 12
    assert_coefficients(fit, terms, atol=1e-6)


def test_faith_banzhaf_on_all_masks_truncates_the_fourier_transform():
    n = 6
    masks = np.array(list(itertools.product([False, True], repeat=n)))
    rng = np.random.default_rng(3)
    terms = {k: rng.normal() for r in range(n + 1) for k in itertools.combinations(range(n), r)}
    fit = fit_faith_banzhaf(masks, fourier_values(masks, terms), order=2)
    assert_coefficients(fit, {k: v for k, v in terms.items() if len(k) <= 2}, atol=1e-8)


def test_faith_banzhaf_underdetermined_interpolates():
    terms = planted_pairs(20, seed=4)
    masks = uniform_masks(20, 150, seed=5)
    values = fourier_values(masks, terms)
    fit = fit_faith_banzhaf(masks, values, order=2)
    assert np.allclose(fit.predict(masks), values, atol=1e-5)


def test_lasso_recovers_planted_pairs_with_noise():
    terms = planted_pairs(24, seed=6)
    masks = uniform_masks(24, 800, seed=7)
    values = fourier_values(masks, terms) + np.random.default_rng(8).normal(0.0, 0.1, 800)
    fit = fit_lasso(masks, values, order=2, seed=0)
    assert fit.max_order == 2
    assert_coefficients(fit, terms, atol=0.05)
    assert {k for k, _ in fit.top(len(terms) - 1)} == set(terms) - {()}


def test_lasso_order_one_with_fixed_alpha():
    n = 50
    terms = {(): -0.3, **{(i,): 1.0 + i / n for i in range(0, n, 5)}}
    masks = uniform_masks(n, 400, seed=9)
    fit = fit_lasso(masks, fourier_values(masks, terms), order=1, alpha=1e-3)
    assert_coefficients(fit, terms, atol=5e-3)


def test_lasso_is_reproducible_for_a_seed():
    terms = planted_pairs(16, seed=10)
    masks = uniform_masks(16, 200, seed=11)
    values = fourier_values(masks, terms) + np.random.default_rng(12).normal(0.0, 0.5, 200)
    assert dict(fit_lasso(masks, values, order=2, seed=3)) == dict(fit_lasso(masks, values, order=2, seed=3))


def evaluate_tree(trees, root, mask):
    node = root
    while not trees.is_leaf[node]:
        node = trees.right[node] if mask[trees.feature[node]] else trees.left[node]
    return trees.value[node]


def random_trees(n, count, depth, rng):
    """Random full-or-partial trees whose splits may repeat a feature already split on above."""
    feature, left, right, is_leaf, value, roots = [], [], [], [], [], []

    def grow(level):
        index = len(feature)
        leaf = level == depth or rng.random() < 0.2
        feature.append(int(rng.integers(n)))
        value.append(float(rng.normal()))
        is_leaf.append(leaf)
        left.append(0)
        right.append(0)
        if not leaf:
            left[index] = grow(level + 1)
            right[index] = grow(level + 1)
        return index

    for _ in range(count):
        roots.append(grow(0))
    return TreeArrays(
        feature=np.array(feature), left=np.array(left), right=np.array(right), is_leaf=np.array(is_leaf),
        value=np.array(value), roots=np.array(roots), base=0.25,
    )


@pytest.mark.parametrize("seed", range(5))
def test_tree_fourier_is_exact_with_repeated_features_on_a_path(seed):
    n = 4
    trees = random_trees(n, count=6, depth=6, rng=np.random.default_rng(seed))
    keys, coef, constant = tree_fourier(trees, n)
    fit = Interactions(
        {(): constant, **{tuple(int(i) for i in k if i < n): c for k, c in zip(keys, coef)}}, n
    )
    masks = np.array(list(itertools.product([False, True], repeat=n)))
    expected = [trees.base + sum(evaluate_tree(trees, r, m) for r in trees.roots) for m in masks]
    assert np.allclose(fit.predict(masks), expected, atol=1e-12)


def test_tree_fourier_of_single_leaf_trees_is_constant():
    trees = TreeArrays(
        feature=np.zeros(2, int), left=np.zeros(2, int), right=np.zeros(2, int), is_leaf=np.ones(2, bool),
        value=np.array([1.5, -0.5]), roots=np.array([0, 1]), base=2.0,
    )
    keys, coef, constant = tree_fourier(trees, 3)
    assert len(keys) == 0 and len(coef) == 0 and constant == 3.0


@pytest.mark.parametrize("backend", ["sklearn", "lightgbm"])
def test_tree_fourier_reproduces_the_fitted_ensemble(backend):
    n = 30
    masks = uniform_masks(n, 500, seed=13)
    values = and_function(n, seed=14)(masks) + np.random.default_rng(15).normal(0.0, 0.1, 500)
    trees = tree_backend(backend)
    model = trees.fit(masks.astype(np.float64), values, depth=5, learning_rate=0.1, n_estimators=60, seed=0)
    test = uniform_masks(n, 2000, seed=16)
    for count, predicted in zip((25, None), trees.staged_predict(model, test.astype(np.float64), [25, 60])):
        keys, coef, constant = tree_fourier(trees.read(model, count), n)  # the first `count` trees
        fit = Interactions({(): constant, **{tuple(int(i) for i in k if i < n): c for k, c in zip(keys, coef)}}, n)
        assert np.max(np.abs(fit.predict(test) - predicted)) < 1e-9


@pytest.mark.parametrize("n", [64, 256])
def test_proxyspex_is_faithful_on_an_and_function(n):
    f = and_function(n, seed=n)
    masks, held_out = uniform_masks(n, 1000, seed=17), uniform_masks(n, 1000, seed=18)
    start = time.perf_counter()
    fit = fit_proxyspex(masks, f(masks), seed=0, max_depth=4, n_estimators=(100, 200))
    seconds = time.perf_counter() - start
    r2 = faithfulness(fit, held_out, f(held_out))
    print(f"ProxySPEX n={n}, 1000 masks, grid depth 4 x (100, 200) trees: R² {r2:.3f} in {seconds:.1f} s")
    assert fit.index == "fourier"
    assert r2 >= 0.9


def test_proxyspex_is_reproducible_for_a_seed():
    n = 20
    masks = uniform_masks(n, 300, seed=19)
    values = and_function(n, seed=20)(masks) + np.random.default_rng(21).normal(0.0, 0.2, 300)
    kwargs = dict(seed=4, max_depth=(2, 3), n_estimators=(20, 40))
    assert dict(fit_proxyspex(masks, values, **kwargs)) == dict(fit_proxyspex(masks, values, **kwargs))


def test_proxyspex_on_a_constant_function_is_constant():
    masks = uniform_masks(8, 50, seed=22)
    fit = fit_proxyspex(masks, np.full(50, 1.25), max_depth=2, n_estimators=10)
    assert dict(fit) == {(): 1.25}


MASKS = uniform_masks(6, 40, seed=24)
VALUES = MASKS.sum(axis=1).astype(float)


@pytest.mark.parametrize("fit", [fit_lasso, fit_faith_banzhaf, fit_proxyspex])
@pytest.mark.parametrize(
    ("masks", "values", "match"),
    [
        (MASKS[0], VALUES, "2-D"),
        (MASKS, VALUES[:-1], "shape"),
        (MASKS.astype(float) * 2, VALUES, "0/1"),
        (MASKS, np.where(np.arange(40) == 3, np.nan, VALUES), "finite"),
        (MASKS[:5], VALUES[:5], "at least 10 masks"),
    ],
)
def test_bad_data_raises(fit, masks, values, match):
    with pytest.raises(ValueError, match=match):
        fit(masks, values)


@pytest.mark.parametrize("fit", [fit_lasso, fit_faith_banzhaf])
@pytest.mark.parametrize("order", [0, 3])
def test_order_outside_one_and_two_raises(fit, order):
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        fit(MASKS, VALUES, order=order)


def test_design_beyond_the_limit_raises(monkeypatch):
    monkeypatch.setattr(baselines, "MAX_DESIGN_ENTRIES", 100)
    with pytest.raises(ValueError, match="above the limit"):
        fit_faith_banzhaf(MASKS, VALUES, order=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"energy": 0.0}, "energy"),
        ({"max_depth": ()}, "max_depth"),
        ({"n_estimators": 2.5}, "integers"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"backend": "xgboost"}, "backend"),
    ],
)
def test_bad_proxyspex_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_proxyspex(MASKS, VALUES, **kwargs)


def test_bad_lasso_alpha_raises():
    with pytest.raises(ValueError, match="alpha"):
        fit_lasso(MASKS, VALUES, alpha=0.0)
