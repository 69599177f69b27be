"""Sparse interaction values over n features, and conversions between interaction indices.

Conventions (shared by the whole package):

- A mask is x in {0,1}^n with x_i = 1 (True) when feature i is **kept**, 0 when it is masked.
- A key is a sorted tuple of distinct feature indices in [0, n); ``()`` is the constant term.
- ``fourier``: f(x) = sum_k F(k) (-1)^{<k,x>}.
- ``mobius``:  f(x) = sum_S a(S) prod_{i in S} x_i, so a(S) = (-2)^{|S|} sum_{k ⊇ S} F(k).
- Signs: keeping feature i flips (-1)^{x_i}, so a word whose keeping *raises* f has F({i}) < 0.
  ``top()`` and ``repr`` therefore show a Fourier term as its effect of keeping,
  (-2)^{|T|} F(T) (the Banzhaf interaction); every other index is shown as stored.

Every conversion between indices is a *subset transform*: each source term P spreads onto
the subsets T ⊆ P with a weight that depends only on |T| and |P|. The weights are exact
rational tables (composed when the source basis differs from the target's natural basis), so
a conversion costs sum over terms of the number of subsets with |T| <= the output order.
"""

from __future__ import annotations

import operator
import typing
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from itertools import combinations
from math import comb
from typing import Literal

import numpy as np

from spex_ray.link import LINKS, get_link

__all__ = ["INDICES", "MAX_DEFAULT_ORDER", "PREDICTABLE", "IndexName", "Interactions"]

IndexName = Literal["fourier", "mobius", "banzhaf", "shapley", "bii", "sii", "fbii", "fsii", "stii"]
INDICES: tuple[str, ...] = typing.get_args(IndexName)

MAX_DEFAULT_ORDER = 5
"""Cap on the default order ℓ of ``fbii``/``fsii``/``stii`` (SPEX's default t = 5 finds no higher orders)."""

_SOURCE_INDICES = ("fourier", "mobius")
#: Indices whose terms are a polynomial approximation of f, so ``predict`` evaluates them: the two
#: expansions, and Faith-Banzhaf / Faith-Shapley (by definition the best order-ℓ polynomial in the
#: Möbius basis under uniform / Shapley-kernel weights).
PREDICTABLE: tuple[str, ...] = ("fourier", "mobius", "fbii", "fsii")
_TOP_IN_REPR = 10
_CANCEL_RTOL = 1e-12
_PREDICT_CHUNK_ELEMENTS = 1 << 24

Key = tuple[int, ...]
_Weight = Callable[[int, int, int], Fraction]


class Interactions(Mapping[Key, float]):
    """Read-only mapping from sorted feature-index tuples to the values of one interaction index.

    Args:
        values: mapping from keys (sorted tuples of distinct ints in [0, n); ``()`` is the
            constant term) to finite real values. Exact zeros are dropped.
        n: number of features (>= 1).
        index: which index the values are (see ``IndexName``).
        max_order: largest interaction order the values may hold (for ``fbii``/``fsii``/``stii``
            it is their ℓ). Defaults to the largest order present (0 when empty); a key of
            higher order raises ValueError.
        feature_names: optional names of the n features, used by ``repr``, ``top(names=True)``
            and the tables (repeated names are told apart in ``feature_labels``).
        baseline_value: f(∅), the explained function with every feature masked (shapiq's
            ``baseline_value``). Computed from the terms for ``fourier``/``mobius`` (do not pass
            it); other indices carry it from the expansion they were converted from (None when
            unknown).
        link: the name of the link g (``spex_ray.link``) through which the terms predict the
            output, y = g(expansion); "identity" (the default) or, for a bounded output, "logit"
            or "algebraic", whose terms (and baseline) are in the units of the link's space.

    Iteration yields keys by order, then lexicographically. Values are Python floats;
    ``dict(interactions)`` gives a plain dict.
    """

    __slots__ = ("_baseline", "_feature_names", "_index", "_keys", "_link", "_lookup", "_max_order", "_n", "_orders",
                 "_rows", "_values")

    def __init__(
        self,
        values: Mapping[Key, float],
        n: int,
        index: IndexName = "fourier",
        *,
        max_order: int | None = None,
        feature_names: Sequence[str] | None = None,
        baseline_value: float | None = None,
        link: str = "identity",
    ):
        n = _check_int(n, "n", minimum=1)
        keys = [_check_key(key, n) for key in values]
        vals = np.array([_check_value(values[key], key) for key in values], dtype=np.float64)
        order = sorted(range(len(keys)), key=lambda i: (len(keys[i]), keys[i]))
        keys = [keys[i] for i in order]
        vals = vals[order]
        rows = _rows_from_keys(keys, n)
        self._setup(keys, vals, rows, n, index, max_order, feature_names, baseline_value, link)

    @classmethod
    def from_arrays(
        cls,
        keys: Sequence[Key],
        values: np.ndarray | Sequence[float],
        n: int,
        index: IndexName = "fourier",
        *,
        max_order: int | None = None,
        feature_names: Sequence[str] | None = None,
        baseline_value: float | None = None,
        link: str = "identity",
    ) -> Interactions:
        """Build from parallel sequences: ``keys`` (m sorted tuples) and ``values`` float (m,)."""
        vals = np.asarray(values, dtype=np.float64)
        if vals.ndim != 1 or vals.shape[0] != len(keys):
            raise ValueError(f"values must have shape ({len(keys)},) to match keys, got {vals.shape}")
        mapping = dict(zip(map(tuple, keys), vals.tolist()))
        if len(mapping) != len(keys):
            raise ValueError("keys contain duplicates")
        return cls(mapping, n, index, max_order=max_order, feature_names=feature_names, baseline_value=baseline_value,
                   link=link)

    def _setup(self, keys, vals, rows, n, index, max_order, feature_names, baseline=None, link="identity") -> None:
        if index not in INDICES:
            raise ValueError(f"unknown index {index!r}; expected one of {', '.join(INDICES)}")
        if baseline is not None:
            if index in _SOURCE_INDICES:
                raise ValueError(f"the baseline value of {index!r} interactions is computed from their terms; "
                                 "do not pass baseline_value")
            baseline = _check_value(baseline, "baseline_value")
        keep = vals != 0.0
        if not keep.all():
            keys = [k for k, kept in zip(keys, keep.tolist()) if kept]
            vals, rows = vals[keep], rows[keep]
        orders = np.array([len(k) for k in keys], dtype=np.int64)
        present = int(orders.max()) if len(keys) else 0
        if max_order is None:
            max_order = present
        else:
            max_order = _check_int(max_order, "max_order", minimum=0)
            if present > max_order:
                raise ValueError(f"a key of order {present} exceeds max_order={max_order}")
        vals = vals.astype(np.float64, copy=True)
        vals.setflags(write=False)
        rows.setflags(write=False)
        self._keys: tuple[Key, ...] = tuple(keys)
        self._values = vals
        self._orders = orders
        self._rows = rows
        self._lookup = {k: i for i, k in enumerate(self._keys)}
        self._n = n
        self._index: IndexName = index
        self._max_order = max_order
        self._feature_names = _check_names(feature_names, n)
        self._baseline = baseline
        self._link = get_link(link).name

    @classmethod
    def _trusted(cls, keys, vals, rows, n, index, max_order, feature_names, baseline=None,
                 link="identity") -> Interactions:
        """Build from canonical-ordered keys with matching padded rows, skipping key validation."""
        obj = cls.__new__(cls)
        obj._setup(keys, vals, rows, n, index, max_order, feature_names, baseline, link)
        return obj

    @property
    def n(self) -> int:
        """Number of features."""
        return self._n

    @property
    def index(self) -> IndexName:
        """Name of the interaction index the values are."""
        return self._index

    @property
    def max_order(self) -> int:
        """Largest interaction order the values may hold (ℓ for fbii/fsii/stii)."""
        return self._max_order

    @property
    def link(self) -> str:
        """The link's name: ``predict`` gives g(expansion) (see the class docstring)."""
        return self._link

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """Names of the n features, or None."""
        return self._feature_names

    @property
    def feature_labels(self) -> tuple[str, ...]:
        """n distinct display names: the feature names, a repeated one suffixed with its occurrence
        (``cat#1``, ``cat#2``: the first and second "cat"); the positions ``"0"``... when unnamed."""
        if self._feature_names is None:
            return tuple(map(str, range(self._n)))
        return _distinct(self._feature_names)

    @property
    def baseline_value(self) -> float | None:
        """f(∅), the explained function with every feature masked (see the class docstring); in the
        link's units, g⁻¹(f(∅)), when ``link`` is not "identity"."""
        if self._index == "fourier":
            return float(self._values.sum())
        if self._index == "mobius":
            return self[()] if () in self._lookup else 0.0
        return self._baseline

    def __getitem__(self, key: Key) -> float:
        return float(self._values[self._lookup[key]])

    def __iter__(self) -> Iterator[Key]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Interactions):
            return (
                self._index == other._index
                and self._n == other._n
                and self._link == other._link
                and self._keys == other._keys
                and bool(np.array_equal(self._values, other._values))
            )
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def to_arrays(self) -> tuple[list[Key], np.ndarray]:
        """Keys (list of m tuples, by order then lexicographic) and their values, float (m,)."""
        return list(self._keys), self._values.copy()

    def with_feature_names(self, names: Sequence[str] | None) -> Interactions:
        """The same values with feature names (a sequence of n strings; None removes them)."""
        return Interactions._trusted(list(self._keys), self._values, self._rows, self._n, self._index, self._max_order,
                                     names, self._baseline, self._link)

    def with_link(self, link: str) -> Interactions:
        """The same terms read through another link (``spex_ray.link.LINKS``)."""
        return Interactions._trusted(list(self._keys), self._values, self._rows, self._n, self._index, self._max_order,
                                     self._feature_names, self._baseline, link)

    def top(self, k: int = 10, order: int | None = None, *, names: bool = False) -> list[tuple[tuple, float]]:
        """The k strongest terms as ``(key, effect)``, by |effect| descending; the constant term is excluded.

        The effect is the stored value for every index but ``fourier``, whose term F(T) is shown as
        its effect of keeping, (-2)^{|T|} F(T) (its Banzhaf interaction: > 0 when keeping T raises
        f). ``order`` keeps only terms of exactly that order (e.g. ``order=2`` for pairs);
        ``names=True`` gives keys as tuples of ``feature_labels`` instead of positions. Ties keep
        the iteration order.
        """
        k = _check_int(k, "k", minimum=0)
        sel = self._orders > 0 if order is None else self._orders == _check_int(order, "order", minimum=1)
        candidates = np.flatnonzero(sel)
        effects = self._values * (-2.0) ** self._orders if self._index == "fourier" else self._values
        best = candidates[np.argsort(-np.abs(effects[candidates]), kind="stable")[:k]]
        labels = self.feature_labels if names else None
        return [(self._keys[i] if labels is None else tuple(labels[j] for j in self._keys[i]), float(effects[i]))
                for i in best]

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """Evaluate the function at masks: bool (B, n), True = kept (0/1 integers accepted) -> float (B,).

        For the indices in ``PREDICTABLE``: the ``fourier`` and ``mobius`` expansions, and ``fbii``/
        ``fsii`` read as the order-ℓ polynomial in the Möbius basis that they are defined as. The
        other indices are attributions, not approximations of f. With a ``link`` other than
        "identity" the expansion is mapped through it: g(expansion).
        """
        if self._index not in PREDICTABLE:
            raise ValueError(
                f"predict() needs {', '.join(map(repr, PREDICTABLE))} interactions, not {self._index!r}; "
                "predict with the interactions you converted from"
            )
        x = _check_masks(masks, self._n)
        out = np.zeros(x.shape[0])
        fourier = self._index == "fourier"
        combine = np.logical_xor if fourier else np.logical_and
        highest = int(self._orders[-1]) if len(self) else 0
        bounds = np.searchsorted(self._orders, np.arange(highest + 2))
        step = max(1, _PREDICT_CHUNK_ELEMENTS // max(1, len(self)))
        for start in range(0, x.shape[0], step):
            features = np.ascontiguousarray(x[start : start + step].T)  # (n, b): one row per feature
            total = out[start : start + step]
            for order in range(highest + 1):
                lo, hi = bounds[order], bounds[order + 1]
                if lo == hi:
                    continue
                vals, cols = self._values[lo:hi], self._rows[lo:hi, :order]
                if order == 0:
                    total += vals.sum()
                    continue
                term = features[cols[:, 0]]
                for j in range(1, order):
                    combine(term, features[cols[:, j]], out=term)
                # Fourier: sum_k F(k) (-1)^{odd} = sum_k F(k) - 2 sum_{k odd} F(k); Möbius: sum over all-kept terms.
                total += vals.sum() - 2.0 * (vals @ term) if fourier else vals @ term
        return LINKS[self._link].forward(out)

    def to(self, index: IndexName, order: int | None = None) -> Interactions:
        """Convert to another interaction index (formulas: spex-algorithm.md section 3).

        The source must be ``fourier`` or ``mobius`` (converting an index to itself with
        ``order=None`` returns it unchanged). Targets, with T the output key:

        - ``fourier``, ``mobius``: the expansions; ``order`` truncates to |T| <= order.
        - ``bii``: Banzhaf interaction (-2)^{|T|} F(T); ``sii``: Shapley interaction
          sum_{S ⊇ T} a(S)/(|S|-|T|+1). ``order`` truncates; ``()`` is the index at T = ∅.
        - ``banzhaf``, ``shapley``: the order-1 values; ``()`` holds the baseline v(∅) = f(0),
          so for shapley v(∅) + sum_i φ_i = v(N). ``order`` must be None or 1.
        - ``fbii``, ``fsii``, ``stii``: Faith-Banzhaf, Faith-Shapley and Shapley-Taylor indices
          of order ℓ = ``order`` (|T| <= ℓ, constant included). Default ℓ: the largest order
          present in the source, at least 1 and at most ``MAX_DEFAULT_ORDER``.

        Terms that cancel to zero (within floating-point rounding of their contributions) are
        dropped. The result keeps the feature names, the link and the ``baseline_value``; its
        ``max_order`` is ℓ for fbii/fsii/stii, 1 for the values and ``min(order, self.max_order)``
        otherwise.
        """
        if index not in INDICES:
            raise ValueError(f"unknown index {index!r}; expected one of {', '.join(INDICES)}")
        if order is not None:
            order = _check_int(order, "order", minimum=1)
        if index == self._index and order is None:
            return self
        if self._index not in _SOURCE_INDICES:
            raise ValueError(
                f"cannot convert {self._index!r} interactions to {index!r}; "
                "convert from the 'fourier' or 'mobius' interactions instead"
            )
        present = int(self._orders.max()) if len(self) else 0
        if index in ("banzhaf", "shapley"):
            if order not in (None, 1):
                raise ValueError(f"{index!r} values are of order 1; got order={order}")
            max_t = out_order = min(1, self._max_order)
        elif index in ("fbii", "fsii", "stii"):
            max_t = out_order = order if order is not None else min(max(present, 1), MAX_DEFAULT_ORDER)
        else:
            max_t = out_order = self._max_order if order is None else min(order, self._max_order)
        basis, weight = _TARGETS[index]
        table = _weight_table(weight, basis, self._index, min(max_t, present), present, out_order)
        keys, vals, rows = _subset_transform(self._rows, self._orders, self._values, table, self._n)
        baseline = None if index in _SOURCE_INDICES else self.baseline_value
        return Interactions._trusted(keys, vals, rows, self._n, index, out_order, self._feature_names, baseline,
                                     self._link)

    @classmethod
    def from_row(cls, row: Mapping) -> Interactions:
        """The interactions of one explanation row (a dict from pyarrow, Ray Data or ``datasets``,
        or a pandas Series), with its words as feature names; ValueError for an error row."""
        from spex_ray.results import interactions_from_row

        return interactions_from_row(row)

    def to_frame(self):
        """A pandas DataFrame, one row per term: ``index_name, order, features`` (tuple of
        positions), ``words`` (tuple of feature names, None when unnamed), ``value`` (as stored)."""
        from spex_ray.results import interactions_to_frame

        return interactions_to_frame(self)

    def save(self, path) -> None:
        """Write to a JSON file (``Interactions.load`` reads it back equal, feature names and
        baseline included)."""
        from spex_ray.results import save_interactions

        save_interactions(self, path)

    @classmethod
    def load(cls, path) -> Interactions:
        """Read a JSON file written by ``save``."""
        from spex_ray.results import load_interactions

        return load_interactions(path)

    def to_shapiq(self):
        """These values as a ``shapiq.InteractionValues`` (needs ``pip install 'spex-ray[shapiq]'``);
        see ``spex_ray.shapiq`` for the index names and the empty-set convention."""
        from spex_ray.shapiq import to_shapiq

        return to_shapiq(self)

    @classmethod
    def from_shapiq(cls, values, feature_names: Sequence[str] | None = None) -> Interactions:
        """Interactions from a ``shapiq.InteractionValues`` (the inverse of ``to_shapiq``)."""
        from spex_ray.shapiq import from_shapiq

        return from_shapiq(values, feature_names)

    def __repr__(self) -> str:
        terms = "term" if len(self) == 1 else "terms"
        link = "" if self._link == "identity" else f", link={self._link!r}"
        head = f"Interactions(index={self._index!r}, n={self._n}, max_order={self._max_order}{link}, {len(self)} {terms})"
        lines = [head]
        if self._index == "fourier":
            lines.append("  (terms shown as effects of keeping: (-2)^|T| F(T))")
        if () in self._lookup:
            lines.append(f"  {_format_value(self[()])}  (constant)")
        shown = self.top(_TOP_IN_REPR, names=True)
        lines.extend(f"  {_format_value(value)}  {{{', '.join(key)}}}" for key, value in shown)
        hidden = len(self) - len(shown) - (() in self._lookup)
        if hidden:
            lines.append(f"  ... {hidden} more")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The notebook view: the features shaded by their effect of keeping them, and the strongest
        interactions (the per-example view of ``spex-ray report``; drawn by a script, with this
        ``repr`` as the fallback where scripts do not run)."""
        from spex_ray._html import fragment, interactions_view

        text = repr(self)
        return fragment(interactions_view(self), text.splitlines()[0], text)


def _distinct(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` with each repeated one suffixed ``#k`` by occurrence, until all are distinct."""
    labels = list(names)
    while len(set(labels)) < len(labels):
        counts, seen = Counter(labels), Counter()
        for i, label in enumerate(labels):
            if counts[label] > 1:
                seen[label] += 1
                labels[i] = f"{label}#{seen[label]}"
    return tuple(labels)


def _format_value(value: float) -> str:
    text = f"{value:+.3f}" if 1e-3 <= abs(value) < 1e5 else f"{value:+.2e}"
    return text.rjust(9)


# ---------------------------------------------------------------------------------------------
# Weight tables. weight(t, s, ell) is the coefficient with which a term P of order s (in the
# target's natural basis) contributes to each T ⊆ P of order t.


def _unit(t: int, s: int, ell: int) -> Fraction:
    return Fraction(int(t == s))


def _bii(t: int, s: int, ell: int) -> Fraction:
    return Fraction((-2) ** t) if t == s else Fraction(0)


def _banzhaf(t: int, s: int, ell: int) -> Fraction:
    # From Fourier: v(∅) = sum_k F(k); Banzhaf value of i = -2 F({i}).
    return Fraction(1) if t == 0 else _bii(t, s, ell)


def _sii(t: int, s: int, ell: int) -> Fraction:
    return Fraction(1, s - t + 1)


def _shapley(t: int, s: int, ell: int) -> Fraction:
    return Fraction(int(s == 0)) if t == 0 else Fraction(1, s)


def _stii(t: int, s: int, ell: int) -> Fraction:
    if t < ell:
        return Fraction(int(t == s))
    return Fraction(1, comb(s, ell))


def _fsii(t: int, s: int, ell: int) -> Fraction:
    if s <= ell:
        return Fraction(int(t == s))
    if t == 0:
        return Fraction(0)
    sign = (-1) ** (ell - t)
    return sign * Fraction(t, ell + t) * comb(ell, t) * Fraction(comb(s - 1, ell), comb(s + ell - 1, ell + t))


def _fbii(t: int, s: int, ell: int) -> Fraction:
    return Fraction((-2) ** t) if s <= ell else Fraction(0)


# target -> (natural basis of its weights, weight)
_TARGETS: dict[str, tuple[str, _Weight]] = {
    "fourier": ("fourier", _unit),
    "mobius": ("mobius", _unit),
    "bii": ("fourier", _bii),
    "banzhaf": ("fourier", _banzhaf),
    "fbii": ("fourier", _fbii),
    "sii": ("mobius", _sii),
    "shapley": ("mobius", _shapley),
    "stii": ("mobius", _stii),
    "fsii": ("mobius", _fsii),
}


def _change_of_basis(source: str) -> _Weight:
    """Weights of the transform from ``source`` to the other basis."""
    if source == "fourier":  # a(S) = (-2)^{|S|} sum_{k ⊇ S} F(k)
        return lambda u, s, ell: Fraction((-2) ** u)
    return lambda u, s, ell: Fraction((-1) ** u, 2**s)  # F(k) = (-1)^{|k|} sum_{S ⊇ k} a(S) / 2^{|S|}


def _weight_table(weight: _Weight, basis: str, source: str, max_t: int, max_s: int, ell: int) -> np.ndarray:
    """Float table W[t, s] (t <= max_t, s <= max_s) from a ``source`` term of order s onto T, |T| = t.

    When the source is not the target's natural basis, the basis change is composed in:
    W[t, s] = sum_{u=t..s} C(s-t, u-t) weight(t, u) change(u, s).
    """
    table = np.zeros((max_t + 1, max_s + 1))
    change = _change_of_basis(source)
    for s in range(max_s + 1):
        for t in range(min(s, max_t) + 1):
            if basis == source:
                w = weight(t, s, ell)
            else:
                w = sum(comb(s - t, u - t) * weight(t, u, ell) * change(u, s, ell) for u in range(t, s + 1))
            table[t, s] = float(w)
    return table


def _subset_transform(
    rows: np.ndarray, orders: np.ndarray, values: np.ndarray, table: np.ndarray, n: int
) -> tuple[list[Key], np.ndarray, np.ndarray]:
    """out(T) = sum over source terms P ⊇ T of table[|T|, |P|] * value(P), for |T| < table rows.

    ``rows`` int (m, w) holds each source key padded with n. Returns canonical-ordered keys,
    their values and padded rows; zeros and rounding-level cancellations are dropped.
    """
    width = max(1, table.shape[0] - 1)
    parts_rows, parts_vals = [], []
    for s in np.unique(orders).tolist():
        members = rows[orders == s, :s]
        vals_s = values[orders == s]
        for t in range(min(s, table.shape[0] - 1) + 1):
            w = table[t, s]
            if w == 0.0:
                continue
            picks = np.array(list(combinations(range(s), t)), dtype=np.intp).reshape(comb(s, t), t)
            sub = members[:, picks].reshape(len(members) * len(picks), t)
            block = np.full((sub.shape[0], width), n, dtype=np.int64)
            block[:, :t] = sub
            parts_rows.append(block)
            parts_vals.append(np.repeat(vals_s * w, picks.shape[0]))
    if not parts_rows:
        return [], np.zeros(0), np.zeros((0, width), dtype=np.int64)
    all_rows = np.concatenate(parts_rows)
    contrib = np.concatenate(parts_vals)
    uniq, inverse = _group_rows(all_rows, n)
    total = np.bincount(inverse, weights=contrib, minlength=len(uniq))
    scale = np.bincount(inverse, weights=np.abs(contrib), minlength=len(uniq))
    keep = np.abs(total) > _CANCEL_RTOL * scale
    uniq, total = uniq[keep], total[keep]
    out_orders = (uniq < n).sum(axis=1)
    canonical = np.argsort(out_orders, kind="stable")  # groups come lexicographic; order first
    uniq, total, out_orders = uniq[canonical], total[canonical], out_orders[canonical]
    keys = [tuple(r[:o]) for r, o in zip(uniq.tolist(), out_orders.tolist())]
    return keys, total, uniq


def _group_rows(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of an int (r, w) array with entries in [0, n], and each row's group id.

    Rows are packed into as few int64 words as fit (lexicographic order is kept), so grouping is
    a lexsort of a few integer keys rather than ``np.unique(axis=0)``.
    """
    bits = int(n).bit_length()
    per_word = 63 // bits
    words = []
    for first in range(0, rows.shape[1], per_word):
        word = np.zeros(rows.shape[0], dtype=np.int64)
        for column in rows[:, first : first + per_word].T:
            word = (word << bits) | column
        words.append(word)
    order = np.lexsort(words[::-1])
    starts = np.zeros(len(order), dtype=bool)
    starts[:1] = True
    for word in words:
        sorted_word = word[order]
        starts[1:] |= sorted_word[1:] != sorted_word[:-1]
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return rows[order[starts]], inverse


# ---------------------------------------------------------------------------------------------
# Validation helpers.


def _rows_from_keys(keys: Sequence[Key], n: int) -> np.ndarray:
    """Padded int (m, w) array of canonical-ordered keys; checks indices are sorted and in range."""
    width = max([1, *map(len, keys)])
    rows = np.full((len(keys), width), n, dtype=np.int64)
    lengths = np.array([len(k) for k in keys], dtype=np.int64)
    for o in np.unique(lengths).tolist():
        if o == 0:
            continue
        where = np.flatnonzero(lengths == o)
        block = np.array([keys[i] for i in where.tolist()], dtype=np.int64).reshape(-1, o)
        bad = (block[:, 0] < 0) | (block[:, -1] >= n) | (np.diff(block, axis=1) <= 0).any(axis=1)
        if bad.any():
            key = keys[int(where[np.argmax(bad)])]
            raise ValueError(f"key {key} must be a strictly increasing tuple of feature indices in [0, {n})")
        rows[where, :o] = block
    return rows


def _check_key(key: object, n: int) -> Key:
    if not isinstance(key, tuple):
        raise ValueError(f"keys must be tuples of feature indices, got {key!r}")
    try:
        return tuple(operator.index(i) for i in key)
    except TypeError:
        raise ValueError(f"key {key!r} must hold integer feature indices") from None


def _check_value(value: object, key: Key) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"value of {key} must be a real number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"value of {key} must be finite, got {v}")
    return v


def _check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v}")
    return v


def _check_names(names: Sequence[str] | None, n: int) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str):
        raise ValueError("feature_names must be a sequence of strings, not one string")
    names = tuple(names)
    if len(names) != n:
        raise ValueError(f"feature_names has {len(names)} names for n={n} features")
    if not all(isinstance(name, str) for name in names):
        raise ValueError("feature_names must all be strings")
    return names


def _check_masks(masks: np.ndarray, n: int) -> np.ndarray:
    """Masks as bool (B, n); accepts bool or 0/1 integer arrays."""
    x = np.asarray(masks)
    if x.ndim != 2 or x.shape[1] != n:
        raise ValueError(f"masks must have shape (B, {n}), got {x.shape}")
    if x.dtype != bool:
        if not (np.issubdtype(x.dtype, np.integer) and np.isin(x, (0, 1)).all()):
            raise ValueError("masks must be bool (True = kept) or 0/1 integers")
        x = x.astype(bool)
    return x
