"""HTML views of explanations: a text with its features shaded by their effect, and its strongest
interactions. Shared by ``Interactions._repr_html_`` (one example, in a notebook) and the
``spex-ray report`` page (``pipelines/report.py``, every example of a job).

Python builds a compact *view* of each example (a JSON-ready dict, keys documented in
``view.js``); ``view.js`` renders views in the browser, so a report of 10,000 examples embeds
compact JSON and draws only the page on screen. numpy and the standard library only: imported
lazily by ``spex_ray.interactions``, never at ``import spex_ray``.

Values are shown as effects of *keeping* features: for the ``fourier`` index a term F(T) is shown
as (-2)^|T| F(T) (the Banzhaf interaction), other indices as stored (as ``spex-ray show`` does).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

_ASSETS = Path(__file__).resolve().parent
TOP_INTERACTIONS = 10
"""Interactions of order >= 2 kept per example view, strongest first."""


def effect(index: str, order, value):
    """The effect of keeping a term's features together, from its stored ``index`` value (floats
    or numpy arrays of orders and values)."""
    return (-2.0) ** order * value if index == "fourier" else value


def example_view(
    example_id: str,
    words: Sequence[str],
    effects: Sequence[float] = (),
    interactions: Sequence[tuple[Sequence[int], float]] = (),
    *,
    gaps: str | None = None,
    r2: float | None = None,
    fit_r2: float | None = None,
    full: float | None = None,
    empty: float | None = None,
    target: str | None = None,
    error: str | None = None,
) -> dict:
    """The compact view of one example.

    Args:
        words: the n feature texts, in order.
        effects: the effect of keeping each word alone (its order-1 term; n floats).
        interactions: ``(feature indices, effect)`` of order >= 2 to list, strongest first.
        gaps: one character per gap between words (" " space, "\\n" new line, "0" nothing);
            None: spaces.
        r2: the R² of these terms on held-out masks; fit_r2: the R² of the example's whole fit
            (shown when it differs).
    """
    view: dict = {"id": str(example_id), "w": [str(word) for word in words]}
    if fit_r2 is not None and (r2 is None or abs(fit_r2 - r2) >= 5e-4):
        view["fr"] = _significant(fit_r2)
    for key, value in (("r2", r2), ("f", full), ("z", empty)):
        if value is not None:
            view[key] = _significant(value)
    if target:
        view["t"] = target
    if error is not None:
        view["err"] = error
        return view
    if gaps is not None and gaps.strip(" "):
        view["g"] = gaps
    effects = np.asarray(effects, dtype=np.float64)
    largest = float(np.abs(effects).max()) if effects.size else 0.0
    # Four significant digits for the largest effect, the same decimals for the rest: the view is
    # for eyes, and the page stays small.
    decimals = 3 - math.floor(math.log10(largest)) if largest else 0
    view["e"] = [value or 0 for value in np.round(effects, decimals).tolist()]
    view["x"] = [[[int(i) for i in key], _significant(value)] for key, value in interactions]
    return view


def terms_view(example_id: str, words: Sequence[str], keys: Sequence[Sequence[int]], values: Sequence[float],
               index: str, top: int = TOP_INTERACTIONS, **fields) -> dict:
    """The view of one example from its stored terms of ``index`` (the constant term is ignored)."""
    effects = [0.0] * len(words)
    pairs = []
    for key, value in zip(keys, values):
        if len(key) == 1:
            effects[key[0]] = effect(index, 1, value)
        elif len(key) > 1:
            pairs.append((key, effect(index, len(key), value)))
    pairs.sort(key=lambda term: -abs(term[1]))
    return example_view(example_id, words, effects, pairs[:top], **fields)


def _significant(value: float) -> float | int:
    """Four significant digits."""
    value = float(f"{float(value):.4g}")
    return int(value) if value.is_integer() and abs(value) < 1e15 else value


@cache
def asset(name: str) -> str:
    """The text of ``view.css``, ``view.js``, ``report.css`` or ``report.js``."""
    return (_ASSETS / name).read_text(encoding="utf-8")


def script_json(value: object) -> str:
    """``value`` as JSON that is safe inside ``<script type="application/json">``."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def fragment(view: dict, title: str, fallback: str) -> str:
    """A self-contained HTML fragment drawing one example view (for a notebook's ``_repr_html_``).

    ``fallback`` (plain text) is shown where the notebook does not run scripts.
    """
    uid = "spx-" + uuid.uuid4().hex[:12]
    return (
        f'<div class="spx-root" id="{uid}"><style>{asset("view.css")}</style>'
        f'<div class="spx-title spx-meta">{_escape(title)}</div>'
        f'<pre class="spx-fallback">{_escape(fallback)}</pre></div>'
        f'<script type="application/json" id="{uid}-data">{script_json(view)}</script>'
        f"<script>{asset('view.js')}\n"
        f'(function () {{ var root = document.getElementById("{uid}");'
        f' var view = JSON.parse(document.getElementById("{uid}-data").textContent);'
        f' root.removeChild(root.querySelector(".spx-fallback"));'
        f" root.appendChild(window.SpexView.card(view, {{legend: true}})); }})();</script>"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def interactions_view(interactions, top: int = TOP_INTERACTIONS) -> dict:
    """The view of an ``Interactions`` (words: its feature names, else the feature indices)."""
    names = interactions.feature_names or [str(i) for i in range(interactions.n)]
    keys, values = interactions.to_arrays()
    return terms_view("", names, keys, values.tolist(), interactions.index, top)
