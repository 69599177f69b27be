"""Interactions: conversions checked against textbook definitions over all 2^n masks, prediction,
Mapping behaviour, repr and errors."""

from __future__ import annotations

import functools
import itertools
import math
import pickle
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from spex_ray.interactions import INDICES, MAX_DEFAULT_ORDER, Interactions


@pytest.fixture(autouse=True, scope="module")
def single_threaded_blas():
    """The brute-force least squares are tiny; threaded BLAS only contends on a shared machine."""
    with threadpool_limits(limits=1):
        yield


# ---------------------------------------------------------------------------------------------
# Brute force over all 2^n masks. A subset S is an int whose bit i is set when feature i is kept.


def bits(key: tuple[int, ...]) -> int:
    return sum(1 << i for i in key)


def subsets(n: int, max_order: int) -> list[tuple[int, ...]]:
    return [t for o in range(min(n, max_order) + 1) for t in itertools.combinations(range(n), o)]


def random_fourier(n: int, num_terms: int, max_order: int, seed: int) -> dict[tuple[int, ...], float]:
    rng = np.random.default_rng(seed)
    terms = {(): float(rng.normal())}
    while len(terms) < num_terms + 1:
        order = int(rng.integers(1, min(n, max_order) + 1))
        terms[tuple(sorted(rng.choice(n, size=order, replace=False).tolist()))] = float(rng.normal())
    return terms


class Game:
    """v(S) for every S ⊆ [n], and the textbook indices computed directly from v."""

    def __init__(self, fourier: dict[tuple[int, ...], float], n: int):
        self.n = n
        self.all = np.arange(2**n)
        self.size = np.bitwise_count(self.all).astype(np.int64)
        self.v = np.zeros(2**n)
        for k, value in fourier.items():
            self.v += value * (-1.0) ** np.bitwise_count(self.all & bits(k))

    def delta(self, t: tuple[int, ...]) -> np.ndarray:
        """Discrete derivative Δ_T v(S) = Σ_{L⊆T} (-1)^{|T|-|L|} v(S ∪ L), for all S disjoint from T."""
        free = self.all[(self.all & bits(t)) == 0]
        out = np.zeros(len(free))
        for r in range(len(t) + 1):
            for sub in itertools.combinations(t, r):
                out += (-1.0) ** (len(t) - r) * self.v[free | bits(sub)]
        return out

    def free_sizes(self, t: tuple[int, ...]) -> np.ndarray:
        return self.size[(self.all & bits(t)) == 0]

    @functools.cache
    def fourier(self) -> dict:
        parity = {k: (-1.0) ** np.bitwise_count(self.all & bits(k)) for k in subsets(self.n, self.n)}
        return {k: float(np.mean(self.v * sign)) for k, sign in parity.items()}

    @functools.cache
    def mobius(self) -> dict:
        return {t: float(self.delta(t)[0]) for t in subsets(self.n, self.n)}

    @functools.cache
    def bii(self) -> dict:
        return {t: float(self.delta(t).mean()) for t in subsets(self.n, self.n)}

    @functools.cache
    def sii(self) -> dict:
        n, out = self.n, {}
        for t in subsets(n, n):
            s = self.free_sizes(t)
            weight = [math.factorial(n - si - len(t)) * math.factorial(si) for si in s]
            w = np.array(weight) / math.factorial(n - len(t) + 1)
            out[t] = float(w @ self.delta(t))
        return out

    @functools.cache
    def shapley(self) -> dict:
        n, out = self.n, {(): float(self.v[0])}
        for i in range(n):
            s = self.free_sizes((i,))
            w = np.array([math.factorial(si) * math.factorial(n - si - 1) for si in s]) / math.factorial(n)
            without = self.all[(self.all >> i) & 1 == 0]
            out[(i,)] = float(w @ (self.v[without | (1 << i)] - self.v[without]))
        return out

    @functools.cache
    def banzhaf(self) -> dict:
        out = {(): float(self.v[0])}
        for i in range(self.n):
            without = self.all[(self.all >> i) & 1 == 0]
            out[(i,)] = float(np.mean(self.v[without | (1 << i)] - self.v[without]))
        return out

    @functools.cache
    def stii(self, ell: int) -> dict:
        """Shapley-Taylor (Sundararajan et al. 2020)."""
        n, out = self.n, {}
        for t in subsets(n, ell):
            if len(t) < ell:
                out[t] = float(self.delta(t)[0])
            else:
                w = np.array([1.0 / math.comb(n - 1, si) for si in self.free_sizes(t)])
                out[t] = float(ell / n * (w @ self.delta(t)))
        return out

    def _design(self, ell: int) -> tuple[list, np.ndarray]:
        keys = subsets(self.n, ell)
        z = np.stack([(self.all & bits(t)) == bits(t) for t in keys], axis=1).astype(float)
        return keys, z

    @functools.cache
    def fbii(self, ell: int) -> dict:
        """Faith-Banzhaf: least squares with uniform weights over all 2^n subsets, degree <= ell."""
        keys, z = self._design(ell)
        coef = np.linalg.lstsq(z, self.v, rcond=None)[0]
        return dict(zip(keys, coef.tolist()))

    @functools.cache
    def fsii(self, ell: int) -> dict:
        """Faith-Shapley (Tsai et al. 2023): Shapley-kernel weighted least squares, exact at ∅ and N."""
        n = self.n
        keys, z = self._design(ell)
        inner = (self.size > 0) & (self.size < n)
        s = self.size[inner]
        mu = (n - 1) / (np.array([math.comb(n, si) for si in s]) * s * (n - s))
        zi = z[inner]
        ends = z[[0, -1]]
        p = len(keys)
        kkt = np.block([[zi.T @ (mu[:, None] * zi), ends.T], [ends, np.zeros((2, 2))]])
        rhs = np.concatenate([zi.T @ (mu * self.v[inner]), self.v[[0, -1]]])
        sol = np.linalg.solve(kkt, rhs)
        return dict(zip(keys, sol[:p].tolist()))


def assert_close(result: Interactions, expected: dict, atol: float = 1e-9) -> None:
    extra = set(result) - set(expected)
    assert not extra, f"unexpected keys {sorted(extra)[:5]}"
    for key, value in expected.items():
        assert result.get(key, 0.0) == pytest.approx(value, abs=atol), key
    assert all(v != 0.0 for v in result.values())


# ---------------------------------------------------------------------------------------------
# Conversions against brute force.

CASES = [(5, 6, 3, 0), (8, 10, 4, 1), (10, 8, 5, 2)]  # n, terms, max order, seed


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"n{c[0]}-seed{c[3]}")
def case(request):
    n, terms, order, seed = request.param
    fourier = random_fourier(n, terms, order, seed)
    game = Game(fourier, n)
    source = Interactions(fourier, n, "fourier")
    return game, {"fourier": source, "mobius": source.to("mobius")}


@pytest.mark.parametrize("source", ["fourier", "mobius"])
@pytest.mark.parametrize("index", ["fourier", "mobius", "bii", "sii", "banzhaf", "shapley"])
def test_unparametrised_indices_match_definitions(case, source, index):
    game, sources = case
    result = sources[source].to(index)
    assert result.index == index
    assert_close(result, getattr(game, index)())


@pytest.mark.parametrize("source", ["fourier", "mobius"])
@pytest.mark.parametrize("index", ["fbii", "fsii", "stii"])
@pytest.mark.parametrize("ell", [1, 2, 3])
def test_order_indices_match_definitions(case, source, index, ell):
    game, sources = case
    result = sources[source].to(index, order=ell)
    assert (result.index, result.max_order) == (index, ell)
    assert_close(result, getattr(game, index)(ell), atol=1e-8)


@pytest.mark.parametrize("index", ["fourier", "mobius", "bii", "sii"])
def test_order_truncates(case, index):
    game, sources = case
    full = getattr(game, index)()
    result = sources["fourier"].to(index, order=2)
    assert result.max_order == 2
    assert_close(result, {k: v for k, v in full.items() if len(k) <= 2})


def test_first_order_faith_indices_are_the_values(case):
    _, sources = case
    fsii1 = sources["fourier"].to("fsii", order=1)
    shapley = sources["fourier"].to("shapley")
    assert dict(fsii1) == pytest.approx(dict(shapley))
    banzhaf = sources["fourier"].to("banzhaf")
    fbii1 = sources["fourier"].to("fbii", order=1)
    assert {k: v for k, v in fbii1.items() if k} == pytest.approx({k: v for k, v in banzhaf.items() if k})


def test_shapley_is_efficient(case):
    game, sources = case
    shapley = sources["mobius"].to("shapley")
    assert sum(shapley.values()) == pytest.approx(game.v[-1])


@st.composite
def small_functions(draw, max_n: int = 6):
    n = draw(st.integers(1, max_n))
    keys = st.lists(st.integers(0, n - 1), max_size=4, unique=True).map(lambda k: tuple(sorted(k)))
    values = st.floats(-4, 4, allow_nan=False).filter(lambda v: abs(v) > 1e-3)
    return n, draw(st.dictionaries(keys, values, max_size=7))


@settings(max_examples=30, deadline=None)
@given(
    small_functions(),
    st.sampled_from(["bii", "sii", "shapley", "banzhaf", "fbii", "fsii", "stii"]),
    st.integers(1, 3),
)
def test_random_functions_match_definitions(function, index, ell):
    n, fourier = function
    game = Game(fourier, n)
    source = Interactions(fourier, n)
    if index in ("fbii", "fsii", "stii"):
        ell = min(ell, n)
        expected = getattr(game, index)(ell)
        assert_close(source.to(index, order=ell), expected, atol=1e-8)
        assert_close(source.to("mobius").to(index, order=ell), expected, atol=1e-8)
    else:
        assert_close(source.to(index), getattr(game, index)(), atol=1e-8)


def test_default_order_is_the_largest_present_capped():
    low = Interactions({(0, 1): 1.0, (2,): 0.5}, 10)
    assert low.to("fbii").max_order == 2
    assert low.to("fsii").max_order == 2
    high = Interactions({tuple(range(7)): 1.0}, 10)
    assert high.to("stii").max_order == MAX_DEFAULT_ORDER
    assert max(map(len, high.to("stii"))) == MAX_DEFAULT_ORDER
    assert len(high.to("fbii")) == 0  # Faith-Banzhaf drops Fourier terms above ℓ
    constant = Interactions({(): 2.0}, 3)
    assert constant.to("fsii").max_order == 1
    assert dict(constant.to("fsii")) == {(): 2.0}


def test_default_order_is_exact_mobius():
    fourier = Interactions(random_fourier(9, 12, 4, seed=5), 9)
    mobius = fourier.to("mobius")
    for index in ("fbii", "fsii", "stii"):
        assert dict(fourier.to(index)) == pytest.approx(dict(mobius))


# ---------------------------------------------------------------------------------------------
# Round trips and prediction.


@settings(max_examples=50, deadline=None)
@given(small_functions(max_n=9))
def test_round_trips(function):
    n, fourier = function
    source = Interactions(fourier, n)
    back = source.to("mobius").to("fourier")
    assert set(back) == set(source)
    assert dict(back) == pytest.approx(dict(source), abs=1e-9)
    mobius = source.to("mobius")
    assert dict(mobius.to("fourier").to("mobius")) == pytest.approx(dict(mobius), abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(small_functions())
def test_predict_over_all_masks(function):
    n, fourier = function
    game = Game(fourier, n)
    masks = ((game.all[:, None] >> np.arange(n)) & 1).astype(bool)
    source = Interactions(fourier, n)
    np.testing.assert_allclose(source.predict(masks), game.v, atol=1e-9)
    np.testing.assert_allclose(source.to("mobius").predict(masks), game.v, atol=1e-9)


def test_predict_matches_per_term_evaluation():
    n = 60
    rng = np.random.default_rng(3)
    fourier = Interactions(random_fourier(n, 40, 5, seed=3), n)
    mobius = fourier.to("mobius")
    masks = rng.random((300, n)) < 0.5
    expected_f = sum(v * (-1.0) ** masks[:, list(k)].sum(axis=1) for k, v in fourier.items())
    expected_m = sum(v * masks[:, list(k)].all(axis=1) for k, v in mobius.items())
    np.testing.assert_allclose(fourier.predict(masks), expected_f, atol=1e-9)
    np.testing.assert_allclose(mobius.predict(masks), expected_m, atol=1e-9)
    np.testing.assert_allclose(fourier.predict(masks.astype(np.int8)), expected_f, atol=1e-9)


def test_predict_edge_cases():
    empty = Interactions({}, 4)
    assert empty.predict(np.ones((3, 4), bool)).tolist() == [0.0, 0.0, 0.0]
    constant = Interactions({(): 1.5}, 4, "mobius")
    assert constant.predict(np.zeros((2, 4), bool)).tolist() == [1.5, 1.5]
    assert Interactions({(0,): 1.0}, 4).predict(np.zeros((0, 4), bool)).shape == (0,)


def test_predict_errors():
    f = Interactions({(0,): 1.0}, 3)
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        f.predict(np.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        f.predict(np.ones(3, bool))
    with pytest.raises(ValueError, match="0/1"):
        f.predict(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="0/1"):
        f.predict(np.full((2, 3), 2))
    with pytest.raises(ValueError, match="not 'shapley'"):
        f.to("shapley").predict(np.ones((2, 3), bool))


@pytest.mark.parametrize("index", ["fbii", "fsii"])
@pytest.mark.parametrize("ell", [1, 2])
def test_faith_indices_predict_their_polynomial(case, index, ell):
    """fbii/fsii of order ℓ predict the least-squares Möbius polynomial they are defined as; fbii's is
    the Fourier expansion truncated to order ℓ."""
    game, sources = case
    keys, z = game._design(ell)
    expected = z @ np.array([getattr(game, index)(ell)[key] for key in keys])
    masks = ((game.all[:, None] >> np.arange(game.n)) & 1).astype(bool)
    np.testing.assert_allclose(sources["fourier"].to(index, order=ell).predict(masks), expected, atol=1e-8)
    if index == "fbii":
        truncated = sources["fourier"].to("fourier", order=ell).predict(masks)
        np.testing.assert_allclose(truncated, expected, atol=1e-8)


def test_large_sparse_function_is_fast():
    n, rng = 3000, np.random.default_rng(0)
    keys = {tuple(sorted(rng.choice(n, size=int(rng.integers(1, 7)), replace=False).tolist())) for _ in range(3000)}
    source = Interactions.from_arrays(sorted(keys), rng.normal(size=len(keys)), n)
    start = time.perf_counter()
    mobius = source.to("mobius")
    for index in ("bii", "sii", "shapley", "fbii", "fsii", "stii"):
        source.to(index, order=2 if index in ("fbii", "fsii", "stii") else None)
    masks = rng.random((500, n)) < 0.5
    np.testing.assert_allclose(source.predict(masks), mobius.predict(masks), atol=1e-8)
    assert time.perf_counter() - start < 10.0


# ---------------------------------------------------------------------------------------------
# Mapping behaviour, arrays, repr, errors.


def test_mapping_behaviour():
    values = {(2, 3): -0.5, (): 1.0, (1,): 0.25, (0, 1): 0.0, (0,): 2.0}
    f = Interactions(values, 4, "mobius")
    assert list(f) == [(), (0,), (1,), (2, 3)]
    assert dict(f) == {(): 1.0, (0,): 2.0, (1,): 0.25, (2, 3): -0.5}
    assert len(f) == 4 and f[(2, 3)] == -0.5 and type(f[(1,)]) is float
    assert (0, 1) not in f and (3, 2) not in f and (2, 3) in f
    with pytest.raises(KeyError):
        f[(3, 2)]
    with pytest.raises(TypeError):
        f[(0,)] = 1.0  # type: ignore[index]
    assert f == dict(f)
    assert f == Interactions(dict(f), 4, "mobius")
    assert f != Interactions(dict(f), 4, "fourier")
    assert f.get((5,), 0.0) == 0.0
    assert (f.n, f.index, f.max_order, f.feature_names) == (4, "mobius", 2, None)


def test_pickle_round_trip():
    f = Interactions({(0, 1): 1.0, (): 2.0}, 3, "mobius", max_order=4, feature_names=["a", "b", "c"])
    g = pickle.loads(pickle.dumps(f))
    assert g == f and (g.max_order, g.feature_names) == (4, ("a", "b", "c"))
    assert g.to("fourier") == f.to("fourier")


def test_numpy_keys_and_values_are_normalised():
    f = Interactions({(np.int64(1), np.int32(2)): np.float32(0.5)}, 3)
    assert list(f.items()) == [((1, 2), 0.5)]
    assert type(next(iter(f))[0]) is int


def test_arrays_round_trip():
    f = Interactions({(): 0.5, (1, 4): -2.0, (3,): 1.0}, 5, "sii", max_order=3, feature_names=list("abcde"))
    keys, values = f.to_arrays()
    assert keys == [(), (3,), (1, 4)]
    assert values.dtype == np.float64 and values.tolist() == [0.5, 1.0, -2.0]
    values[0] = 99.0
    assert f[()] == 0.5
    g = Interactions.from_arrays(keys, f.to_arrays()[1], 5, "sii", max_order=3)
    assert g == f and g.max_order == 3
    with pytest.raises(ValueError, match="duplicates"):
        Interactions.from_arrays([(1,), (1,)], [1.0, 2.0], 5)
    with pytest.raises(ValueError, match="shape"):
        Interactions.from_arrays([(1,)], [1.0, 2.0], 5)


def test_top():
    f = Interactions({(): 9.0, (0,): 1.0, (1,): -3.0, (0, 1): 2.0, (1, 2): -2.0, (0, 1, 2): 0.5}, 3, "mobius")
    assert f.top(3) == [((1,), -3.0), ((0, 1), 2.0), ((1, 2), -2.0)]
    assert f.top(10, order=2) == [((0, 1), 2.0), ((1, 2), -2.0)]
    assert f.top(0) == []
    assert len(f.top(100)) == 5
    with pytest.raises(ValueError, match="k must be"):
        f.top(-1)


def test_top_shows_fourier_terms_as_effects_of_keeping():
    # f = 1 - 0.5 (-1)^{x0} + ...: keeping word 0 raises f by 1 on average (F = -0.5, effect -2 F).
    f = Interactions({(): 1.0, (0,): -0.5, (0, 1): 0.25, (0, 1, 2): 0.2}, 3, feature_names=["not", "bad", "film"])
    assert f.top() == [((0, 1, 2), -1.6), ((0,), 1.0), ((0, 1), 1.0)]
    assert f.top(1, order=2) == f.to("bii").top(1, order=2) == [((0, 1), 1.0)]
    masks = np.array([[True, False, False], [False, False, False]])
    keep_effect = np.diff(f.to("fourier", order=1).predict(masks)[::-1])[0]
    assert keep_effect == pytest.approx(f.top(1, order=1)[0][1])
    assert f[(0,)] == -0.5  # the mapping keeps the stored value
    assert "effects of keeping" in repr(f) and "+1.000  {not}" in repr(f)


def test_feature_labels_tell_repeated_names_apart():
    f = Interactions({(0, 2): 1.0, (1,): -2.0}, 5, feature_names=["cat", "the", "cat", "cat#2", "the"])
    assert f.feature_labels == ("cat#1", "the#1", "cat#2#1", "cat#2#2", "the#2")
    assert len(set(f.feature_labels)) == 5
    g = f.with_feature_names(["a", "cat", "cat", "b", "c"])
    assert g.feature_labels == ("a", "cat#1", "cat#2", "b", "c")
    assert g.top(names=True) == [(("cat#1",), 4.0), (("a", "cat#2"), 4.0)]
    assert Interactions({(1,): 1.0}, 2).feature_labels == ("0", "1")
    assert "{a, cat#2}" in repr(g)


def test_baseline_value_is_the_fit_at_the_all_masked_mask():
    f = Interactions({(): 0.3, (0,): -0.5, (1, 2): 0.25}, 4)
    empty = float(f.predict(np.zeros((1, 4), bool))[0])
    assert f.baseline_value == pytest.approx(empty) and f.to("mobius").baseline_value == pytest.approx(empty)
    for index in ["shapley", "banzhaf", "sii", "bii", "fbii", "fsii", "stii"]:
        assert f.to(index).baseline_value == f.baseline_value
    assert f.to("shapley")[()] == pytest.approx(empty) and f.to("sii")[()] != pytest.approx(empty)
    assert Interactions({(0,): 1.0}, 2, "sii").baseline_value is None
    given = Interactions({(0,): 1.0}, 2, "sii", baseline_value=0.5)
    assert given.baseline_value == 0.5 and given == Interactions({(0,): 1.0}, 2, "sii")  # like names: not compared
    assert given.with_feature_names(["a", "b"]).baseline_value == 0.5
    with pytest.raises(ValueError, match="computed from their terms"):
        Interactions({(0,): 1.0}, 2, "fourier", baseline_value=0.5)
    with pytest.raises(ValueError, match="finite"):
        Interactions({(0,): 1.0}, 2, "sii", baseline_value=float("inf"))


def test_repr_uses_feature_names():
    f = Interactions({(): 0.1, (0, 1): 0.812, (2,): -0.25}, 3, "fbii", feature_names=["not", "good", "bad"])
    text = repr(f)
    assert text.splitlines()[0] == "Interactions(index='fbii', n=3, max_order=2, 3 terms)"
    assert "+0.812  {not, good}" in text and "-0.250  {bad}" in text and "(constant)" in text
    assert text.index("{not, good}") < text.index("{bad}")
    plain = repr(f.with_feature_names(None))
    assert "{0, 1}" in plain
    many = Interactions({(i,): float(i + 1) for i in range(15)}, 15)
    assert many.__repr__().splitlines()[-1].strip() == "... 5 more"


def test_with_feature_names_keeps_values_and_survives_conversion():
    f = Interactions({(0, 1): 1.0}, 2)
    named = f.with_feature_names(["a", "b"])
    assert named.feature_names == ("a", "b") and named == f
    assert named.to("shapley").feature_names == ("a", "b")
    with pytest.raises(ValueError, match="2 features"):
        f.with_feature_names(["a"])
    with pytest.raises(ValueError, match="strings"):
        f.with_feature_names(["a", 1])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "values, n, kwargs, message",
    [
        ({(1, 0): 1.0}, 3, {}, "strictly increasing"),
        ({(1, 1): 1.0}, 3, {}, "strictly increasing"),
        ({(3,): 1.0}, 3, {}, "strictly increasing"),
        ({(-1,): 1.0}, 3, {}, "strictly increasing"),
        ({(0.5,): 1.0}, 3, {}, "integer feature indices"),
        ({0: 1.0}, 3, {}, "tuples"),
        ({(0,): float("nan")}, 3, {}, "finite"),
        ({(0,): "x"}, 3, {}, "real number"),
        ({(0,): 1.0}, 0, {}, "n must be"),
        ({(0,): 1.0}, 3, {"index": "shap"}, "unknown index"),
        ({(0, 1): 1.0}, 3, {"max_order": 1}, "exceeds max_order"),
        ({(0,): 1.0}, 3, {"feature_names": "abc"}, "not one string"),
    ],
)
def test_constructor_errors(values, n, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Interactions(values, n, **kwargs)


def test_conversion_errors():
    f = Interactions({(0, 1): 1.0}, 3)
    with pytest.raises(ValueError, match="unknown index"):
        f.to("shap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order must be"):
        f.to("fbii", order=0)
    with pytest.raises(ValueError, match="order must be"):
        f.to("fbii", order=True)
    with pytest.raises(ValueError, match="order 1"):
        f.to("shapley", order=2)
    fbii = f.to("fbii")
    assert fbii.to("fbii") is fbii
    with pytest.raises(ValueError, match="convert from the 'fourier' or 'mobius'"):
        fbii.to("mobius")
    assert f.to("fourier") is f
    assert set(INDICES) == {"fourier", "mobius", "banzhaf", "shapley", "bii", "sii", "fbii", "fsii", "stii"}
