"""The one-call entry point: explain any Python value function of masks."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np

from spex_ray.design import Design
from spex_ray.interactions import Interactions
from spex_ray.link import candidate_links, get_link
from spex_ray.link_fit import fit_with_link
from spex_ray.methods import DEFAULT_METHOD, plan_method

ValueFunction = Callable[[np.ndarray], np.ndarray]


def explain(
    value_fn: ValueFunction,
    n: int,
    *,
    budget: int | None = None,
    method: str = DEFAULT_METHOD,
    index: str = "fourier",
    order: int | None = None,
    feature_names: Sequence[str] | None = None,
    batch_size: int = 1024,
    progress: bool = False,
    adaptive: bool = False,
    link: str = "auto",
    **options,
) -> Interactions:
    """Explain ``value_fn`` over ``n`` features and return its interactions in ``index``.

    ``value_fn`` maps bool masks (B, n) — True = feature kept — to float values (B,); it is called
    on batches of at most ``batch_size`` masks. ``budget`` is the number of queries: the default
    method (spex-hybrid) spends all of it, SPEX-only methods the largest SPEX design within it (see
    ``spex_ray.methods.MethodOptions`` for the other ``options``: b, t, groups, seed, max_order,
    refit, trees).
    ``adaptive=True`` (spex-hybrid) makes the budget (or b's design) a cap: queries go out in stages and stop once
    a stage raises the cross-validated R² by less than 0.01 (``spex_ray.adaptive``; call
    ``fit_adaptive`` there for the queries spent and saved).
    ``link`` ("auto", "identity", "logit" or "algebraic"; ``spex_ray.link``): the result predicts
    g(expansion), its terms in the link's units, and so is every ``index`` converted from it
    (Shapley values in log-odds for ``logit``). "auto" fits each link whose range holds the values
    (logit and algebraic for values in [0, 1], algebraic for values in [−1, 1]) and keeps one only
    where it predicts held-out queries clearly better than the identity (``spex_ray.link_fit``), so
    units may differ between calls (name a link for one unit); with ``adaptive=True`` it is chosen
    on the queries spent. A named link refuses values outside its range (ValueError).

    A batch's values may be any array-like of B real numbers (shape (B,), or (B, 1)); anything
    else raises at once, naming what was expected and what came back: TypeError for values that
    are not real numbers (dicts, strings, None), ValueError for another count or shape, and for
    NaN or infinite values, which would spoil every coefficient of the fit.
    """
    if feature_names is not None and len(feature_names) != n:
        raise ValueError(f"got {len(feature_names)} feature names for n={n} features")
    if adaptive and budget is None and options.get("b") is None:
        raise ValueError("adaptive=True needs a budget (or b): the most queries to spend")
    fitter = plan_method(method, n, budget=budget, **options)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=fitter.num_queries, desc=f"{fitter.name} queries", unit="query")
    values_of = functools.partial(_values, value_fn, fitter.design, batch_size, bar)
    if link != "auto":
        get_link(link)  # an unknown link raises before any query
    if adaptive:
        result = _fit_adaptive(fitter, values_of, link)
    else:
        result = fit_with_link(fitter, values_of(0, fitter.num_queries), link)
    if bar is not None:
        bar.close()
    if feature_names is not None:
        result = result.with_feature_names(feature_names)
    return result if index == "fourier" else result.to(index, order=order)


def _fit_adaptive(fitter, values_of, link: str) -> Interactions:
    """``fit_adaptive``'s stages, judged by identity fits, then the fit through ``link`` of the
    queries they spent."""
    from spex_ray.adaptive import fit_adaptive, prefix_design

    seen = []

    def recorded(start: int, stop: int) -> np.ndarray:
        seen.append(values_of(start, stop))
        return seen[-1]

    fit = fit_adaptive(fitter, recorded)
    values = np.concatenate(seen)
    if link == "identity" or link == "auto" and len(candidate_links(values)) == 1:
        return fit.interactions
    return fit_with_link(fitter.with_design(prefix_design(fitter.design, fit.queries)), values, link,
                         identity=fit.interactions)


def _values(value_fn: ValueFunction, design: Design, batch_size: int, bar: Any, first: int, last: int) -> np.ndarray:
    """float (last - first,): ``value_fn``'s values of query ids [first, last), asked in batches of
    at most ``batch_size`` masks; each batch advances the progress ``bar`` (None: no bar)."""
    values = np.empty(last - first)
    for start in range(first, last, batch_size):
        stop = min(start + batch_size, last)
        masks = design.masks(start, stop)
        values[start - first : stop - first] = _checked(value_fn(masks), masks.shape, start)
        if bar is not None:
            bar.update(stop - start)
    return values


def _checked(returned: object, shape: tuple[int, int], first_query: int) -> np.ndarray:
    """The values ``value_fn`` returned for masks of ``shape`` (B, n), as float64 (B,)."""
    count, n = shape
    expected = (f"value_fn must map bool masks of shape (B, n) to B float values of shape (B,); given masks of "
                f"shape ({count}, {n}),")
    raw = None
    if not isinstance(returned, (dict, str, bytes)):
        try:
            raw = np.asarray(returned)
        except (TypeError, ValueError):  # e.g. ragged lists
            pass
    if raw is None or raw.dtype.kind not in "biuf":
        raise TypeError(f"{expected} it returned {_describe(returned, raw)}")
    if raw.size != count or sum(dim > 1 for dim in raw.shape) > 1:
        raise ValueError(f"{expected} it returned {raw.size} values of shape {raw.shape}")
    values = raw.astype(np.float64).reshape(-1)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{expected} it returned {int(bad.sum())} NaN or infinite values (first for query "
                         f"{first_query + int(np.argmax(bad))}); values must be finite")
    return values


def _describe(returned: object, raw: np.ndarray | None) -> str:
    """What a value function returned, for an error message."""
    if returned is None:
        return "None"
    if raw is None or raw.ndim == 0:
        return f"a {type(returned).__name__}: {returned!r:.80}"
    described = f"a {type(returned).__name__} of shape {raw.shape} and dtype {raw.dtype}"
    if raw.size:
        first = raw.reshape(-1)[0]
        described += f", the first value a {type(first).__name__}: {first!r:.80}"
    return described
