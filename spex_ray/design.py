"""Query designs: which masks a method asks the model about.

Convention everywhere: a mask is a bool row of length n, **True = feature kept**, False = masked.
A design is a deterministic function of its ``params()``; masks are addressed by query id, so the
pipeline can stream ``masks(start, stop)`` and never store them per query.

``SpexDesign`` (SPEX, spex-algorithm.md §1): for group c, delay r = 0..p and l ∈ {0,1}^b,
x = (M_c·l + D_r) mod 2, with query id ``q = (l·groups + c)·(p + 1) + r`` (l-major). The
subsampling matrices are drawn once for every b from the seed, so the design at b is exactly the
first ``num_queries(b)`` queries of the design at any larger b (nested sampling: raising the budget
only adds queries).

``FilledDesign`` spends a whole budget: a SPEX design, then uniform masks up to the budget (SPEX's
sizes grow 4× with b, so a SPEX design alone leaves up to three quarters of a budget unused).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spex_ray.bch import bch_code, bch_dimensions

#: Columns drawn for the subsampling matrices, whatever b is (b ≤ MAX_B).
MAX_B = 20
#: Smallest b that ``SpexDesign.for_budget`` will choose.
MIN_B = 3
#: Smallest b of the SPEX part of ``design_for_budget``: at b = 3 (8 bins per group) peeling
#: resolves a handful of terms, and on reviews scored by VADER as many uniform masks predicted better
#: (median held-out R² 0.79 against 0.72 with spex-hybrid at 1,000 queries).
MIN_FILLED_B = 4
#: ``UniformDesign`` stream of the masks that fill a budget after a SPEX design (the pipeline's
#: held-out masks are stream 1, uniform-mask methods' stream 0).
FILL_STREAM = 2
_UNIFORM_BLOCK = 4096


def spex_num_queries(n: int, b: int, t: int = 5, groups: int = 3) -> int:
    """groups·(p + 1)·2^b, the number of queries of ``SpexDesign(n, b, t, groups)``."""
    _, _, p = bch_dimensions(n, t)
    return groups * (p + 1) * (1 << b)


def largest_b(n: int, budget: int, t: int, groups: int, min_b: int) -> int | None:
    """The largest b ≥ ``min_b`` whose SPEX design fits ``budget`` queries, or None."""
    if spex_num_queries(n, min_b, t, groups) > budget:
        return None
    b = min_b
    while b < MAX_B and spex_num_queries(n, b + 1, t, groups) <= budget:
        b += 1
    return b


class SpexDesign:
    """BCH-coded subsampling design of SPEX for n features.

    Attributes: ``n, b, t, groups, seed``; ``code`` (the shortened BCH code); ``p`` parity bits;
    ``delays`` bool (p + 1, n), row 0 all False; ``subsampling`` bool (groups, n, b);
    ``num_queries = groups·(p + 1)·2^b``.
    """

    def __init__(self, n: int, b: int, t: int = 5, groups: int = 3, seed: int = 0):
        if n < 1:
            raise ValueError(f"n must be ≥ 1 feature, got n={n}")
        if not 1 <= b <= MAX_B:
            raise ValueError(f"b must be in 1..{MAX_B}, got b={b}")
        if groups < 1:
            raise ValueError(f"groups must be ≥ 1, got {groups}")
        self.n, self.b, self.t, self.groups, self.seed = n, b, t, groups, seed
        self.code = bch_code(n, t)
        self.p = self.code.p
        self.delays = np.vstack([np.zeros((1, n), dtype=bool), self.code.parity_matrix])
        full = np.random.default_rng([seed, n]).integers(0, 2, size=(groups, n, MAX_B), dtype=np.uint8)
        self.subsampling = full[:, :, :b].astype(bool)
        self.num_queries = groups * (self.p + 1) * (1 << b)

    @classmethod
    def for_budget(cls, n: int, budget: int, t: int = 5, groups: int = 3, seed: int = 0) -> "SpexDesign":
        """The design with the largest b (≥ MIN_B) whose queries fit ``budget``; lowers t if needed."""
        for t_try in range(t, 0, -1):
            b = largest_b(n, budget, t_try, groups, MIN_B)
            if b is not None:
                return cls(n, b, t_try, groups, seed)
        minimum = spex_num_queries(n, MIN_B, 1, groups)
        raise ValueError(
            f"budget of {budget} queries is below the minimum SPEX design for n={n} "
            f"({minimum} queries at b={MIN_B}, t=1, groups={groups}); raise the budget or use a "
            f"uniform-mask method (lasso, proxyspex)"
        )

    def params(self) -> dict[str, Any]:
        return {"kind": "spex", "n": self.n, "b": self.b, "t": self.t, "groups": self.groups, "seed": self.seed}

    def masks(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """bool (stop - start, n): the masks of queries start..stop-1 (True = kept)."""
        start, stop = _check_range(start, stop, self.num_queries)
        per_l = self.groups * (self.p + 1)
        first_l, last_l = start // per_l, (stop - 1) // per_l if stop > start else start // per_l
        ls = np.arange(first_l, last_l + 1)
        l_bits = ((ls[:, None] >> np.arange(self.b)) & 1).astype(np.float32)
        projected = np.einsum("lb,cnb->lcn", l_bits, self.subsampling.astype(np.float32))
        projected = (projected.astype(np.uint8) & 1).astype(bool)
        block = projected[:, :, None, :] ^ self.delays[None, None, :, :]
        offset = first_l * per_l
        return block.reshape(-1, self.n)[start - offset : stop - offset]

    def bins(self, supports: np.ndarray) -> np.ndarray:
        """int (groups, B): the bin M_cᵀk of each support; ``supports`` int (B, w) padded with -1."""
        padded = np.concatenate([self.subsampling, np.zeros((self.groups, 1, self.b), dtype=bool)], axis=1)
        bits = padded[:, supports].sum(axis=2) & 1  # (groups, B, b)
        return bits @ (1 << np.arange(self.b))

    def delay_signs(self, supports: np.ndarray) -> np.ndarray:
        """float (p + 1, B): (−1)^{⟨D_r, k⟩} for supports int (B, w) padded with -1."""
        padded = np.concatenate([self.delays, np.zeros((self.p + 1, 1), dtype=bool)], axis=1)
        parity = padded[:, supports].sum(axis=2) & 1
        return 1.0 - 2.0 * parity


class UniformDesign:
    """``num_queries`` i.i.d. uniform masks (each feature kept with probability 1/2).

    Masks are generated in fixed blocks of rows from (seed, stream, block), so any slice is the same
    whichever way the range is split. ``stream`` separates independent mask sets of one seed
    (e.g. a method's training masks and the held-out masks used for faithfulness).
    """

    def __init__(self, n: int, num_queries: int, seed: int = 0, stream: int = 0):
        if n < 1:
            raise ValueError(f"n must be ≥ 1 feature, got n={n}")
        if num_queries < 1:
            raise ValueError(f"num_queries must be ≥ 1, got {num_queries}")
        self.n, self.num_queries, self.seed, self.stream = n, num_queries, seed, stream

    def params(self) -> dict[str, Any]:
        return {"kind": "uniform", "n": self.n, "num_queries": self.num_queries, "seed": self.seed, "stream": self.stream}

    def masks(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """bool (stop - start, n) (True = kept)."""
        start, stop = _check_range(start, stop, self.num_queries)
        first, last = start // _UNIFORM_BLOCK, max(start, stop - 1) // _UNIFORM_BLOCK
        blocks = [
            np.random.default_rng([self.seed, self.stream, block, self.n]).random((_UNIFORM_BLOCK, self.n)) < 0.5
            for block in range(first, last + 1)
        ]
        offset = first * _UNIFORM_BLOCK
        return np.concatenate(blocks)[start - offset : stop - offset]


class FilledDesign:
    """``spex``'s queries, then ``fill`` uniform masks (``UniformDesign`` stream ``FILL_STREAM``).

    Query ids ``[0, spex.num_queries)`` are the SPEX design's, the next ``fill`` the uniform masks;
    both parts nest (a larger b or fill only appends queries to each). Attributes: ``spex``,
    ``fill``, ``n``, ``seed``, ``num_queries = spex.num_queries + fill``.
    """

    def __init__(self, spex: SpexDesign, fill: int):
        if fill < 1:
            raise ValueError(f"fill must be ≥ 1 uniform mask, got {fill} (use the SpexDesign itself)")
        self.spex, self.fill = spex, fill
        self.n, self.seed = spex.n, spex.seed
        self.num_queries = spex.num_queries + fill
        self._uniform = UniformDesign(spex.n, fill, spex.seed, FILL_STREAM)

    def params(self) -> dict[str, Any]:
        return {**self.spex.params(), "kind": "spex+uniform", "fill": self.fill}

    def masks(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """bool (stop - start, n) (True = kept)."""
        start, stop = _check_range(start, stop, self.num_queries)
        coded = self.spex.num_queries
        parts = [self.spex.masks(min(start, coded), min(stop, coded)),
                 self._uniform.masks(max(start, coded) - coded, max(stop, coded) - coded)]
        return np.concatenate(parts)


Design = SpexDesign | UniformDesign | FilledDesign


def design_for_budget(n: int, budget: int, t: int = 5, groups: int = 3, seed: int = 0) -> Design:
    """Exactly ``budget`` queries: the largest SPEX design at b ≥ ``MIN_FILLED_B`` (this t) that
    fits, then uniform masks up to the budget (``FilledDesign``); uniform masks alone
    (``UniformDesign`` stream ``FILL_STREAM``) when no such SPEX design fits."""
    b = largest_b(n, budget, t, groups, MIN_FILLED_B)
    if b is None:
        return UniformDesign(n, budget, seed, FILL_STREAM)
    spex = SpexDesign(n, b, t, groups, seed)
    return spex if spex.num_queries == budget else FilledDesign(spex, budget - spex.num_queries)


def design_from_params(params: dict[str, Any]) -> Design:
    """Rebuild a design from its ``params()``."""
    kind = params.get("kind")
    rest = {k: v for k, v in params.items() if k not in ("kind", "fill")}
    if kind == "spex":
        return SpexDesign(**rest)
    if kind == "spex+uniform":
        return FilledDesign(SpexDesign(**rest), params["fill"])
    if kind == "uniform":
        return UniformDesign(**rest)
    raise ValueError(f"unknown design kind {kind!r} (expected 'spex', 'spex+uniform' or 'uniform')")


def _check_range(start: int, stop: int | None, total: int) -> tuple[int, int]:
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise ValueError(f"query range [{start}, {stop}) is outside [0, {total})")
    return start, stop
