"""Links: explanations of bounded outputs as g(sparse expansion) (spex_ray.link, spex_ray.link_fit)."""

import numpy as np
import pytest

from spex_ray import Interactions, explain, faithfulness, plan_method, uniform_masks
from spex_ray.adaptive import fit_adaptive
from spex_ray.link import LINKS, candidate_links, get_link

N = 30


def logistic_of_sparse(masks):
    """A probability: the logistic function of a sparse score (3 words and a pair)."""
    score = 2.0 * masks[:, 0] + 1.5 * masks[:, 1] - 1.8 * masks[:, 2] + 2.5 * masks[:, 3] * masks[:, 4] - 1.0
    return 1.0 / (1.0 + np.exp(-score))


@pytest.mark.parametrize("name", ["logit", "algebraic"])
def test_a_bounded_link_inverts_inside_its_range_and_clips_its_bounds(name):
    link = get_link(name)
    lo, hi = link.bounds
    y = np.linspace(lo, hi, 11)[1:-1]
    assert np.allclose(link.forward(link.inverse(y)), y)
    ends = link.inverse(np.array([lo, hi]))
    assert np.isfinite(ends).all() and ends[0] < ends[1]


def test_an_unknown_link_names_the_choices():
    with pytest.raises(ValueError, match="unknown link 'probit'.*identity, logit, algebraic"):
        get_link("probit")


def test_the_candidates_are_the_links_whose_range_holds_the_values():
    assert [link.name for link in candidate_links(np.array([0.1, 0.9]))] == ["identity", "logit", "algebraic"]
    assert [link.name for link in candidate_links(np.array([-0.5, 0.9]))] == ["identity", "algebraic"]
    assert [link.name for link in candidate_links(np.array([-0.5, 3.0]))] == ["identity"]


def test_interactions_with_a_link_predict_through_it_and_keep_it(tmp_path):
    plain = Interactions({(): 0.5, (0,): -1.0, (0, 1): 0.25}, n=3)
    linked = plain.with_link("logit")
    masks = uniform_masks(3, 16, seed=0)
    assert np.allclose(linked.predict(masks), LINKS["logit"].forward(plain.predict(masks)))
    assert linked != plain and linked.link == "logit" and "link='logit'" in repr(linked)
    assert linked.to("mobius").link == "logit"
    assert linked.with_feature_names(["a", "b", "c"]).link == "logit"
    linked.save(tmp_path / "x.json")
    assert Interactions.load(tmp_path / "x.json") == linked


def test_auto_chooses_the_logit_link_for_a_probability_and_predicts_it_better():
    holdout = uniform_masks(N, 400, seed=11)
    truth = logistic_of_sparse(holdout)
    auto = explain(logistic_of_sparse, N, budget=600)
    plain = explain(logistic_of_sparse, N, budget=600, link="identity")
    assert auto.link == "logit" and plain.link == "identity"
    assert faithfulness(auto, holdout, truth) > 0.999
    assert faithfulness(auto, holdout, truth) > faithfulness(plain, holdout, truth)
    # the identity needs ~every subset of the 5 words; in log-odds the score's 7 Fourier terms
    substantive = lambda result: {key for key, value in result.items() if abs(value) > 1e-6}  # noqa: E731
    assert substantive(auto) == {(), (0,), (1,), (2,), (3,), (4,), (3, 4)}
    assert len(substantive(plain)) > 15
    # in log-odds, the explanation is the score itself: keeping word 0 adds 2.0
    assert auto.to("mobius")[(0,)] == pytest.approx(2.0, abs=1e-3)


def test_auto_keeps_the_identity_for_an_output_that_is_sparse_as_it_is():
    def share(masks):  # in [0, 1], so the logit link is weighed, but additive already
        return masks[:, :4].mean(axis=1)

    result = explain(share, N, budget=600)
    assert result.link == "identity"
    holdout = uniform_masks(N, 200, seed=5)
    assert faithfulness(result, holdout, share(holdout)) == pytest.approx(1.0)


def test_a_named_link_is_checked_before_any_query():
    calls = []

    def value_fn(masks):
        calls.append(len(masks))
        return masks.sum(axis=1).astype(float)

    with pytest.raises(ValueError, match="unknown link"):
        explain(value_fn, N, budget=600, link="probit")
    assert calls == []


def wide_logistic(masks):
    """The logistic function of 8 words' sum: 2^8 Fourier terms as it is, 9 in log-odds."""
    return 1.0 / (1.0 + np.exp(-(masks[:, :8] @ np.linspace(-1.5, 2.0, 8) - 1.0)))


def test_adaptive_budgets_choose_the_link_on_the_queries_spent():
    spent = []

    def counted(masks):
        spent.append(len(masks))
        return wide_logistic(masks)

    result = explain(counted, N, budget=4000, adaptive=True)
    assert result.link == "logit"
    # the link is chosen on the stages' queries: not one more
    method = plan_method(None, N, budget=4000)
    assert sum(spent) == fit_adaptive(method, lambda first, last: wide_logistic(method.design.masks()[first:last])).queries
    assert sum(spent) < 4000
    holdout = uniform_masks(N, 400, seed=12)
    assert faithfulness(result, holdout, wide_logistic(holdout)) > 0.999



def vader_like(masks):
    """VADER's compound score of a sum of 6 valences, with a negation that flips one of them."""
    valences = np.array([2.5, 1.9, -1.4, 3.1, 1.2, -2.2])
    score = masks[:, :6] @ valences - 2 * 1.9 * masks[:, 1] * masks[:, 6]
    return score / np.sqrt(score * score + 15)


def test_auto_chooses_the_algebraic_link_for_a_vader_like_score():
    holdout = uniform_masks(N, 400, seed=13)
    auto = explain(vader_like, N, budget=1000)
    plain = explain(vader_like, N, budget=1000, link="identity")
    assert auto.link == "algebraic"
    assert faithfulness(auto, holdout, vader_like(holdout)) > 0.999 > faithfulness(plain, holdout, vader_like(holdout))


def test_a_named_link_refuses_values_outside_its_range():
    with pytest.raises(ValueError, match=r"link 'logit' needs values in \[0, 1\]; got values from -0\.\d+ to 0\.\d+"):
        explain(vader_like, N, budget=600, link="logit")


def test_shapiq_values_of_spex_ray_stay_in_the_games_units():
    pytest.importorskip("shapiq")
    from spex_ray.shapiq import SpexRay

    values = SpexRay(n=8, index="SV", max_order=1, random_state=0).approximate(600, lambda c: logistic_of_sparse(c))
    full, empty = logistic_of_sparse(np.ones((1, 8), bool))[0], logistic_of_sparse(np.zeros((1, 8), bool))[0]
    assert values.baseline_value == pytest.approx(empty, abs=0.02)  # in log-odds it would be -1.0
    assert sum(values.values) == pytest.approx(full, abs=0.02)  # v(∅) + Σ φ_i = v(N), in probabilities
