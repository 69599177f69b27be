"""Explanation methods: one registry of ``Method`` classes, one ``MethodOptions`` type.

A method is a ``Method`` subclass registered under its ``name`` (``METHODS``, default
``DEFAULT_METHOD``). ``Method.for_example(n, options)`` gives the method applied to one example of
``n`` features: ``.design`` says which masks to query (``design.masks(start, stop)``, True = kept)
and ``.fit(values)`` turns the values of those queries, in query-id order, into Fourier-basis
``Interactions``. ``plan_method(name, n, **options)`` does the same by name. A design is a
deterministic function of (name, n, options): equal ``params()`` mean equal masks and equal
results, which is what the pipeline's resume and caching rely on.

``MethodOptions`` is the one options type of ``spex_ray.explain``, ``plan_method`` and the job
config (whose keys have the same names); ``MethodOptions.problems()`` names each bad value's key.

A new method is a subclass here: set ``name``, implement ``design_for`` and ``_fit`` (or
``_fit_masks`` under ``_UniformMasks``), decorate it with ``@register``; the job, ``explain`` and
the config then accept its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from spex_ray.design import MAX_B, Design, SpexDesign, UniformDesign, design_for_budget, spex_num_queries
from spex_ray.interactions import Interactions
from spex_ray.peeling import Decoder, check_values, decode

__all__ = ["DEFAULT_METHOD", "METHODS", "Method", "MethodOptions", "method_class", "plan_method"]

#: The default of ``explain``, ``plan_method`` and the job config: the most faithful per query in BENCHMARKS.md.
DEFAULT_METHOD = "spex-hybrid"
#: Tree libraries of spex-hybrid and proxyspex (``spex_ray.trees``, imported only when fitting).
TREE_LIBRARIES: tuple[str, ...] = ("lightgbm", "sklearn")
#: Refits of spex-hard and spex-soft (None: the peeled amplitudes).
REFITS: tuple[str, ...] = ("ls", "lasso")
#: b used when neither a budget nor b is given.
DEFAULT_B = 6
#: The largest BCH error capacity t: SPEX's queries grow with the parity bits (about t·log2(n) per
#: group and bin), and past this a design is almost all parity.
MAX_T = 64


@dataclass(frozen=True)
class MethodOptions:
    """Options of every method (each method reads the ones it needs).

    ``budget``: queries to spend; ``b``: SPEX bins per group 2^b (sizes the design instead of the
    budget); ``t``: BCH error capacity; ``groups``: SPEX subsampling groups; ``seed``: of the
    design; ``max_order``: the regression baselines' order (capped at 2); ``refit``: spex-hard's and
    spex-soft's refit ("ls", "lasso" or None); ``trees``: the tree library ("lightgbm" or "sklearn").
    """

    budget: int | None = None
    b: int | None = None
    t: int = 5
    groups: int = 3
    seed: int = 0
    max_order: int = 2
    refit: str | None = "ls"
    trees: str = "lightgbm"

    #: Bounds of the numeric options: key -> (lowest, highest). The highest keep a design within what a
    #: machine can plan (a SPEX design of b bins per group has 2^b x ... queries).
    BOUNDS: ClassVar[dict[str, tuple[int, int | None]]] = {
        "budget": (1, 100_000_000), "b": (1, MAX_B), "t": (1, MAX_T), "groups": (1, None),
        "max_order": (1, 127), "seed": (0, 2**63 - 1),
    }
    #: Allowed values of the options that name a choice.
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"refit": REFITS, "trees": TREE_LIBRARIES}
    #: Choices that may also be None.
    NULLABLE: ClassVar[tuple[str, ...]] = ("refit",)

    def problems(self) -> list[tuple[str, str]]:
        """(key, what is wrong) for each bad value, e.g. ("b", "must be <= 20, got 30"); [] if none."""
        found = []
        for key, (low, high) in self.BOUNDS.items():
            value = getattr(self, key)
            if value is not None and value < low:
                found.append((key, f"must be >= {low}, got {value}"))
            elif value is not None and high is not None and value > high:
                found.append((key, f"must be <= {high}, got {value}"))
        for key, allowed in self.CHOICES.items():
            value = getattr(self, key)
            if value not in allowed and not (value is None and key in self.NULLABLE):
                found.append((key, f"must be one of {', '.join(allowed)}; got {value!r}"))
        return found

    def check(self) -> None:
        """ValueError naming every bad value's key (``problems``), if any."""
        found = self.problems()
        if found:
            raise ValueError("; ".join(f"{key} {problem}" for key, problem in found))


class Method(ABC):
    """One explanation method applied to one example: its query design and its fit.

    Subclasses set ``name`` and implement ``design_for`` (a deterministic function of n and the
    options) and ``_fit``; ``@register`` adds them to ``METHODS``.
    """

    name: ClassVar[str]
    #: True: ``fit_cv`` gives the fit and its cross-validated R², which adaptive budgets judge by.
    cross_validates: ClassVar[bool] = False

    def __init__(self, design: Design, options: MethodOptions):
        self.design, self.options = design, options

    @classmethod
    def for_example(cls, n: int, options: MethodOptions = MethodOptions()) -> Method:
        """The method for an example of ``n`` features; ValueError naming the problem when there is none."""
        if n < 1:
            raise ValueError(f"an explanation needs at least 1 feature, got n={n}")
        options.check()
        return cls(cls.design_for(n, options), options)

    @classmethod
    @abstractmethod
    def design_for(cls, n: int, options: MethodOptions) -> Design:
        """The queries of an example of ``n`` features."""

    @abstractmethod
    def _fit(self, values: np.ndarray) -> Interactions:
        """``fit`` without the thread limit."""

    def fit_params(self) -> dict[str, Any]:
        """The options that change the fit (beyond the design)."""
        return {}

    @property
    def num_queries(self) -> int:
        return self.design.num_queries

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params()})"

    def with_design(self, design: Design) -> Method:
        """This method over another design (e.g. a prefix of this one's queries)."""
        return type(self)(design, self.options)

    def params(self) -> dict[str, Any]:
        """{"method", "design": design.params(), **fit_params()}: equal params, equal masks and results."""
        return {"method": self.name, "design": self.design.params(), **self.fit_params()}

    def fit(self, values: np.ndarray) -> Interactions:
        """Fourier-basis interactions from float values (num_queries,) in query-id order. Runs on one
        thread (BLAS included): callers parallelise across examples, and BLAS threads spinning on a
        busy machine cost up to 15x the CPU of these small solves."""
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(values)

    def fit_cv(self, values: np.ndarray) -> tuple[Interactions, float]:
        """``fit``'s interactions and their cross-validated R² on the design's own queries
        (1 − CV mean squared error / variance of the values); only methods that cross-validate
        their fit (``cross_validates``) have it."""
        raise ValueError(f"a cross-validated fit (adaptive budgets) needs {cross_validated_methods()}, not {self.name}")


_REGISTRY: dict[str, type[Method]] = {}


def cross_validated_methods() -> str:
    """The registered methods that cross-validate their fit, as text: "spex-hybrid" (or "a or b")."""
    return " or ".join(name for name, cls in _REGISTRY.items() if cls.cross_validates)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add ``cls`` to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def method_class(name: str | None) -> type[Method]:
    """The registered class of ``name`` (None: ``DEFAULT_METHOD``); ValueError for an unknown name."""
    name = DEFAULT_METHOD if name is None else name
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def plan_method(method: str | None, n: int, **options: Any) -> Method:
    """``method`` (None: ``DEFAULT_METHOD``, spex-hybrid) for an example of ``n`` features;
    ``options``: the fields of ``MethodOptions``.

    Queries: ``b`` sizes a SPEX design (SPEX's count at that b, for every method: equal-budget
    comparisons); otherwise ``budget`` is spent whole by spex-hybrid (``design.design_for_budget``:
    SPEX's largest design at b ≥ 4, then uniform masks up to the budget; only uniform masks below
    SPEX's b = 4) and by the uniform-mask methods (lasso, faith-banzhaf, proxyspex), while spex-hard
    and spex-soft take the largest SPEX design within it; with neither, b = 6.
    ``max_order`` caps the order of the regression baselines (1 or 2); ``refit`` applies to
    spex-hard and spex-soft; ``trees`` ("lightgbm" or "sklearn") is the tree library of
    spex-hybrid (soft decoding, SPEX's support plus tree terms chosen by cross-validation, least
    squares or ridge refit; see ``spex_ray.hybrid``) and proxyspex.
    """
    return method_class(method).for_example(n, MethodOptions(**options))


def _spex_design(n: int, options: MethodOptions) -> SpexDesign:
    """SPEX's design at ``b``, else the largest within ``budget``, else at ``DEFAULT_B``."""
    if options.b is not None:
        return SpexDesign(n, options.b, options.t, options.groups, options.seed)
    if options.budget is not None:
        return SpexDesign.for_budget(n, options.budget, options.t, options.groups, options.seed)
    return SpexDesign(n, DEFAULT_B, options.t, options.groups, options.seed)


@register
class SpexHybrid(Method):
    """SPEX's soft-decoded support plus boosted-tree terms, chosen by cross-validation and refit
    (``spex_ray.hybrid``); spends a whole budget (``design_for_budget``) unless ``b`` is given."""

    name = "spex-hybrid"
    cross_validates = True

    @classmethod
    def design_for(cls, n: int, options: MethodOptions) -> Design:
        if options.b is None and options.budget is not None:
            return design_for_budget(n, options.budget, options.t, options.groups, options.seed)
        return _spex_design(n, options)

    def fit_params(self) -> dict[str, Any]:
        return {"trees": self.options.trees}

    def _fit(self, values: np.ndarray) -> Interactions:
        return self._fit_cv(values)[0]

    def fit_cv(self, values: np.ndarray) -> tuple[Interactions, float]:
        with threadpool_limits(limits=1, user_api="blas"):
            result, error = self._fit_cv(values)
        variance = float(np.var(values))
        return result, 1.0 - error / variance if variance > 0 else 1.0

    def _fit_cv(self, values: np.ndarray) -> tuple[Interactions, float]:
        from spex_ray.hybrid import fit_spex_hybrid_cv  # imports scikit-learn and the tree library

        return fit_spex_hybrid_cv(self.design, values, backend=self.options.trees)


class _SpexDecoding(Method):
    """SPEX's design (``_spex_design``) decoded by peeling, then refit (``options.refit``)."""

    decoder: ClassVar[Decoder]

    @classmethod
    def design_for(cls, n: int, options: MethodOptions) -> Design:
        return _spex_design(n, options)

    def fit_params(self) -> dict[str, Any]:
        return {"refit": self.options.refit}

    def _fit(self, values: np.ndarray) -> Interactions:
        return decode(self.design, values, self.decoder, refit=self.options.refit)


@register
class SpexHard(_SpexDecoding):
    """SPEX with hard BCH decoding."""

    name = "spex-hard"
    decoder = "hard"


@register
class SpexSoft(_SpexDecoding):
    """SPEX with soft BCH decoding."""

    name = "spex-soft"
    decoder = "soft"


class _UniformMasks(Method):
    """A baseline fit on ``budget`` uniform masks (without a budget: SPEX's count at ``b``, else at
    ``DEFAULT_B``: equal-budget comparisons)."""

    @classmethod
    def design_for(cls, n: int, options: MethodOptions) -> Design:
        budget = options.budget
        if budget is None:
            budget = spex_num_queries(n, DEFAULT_B if options.b is None else options.b, options.t, options.groups)
        return UniformDesign(n, budget, options.seed)

    def _fit(self, values: np.ndarray) -> Interactions:
        return self._fit_masks(self.design.masks(), check_values(values, self.num_queries))

    @abstractmethod
    def _fit_masks(self, masks: np.ndarray, values: np.ndarray) -> Interactions:
        """The fit from masks bool (Q, n) (True = kept) and their values float (Q,)."""


@register
class ProxySpex(_UniformMasks):
    """ProxySPEX: boosted trees, their Fourier transform, the terms holding most energy, ridge refit."""

    name = "proxyspex"

    def fit_params(self) -> dict[str, Any]:
        return {"trees": self.options.trees}

    def _fit_masks(self, masks: np.ndarray, values: np.ndarray) -> Interactions:
        from spex_ray.baselines import fit_proxyspex  # imports scikit-learn: only when a baseline is used

        return fit_proxyspex(masks, values, seed=self.design.seed, backend=self.options.trees)


class _Regression(_UniformMasks):
    """A regression on the parity basis up to order min(max_order, 2)."""

    def fit_params(self) -> dict[str, Any]:
        return {"order": min(self.options.max_order, 2)}


@register
class Lasso(_Regression):
    """LASSO on the parity basis, its penalty chosen by cross-validation."""

    name = "lasso"

    def _fit_masks(self, masks: np.ndarray, values: np.ndarray) -> Interactions:
        from spex_ray.baselines import fit_lasso

        return fit_lasso(masks, values, order=self.fit_params()["order"], seed=self.design.seed)


@register
class FaithBanzhaf(_Regression):
    """Least squares on the parity basis (Faith-Banzhaf)."""

    name = "faith-banzhaf"

    def _fit_masks(self, masks: np.ndarray, values: np.ndarray) -> Interactions:
        from spex_ray.baselines import fit_faith_banzhaf

        return fit_faith_banzhaf(masks, values, order=self.fit_params()["order"])


#: The registered methods' names, ``DEFAULT_METHOD`` first.
METHODS: tuple[str, ...] = tuple(_REGISTRY)
