"""Token-id prompts and the log-probability value functions shared by the open-model backends.

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
    continuation ids (the target answer, or one label variant)

With every feature kept, the prompt text is exactly the rendered template; for byte-level BPE
tokenizers (GPT-2, Llama 3, Qwen) the ids are then exactly the tokenization of that text.

Value functions (``value``):
  "answer_logprob": sum of log p(target tokens | masked prompt); the target is the example's
     ``target``, or else the model's own greedy answer to the unmasked prompt (generated once).
  "label_log_odds": logsumexp of log p(variant | masked prompt) over label A's variants minus the
     same over label B's; each variant is scored as a continuation (exact, also for multi-token
     variants), so a row costs one prefill per variant.
Mask convention: ``keep[b, i]`` True = feature ``i`` kept in row ``b``.
"""

from __future__ import annotations

import abc
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from connectors.base import Backend, Example, Score
from spex_ray.text import STRATEGIES, Strategy

Value = Literal["answer_logprob", "label_log_odds"]
VALUES: tuple[str, ...] = ("answer_logprob", "label_log_odds")
CONTEXT = "{context}"
QUESTION = "{question}"
# Stands for the context while a chat template is rendered; split on afterwards.
_SENTINEL = "@@SPEX_RAY_CONTEXT@@"
# Texts tokenized in front of a piece so that the piece is tokenized as in the middle of a text
# (no SentencePiece dummy prefix); their own tokens are then dropped. The first whose tokens
# stay a prefix of the result is used.
_ANCHORS = ("\n", "a")
_HORIZONTAL_SPACE = " \t"
_CACHED_EXAMPLES = 16


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


@dataclass(frozen=True)
class Request:
    """One prefill: value = sum of log p of the last ``continuation`` ids of ``ids`` given the
    ids before them. ``image``: the (masked) image, uint8 (H, W, 3), for multimodal engines."""

    ids: np.ndarray
    continuation: int
    image: np.ndarray | None = None


@dataclass
class _Prepared:
    """What one example needs for every mask: its prompt, continuations, target; or why not."""

    prompt: TokenPrompt | None = None
    continuations: list[list[int]] | None = None
    target: str | None = None
    error: str | None = None


class LogprobBackend(Backend):
    """Shared scoring for open models: token-id prompts in, log-probabilities out.

    Subclasses load a model and implement the engine calls ``_logprobs`` and ``_generate``; the
    options below are theirs too. ``labels``: ``[[label A variants], [label B variants]]`` for
    "label_log_odds". ``max_new_tokens`` and ``stop`` bound the generated answer: it ends at an
    EOS token, after ``max_new_tokens`` tokens, or before the first ``stop`` string, and is
    stripped. ``target_prefix`` goes before every target (None: " " for plain templates, where the
    answer follows e.g. "Answer:", and "" for chat templates).
    """

    makes_targets = True
    tokenizer: Any
    max_length: int | None = None

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> list[str]:
        """The checks that need no model: a ``model`` directory named (it is looked for where the
        model loads: a cluster's GPU nodes may hold it, the driver not), a known ``value``, labels
        only with label log-odds, a positive ``max_new_tokens``, a known masking ``strategy``."""
        problems = []
        model = options.get("model")
        if not isinstance(model, str) or not model.strip():  # the folder itself may be on the GPU nodes only
            problems.append(f"'model' must name a local model directory (nothing is downloaded), got {model!r}")
        value = options.get("value", "answer_logprob")
        if value not in VALUES:
            problems.append(f"'value' must be one of {', '.join(VALUES)}, got {value!r}")
        if value != "label_log_odds" and options.get("labels") is not None:
            problems.append("'labels' are only used with value 'label_log_odds'")
        max_new_tokens = options.get("max_new_tokens", 1)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            problems.append(f"'max_new_tokens' must be a positive integer, got {max_new_tokens!r}")
        strategy = options.get("strategy", "remove")
        if options.get("image_grid") is None and strategy not in STRATEGIES:
            problems.append(f"'strategy' must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        return problems

    def _setup(
        self,
        tokenizer: Any,
        *,
        template: str,
        chat_template: bool,
        system: str | None,
        add_bos: bool | None,
        value: str,
        labels: Sequence[Sequence[str] | str] | None,
        max_new_tokens: int,
        stop: Sequence[str],
        target_prefix: str | None,
        strategy: str,
        mask_token: str,
        context: bool = True,
    ) -> None:
        """Check the options and tokenize what does not depend on an example."""
        if value not in VALUES:
            raise ValueError(f"unknown value {value!r}; expected one of {', '.join(VALUES)}")
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {stop!r}")
        if context and strategy not in STRATEGIES:
            raise ValueError(f"unknown masking strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if not isinstance(mask_token, str):
            raise ValueError(f"mask_token must be a string, got {type(mask_token).__name__}")
        if chat_template and tokenizer.chat_template is None:
            raise ValueError("chat_template is set but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.format = PromptFormat(template=template, chat_template=chat_template, system=system, add_bos=add_bos)
        self.value = value
        self.max_new_tokens = max_new_tokens
        self.stop = tuple(stop)
        self.target_prefix = target_prefix if target_prefix is not None else ("" if chat_template else " ")
        self.strategy = strategy
        self.mask_token = mask_token
        self.context = context
        self.labels = _labels(labels) if value == "label_log_odds" else None
        if value == "answer_logprob" and labels is not None:
            raise ValueError("labels are only used with value 'label_log_odds'")
        self._label_ids = None
        if self.labels is not None:
            self._label_ids = [[encode_piece(tokenizer, variant) for variant in label] for label in self.labels]
            for label, ids in zip(self.labels, self._label_ids):
                for variant, tokens in zip(label, ids):
                    if not tokens:
                        raise ValueError(f"label variant {variant!r} has no tokens")
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if eos is not None else set()
        self._cache: OrderedDict[Example, _Prepared] = OrderedDict()

    @abc.abstractmethod
    def _logprobs(self, requests: Sequence[Request]) -> list[float]:
        """For each request, the sum of log p of its last ``continuation`` ids."""

    @abc.abstractmethod
    def _generate(self, ids: np.ndarray, image: np.ndarray | None, max_new_tokens: int) -> list[int]:
        """Greedy continuation ids of the prompt ``ids`` (at most ``max_new_tokens``)."""

    def _images(self, example: Example, keep: np.ndarray) -> list[np.ndarray | None]:
        """The masked image of each row (None: a text-only prompt)."""
        return [None] * len(keep)

    def settings(self) -> dict:
        """The value-function settings, for ``identity()``."""
        return {
            "value": self.value,
            "template": self.format.template,
            "chat_template": self.format.chat_template,
            "system": self.format.system,
            "add_bos": self.format.add_bos,
            "labels": self.labels,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
            "target_prefix": self.target_prefix,
            "strategy": self.strategy,
            "mask_token": self.mask_token,
        }

    def prompt(self, example: Example) -> TokenPrompt:
        """The example's TokenPrompt (cached); ValueError when its template does not fit."""
        prepared = self._prepared(example)
        if prepared.prompt is None:
            raise ValueError(prepared.error)
        return prepared.prompt

    def target(self, example: Example) -> str | None:
        """The target of "answer_logprob": the example's, else the model's greedy answer to the
        unmasked prompt (generated once per example); None for "label_log_odds".
        ValueError when the example cannot be scored (bad template, empty answer)."""
        prepared = self._ready(example)
        if prepared.error is not None:
            raise ValueError(prepared.error)
        return prepared.target

    def _score(self, example: Example, keep: np.ndarray) -> list[Score]:
        """One Score per row of ``keep``: bool (B, n), True = kept."""
        prepared = self._ready(example)
        if prepared.error is not None:
            return [Score(value=None, raw="{}", error=prepared.error) for _ in keep]
        contexts = prepared.prompt.ids(keep)
        images = self._images(example, keep)
        requests, owners, errors = [], [], [None] * len(keep)
        for row, (context, image) in enumerate(zip(contexts, images)):
            longest = len(context) + max(len(c) for c in prepared.continuations)
            if self.max_length is not None and longest > self.max_length:
                errors[row] = f"prompt of {longest} tokens is longer than the model's {self.max_length}"
                continue
            for continuation in prepared.continuations:
                ids = np.concatenate([context, np.asarray(continuation, dtype=np.int64)])
                requests.append(Request(ids, len(continuation), image))
                owners.append(row)
        logprobs = self._logprobs(requests) if requests else []
        per_row: list[list[float]] = [[] for _ in keep]
        for row, logprob in zip(owners, logprobs):
            per_row[row].append(float(logprob))
        return [
            Score(value=None, raw="{}", error=error) if error is not None else self._row_score(values, len(context))
            for values, context, error in zip(per_row, contexts, errors)
        ]

    def _row_score(self, logprobs: list[float], prompt_tokens: int) -> Score:
        if self.labels is None:
            raw = {"prompt_tokens": prompt_tokens, "target_logprob": logprobs[0]}
            return Score(value=logprobs[0], raw=json.dumps(raw))
        sizes = [len(label) for label in self.labels]
        groups = [logprobs[: sizes[0]], logprobs[sizes[0] :]]
        totals = [float(np.logaddexp.reduce(group)) for group in groups]
        raw = {"prompt_tokens": prompt_tokens, "label_logprobs": totals, "variant_logprobs": groups}
        return Score(value=totals[0] - totals[1], raw=json.dumps(raw))

    def _prepared(self, example: Example) -> _Prepared:
        """The cached per-example state (prompt built; target not yet generated)."""
        if example in self._cache:
            self._cache.move_to_end(example)
            return self._cache[example]
        try:
            prepared = _Prepared(
                prompt=build_prompt(
                    self.tokenizer,
                    self.format,
                    example,
                    strategy=self.strategy if self.context else "remove",
                    mask_token=self.mask_token,
                    context=self.context,
                )
            )
        except ValueError as err:
            prepared = _Prepared(error=str(err))
        self._cache[example] = prepared
        if len(self._cache) > _CACHED_EXAMPLES:
            self._cache.popitem(last=False)
        return prepared

    def _ready(self, example: Example) -> _Prepared:
        """The per-example state with its continuations (generating the answer if needed)."""
        prepared = self._prepared(example)
        if prepared.error is not None or prepared.continuations is not None:
            return prepared
        if self._label_ids is not None:
            prepared.continuations = [ids for label in self._label_ids for ids in label]
            return prepared
        target = example.target
        if target is None:
            full = np.ones((1, example.n), dtype=bool)
            ids = self._generate(prepared.prompt.ids(full)[0], self._images(example, full)[0], self.max_new_tokens)
            target = self.answer_text(ids)
            if not target:
                prepared.error = "the model's answer to the unmasked input is empty"
                return prepared
        prepared.target = target
        prepared.continuations = [encode_piece(self.tokenizer, self.target_prefix + target)]
        if not prepared.continuations[0]:
            prepared.error = "the target has no tokens"
        return prepared

    def answer_text(self, ids: Sequence[int]) -> str:
        """Generated ids -> answer text: cut at the first EOS id and the first stop string, stripped."""
        ids = list(ids)
        for position, token in enumerate(ids):
            if token in self.eos_ids:
                ids = ids[:position]
                break
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in self.stop:
            text = text.split(stop, 1)[0]
        return text.strip()


def _labels(labels: Sequence[Sequence[str] | str] | None) -> list[list[str]]:
    """``[[A variants], [B variants]]`` from a list of two labels, each a string or a list of strings."""
    if labels is None or isinstance(labels, str) or len(labels) != 2:
        raise ValueError(f"labels must be two labels, each a string or a list of variants, got {labels!r}")
    checked = []
    for label in labels:
        variants = [label] if isinstance(label, str) else list(label)
        if not variants or not all(isinstance(v, str) and v for v in variants):
            raise ValueError(f"each label must be a non-empty string or list of non-empty strings, got {label!r}")
        checked.append(variants)
    return checked
