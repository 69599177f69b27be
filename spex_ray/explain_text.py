"""Explain a model of text in one call: split the text into features, mask them, explain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spex_ray.explain import explain
from spex_ray.interactions import Interactions
from spex_ray.text import Renderer, Strategy, Unit, featurize

TextFunction = Callable[[list[str]], Sequence[float]]


def explain_text(
    text: str,
    fn: TextFunction,
    unit: Unit = "words",
    *,
    spans: Sequence[tuple[int, int]] | None = None,
    strategy: Strategy = "remove",
    mask_token: str = "[MASK]",
    **options: Any,
) -> Interactions:
    """Explain ``fn`` on ``text``; return its ``Interactions``, named by the features' texts.

    ``fn`` maps a list of B masked texts to B floats (a list or an array). ``text`` is split into
    ``unit``: "words" (whitespace tokens), "sentences", or "spans" (the given character ``spans``,
    ``[(start, end), ...]``). A masked feature is removed (``strategy="remove"``, spacing kept
    tidy) or replaced by ``mask_token`` (``"mask_token"``); see ``spex_ray.text.Renderer``.
    ``options`` go to ``spex_ray.explain``: ``budget``, ``method``, ``index``, ``order``,
    ``batch_size`` (texts per ``fn`` call), ``progress`` (a progress bar; a widget in a notebook),
    ``seed``... Raises ValueError for an empty text or bad spans, and what ``explain`` raises,
    e.g. for a result of ``fn`` that is not B finite numbers.
    """
    features, feature_spans = featurize(text, unit, spans=spans)
    renderer = Renderer(text, feature_spans, strategy=strategy, mask_token=mask_token)

    def value_fn(masks: np.ndarray) -> Sequence[float]:
        return fn(renderer.render_batch(masks))

    return explain(value_fn, len(features), feature_names=features, **options)
