import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spex_ray.gf import PRIMITIVE_POLYNOMIALS, GF2m, field

ms = st.sampled_from(sorted(PRIMITIVE_POLYNOMIALS))


def slow_mul(a: int, b: int, m: int) -> int:
    """Schoolbook carry-less multiply reduced by the primitive polynomial."""
    product = 0
    for i in range(m):
        if b >> i & 1:
            product ^= a << i
    poly = PRIMITIVE_POLYNOMIALS[m]
    for bit in range(2 * m - 2, m - 1, -1):
        if product >> bit & 1:
            product ^= poly << (bit - m)
    return product


@pytest.mark.parametrize("m", sorted(PRIMITIVE_POLYNOMIALS))
def test_alpha_generates_every_nonzero_element(m):
    gf = field(m)
    assert sorted(gf.exp[: gf.order].tolist()) == list(range(1, 1 << m))


@settings(max_examples=300, deadline=None)
@given(ms, st.data())
def test_multiplication_matches_schoolbook(m, data):
    a = data.draw(st.integers(0, (1 << m) - 1))
    b = data.draw(st.integers(0, (1 << m) - 1))
    assert int(field(m).mul(a, b)) == slow_mul(a, b, m)


@settings(max_examples=300, deadline=None)
@given(ms, st.data())
def test_field_axioms(m, data):
    gf = field(m)
    a, b, c = (data.draw(st.integers(0, (1 << m) - 1)) for _ in range(3))
    assert gf.mul(a, b) == gf.mul(b, a)
    assert gf.mul(a, gf.mul(b, c)) == gf.mul(gf.mul(a, b), c)
    assert gf.mul(a, b ^ c) == gf.mul(a, b) ^ gf.mul(a, c)  # addition is XOR
    if a:
        assert gf.mul(a, gf.inv(a)) == 1
        assert gf.div(gf.mul(a, b), a) == b


@settings(max_examples=100, deadline=None)
@given(ms, st.data())
def test_power_is_repeated_multiplication(m, data):
    gf = field(m)
    a = data.draw(st.integers(0, (1 << m) - 1))
    e = data.draw(st.integers(0, 40))
    expected = 1
    for _ in range(e):
        expected = int(gf.mul(expected, a))
    assert int(gf.power(a, e)) == expected


def test_zero_has_no_inverse_and_bad_m_is_rejected():
    with pytest.raises(ZeroDivisionError):
        field(5).inv(np.array([3, 0]))
    with pytest.raises(ValueError, match="m in 2..13"):
        GF2m(14)
