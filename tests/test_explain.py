import numpy as np
import pytest

from planted import evaluate_fourier, evaluate_mobius, planted_fourier, planted_mobius
from spex_ray import METHODS, explain, faithfulness, plan_method, uniform_masks


def test_explain_recovers_a_planted_function_and_converts_indices():
    truth = planted_fourier(400, 15, 4, seed=0)
    calls = []

    def value_fn(masks):
        calls.append(len(masks))
        return evaluate_fourier(truth, masks)

    result = explain(value_fn, 400, budget=11000, batch_size=2000)
    assert result.index == "fourier"
    assert sum(calls) == plan_method("spex", 400, budget=11000).num_queries
    assert max(calls) <= 2000
    assert set(result) == set(truth)
    fbii = explain(value_fn, 400, budget=11000, index="fbii", order=2)
    assert fbii.index == "fbii"
    assert all(len(k) <= 2 for k in fbii)


def test_explain_with_feature_names_shows_them():
    names = [f"w{i}" for i in range(30)]
    result = explain(lambda m: 2.0 * m[:, 3] - m[:, 7] * m[:, 8], 30, b=4, feature_names=names)
    mobius = result.to("mobius")
    assert mobius[(3,)] == pytest.approx(2.0) and mobius[(7, 8)] == pytest.approx(-1.0)
    assert "w7" in repr(mobius)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_faithful_on_a_low_order_and_function(method):
    n = 24
    truth = planted_mobius(n, 6, 2, seed=1)
    result = explain(lambda m: evaluate_mobius(truth, m), n, method=method, budget=3000, max_order=2)
    masks = uniform_masks(n, 500, seed=5)
    assert faithfulness(result, masks, evaluate_mobius(truth, masks)) > 0.95


def test_plan_params_identify_the_queries():
    a, b = plan_method("spex-hard", 100, b=4, seed=1), plan_method("spex-hard", 100, b=4, seed=1)
    assert a.params() == b.params() and np.array_equal(a.design.masks(), b.design.masks())
    assert plan_method("lasso", 100, b=4).num_queries == a.num_queries  # equal-budget baselines


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: plan_method("spex", 0, b=4), "at least 1 feature"),
        (lambda: plan_method("shap", 10), "unknown method"),
        (lambda: plan_method("spex", 1000, budget=50), "below the minimum SPEX design"),
        (lambda: explain(lambda m: np.zeros(3), 10, b=3), "returned 3 values"),
        (lambda: explain(lambda m: np.full(len(m), np.nan), 10, b=3), "finite"),
        (lambda: explain(lambda m: np.zeros(len(m)), 10, b=3, feature_names=["a"]), "feature names"),
    ],
)
def test_errors_are_clear(call, message):
    with pytest.raises(ValueError, match=message):
        call()
