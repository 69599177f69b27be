"""Token-id prompts, the open-model backends' masker: an example and a mask row in, token ids out.

A masked prompt is a concatenation of token-id pieces, each tokenized once per example, so the
tokens of an unmasked part never change between masks:

    prefix ids  (template / rendered chat template before the context, BOS as the tokenizer does)
    for each feature i:
        fixed ids of gap i        (template text inside the example text, e.g. a document title)
        kept ids of feature i     (its separator — the whitespace before it — and the feature)
          or masked ids           (separator + mask token; strategy "mask_token")
          or nothing              (strategy "remove")
    suffix ids  (trailing text, the rest of the template with the question, the chat template's
                 assistant header)
    continuation ids (the target answer, or one label variant; appended by the backend)

With every feature kept, the prompt text is exactly the rendered template; for byte-level BPE
tokenizers (GPT-2, Llama 3, Qwen) the ids are then exactly the tokenization of that text.
Mask convention: ``keep[b, i]`` True = feature ``i`` kept in row ``b``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from connectors.base import Example
from spex_ray.text import STRATEGIES, Strategy

CONTEXT = "{context}"
QUESTION = "{question}"
# Stands for the context while a chat template is rendered; split on afterwards.
_SENTINEL = "@@SPEX_RAY_CONTEXT@@"
# Texts tokenized in front of a piece so that the piece is tokenized as in the middle of a text
# (no SentencePiece dummy prefix); their own tokens are then dropped. The first whose tokens
# stay a prefix of the result is used.
_ANCHORS = ("\n", "a")
_HORIZONTAL_SPACE = " \t"


def encode_piece(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as it tokenizes in the middle of a text (no special tokens added)."""
    if not text:
        return []
    for anchor in _ANCHORS:
        anchor_ids = tokenizer.encode(anchor, add_special_tokens=False)
        ids = tokenizer.encode(anchor + text, add_special_tokens=False)
        if ids[: len(anchor_ids)] == anchor_ids:
            return list(ids[len(anchor_ids) :])
    return list(tokenizer.encode(text, add_special_tokens=False))


def split_gap(gap: str) -> tuple[str, str]:
    """``(fixed, separator)``: a whitespace-only gap is all separator; otherwise the fixed part is
    the gap without its trailing spaces/tabs, which become the separator."""
    if not gap.strip():
        return "", gap
    fixed = gap.rstrip(_HORIZONTAL_SPACE)
    return fixed, gap[len(fixed) :]


@dataclass(frozen=True)
class PromptFormat:
    """How an example becomes prompt text around its context.

    ``template`` holds ``{context}`` once (text examples; none for image examples) and
    ``{question}`` when the examples have a question. With ``chat_template`` the filled template
    is the user message (after an optional ``system`` message) of the tokenizer's chat template,
    rendered with the generation prompt. ``add_bos``: prepend the BOS token; None = as the
    tokenizer's own encoding does for plain templates, never for chat templates (they hold it).
    """

    template: str = CONTEXT
    chat_template: bool = False
    system: str | None = None
    add_bos: bool | None = None

    def halves(self, tokenizer: Any, question: str | None, *, context: bool = True) -> tuple[str, str]:
        """The prompt text before and after the context (``context=False``: all of it, and "")."""
        count = self.template.count(CONTEXT)
        if context and count != 1:
            raise ValueError(f"the prompt template must contain {CONTEXT} exactly once, found {count}")
        if not context and count:
            raise ValueError(f"the prompt template of image examples must not contain {CONTEXT}")
        if (question is not None) != (QUESTION in self.template):
            if question is None:
                raise ValueError(f"the prompt template has {QUESTION} but the example has no question")
            raise ValueError(f"the example has a question but the prompt template has no {QUESTION}")
        user = self.template.replace(CONTEXT, _SENTINEL)
        if question is not None:
            user = user.replace(QUESTION, question)
        if self.chat_template:
            messages = [{"role": "system", "content": self.system}] if self.system is not None else []
            messages.append({"role": "user", "content": user})
            user = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if context and user.count(_SENTINEL) != 1:
                raise ValueError("the chat template does not reproduce the user message verbatim")
        before, _, after = user.partition(_SENTINEL)
        return before, after

    def bos(self, tokenizer: Any) -> list[int]:
        """The ids put before everything: ``[bos]`` or ``[]``."""
        add = self.add_bos
        if add is None:
            bos = tokenizer.bos_token_id
            add = (
                not self.chat_template
                and bos is not None
                and tokenizer.encode("a", add_special_tokens=True)[:1] == [bos]
            )
        if add and tokenizer.bos_token_id is None:
            raise ValueError("add_bos is set but the tokenizer has no BOS token")
        return [tokenizer.bos_token_id] if add else []


class TokenPrompt:
    """The token-id pieces of one example's prompt; ``ids(keep)`` concatenates them per mask row."""

    def __init__(self, pieces: Sequence[Sequence[int]], kinds: Sequence[tuple[str, int]], n: int) -> None:
        """``pieces[j]`` ids, ``kinds[j]`` = ("fixed", -1) | ("kept", i) | ("masked", i)."""
        self.n = n
        lengths = np.array([len(piece) for piece in pieces], dtype=np.int64)
        self._ids = np.array([token for piece in pieces for token in piece], dtype=np.int64)
        owner = np.repeat(np.arange(len(pieces)), lengths)
        kind = np.array([k for k, _ in kinds])
        feature = np.array([i for _, i in kinds], dtype=np.int64)
        self._fixed = (kind == "fixed")[owner]
        self._kept = (kind == "kept")[owner]
        self._masked = (kind == "masked")[owner]
        self._feature = np.where(feature[owner] >= 0, feature[owner], 0)

    def ids(self, keep: np.ndarray) -> list[np.ndarray]:
        """int64 token ids of each row's prompt, for ``keep`` bool (B, n)."""
        chosen = keep[:, self._feature]
        select = self._fixed | (self._kept & chosen) | (self._masked & ~chosen)
        return [self._ids[row] for row in select]

    def full_length(self) -> int:
        """Tokens of the prompt with every feature kept."""
        return int(self._fixed.sum() + self._kept.sum())


def build_prompt(
    tokenizer: Any,
    prompt_format: PromptFormat,
    example: Example,
    *,
    strategy: Strategy = "remove",
    mask_token: str = "[MASK]",
    context: bool = True,
) -> TokenPrompt:
    """The TokenPrompt of ``example``; ``context=False`` for examples whose features are not text
    (the prompt is then the same for every mask). ValueError for a template that does not fit."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown masking strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    before, after = prompt_format.halves(tokenizer, example.question, context=context)
    if not context:
        return TokenPrompt(
            [prompt_format.bos(tokenizer) + tokenizer.encode(before, add_special_tokens=False)],
            [("fixed", -1)],
            example.n,
        )
    prefix = before.rstrip(_HORIZONTAL_SPACE)
    text, spans = _text_and_spans(example)
    bounds = [0, *(v for span in spans for v in span), len(text)]
    gaps = [text[bounds[2 * i] : bounds[2 * i + 1]] for i in range(example.n + 1)]
    gaps[0] = before[len(prefix) :] + gaps[0]
    pieces: list[list[int]] = [prompt_format.bos(tokenizer) + tokenizer.encode(prefix, add_special_tokens=False)]
    kinds: list[tuple[str, int]] = [("fixed", -1)]
    for i, (start, end) in enumerate(spans):
        fixed, separator = split_gap(gaps[i])
        pieces.append(encode_piece(tokenizer, fixed))
        kinds.append(("fixed", -1))
        pieces.append(encode_piece(tokenizer, separator + text[start:end]))
        kinds.append(("kept", i))
        if strategy == "mask_token":
            pieces.append(encode_piece(tokenizer, separator + mask_token))
            kinds.append(("masked", i))
    pieces.append(encode_piece(tokenizer, gaps[-1] + after))
    kinds.append(("fixed", -1))
    return TokenPrompt(pieces, kinds, example.n)


def _text_and_spans(example: Example) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The example's text and feature spans; features without spans are joined by single spaces."""
    if example.spans is not None:
        return example.text, example.spans
    starts = np.cumsum([0, *(len(feature) + 1 for feature in example.features)])[:-1]
    spans = tuple((int(s), int(s) + len(f)) for s, f in zip(starts, example.features))
    return " ".join(example.features), spans
