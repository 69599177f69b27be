"""HTML views of explanations: a text with its features shaded by their effect, and its strongest
interactions. Shared by ``Interactions._repr_html_`` (one example, in a notebook) and the
``spex-ray report`` page (``pipelines/report.py``, every example of a job).

Python builds a compact *view* of each example (a JSON-ready dict, keys documented in
``view.js``); ``view.js`` renders views in the browser, so a report of 10,000 examples embeds
compact JSON and draws only the page on screen. Standard library only: imported lazily by
``spex_ray.interactions``, never at ``import spex_ray``.

Values are shown as effects of *keeping* features: for the ``fourier`` index a term F(T) is shown
as (-2)^|T| F(T) (the Banzhaf interaction), other indices as stored (as ``spex-ray show`` does).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

_ASSETS = Path(__file__).resolve().parent
TOP_INTERACTIONS = 10
"""Interactions of order >= 2 kept per example view, strongest first."""


def effect(index: str, key: Sequence[int], value: float) -> float:
    """The effect of keeping the features ``key`` together, from a stored ``index`` value."""
    return (-2.0) ** len(key) * value if index == "fourier" else value


def example_view(
    example_id: str,
    words: Sequence[str],
    terms: Iterable[tuple[Sequence[int], float]],
    *,
    index: str,
    gaps: str | None = None,
    top: int = TOP_INTERACTIONS,
    r2: float | None = None,
    full: float | None = None,
    empty: float | None = None,
    target: str | None = None,
    error: str | None = None,
) -> dict:
    """The compact view of one example.

    Args:
        words: the n feature texts, in order.
        terms: ``(feature indices, value)`` pairs of ``index`` (the constant term is ignored).
        gaps: one character per gap between words (" " space, "\\n" new line, "0" nothing);
            None: spaces.
        top: interactions of order >= 2 kept, by |effect|.
    """
    view: dict = {"id": str(example_id), "w": [str(word) for word in words]}
    for key, value in (("r2", r2), ("f", full), ("z", empty)):
        if value is not None:
            view[key] = _round(value)
    if target:
        view["t"] = target
    if error is not None:
        view["err"] = error
        return view
    if gaps is not None and gaps.strip(" "):
        view["g"] = gaps
    effects = [0.0] * len(words)
    pairs = []
    for key, value in terms:
        key = [int(i) for i in key]
        if len(key) == 1:
            effects[key[0]] = effect(index, key, value)
        elif len(key) > 1:
            pairs.append((key, effect(index, key, value)))
    pairs.sort(key=lambda term: -abs(term[1]))
    view["e"] = [_round(value) for value in effects]
    view["x"] = [[key, _round(value)] for key, value in pairs[:top]]
    return view


def _round(value: float) -> float | int:
    """Four significant digits (the view is for eyes; it keeps the page small)."""
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
    return example_view("", names, zip(keys, values.tolist()), index=interactions.index, top=top)
