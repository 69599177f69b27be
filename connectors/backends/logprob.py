"""The log-probability value functions shared by the open-model backends (``LogprobBackend``);
their prompts are the token ids of ``connectors.features.prompts``.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from connectors.base import Backend, Example, Score
from connectors.features.prompts import CONTEXT, PromptFormat, TokenPrompt, build_prompt, encode_piece
from connectors.lru import LRUCache
from spex_ray.text import STRATEGIES

Value = Literal["answer_logprob", "label_log_odds"]
VALUES: tuple[str, ...] = ("answer_logprob", "label_log_odds")
_CACHED_EXAMPLES = 16


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
    options of ``__init__`` are theirs too (taken as ``**value_options``). ``labels``: ``[[label A variants], [label B variants]]`` for
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

    def __init__(
        self,
        *,
        template: str = CONTEXT,
        chat_template: bool = False,
        system: str | None = None,
        add_bos: bool | None = None,
        value: str = "answer_logprob",
        labels: Sequence[Sequence[str] | str] | None = None,
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
        target_prefix: str | None = None,
        strategy: str = "remove",
        mask_token: str = "[MASK]",
    ) -> None:
        """Check and keep the value-function options. A subclass's constructor takes them as
        ``**value_options`` (``Backend``: they are its options too), passes them here, then calls
        ``_setup`` with its tokenizer."""
        if value not in VALUES:
            raise ValueError(f"unknown value {value!r}; expected one of {', '.join(VALUES)}")
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {stop!r}")
        if not isinstance(mask_token, str):
            raise ValueError(f"mask_token must be a string, got {type(mask_token).__name__}")
        self.format = PromptFormat(template=template, chat_template=chat_template, system=system, add_bos=add_bos)
        self.value = value
        self.max_new_tokens = max_new_tokens
        self.stop = tuple(stop)
        self.target_prefix = target_prefix if target_prefix is not None else ("" if chat_template else " ")
        self.strategy = strategy
        self.mask_token = mask_token
        self.labels = _labels(labels) if value == "label_log_odds" else None
        if value == "answer_logprob" and labels is not None:
            raise ValueError("labels are only used with value 'label_log_odds'")

    def _setup(self, tokenizer: Any, *, context: bool = True) -> None:
        """Tokenize what does not depend on an example; ``context`` False: the features are not
        text (image patches), so the prompt is the same for every mask."""
        if context and self.strategy not in STRATEGIES:
            raise ValueError(f"unknown masking strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if self.format.chat_template and tokenizer.chat_template is None:
            raise ValueError("chat_template is set but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.context = context
        self._label_ids = None
        if self.labels is not None:
            self._label_ids = [[encode_piece(tokenizer, variant) for variant in label] for label in self.labels]
            for label, ids in zip(self.labels, self._label_ids):
                for variant, tokens in zip(label, ids):
                    if not tokens:
                        raise ValueError(f"label variant {variant!r} has no tokens")
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if eos is not None else set()
        self._cache: LRUCache[Example, _Prepared] = LRUCache(_CACHED_EXAMPLES)

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
        prepared = self._cache.get(example)
        if prepared is not None:
            return prepared
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
        self._cache.put(example, prepared)
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
