"""The embedded CPU default model: VADER sentiment of the masked text (no download, no GPU)."""

from __future__ import annotations

import importlib.metadata
import json

import numpy as np
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from connectors.base import Backend, Example, Score, example_renderer
from spex_ray.text import STRATEGIES, Strategy


class VaderBackend(Backend):
    """Value = VADER's ``compound`` score in [-1, 1] of the rendered masked text.

    ``raw`` is JSON ``{"neg", "neu", "pos", "compound"}``. ``strategy`` "remove" drops masked
    features, "mask_token" replaces each by ``mask_token`` (see ``spex_ray.text.Renderer``).
    """

    name = "vader"
    timed_in_process = True

    def __init__(self, *, strategy: Strategy = "remove", mask_token: str = "[MASK]") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown masking strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if not isinstance(mask_token, str):
            raise ValueError(f"mask_token must be a string, got {type(mask_token).__name__}")
        self.strategy = strategy
        self.mask_token = mask_token
        self._analyzer = SentimentIntensityAnalyzer()

    def identity(self) -> dict:
        return {
            "backend": self.name,
            "model": "vaderSentiment",
            "model_version": importlib.metadata.version("vaderSentiment"),
            "strategy": self.strategy,
            "mask_token": self.mask_token,
        }

    def _score(self, example: Example, keep: np.ndarray) -> list[Score]:
        """One Score per row of ``keep``: bool (B, n), True = kept."""
        texts = example_renderer(example, self.strategy, self.mask_token).render_batch(keep)
        scores = []
        for text in texts:
            polarity = self._analyzer.polarity_scores(text)
            raw = {key: polarity[key] for key in ("neg", "neu", "pos", "compound")}
            scores.append(Score(value=float(polarity["compound"]), raw=json.dumps(raw)))
        return scores
