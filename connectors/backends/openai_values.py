"""Scalar values from OpenAI-style response bodies (parsed JSON dicts).

- Chat completions with ``logprobs=True, top_logprobs=k, max_completion_tokens=1``: the log-odds of
  two label sets (``log p(True) - log p(False)``) or the log-probability of one, from the top-k
  candidates for the first generated token. A label's probability is the sum over its token
  variants (" True", "true", ...), i.e. a logsumexp of their logprobs. A label none of whose
  variants is among the top k gets the floor, recorded in the details.
- Completions with ``echo=True, logprobs=1`` (servers that return prompt logprobs, e.g. vLLM):
  the log-probability of a target answer appended to the prompt, the sum of its tokens' logprobs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ValueKind = Literal["label_log_odds", "label_logprob", "answer_logprob"]
VALUE_KINDS: tuple[str, ...] = ("label_log_odds", "label_logprob", "answer_logprob")
# The names these kinds had before they took the open-model backends' names: a config that still
# uses one is refused with the new name.
RENAMED_VALUE_KINDS: dict[str, str] = {"label_logodds": "label_log_odds", "target_logprob": "answer_logprob"}
CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"


class MalformedResponse(ValueError):
    """A response body that lacks what the value function needs (no choices, no logprobs)."""


def label_variants(label: str) -> tuple[str, ...]:
    """``label`` as the model may spell it as a first token: as given, capitalised, lower and upper
    case, each with and without a leading space; duplicates removed, order kept."""
    word = label.strip()
    spellings = [label, word, word.capitalize(), word.lower(), word.upper()]
    variants = [prefix + spelling for spelling in spellings for prefix in ("", " ")]
    return tuple(dict.fromkeys(variants))


def logsumexp(values: Sequence[float]) -> float:
    """log(sum(exp(values))) computed stably; -inf for no values."""
    if not values:
        return -math.inf
    peak = max(values)
    if peak == -math.inf:
        return -math.inf
    return peak + math.log(sum(math.exp(value - peak) for value in values))


@dataclass(frozen=True)
class LabelValue:
    """Value from the top next-token logprobs of a chat completion.

    ``labels``: one entry per label, each ``(name, variants)``; two labels give the log-odds
    ``log p(labels[0]) - log p(labels[1])``, one label gives ``log p(labels[0])`` (natural log).
    ``floor``: logprob given to a label with no variant in the top k; None = the lowest logprob
    returned (an upper bound on the missing label's logprob).
    """

    labels: tuple[tuple[str, tuple[str, ...]], ...]
    floor: float | None = None
    endpoint: str = CHAT_ENDPOINT

    def __post_init__(self) -> None:
        if len(self.labels) not in (1, 2):
            raise ValueError(f"a label value needs one or two labels, got {len(self.labels)}")

    def __call__(self, body: Mapping[str, Any], target_span: tuple[int, int] | None = None) -> tuple[float, dict]:
        """(value, details) of one chat completion body; MalformedResponse when it has no top logprobs."""
        top, token = first_token_top_logprobs(body)
        floor = min(top.values()) if self.floor is None else self.floor
        logprobs: dict[str, float] = {}
        floored: list[str] = []
        for name, variants in self.labels:
            found = [logprob for candidate, logprob in top.items() if candidate in variants]
            if found:
                logprobs[name] = logsumexp(found)
            else:
                logprobs[name] = floor
                floored.append(name)
        values = list(logprobs.values())
        value = values[0] - values[1] if len(values) == 2 else values[0]
        return value, {"label_logprobs": logprobs, "floored": floored, "floor": floor, "token": token}


@dataclass(frozen=True)
class TargetValue:
    """Value = log p(target | prompt): the sum of the prompt logprobs of the tokens that overlap the
    target's character span ``[start, end)`` in the echoed prompt of a completion."""

    endpoint: str = COMPLETIONS_ENDPOINT

    def __call__(self, body: Mapping[str, Any], target_span: tuple[int, int] | None = None) -> tuple[float, dict]:
        if target_span is None:
            raise ValueError("a target value needs the target's character span in the prompt")
        start, end = target_span
        logprobs = _field(_first_choice(body), "logprobs", dict)
        tokens = _field(logprobs, "tokens", list)
        token_logprobs = _field(logprobs, "token_logprobs", list)
        offsets = _field(logprobs, "text_offset", list)
        if not len(tokens) == len(token_logprobs) == len(offsets):
            raise MalformedResponse("completion logprobs: tokens, token_logprobs and text_offset differ in length")
        picked_tokens: list[str] = []
        picked: list[float] = []
        for i, (token, logprob, offset) in enumerate(zip(tokens, token_logprobs, offsets)):
            following = offsets[i + 1] if i + 1 < len(offsets) else offset + len(token)
            if offset < end and following > start:
                if not isinstance(logprob, (int, float)):
                    raise MalformedResponse(f"completion logprobs: no logprob for target token {token!r}")
                picked_tokens.append(token)
                picked.append(float(logprob))
        if not picked:
            raise MalformedResponse("completion has no prompt logprobs for the target (the server must support echo)")
        return sum(picked), {"target_tokens": picked_tokens, "target_logprobs": picked}


def first_token_top_logprobs(body: Mapping[str, Any]) -> tuple[dict[str, float], str | None]:
    """({candidate token: logprob}, generated token) for the first generated token of a chat completion.

    Candidates with the same text (distinct token ids) are combined with logsumexp.
    """
    logprobs = _field(_first_choice(body), "logprobs", dict)
    content = _field(logprobs, "content", list)
    if not content or not isinstance(content[0], Mapping):
        raise MalformedResponse("chat completion logprobs have no content")
    candidates = _field(content[0], "top_logprobs", list)
    grouped: dict[str, list[float]] = {}
    for candidate in candidates:
        if not isinstance(candidate, Mapping):
            raise MalformedResponse("chat completion top_logprobs holds a non-object")
        token, logprob = candidate.get("token"), candidate.get("logprob")
        if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, (int, float)):
            raise MalformedResponse("chat completion top_logprobs entry lacks a token or a logprob")
        grouped.setdefault(token, []).append(float(logprob))
    if not grouped:
        raise MalformedResponse("chat completion top_logprobs is empty")
    token = content[0].get("token")
    return {key: logsumexp(values) for key, values in grouped.items()}, token if isinstance(token, str) else None


def _first_choice(body: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise MalformedResponse(f"response body is not a JSON object ({type(body).__name__})")
    choices = _field(body, "choices", list)
    if not choices or not isinstance(choices[0], Mapping):
        raise MalformedResponse("response has no choices")
    return choices[0]


def _field(mapping: Mapping[str, Any], key: str, kind: type) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind):
        raise MalformedResponse(f"response has no {key!r} ({kind.__name__} expected)")
    return value
