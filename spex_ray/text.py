"""Text features and masking: split a text into features with character spans, and rebuild masked texts.

A text with features ``f_0 .. f_{n-1}`` at spans ``[start, end)`` reads ``g_0 f_0 g_1 f_1 ... f_{n-1} g_n``,
where the gaps ``g_i`` are the text between features (``g_0`` leading, ``g_n`` trailing).
Mask convention: ``keep[i]`` True/1 = feature ``i`` kept, False/0 = masked.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

Unit = Literal["words", "sentences", "spans"]
Strategy = Literal["remove", "mask_token"]
UNITS: tuple[str, ...] = ("words", "sentences", "spans")
STRATEGIES: tuple[str, ...] = ("remove", "mask_token")

_WORD = re.compile(r"\S+")
# A sentence starts at a non-space character and ends at the first of: terminal punctuation (with any
# closing quotes/brackets) followed by whitespace or the end, a blank line, or the end of the text.
_SENTENCE = re.compile(
    r"\S.*?(?:[.!?\u2026]+[\"'\u201d\u2019\u00bb)\]]*(?=\s|\Z)|(?=\n[^\S\n]*\n)|\Z)",
    re.DOTALL,
)


def featurize(
    text: str,
    unit: Unit,
    *,
    spans: Sequence[tuple[int, int]] | None = None,
    max_features: int | None = None,
) -> tuple[list[str], list[tuple[int, int]]]:
    """Split ``text`` into features; return ``(features, spans)`` with ``features[i] == text[start:end]``.

    ``unit``: "words" (whitespace-separated tokens, punctuation attached), "sentences" (regex splitter:
    terminal punctuation followed by whitespace, or a blank line), or "spans" (the given ``spans``:
    sorted, non-overlapping, non-empty, within the text). Raises ValueError for empty/whitespace text,
    no features, bad spans, or more than ``max_features`` features.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("example text is empty or whitespace only")
    if unit not in UNITS:
        raise ValueError(f"unknown feature unit {unit!r}; expected one of {', '.join(UNITS)}")
    if (spans is not None) != (unit == "spans"):
        raise ValueError("spans must be given exactly when unit='spans'")
    if max_features is not None and not _is_positive_int(max_features):
        raise ValueError(f"max_features must be a positive integer or None, got {max_features!r}")

    if unit == "spans":
        found = _check_spans(spans, len(text))
    else:
        pattern = _WORD if unit == "words" else _SENTENCE
        found = []
        for match in pattern.finditer(text):
            start, end = match.span()
            end = start + len(text[start:end].rstrip())
            found.append((start, end))
    if not found:
        raise ValueError("example has no features")
    if max_features is not None and len(found) > max_features:
        raise ValueError(f"example has {len(found)} features, more than max_features={max_features}")
    return [text[start:end] for start, end in found], found


def _is_positive_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _check_spans(spans: Sequence[tuple[int, int]] | None, length: int) -> list[tuple[int, int]]:
    """Validate character spans against a text of ``length`` characters; return them as int pairs."""
    if spans is None:
        raise ValueError("spans are required")
    checked: list[tuple[int, int]] = []
    previous_end = 0
    for i, span in enumerate(spans):
        try:
            start, end = (operator.index(v) for v in span)
        except (TypeError, ValueError):
            raise ValueError(f"span {i} must be a pair of integers (start, end), got {span!r}") from None
        if not 0 <= start < end <= length:
            raise ValueError(f"span {i} = ({start}, {end}) must satisfy 0 <= start < end <= {length}")
        if start < previous_end:
            raise ValueError(f"span {i} = ({start}, {end}) overlaps or precedes the previous span; spans must be sorted")
        checked.append((start, end))
        previous_end = end
    return checked


class Renderer:
    """Rebuilds masked versions of one text; build once per example, call once per query row.

    strategy "remove": masked features are dropped. Gaps made only of whitespace collapse: one
    survives between two kept features (the one right before the later feature), the leading and
    trailing gaps always survive, so keeping everything returns ``text`` exactly. Gaps that hold
    other characters (template text between given spans) always survive.
    strategy "mask_token": every masked feature is replaced by ``mask_token``; all gaps survive.
    """

    def __init__(
        self,
        text: str,
        spans: Sequence[tuple[int, int]],
        *,
        strategy: Strategy = "remove",
        mask_token: str = "[MASK]",
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown masking strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if not isinstance(mask_token, str):
            raise ValueError(f"mask_token must be a string, got {type(mask_token).__name__}")
        checked = _check_spans(spans, len(text))
        self.text = text
        self.n = len(checked)
        self.strategy = strategy
        self.mask_token = mask_token
        bounds = [0, *(v for span in checked for v in span), len(text)]
        gaps = [text[bounds[2 * i] : bounds[2 * i + 1]] for i in range(self.n + 1)]
        self._template_gap = np.array([bool(gap.strip()) for gap in gaps[1:-1]], dtype=bool)
        # pieces: g_0, f_0, token, g_1, f_1, token, ..., g_n; a row selects which of them appear
        self._pieces = np.empty(3 * self.n + 1, dtype=object)
        self._pieces[0::3] = gaps
        self._pieces[1::3] = [text[start:end] for start, end in checked]
        self._pieces[2::3] = mask_token

    def _keep(self, keep: np.ndarray, ndim: int) -> np.ndarray:
        keep = np.asarray(keep)
        if keep.ndim != ndim or keep.shape[-1] != self.n:
            expected = "(n,)" if ndim == 1 else "(B, n)"
            raise ValueError(f"keep must have shape {expected} with n={self.n}, got {keep.shape}")
        if keep.dtype != bool:
            if not np.isin(keep, (0, 1)).all():
                raise ValueError("keep must be boolean or 0/1 valued")
            keep = keep.astype(bool)
        return keep

    def _selection(self, keep: np.ndarray) -> np.ndarray:
        """bool (B, 3n+1): which pieces appear in each row's rendered text."""
        select = np.zeros((keep.shape[0], 3 * self.n + 1), dtype=bool)
        select[:, 0::3] = True
        select[:, 1::3] = keep
        if self.strategy == "mask_token":
            select[:, 2::3] = ~keep
        elif self.n > 1:
            kept_before = np.cumsum(keep, axis=1)[:, :-1] > 0
            select[:, 3:-1:3] = (keep[:, 1:] & kept_before) | self._template_gap
        return select

    def render(self, keep: np.ndarray) -> str:
        """The text with the features where ``keep`` (bool (n,)) is False masked."""
        return self.render_batch(self._keep(keep, 1)[None, :])[0]

    def render_batch(self, keep: np.ndarray) -> list[str]:
        """One masked text per row of ``keep``: bool (B, n), True = kept."""
        select = self._selection(self._keep(keep, 2))
        return ["".join(self._pieces[row].tolist()) for row in select]


def render(
    text: str,
    spans: Sequence[tuple[int, int]],
    keep: np.ndarray,
    *,
    strategy: Strategy = "remove",
    mask_token: str = "[MASK]",
) -> str:
    """``text`` with the features at ``spans`` where ``keep`` (bool (n,)) is False masked; see ``Renderer``."""
    return Renderer(text, spans, strategy=strategy, mask_token=mask_token).render(keep)
