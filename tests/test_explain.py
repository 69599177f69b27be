import re

import numpy as np
import pytest

from planted import evaluate_fourier, evaluate_mobius, planted_fourier, planted_mobius
from spex_ray import METHODS, explain, faithfulness, plan_method, spex_num_queries, uniform_masks


def test_explain_recovers_a_planted_function_and_converts_indices():
    truth = planted_fourier(400, 15, 4, seed=0)
    calls = []

    def value_fn(masks):
        calls.append(len(masks))
        return evaluate_fourier(truth, masks)

    result = explain(value_fn, 400, budget=11000, batch_size=2000)
    assert result.index == "fourier"
    assert sum(calls) == plan_method(None, 400, budget=11000).num_queries == 11000  # the whole budget
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


def test_one_default_everywhere():
    import inspect

    from pipelines.config import JobConfig
    from spex_ray.methods import DEFAULT_METHOD

    assert DEFAULT_METHOD == "spex-hybrid" == METHODS[0]
    assert inspect.signature(explain).parameters["method"].default == DEFAULT_METHOD
    assert plan_method(None, 30, b=4).name == DEFAULT_METHOD
    assert JobConfig.__dataclass_fields__["method"].default == DEFAULT_METHOD


def test_plan_params_identify_the_queries():
    a, b = plan_method("spex-hard", 100, b=4, seed=1), plan_method("spex-hard", 100, b=4, seed=1)
    assert a.params() == b.params() and np.array_equal(a.design.masks(), b.design.masks())
    assert plan_method("lasso", 100, b=4).num_queries == a.num_queries  # equal-budget baselines


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: plan_method(None, 0, b=4), "at least 1 feature"),
        (lambda: plan_method("shap", 10), "unknown method"),
        (lambda: plan_method("spex", 10), "unknown method 'spex'"),
        (lambda: plan_method("spex-soft", 1000, budget=50), "below the minimum SPEX design"),
        (lambda: explain(lambda m: np.zeros(3), 10, b=3), "returned 3 values"),
        (lambda: explain(lambda m: np.full(len(m), np.nan), 10, b=3), "finite"),
        (lambda: explain(lambda m: np.zeros(len(m)), 10, b=3, feature_names=["a"]), "feature names"),
    ],
)
def test_errors_are_clear(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "value_fn, error, got",
    [
        (lambda m: [{"label": "POSITIVE", "score": 0.9}] * len(m), TypeError, "the first value a dict"),
        (lambda m: {"score": np.zeros(len(m))}, TypeError, "returned a dict"),
        (lambda m: None, TypeError, "returned None"),
        (lambda m: ["0.5"] * len(m), TypeError, "dtype <U3"),
        (lambda m: [[0.0]] * (len(m) - 1) + [[0.0, 1.0]], TypeError, "returned a list"),
        (lambda m: np.zeros(m.shape), ValueError, r"returned 5040 values of shape \(504, 10\)"),
        (lambda m: np.where(m[:, 0], np.inf, 0.0), ValueError, r"NaN or infinite values \(first for query 1\)"),
    ],
)
def test_a_value_function_with_the_wrong_return_gets_one_clear_error(value_fn, error, got):
    with pytest.raises(error) as raised:
        explain(value_fn, 10, b=3)
    message = str(raised.value)
    assert message.startswith("value_fn must map bool masks of shape (B, n) to B float values of shape (B,); "
                              "given masks of shape (504, 10), it returned ")
    assert re.search(got, message)


def test_a_value_function_may_return_a_column_or_a_list_of_numbers():
    column = explain(lambda m: (2.0 * m[:, 3])[:, None], 10, b=3)
    listed = explain(lambda m: [int(row[3]) * 2 for row in m], 10, b=3)
    assert column.to("mobius")[(3,)] == pytest.approx(2.0) and listed.to("mobius")[(3,)] == pytest.approx(2.0)


@pytest.mark.parametrize("n, budget", [(40, 5000), (150, 12000), (300, 1000), (60, 1728)])
def test_adaptive_stages_are_prefixes_that_are_designs(n, budget):
    from spex_ray.adaptive import prefix_design, stages

    design = plan_method(None, n, budget=budget).design
    counts = stages(design)
    assert counts == sorted(set(counts)) and counts[-1] == budget
    for count in counts:
        prefix = prefix_design(design, count)
        assert prefix.num_queries == count and np.array_equal(prefix.masks(), design.masks(0, count))


def test_adaptive_budget_stops_once_the_fit_is_exact():
    from spex_ray.adaptive import fit_adaptive

    truth = planted_fourier(100, 10, 4, seed=0)
    plan = plan_method(None, 100, budget=20_000)
    fit = fit_adaptive(plan, lambda start, stop: evaluate_fourier(truth, plan.design.masks(start, stop)))
    assert (fit.queries, fit.saved) == (1968, 20_000 - 1968) and len(fit.stages) == 1  # SPEX at b = 4
    assert set(fit.interactions) == set(truth)


def test_adaptive_budget_stops_when_the_cross_validated_r2_stops_rising():
    from spex_ray.adaptive import MIN_GAIN, fit_adaptive

    n = 60
    truth = planted_mobius(n, 15, 3, seed=1)
    plan = plan_method(None, n, budget=20_000)
    noise = np.random.default_rng(2).normal(0.0, 0.3, plan.num_queries)
    fit = fit_adaptive(plan, lambda start, stop: evaluate_mobius(truth, plan.design.masks(start, stop)) + noise[start:stop])
    gains = np.diff([r2 for _, r2 in fit.stages])
    assert fit.queries < 20_000 and fit.queries == fit.stages[-1][0]
    assert gains[-1] < MIN_GAIN and (gains[:-1] >= MIN_GAIN).all()
    masks = uniform_masks(n, 500, seed=5)
    assert faithfulness(fit.interactions, masks, evaluate_mobius(truth, masks)) > 0.99
    calls = []
    result = explain(lambda m: calls.append(len(m)) or evaluate_mobius(truth, m), n, budget=20_000, adaptive=True)
    assert sum(calls) < 20_000 and faithfulness(result, masks, evaluate_mobius(truth, masks)) > 0.99


def test_adaptive_budget_takes_b_as_its_cap_as_the_job_config_does():
    truth = {(): 0.5, (1,): 1.0, (2, 3): -0.7}
    calls = []
    result = explain(lambda m: calls.append(len(m)) or evaluate_fourier(truth, m), 12, b=6, adaptive=True)
    assert sum(calls) < spex_num_queries(12, 6, 5, 3)  # exact after the first stage (b = 4)
    assert result[(1,)] == pytest.approx(1.0, abs=1e-6) and result[(2, 3)] == pytest.approx(-0.7, abs=1e-6)


def test_adaptive_budget_needs_a_budget_and_spex_hybrid():
    with pytest.raises(ValueError, match="needs a budget"):
        explain(lambda m: np.zeros(len(m)), 10, adaptive=True)
    with pytest.raises(ValueError, match="adaptive budgets need spex-hybrid"):
        explain(lambda m: np.zeros(len(m)), 10, budget=2000, method="proxyspex", adaptive=True)


def test_one_registry_of_method_classes_and_one_options_type():
    from spex_ray import Method, MethodOptions
    from spex_ray.methods import method_class

    assert all(issubclass(method_class(name), Method) and method_class(name).name == name for name in METHODS)
    assert method_class(None).name == "spex-hybrid"
    assert MethodOptions(b=30, refit=None, trees="xgboost").problems() == [
        ("b", "must be <= 20, got 30"), ("trees", "must be one of lightgbm, sklearn; got 'xgboost'")]
    with pytest.raises(ValueError, match="b must be <= 20, got 30"):
        explain(lambda m: np.zeros(len(m)), 10, b=30)
    with pytest.raises(TypeError, match="budgets"):
        plan_method(None, 10, budgets=100)
    method = plan_method("lasso", 30, budget=500, max_order=5)
    assert method.params() == {"method": "lasso", "design": method.design.params(), "order": 2}
