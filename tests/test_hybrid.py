"""spex-hybrid: SPEX's support plus tree terms, chosen by nested cross-validation on SPEX's own queries."""

import numpy as np
import pytest

from planted import evaluate_fourier, evaluate_mobius, planted_fourier, planted_mobius
from spex_ray import SpexDesign, UniformDesign, decode, faithfulness, plan_method, uniform_masks
from spex_ray.design import FilledDesign
from spex_ray.hybrid import _PENALTIES, _extended, _nested_errors, fit_spex_hybrid, tree_term_counts
from spex_ray.refit import fourier_features
from spex_ray.link import LINKS


def held_out_r2(result, truth_fn, n, seed=99):
    masks = uniform_masks(n, 1000, seed=seed)
    return faithfulness(result, masks, truth_fn(masks))


def test_dense_and_function_at_a_small_b_beats_spex_alone():
    """20 AND terms of order ≤ 4 over 256 features at b = 4: more Fourier terms than 3 × 16 bins
    can separate. Trees fit to the same 2,208 coded queries find the rest (the benchmark's row
    "AND, n=256, SNR 10 dB": soft + ls 0.79, ProxySPEX on uniform masks 0.94)."""
    n = 256
    truth = planted_mobius(n, 20, 4, seed=n)
    design = SpexDesign(n, 4)
    clean = evaluate_mobius(truth, design.masks())
    values = clean + np.random.default_rng(0).normal(0.0, 0.3 * np.std(clean), len(clean))
    spex = decode(design, values, "soft", refit="ls")
    hybrid = fit_spex_hybrid(design, values)
    r2_spex = held_out_r2(spex, lambda m: evaluate_mobius(truth, m), n)
    r2_hybrid = held_out_r2(hybrid, lambda m: evaluate_mobius(truth, m), n)
    assert r2_hybrid >= 0.9 and r2_hybrid > r2_spex + 0.05


def test_sparse_parity_function_keeps_exactly_the_spex_support():
    """Trees cannot represent high-order parities with few terms: cross-validation keeps SPEX's
    exact recovery and adds nothing."""
    n = 128
    truth = planted_fourier(n, 20, 5, seed=1)
    design = SpexDesign(n, 5, seed=1)
    result = fit_spex_hybrid(design, evaluate_fourier(truth, design.masks()))
    assert set(result) == set(truth)
    assert max(abs(result[k] - v) for k, v in truth.items()) < 1e-9


def test_an_exact_spex_fit_fits_no_tree(monkeypatch):
    """Tree terms cannot beat a support whose held-out error is zero: none is fit (the cost of the
    hybrid over SPEX is then nil), and the result is SPEX's exact recovery."""
    import spex_ray.hybrid

    def no_trees(*args, **kwargs):
        raise AssertionError("trees were fit for values SPEX fits exactly")

    monkeypatch.setattr(spex_ray.hybrid, "cross_validate_trees", no_trees)
    truth = planted_fourier(64, 12, 3, seed=2)
    design = SpexDesign(64, 5, seed=2)
    result = fit_spex_hybrid(design, evaluate_fourier(truth, design.masks()))
    assert set(result) == set(truth)


def test_same_values_give_the_same_explanation():
    """Resume and caching rely on a fit being a function of (params, values)."""
    n = 40
    truth = planted_mobius(n, 10, 3, seed=2)
    design = SpexDesign(n, 4, seed=2)
    values = evaluate_mobius(truth, design.masks()) + np.random.default_rng(1).normal(0.0, 0.2, design.num_queries)
    assert dict(fit_spex_hybrid(design, values)) == dict(fit_spex_hybrid(design, values))


def test_constant_values_give_a_constant():
    design = SpexDesign(20, 4)
    result = fit_spex_hybrid(design, np.full(design.num_queries, 0.75))
    assert set(result) == {()} and result[()] == pytest.approx(0.75)


def test_nested_errors_equal_separate_ridge_fits():
    masks, values = uniform_masks(12, 250, seed=3), np.random.default_rng(3).normal(size=250)
    test = np.arange(250) % 5 == 0
    bases = [[(), (4,)], [(), (4,), *((i,) for i in range(12) if i != 4)]]
    ranked, sizes = [(2, 3), (4,), (0, 1), (5,), (1, 7, 9)], [1, 2, 8]
    errors = _nested_errors(masks, values, test, bases, ranked, sizes)
    for b, base in enumerate(bases):
        for i, penalty in enumerate(_PENALTIES):
            for j, m in enumerate(sizes):
                x = fourier_features(masks, _extended(base, ranked, m))
                coef = np.linalg.solve(x[~test].T @ x[~test] + penalty * (~test).sum() * np.eye(x.shape[1]),
                                       x[~test].T @ values[~test])
                assert errors[b, i, j] == pytest.approx(np.sum((values[test] - x[test] @ coef) ** 2), rel=1e-5)


def test_tree_terms_offered_grow_by_doubling_up_to_half_the_queries_and_512():
    assert tree_term_counts(2208) == [8, 16, 32, 64, 128, 256, 512]
    assert tree_term_counts(63) == [8, 16]
    assert tree_term_counts(15) == []
    assert tree_term_counts(100_000)[-1] == 512


@pytest.mark.parametrize("budget", [300, 1000, 2000, 5000])
def test_a_budget_is_spent_whole_and_every_query_informs_the_fit(budget):
    """Below SPEX's b = 4 the design is uniform masks; above, SPEX's cosets then uniform masks."""
    n = 40
    truth = planted_mobius(n, 8, 3, seed=5)
    plan = plan_method("spex-hybrid", n, budget=budget)
    assert plan.num_queries == budget
    assert isinstance(plan.design, UniformDesign if budget < SpexDesign(n, 4).num_queries else FilledDesign)
    result = plan.fit(evaluate_mobius(truth, plan.design.masks()))
    assert held_out_r2(result, lambda m: evaluate_mobius(truth, m), n) > 0.95


def test_the_uniform_part_of_a_filled_design_improves_the_fit():
    """Noisy dense AND-type function at b = 4: the same coded queries plus uniform masks predict better."""
    n = 256
    truth = planted_mobius(n, 20, 4, seed=n)
    coded = SpexDesign(n, 4)
    filled = FilledDesign(coded, 2000)
    clean = evaluate_mobius(truth, filled.masks())
    values = clean + np.random.default_rng(0).normal(0.0, 0.3 * np.std(clean), len(clean))
    alone = held_out_r2(fit_spex_hybrid(coded, values[: coded.num_queries]), lambda m: evaluate_mobius(truth, m), n)
    more = held_out_r2(fit_spex_hybrid(filled, values), lambda m: evaluate_mobius(truth, m), n)
    assert more > alone + 0.01 and more > 0.95


def test_plan_records_the_tree_library_and_rejects_unknown_ones():
    plan = plan_method("spex-hybrid", 30, b=4, trees="sklearn")
    assert plan.params()["trees"] == "sklearn" and plan.num_queries == SpexDesign(30, 4).num_queries
    with pytest.raises(ValueError, match="trees must be one of lightgbm, sklearn"):
        plan_method("spex-hybrid", 30, b=4, trees="xgboost")


def test_sklearn_trees_work_too():
    n = 24
    truth = planted_mobius(n, 8, 3, seed=4)
    design = SpexDesign(n, 4, seed=4)
    values = evaluate_mobius(truth, design.masks())
    result = plan_method("spex-hybrid", n, b=4, seed=4, trees="sklearn").fit(values)
    assert held_out_r2(result, lambda m: evaluate_mobius(truth, m), n) > 0.95


def test_fold_models_of_different_tree_depths_are_summed():
    """Spiky values (a share of 4 words in log-odds, clipped at 0 and 1) grow fold models whose
    deepest trees differ; their transforms are padded to one width before they are summed."""
    design = plan_method("spex-hybrid", 30, budget=600).design
    values = LINKS["logit"].inverse(design.masks()[:, :4].mean(axis=1))
    result = fit_spex_hybrid(design, values)
    holdout = uniform_masks(30, 200, seed=5)
    assert faithfulness(result, holdout, LINKS["logit"].inverse(holdout[:, :4].mean(axis=1))) > 0.99
