"""A backend of one's own, as a user writes it: named in configs by its import path
``custom_backend:PhraseBackend`` (this folder is on the scorer actors' PYTHONPATH in the tests)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from connectors import Backend, Example, Score, example_renderer


class PhraseBackend(Backend):
    """Value = the sum of the kept words' ``weights``, plus ``bonus`` when every word of ``phrase`` is kept."""

    def __init__(self, *, weights: Mapping[str, float], phrase: Sequence[str] = (), bonus: float = 0.0,
                 strategy: str = "remove", mask_token: str = "[MASK]") -> None:
        self.weights = dict(weights)
        self.phrase = set(phrase)
        self.bonus = bonus
        self.strategy = strategy
        self.mask_token = mask_token

    @classmethod
    def check_values(cls, options):
        weights = options.get("weights")
        if not isinstance(weights, Mapping) or not all(isinstance(v, (int, float)) for v in weights.values()):
            return [f"'backend.weights' must map words to numbers, got {weights!r}"]
        return []

    def identity(self) -> dict:
        return {"backend": self.name, "weights": self.weights}

    def _score(self, example: Example, keep: np.ndarray) -> list[Score]:
        scores = []
        for text in example_renderer(example, self.strategy, self.mask_token).render_batch(keep):
            words = text.split()
            value = sum(self.weights.get(word, 0.0) for word in words)
            value += self.bonus if self.phrase and self.phrase <= set(words) else 0.0
            scores.append(Score(value=float(value), raw=json.dumps({"words": len(words)})))
        return scores
