"""shapiq interoperability: ``Interactions`` <-> ``shapiq.InteractionValues``, and ``SpexRay``, a
shapiq approximator backed by this package's engine.

Needs ``pip install 'spex-ray[shapiq]'``. Plots are shapiq's: ``interactions.to_shapiq().plot_force()``,
``.plot_network()``, ``.plot_upset()``, ``shapiq.plot.sentence_plot(iv, words)``...

Index names: ``mobius``/``Moebius``, ``shapley``/``SV``, ``banzhaf``/``BV``, ``sii``/``SII``,
``bii``/``BII``, ``fbii``/``FBII``, ``fsii``/``FSII``, ``stii``/``STII``; ``fourier`` has no shapiq
counterpart (convert it first, e.g. ``.to("fsii", order=2)``). shapiq calls an order-1
SII/STII/FSII ``SV`` and an order-1 BII/FBII ``BV``; ``from_shapiq`` maps them back to
``shapley``/``banzhaf``.

Values pass unchanged, the empty-set term ``()`` included. ``()`` is f(∅) for shapley, banzhaf,
fsii, stii and mobius, and the index's own value at T = ∅ for bii, fbii and sii. For SII that is
sum_S a(S)/(|S|+1), as shapiq's ``ExactComputer`` computes it (shapiq's ``MoebiusConverter`` and
sparse approximators leave SII's ``()`` out instead), so a SII result carries both ``()`` and
``baseline_value``. ``baseline_value`` is the explanation's f(∅) (the fit with every feature
masked), except for FBII, where shapiq takes the FBII constant (the order-ℓ approximation at ∅, to
which its plots add the other terms); ``from_shapiq`` of FBII values therefore leaves
``baseline_value`` unknown (None). A linked explanation (``Interactions.link``) passes in its
link's units (log-odds for ``logit``); shapiq has no link, so ``from_shapiq`` gives the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

try:
    from shapiq.approximator.base import Approximator
    from shapiq.interaction_values import InteractionValues
except ImportError as err:  # pragma: no cover - exercised without shapiq installed
    raise ImportError(
        "spex_ray.shapiq needs shapiq: pip install 'spex-ray[shapiq]' (or pip install shapiq)"
    ) from err

from spex_ray.explain import explain
from spex_ray.interactions import Interactions
from spex_ray.methods import DEFAULT_METHOD, plan_method

__all__ = ["SHAPIQ_INDEX", "SpexRay", "from_shapiq", "to_shapiq"]

#: spex-ray index -> shapiq index.
SHAPIQ_INDEX: dict[str, str] = {
    "mobius": "Moebius",
    "shapley": "SV",
    "banzhaf": "BV",
    "sii": "SII",
    "bii": "BII",
    "fbii": "FBII",
    "fsii": "FSII",
    "stii": "STII",
}
_FROM_SHAPIQ = {shapiq_name: name for name, shapiq_name in SHAPIQ_INDEX.items()}


def to_shapiq(interactions: Interactions, *, estimation_budget: int | None = None) -> InteractionValues:
    """``interactions`` as ``shapiq.InteractionValues`` over ``n`` players, ``min_order`` 0."""
    if interactions.index not in SHAPIQ_INDEX:
        raise ValueError(f"shapiq has no {interactions.index!r} index; convert first, e.g. "
                         f".to('fsii', order=2).to_shapiq() or .to('mobius').to_shapiq()")
    return _values(dict(interactions.items()), SHAPIQ_INDEX[interactions.index], interactions.max_order,
                   interactions.n, 0, _baseline(interactions), estimation_budget)


def _baseline(interactions: Interactions) -> float:
    """shapiq's ``baseline_value`` of ``interactions`` (see the module docstring)."""
    if interactions.index == "fbii":
        return interactions.get((), 0.0)
    if interactions.baseline_value is not None:
        return interactions.baseline_value
    if interactions.index == "sii":
        raise ValueError("sii interactions need a baseline_value f(∅) for shapiq: convert them from the "
                         "fourier/mobius explanation, or build them with Interactions(..., baseline_value=)")
    return interactions.get((), 0.0)


def from_shapiq(values: InteractionValues, feature_names: Sequence[str] | None = None) -> Interactions:
    """``Interactions`` with the values of a ``shapiq.InteractionValues`` (``k-SII`` and shapiq's
    other indices without a counterpart here raise ValueError)."""
    if values.index not in _FROM_SHAPIQ:
        raise ValueError(f"no spex-ray index for shapiq's {values.index!r}; "
                         f"supported: {', '.join(sorted(_FROM_SHAPIQ))}")
    index = _FROM_SHAPIQ[values.index]
    terms = {tuple(int(i) for i in key): float(value) for key, value in values.dict_values.items()}
    baseline = None if index in ("mobius", "fbii") else float(values.baseline_value)
    return Interactions(terms, values.n_players, index, max_order=values.max_order, feature_names=feature_names,
                        baseline_value=baseline)


class SpexRay(Approximator):
    """A shapiq approximator that runs spex-ray's engine: ``SpexRay(n, "FSII", max_order=2).approximate(budget, game)``.

    ``method`` is any of ``spex_ray.METHODS`` (default ``spex-hybrid``: SPEX's BCH-coded queries
    and peeled support plus boosted-tree terms, the most faithful per query in BENCHMARKS.md);
    ``options`` are ``spex_ray.MethodOptions`` fields (``b``, ``t``, ``refit``, ``trees``...). The game is
    called with bool coalitions (n_coalitions, n) -> values, in batches of at most ``batch_size``.
    The whole Fourier fit is converted to ``index`` at ``max_order``; ``k-SII`` is aggregated by
    shapiq from SII.
    """

    valid_indices = ("SV", "BV", "SII", "BII", "k-SII", "STII", "FSII", "FBII")

    def __init__(
        self,
        n: int,
        index: str = "FSII",
        max_order: int = 2,
        *,
        method: str = DEFAULT_METHOD,
        top_order: bool = False,
        random_state: int | None = None,
        batch_size: int = 1024,
        **options: Any,
    ) -> None:
        super().__init__(n=n, max_order=1 if index in ("SV", "BV") else max_order, index=index, top_order=top_order,
                         random_state=random_state, initialize_dict=False)
        self.method = method
        self.batch_size = batch_size
        self.options = options

    def approximate(self, budget: int, game: Callable[[np.ndarray], np.ndarray], *args: Any,
                    **kwargs: Any) -> InteractionValues:
        """Spend at most ``budget`` calls of ``game`` on one coalition each and return the index."""
        seed = self._random_state if self._random_state is not None else int(self._rng.integers(2**31))
        used = plan_method(self.method, self.n, budget=budget, seed=seed, **self.options).num_queries
        fit = explain(game, self.n, budget=budget, method=self.method, seed=seed, batch_size=self.batch_size,
                      link="identity", **self.options)  # shapiq's values are in the game's units
        index = "SII" if self.index == "k-SII" else self.index
        converted = fit.to(_FROM_SHAPIQ[index], order=self.max_order)
        terms = {key: value for key, value in converted.items() if len(key) >= self.min_order}
        return _values(terms, index, self.max_order, self.n, self.min_order, _baseline(converted), used, self.index)


def _values(terms: dict, index: str, max_order: int, n: int, min_order: int, baseline: float,
            budget: int | None, target_index: str | None = None) -> InteractionValues:
    """``InteractionValues`` of ``terms``, with their own lookup (shapiq would otherwise enumerate
    every subset up to ``max_order``)."""
    return InteractionValues(
        terms,
        interaction_lookup={key: i for i, key in enumerate(terms)},
        index=index,
        max_order=max_order,
        n_players=n,
        min_order=min_order,
        estimated=True,
        estimation_budget=budget,
        baseline_value=float(baseline),
        target_index=target_index,
    )
