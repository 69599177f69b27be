"""Shortened binary BCH codes with batched hard decoding.

A primitive narrow-sense binary BCH code of length N = 2^m - 1 and designed distance 2t + 1 has
generator g(x) = lcm of the minimal polynomials of α^1..α^{2t}, parity length p = deg g and
dimension K = N - p. ``BCHCode(n, t)`` takes the smallest m with K ≥ n and shortens the code to
length n + p.

Codeword layout (systematic): positions 0..p-1 hold the parity bits, position p + i holds message
bit i, so c(x) = x^p·msg(x) + (x^p·msg(x) mod g(x)).  In SPEX a message is a support vector k and
an "error" in message position i means feature i is in k.

Decoding (syndromes → Berlekamp–Massey → Chien search) runs on a whole batch of words at once with
GF(2^m) log/antilog tables; only the loops over the 2t Berlekamp–Massey steps and the t + 1
locator coefficients are in Python.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from spex_ray.gf import GF2m, field

#: Rows per chunk in the Chien search (bounds memory at about 8 MB per locator coefficient).
_CHIEN_CHUNK_ELEMENTS = 1 << 20


def _gf2_poly_mul(a: int, b: int) -> int:
    """Carry-less product of two GF(2) polynomials held as int bit masks."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        b >>= 1
    return product


def _minimal_polynomial(gf: GF2m, i: int) -> int:
    """Minimal polynomial over GF(2) of α^i, as an int bit mask."""
    coset = []
    j = i % gf.order
    while j not in coset:
        coset.append(j)
        j = (2 * j) % gf.order
    coeffs = np.array([1], dtype=np.int64)  # lowest degree first, entries in GF(2^m)
    for c in coset:
        root = gf.pow_alpha(c)
        shifted = np.concatenate([[0], coeffs])  # x·P(x)
        scaled = np.concatenate([gf.mul(coeffs, root), [0]])  # root·P(x)
        coeffs = shifted ^ scaled
    if np.any(coeffs > 1):
        raise ArithmeticError(f"minimal polynomial of α^{i} is not binary")
    return int(sum(int(c) << d for d, c in enumerate(coeffs)))


@functools.lru_cache(maxsize=None)
def _generator(m: int, t: int) -> int:
    gf = field(m)
    g = 1
    seen = set()
    for i in range(1, 2 * t + 1):
        poly = _minimal_polynomial(gf, i)
        if poly not in seen:
            seen.add(poly)
            g = _gf2_poly_mul(g, poly)
    return g


def bch_dimensions(n: int, t: int) -> tuple[int, int, int]:
    """(m, N, p) of the shortest primitive binary BCH code with error capacity t and dimension ≥ n."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    if t < 1:
        raise ValueError(f"t must be ≥ 1, got {t}")
    m = max(2, math.ceil(math.log2(2 * t + 2)))
    while m <= 13:
        order = (1 << m) - 1
        if 2 * t < order:
            p = _generator(m, t).bit_length() - 1
            if order - p >= n:
                return m, order, p
        m += 1
    raise ValueError(f"no binary BCH code with m ≤ 13 has dimension ≥ n={n} at t={t}")


class BCHCode:
    """The binary BCH code with error capacity ``t``, shortened to ``n`` message bits.

    Attributes: ``m``, ``N`` (unshortened length), ``p`` (parity bits), ``length = n + p``,
    ``parity_matrix`` — bool (p, n), column i = parity of the unit message e_i, so the parity of
    message k is ``parity_matrix @ k mod 2``.
    """

    def __init__(self, n: int, t: int):
        self.n = n
        self.t = t
        self.m, self.N, self.p = bch_dimensions(n, t)
        self.gf = field(self.m)
        self.generator = _generator(self.m, t)
        self.length = n + self.p
        self.parity_matrix = self._parity_matrix()
        positions = np.arange(self.length)
        j = np.arange(1, 2 * t + 1)
        # α^{j·pos}: (length, 2t) field elements, and their bit planes (length, 2t·m) for syndromes.
        self._syndrome_table = self.gf.pow_alpha(np.outer(positions, j))
        bits = (self._syndrome_table[:, :, None] >> np.arange(self.m)) & 1
        self._syndrome_bits = bits.reshape(self.length, -1).astype(np.float32)
        self._bit_weights = (1 << np.arange(self.m)).astype(np.int64)
        # (-i·pos) mod N for the Chien search, i = 0..t.
        self._chien_exponents = np.mod(-np.outer(np.arange(t + 1), positions), self.N)

    def _parity_matrix(self) -> np.ndarray:
        p, g = self.p, self.generator
        columns = np.zeros((self.n, p), dtype=bool)
        remainder = g ^ (1 << p)  # x^p mod g
        shifts = np.arange(p)
        for i in range(self.n):
            columns[i] = (remainder >> shifts) & 1
            remainder <<= 1
            if remainder >> p:
                remainder ^= g
        return np.ascontiguousarray(columns.T)

    def encode(self, messages: np.ndarray) -> np.ndarray:
        """Systematic codewords, bool (B, n + p), for bool messages (B, n)."""
        messages = np.atleast_2d(np.asarray(messages, dtype=bool))
        parity = (messages.astype(np.float32) @ self.parity_matrix.T.astype(np.float32)) % 2
        return np.concatenate([parity.astype(bool), messages], axis=1)

    def syndromes(self, words: np.ndarray) -> np.ndarray:
        """S_j = w(α^j), j = 1..2t: int (B, 2t) for bool words (B, L) holding the first L ≤ n + p positions."""
        words = np.atleast_2d(np.asarray(words))
        bits = words.astype(np.float32) @ self._syndrome_bits[: words.shape[1]]
        bits = np.rint(bits).astype(np.int64) & 1
        return bits.reshape(len(words), 2 * self.t, self.m) @ self._bit_weights

    def locate_errors(self, syndromes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Error positions from syndromes.

        Returns ``positions`` int (B, t), sorted ascending and padded with -1, and ``ok`` bool (B,):
        True where a pattern of at most t errors inside the shortened code explains the syndromes.
        """
        syndromes = np.atleast_2d(np.asarray(syndromes, dtype=np.int64))
        locator, degree = self._berlekamp_massey(syndromes)
        batch = len(syndromes)
        positions = np.full((batch, self.t), -1, dtype=np.int64)
        ok = degree == 0
        ok &= ~np.any(syndromes, axis=1)  # degree 0 explains only the zero syndrome
        candidates = np.flatnonzero((degree >= 1) & (degree <= self.t))
        chunk = max(1, _CHIEN_CHUNK_ELEMENTS // self.length)
        for start in range(0, len(candidates), chunk):
            rows = candidates[start : start + chunk]
            roots = self._chien(locator[rows])
            found = roots.sum(axis=1) == degree[rows]
            row_idx, pos = np.nonzero(roots[found])
            good = rows[found]
            rank = np.arange(len(pos)) - np.searchsorted(row_idx, row_idx)
            positions[good[row_idx], rank] = pos
            ok[good] = True
        # The found pattern must reproduce the syndromes (guards against spurious locators).
        check = np.flatnonzero(ok & (degree > 0))
        if len(check):
            table = np.vstack([self._syndrome_table, np.zeros((1, 2 * self.t), dtype=np.int64)])
            recomputed = np.bitwise_xor.reduce(table[positions[check]], axis=1)
            ok[check] = np.all(recomputed == syndromes[check], axis=1)
        positions[~ok] = -1
        return positions, ok

    def decode_parity(self, parity_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode received words [parity_bits | 0_n] (the SPEX case): message-error positions.

        ``parity_bits`` bool (B, p). Returns ``support`` int (B, t): the message positions in error
        (= feature indices of k), sorted, padded with -1; errors found among the parity bits are
        corrected and dropped. ``ok`` bool (B,) as in ``locate_errors``.
        """
        positions, ok = self.locate_errors(self.syndromes(parity_bits))
        support = np.where(positions >= self.p, positions - self.p, -1)
        order = np.argsort(np.where(support < 0, self.n, support), axis=1, kind="stable")
        return np.take_along_axis(support, order, axis=1), ok

    def _berlekamp_massey(self, syndromes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Error locator Λ (B, 2t + 1), lowest degree first, and its length L (B,)."""
        gf = self.gf
        batch, two_t = syndromes.shape
        width = two_t + 1
        locator = np.zeros((batch, width), dtype=np.int64)
        locator[:, 0] = 1
        previous = locator.copy()
        length = np.zeros(batch, dtype=np.int64)
        shift = np.ones(batch, dtype=np.int64)
        previous_discrepancy = np.ones(batch, dtype=np.int64)
        columns = np.arange(width)
        for step in range(two_t):
            terms = gf.mul(locator[:, : step + 1], syndromes[:, step::-1])
            discrepancy = np.bitwise_xor.reduce(terms, axis=1)
            nonzero = discrepancy != 0
            if not nonzero.any():
                shift += 1
                continue
            coef = gf.mul(discrepancy, gf.inv(np.where(nonzero, previous_discrepancy, 1)))
            source = columns[None, :] - shift[:, None]
            shifted = np.where(source >= 0, np.take_along_axis(previous, np.clip(source, 0, None), axis=1), 0)
            updated = locator ^ gf.mul(coef[:, None], shifted)
            grow = nonzero & (2 * length <= step)
            previous = np.where(grow[:, None], locator, previous)
            previous_discrepancy = np.where(grow, discrepancy, previous_discrepancy)
            length = np.where(grow, step + 1 - length, length)
            shift = np.where(grow, 1, shift + 1)
            locator = np.where(nonzero[:, None], updated, locator)
        # A valid locator has degree exactly L ≤ t; mark others with an impossible length.
        degree = np.where(np.any(locator[:, self.t + 1 :] != 0, axis=1), self.t + 1, length)
        return locator, degree

    def _chien(self, locator: np.ndarray) -> np.ndarray:
        """bool (R, n + p): Λ(α^{-pos}) == 0, for locators (R, ≥ t + 1)."""
        gf = self.gf
        logs = gf.log[locator[:, : self.t + 1]]
        value = np.zeros((len(locator), self.length), dtype=np.int64)
        for i in range(self.t + 1):
            term = gf.exp[logs[:, i, None] + self._chien_exponents[i][None, :]]
            value ^= np.where(logs[:, i, None] >= 0, term, 0)
        return value == 0


@functools.lru_cache(maxsize=32)
def bch_code(n: int, t: int) -> BCHCode:
    """The shared, cached ``BCHCode(n, t)`` (construction is deterministic)."""
    return BCHCode(n, t)
