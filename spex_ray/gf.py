"""Arithmetic in GF(2^m), m = 2..13, with log/antilog tables.

Field elements are ints in [0, 2^m) (bit i = coefficient of α^i in the polynomial basis), held in
numpy int arrays so that every operation vectorises over a batch. α is a root of the primitive
polynomial ``PRIMITIVE_POLYNOMIALS[m]``, so ``exp[i] = α^i`` enumerates every non-zero element.
"""

from __future__ import annotations

import functools

import numpy as np

#: Primitive polynomials over GF(2), bit i = coefficient of x^i (standard tables, e.g. Lin & Costello).
PRIMITIVE_POLYNOMIALS = {
    2: 0b111,
    3: 0b1011,
    4: 0b10011,
    5: 0b100101,
    6: 0b1000011,
    7: 0b10000011,
    8: 0b100011101,
    9: 0b1000010001,
    10: 0b10000001001,
    11: 0b100000000101,
    12: 0b1000001010011,
    13: 0b10000000011011,
}


class GF2m:
    """The field GF(2^m): ``order = 2^m - 1`` non-zero elements, tables ``exp`` (length 2·order) and ``log``.

    ``log[0]`` is -1 (the logarithm of 0 is undefined); every method maps 0 correctly.
    """

    def __init__(self, m: int):
        if m not in PRIMITIVE_POLYNOMIALS:
            raise ValueError(f"GF(2^m) supports m in 2..13, got m={m}")
        self.m = m
        self.order = (1 << m) - 1
        poly = PRIMITIVE_POLYNOMIALS[m]
        exp = np.zeros(2 * self.order, dtype=np.int64)
        value = 1
        for i in range(self.order):
            exp[i] = value
            value <<= 1
            if value >> m:
                value ^= poly
        exp[self.order :] = exp[: self.order]
        log = np.full(1 << m, -1, dtype=np.int64)
        log[exp[: self.order]] = np.arange(self.order)
        if value != 1 or np.any(log[1:] < 0):
            raise ValueError(f"polynomial {poly:#b} is not primitive for m={m}")
        self.exp = exp
        self.log = log

    def mul(self, a, b) -> np.ndarray:
        """Elementwise product (broadcasting)."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        product = self.exp[(self.log[a] + self.log[b]) % self.order]
        return np.where((a == 0) | (b == 0), 0, product)

    def inv(self, a) -> np.ndarray:
        """Multiplicative inverse; raises ZeroDivisionError if any element is 0."""
        a = np.asarray(a, dtype=np.int64)
        if np.any(a == 0):
            raise ZeroDivisionError("0 has no inverse in GF(2^m)")
        return self.exp[(self.order - self.log[a]) % self.order]

    def div(self, a, b) -> np.ndarray:
        """Elementwise a / b; raises ZeroDivisionError if any b is 0."""
        return self.mul(a, self.inv(b))

    def pow_alpha(self, exponent) -> np.ndarray:
        """α^exponent for any integer exponents (negative allowed)."""
        return self.exp[np.mod(exponent, self.order)]

    def power(self, a, exponent: int) -> np.ndarray:
        """a^exponent elementwise, exponent ≥ 0 (0^0 = 1)."""
        a = np.asarray(a, dtype=np.int64)
        if exponent == 0:
            return np.ones_like(a)
        result = self.exp[(self.log[a] * exponent) % self.order]
        return np.where(a == 0, 0, result)


@functools.lru_cache(maxsize=None)
def field(m: int) -> GF2m:
    """The shared, cached GF(2^m) instance."""
    return GF2m(m)
