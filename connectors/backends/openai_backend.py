"""OpenAI backend: label log-odds (or an answer's log-probability) from GPT-4o mini or any
OpenAI-compatible server, rate-limited, retried and cost-tracked; online or through the Batch API.

A query row becomes one request: the system prompt, and the user template filled with the masked
context (``spex_ray.text.Renderer``) and the example's question. Online, the rows of one
``score`` call are sent concurrently (at most ``max_in_flight`` at once) on an event loop owned by
the backend, paced by a limiter (requests and tokens per minute, see ``connectors.ratelimit``).
429, 5xx, timeouts, dropped connections and malformed bodies are retried with exponential backoff
and jitter (``Retry-After`` honoured) up to ``max_attempts``; the SDK's own retries are off. A row
that still fails becomes ``Score(value=None, error=...)``.

A row's ``Score`` carries ``cost_usd`` (dollars this row cost, 0 for rows that reused the
response of an identical row in the same call), ``fingerprint`` (the response's
``system_fingerprint``) and ``sent`` (False when the limiter's dollar cap is spent). Its ``raw``
JSON, for the record: ``cache_key`` (sha256 of endpoint, model, messages and parameters),
``label_logprobs``/``floored``/``floor``/``token`` (or ``target_tokens``/``target_logprobs``),
``usage``, ``estimated_prompt_tokens``, ``cost_usd``, ``attempts``, ``errors`` (of failed
attempts), ``system_fingerprint``, ``mode``, and ``"not_sent": true`` for a row not sent.

The API key is read only from ``OPENAI_API_KEY``; it is never logged, stored in ``raw`` or in
``identity()``, and scrubbed from error messages.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import random
import string
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlparse

import bpe_openai
import numpy as np
import openai

from connectors.backends.openai_batch import BatchRequest, requests_digest, run_batch
from connectors.backends.openai_values import (
    RENAMED_VALUE_KINDS,
    VALUE_KINDS,
    LabelValue,
    MalformedResponse,
    TargetValue,
    label_variants,
)
from connectors.base import LIMITER_OPTION, Backend, Example, RateLimits, Score, example_renderer
from connectors.ratelimit import CostCapReached, RateLimiter, rate_limit_headers, retry_after_seconds
from spex_ray.text import STRATEGIES

logger = logging.getLogger(__name__)

T = TypeVar("T")
MODES: tuple[str, ...] = ("online", "batch")
DEFAULT_SYSTEM_PROMPT = "Read the text and answer the question with a single word: True or False."
DEFAULT_USER_TEMPLATE = "Text: {context}\n\nQuestion: {question}"
DEFAULT_COMPLETION_TEMPLATE = "{system}\n\n{user}\nAnswer:"
TEMPLATE_FIELDS = frozenset({"context", "question"})
DEFAULT_BASE_URL = "https://api.openai.com/v1"
_ENCODING = "o200k_base"
_OUTPUT_TOKENS = 1  # one generated token per request: its top logprobs are the value
_ESTIMATE_MASKS = 8
_ERROR_CHARS = 300


@dataclass(frozen=True)
class Request:
    """One API request: ``tokens`` = estimated prompt tokens + output tokens (what TPM counts)."""

    endpoint: str
    body: dict[str, Any]
    cache_key: str
    prompt_tokens: int
    tokens: int
    target_span: tuple[int, int] | None = None


@dataclass(kw_only=True, eq=False)
class OpenAIOptions:
    """The backend's configuration (the config's ``backend`` section): no key, no connection.

    ``value``: "label_log_odds" (log p(labels[0]) - log p(labels[1])), "label_logprob"
    (log p(labels[0])) or "answer_logprob" (log p(example.target | prompt) from prompt logprobs of
    ``/v1/completions`` with echo; servers such as vLLM, not api.openai.com). ``labels``: strings,
    or lists of token spellings; with ``label_variants`` a string also matches its spellings with a
    leading space and in lower/upper/capitalised case. ``floor``: logprob of a label missing from
    the top ``top_logprobs``; None = the lowest logprob returned. ``rpm``/``tpm``: limits per minute
    (None = none; server headers can lower them); ``max_cost_usd``: stop sending once spent.
    Prices in dollars per million tokens; ``batch_discount``: the Batch API's price cut (0.5 = half).
    ``batch_state_dir``: where batch ids are kept so a killed job resumes its batches (mode "batch").
    A list label is named by its first spelling and matches exactly the spellings listed.
    ``execution_options``: the options that change how requests are sent, never their values.
    """

    execution_options: ClassVar[frozenset[str]] = frozenset({
        "mode", "timeout_s", "max_attempts", "backoff_s", "backoff_max_s", "max_in_flight", "rpm", "tpm",
        "max_cost_usd", "usd_per_million_input", "usd_per_million_cached_input", "usd_per_million_output",
        "batch_discount", "batch_state_dir", "batch_poll_s",
    })

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    mode: str = "online"
    value: str = "label_log_odds"
    labels: Sequence[str | Sequence[str]] = ("True", "False")
    label_variants: bool = True
    floor: float | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    user_template: str = DEFAULT_USER_TEMPLATE
    completion_template: str = DEFAULT_COMPLETION_TEMPLATE
    temperature: float = 0.0
    seed: int | None = 0
    top_logprobs: int = 20
    timeout_s: float = 30.0
    max_attempts: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    max_in_flight: int = 32
    rpm: float | None = 500
    tpm: float | None = 200_000
    max_cost_usd: float | None = None
    usd_per_million_input: float = 0.15
    usd_per_million_cached_input: float = 0.075
    usd_per_million_output: float = 0.60
    batch_discount: float = 0.5
    batch_state_dir: str | None = None
    batch_poll_s: float = 30.0
    strategy: str = "remove"
    mask_token: str = "[MASK]"

    def __post_init__(self) -> None:
        self._check()
        names = []
        variants = []
        for label in self.labels:
            if isinstance(label, str):
                names.append(label)
                variants.append(label_variants(label) if self.label_variants else (label,))
            else:
                names.append(label[0])
                variants.append(tuple(dict.fromkeys(label)))
        if self.value == "answer_logprob":
            self._value_fn: LabelValue | TargetValue = TargetValue()
        else:
            self._value_fn = LabelValue(labels=tuple(zip(names, variants)), floor=self.floor)
        self._encoding = _encoding()

    def _check(self) -> None:
        _one_of("mode", self.mode, MODES)
        if self.value in RENAMED_VALUE_KINDS:
            raise ValueError(f"openai backend: 'value' {self.value!r} is now called "
                             f"{RENAMED_VALUE_KINDS[self.value]!r}")
        _one_of("value", self.value, VALUE_KINDS)
        _one_of("strategy", self.strategy, STRATEGIES)
        for name in ("model", "system_prompt", "user_template", "completion_template", "mask_token"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"openai backend: {name!r} must be a string, got {getattr(self, name)!r}")
        if not self.model:
            raise ValueError("openai backend: 'model' must not be empty")
        _check_template("user_template", self.user_template, TEMPLATE_FIELDS)
        _check_template("completion_template", self.completion_template, frozenset({"system", "user"}))
        self._check_labels()
        for name, low in (("top_logprobs", 1), ("max_attempts", 1), ("max_in_flight", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"openai backend: {name!r} must be an integer >= {low}, got {value!r}")
        if self.top_logprobs > 20:
            raise ValueError(f"openai backend: 'top_logprobs' must be <= 20 (the API's limit), got {self.top_logprobs}")
        for name in ("timeout_s", "backoff_s", "backoff_max_s", "batch_poll_s", "usd_per_million_input",
                     "usd_per_million_cached_input", "usd_per_million_output", "temperature"):
            _non_negative(name, getattr(self, name))
        if self.floor is not None:
            _number("floor", self.floor)
        if self.max_cost_usd is not None:
            _non_negative("max_cost_usd", self.max_cost_usd)
        for name in ("rpm", "tpm"):
            if getattr(self, name) is not None and _number(name, getattr(self, name)) <= 0:
                raise ValueError(f"openai backend: {name!r} must be > 0 or null, got {getattr(self, name)!r}")
        if not 0 <= _number("batch_discount", self.batch_discount) < 1:
            raise ValueError(f"openai backend: 'batch_discount' must be in [0, 1), got {self.batch_discount!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"openai backend: 'seed' must be an integer or null, got {self.seed!r}")
        if self.mode == "batch" and self.value == "answer_logprob":
            raise ValueError("openai backend: value 'answer_logprob' needs echo on /v1/completions, "
                             "which the Batch API lacks")

    def _check_labels(self) -> None:
        labels = self.labels
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise ValueError(f"openai backend: 'labels' must be a list, got {labels!r}")
        wanted = {"label_log_odds": 2, "label_logprob": 1}.get(self.value)
        if wanted is not None and len(labels) != wanted:
            raise ValueError(f"openai backend: value {self.value!r} needs {wanted} label(s), got {list(labels)!r}")
        for label in labels:
            spellings = [label] if isinstance(label, str) else label
            if (not isinstance(spellings, Sequence) or not spellings
                    or not all(isinstance(s, str) and s.strip() for s in spellings)):
                raise ValueError(
                    f"openai backend: each label must be a non-empty string or a list of them, got {label!r} "
                    "(quote True/False/yes/no in YAML)"
                )

    # -- requests --------------------------------------------------------------------------------
    def requests(self, example: Example, keep: np.ndarray) -> list[Request]:
        """One Request per row of ``keep``: bool (B, n), True = kept. ValueError when the value needs a
        target and the example has none."""
        if self.value == "answer_logprob" and not example.target:
            raise ValueError(f"example {example.example_id!r} has no target (value 'answer_logprob' needs one)")
        texts = example_renderer(example, self.strategy, self.mask_token).render_batch(keep)
        return [self._request(example, text) for text in texts]

    def _request(self, example: Example, context: str) -> Request:
        user = self.user_template.format(context=context, question=example.question or "")
        if self.value == "answer_logprob":
            prefix = self.completion_template.format(system=self.system_prompt, user=user)
            prompt = f"{prefix} {example.target.strip()}"
            body = {"model": self.model, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": _OUTPUT_TOKENS,
                    "temperature": self.temperature}
            prompt_tokens = len(self._encoding.encode(prompt))
            span = (len(prefix) + 1, len(prompt))
        else:
            messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            messages.append({"role": "user", "content": user})
            body = {"model": self.model, "messages": messages, "logprobs": True, "top_logprobs": self.top_logprobs,
                    "max_completion_tokens": _OUTPUT_TOKENS, "temperature": self.temperature}
            prompt_tokens = self.chat_tokens(messages)
            span = None
        if self.seed is not None:
            body["seed"] = self.seed
        key_text = json.dumps({"endpoint": self._value_fn.endpoint, "body": body}, sort_keys=True,
                              separators=(",", ":"), ensure_ascii=False)
        cache_key = hashlib.sha256(key_text.encode()).hexdigest()
        return Request(self._value_fn.endpoint, body, cache_key, prompt_tokens, prompt_tokens + _OUTPUT_TOKENS, span)

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """Prompt tokens of a chat request as counted for gpt-4o models (o200k_base; 3 per message
        and 3 to prime the reply)."""
        return 3 + sum(3 + sum(len(self._encoding.encode(v)) for v in m.values()) for m in messages)

    # -- cost ------------------------------------------------------------------------------------
    def cost_usd(self, usage: dict[str, Any] | None, *, batch: bool = False) -> float:
        """Dollars of one response's ``usage`` (cached prompt tokens at the cached price)."""
        if not isinstance(usage, dict):
            return 0.0
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        dollars = ((prompt - cached) * self.usd_per_million_input + cached * self.usd_per_million_cached_input
                   + completion * self.usd_per_million_output) / 1e6
        return dollars * (1.0 - self.batch_discount) if batch else dollars

    def estimate_job(self, examples: Iterable[Example], num_queries: int | Sequence[int]) -> dict[str, Any]:
        """Requests, prompt tokens, dollars (online and Batch API) and seconds at ``rpm``/``tpm``.

        ``num_queries``: queries per example (one number for all, or one per example, same order).
        Prompt tokens per example are the mean over a few masks keeping each feature with
        probability 1/2 (the masks a query design draws); an example without a target counts a
        one-character one. Cached-prompt discounts are ignored; ``seconds`` is None without limits.
        """
        rng = np.random.default_rng(0)
        requests = 0
        prompt_tokens = 0.0
        for position, example in enumerate(examples):
            count = num_queries if isinstance(num_queries, (int, np.integer)) else num_queries[position]
            masks = rng.random((_ESTIMATE_MASKS, example.n)) < 0.5
            if self.value == "answer_logprob" and not example.target:
                example = replace(example, target="?")
            tokens = [request.prompt_tokens for request in self.requests(example, masks)]
            requests += int(count)
            prompt_tokens += float(np.mean(tokens)) * int(count)
        completion_tokens = requests * _OUTPUT_TOKENS
        online = (prompt_tokens * self.usd_per_million_input + completion_tokens * self.usd_per_million_output) / 1e6
        minutes = {}
        if self.rpm:
            minutes["rpm"] = requests / self.rpm
        if self.tpm:
            minutes["tpm"] = (prompt_tokens + completion_tokens) / self.tpm
        limited_by = max(minutes, key=minutes.get) if minutes else None
        return {
            "model": self.model,
            "mode": self.mode,
            "requests": requests,
            "prompt_tokens": int(round(prompt_tokens)),
            "completion_tokens": completion_tokens,
            "usd_online": online,
            "usd_batch": online * (1.0 - self.batch_discount),
            "seconds": 60.0 * minutes[limited_by] if limited_by else None,
            "limited_by": f"{limited_by}={getattr(self, limited_by):g}" if limited_by else "no rate limit set",
        }

    def base_url_host(self) -> str:
        return urlparse(self.base_url or DEFAULT_BASE_URL).hostname or ""


@dataclass(kw_only=True, eq=False)
class OpenAIBackend(OpenAIOptions, Backend):
    """The backend: ``OpenAIOptions`` plus a client on its own event loop and a limiter.

    ``limiter``: an object with ``acquire``/``pause``/``observe``/``spend`` (``connectors.ratelimit``):
    the pipeline passes one shared by all actors (``pipelines.shared_limiter.SharedLimiter``); None builds
    a local ``RateLimiter(rpm, tpm, max_cost_usd=max_cost_usd)``.
    """

    name: ClassVar[str] = "openai"
    internal_options: ClassVar[frozenset[str]] = frozenset({LIMITER_OPTION})
    streams_scores: ClassVar[bool] = True
    state_dir_option: ClassVar[str] = "batch_state_dir"
    limiter: Any = None

    @classmethod
    def shared_limits(cls, options: Mapping[str, Any]) -> RateLimits:
        """``rpm``, ``tpm`` and ``max_cost_usd`` of ``options`` (``OpenAIOptions``' defaults when absent)."""
        return RateLimits(**{name: options.get(name, getattr(OpenAIOptions, name))
                             for name in ("rpm", "tpm", "max_cost_usd")})

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> list[str]:
        """``OpenAIOptions``' checks: no key, no connection."""
        try:
            OpenAIOptions(**options)
        except (ValueError, TypeError) as err:
            return [str(err).removeprefix("openai backend: ")]
        return []

    def __post_init__(self) -> None:
        super().__post_init__()
        if not os.environ.get("OPENAI_API_KEY"):
            raise ValueError(
                "openai backend: OPENAI_API_KEY is not set; the key is read only from the environment "
                "(for a local server without authentication set any value, e.g. OPENAI_API_KEY=none)"
            )
        if self.mode == "batch" and self.batch_state_dir is None:
            raise ValueError("openai backend: mode 'batch' needs 'batch_state_dir' (where batch ids are kept)")
        if self.limiter is None:
            self.limiter = RateLimiter(self.rpm, self.tpm, max_cost_usd=self.max_cost_usd)
        elif not all(callable(getattr(self.limiter, m, None)) for m in ("acquire", "pause", "observe", "spend")):
            raise ValueError("openai backend: 'limiter' must offer acquire/pause/observe/spend "
                             "(see connectors.ratelimit)")
        self._fingerprints: set[str] = set()
        self._lock = threading.Lock()
        self._jitter = random.Random(self.seed)
        self._loop: asyncio.AbstractEventLoop | None = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-backend", daemon=True)
        self._thread.start()
        self._client, self._in_flight = self._run(self._connect())

    @classmethod
    def estimate(cls, examples: Iterable[Example], num_queries: int | Sequence[int], **options: Any) -> dict:
        """``OpenAIOptions.estimate_job`` for the backend options ``options`` (no key needed)."""
        allowed = {f.name for f in fields(OpenAIOptions)}
        unknown = sorted(set(options) - allowed - {LIMITER_OPTION})
        if unknown:
            raise ValueError(f"openai backend got unknown option {unknown[0]!r}")
        settings = OpenAIOptions(**{key: value for key, value in options.items() if key in allowed})
        return settings.estimate_job(examples, num_queries)

    async def _connect(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        """The client, on this backend's loop: aiohttp transport when the SDK offers it (about half the
        CPU per request of httpx's pool at a hundred connections), else the SDK's default."""
        try:
            http_client = openai.DefaultAioHttpClient(timeout=self.timeout_s)
        except (AttributeError, RuntimeError):  # an SDK without the aiohttp transport or its extra
            http_client = None
        client = openai.AsyncOpenAI(base_url=self.base_url, max_retries=0, timeout=self.timeout_s,
                                    http_client=http_client)
        return client, asyncio.Semaphore(self.max_in_flight)

    def _run(self, coroutine: Awaitable[T]) -> T:
        if self._loop is None:
            raise RuntimeError("openai backend is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def identity(self) -> dict:
        with self._lock:
            fingerprints = sorted(self._fingerprints)
        return {
            "backend": self.name,
            "model": self.model,
            "base_url_host": self.base_url_host(),
            "mode": self.mode,
            "value": self.value,
            "labels": [label if isinstance(label, str) else list(label) for label in self.labels],
            "temperature": self.temperature,
            "seed": self.seed,
            "system_fingerprints": fingerprints,
            "openai_sdk": openai.__version__,
        }

    def _score(self, example: Example, keep: np.ndarray, *, on_send: Callable[[int, float], None] | None = None,
               on_score: Callable[[int, Score], None] | None = None) -> list[Score]:
        """One Score per row of ``keep``: bool (B, n), True = kept. Never raises for API failures.

        Online, ``on_send(row, usd)`` is called before each request is sent (``usd``: its cost if it
        is answered, estimated from its prompt) and ``on_score(row, score)`` as soon as a row's
        Score is final, both on the backend's event loop (identical rows share one request: it is
        announced for the first of them).
        """
        if self.value == "answer_logprob" and not example.target:
            error = f"example {example.example_id!r} has no target (value 'answer_logprob' needs one)"
            return [Score(value=None, raw=json.dumps({"mode": self.mode}), error=error) for _ in range(len(keep))]
        requests = self.requests(example, keep)
        rows_of: dict[str, list[int]] = {}
        for row, request in enumerate(requests):
            rows_of.setdefault(request.cache_key, []).append(row)
        unique = [requests[rows[0]] for rows in rows_of.values()]
        if self.mode == "online":
            sent = self._run(self._send_all(unique, list(rows_of.values()), on_send, on_score))
        else:
            sent = self._run(self._send_batch(unique))
        by_row = {row: _same_as(score, rows[0]) if row != rows[0] else score
                  for rows, score in zip(rows_of.values(), sent) for row in rows}
        return [by_row[row] for row in range(len(requests))]

    def close(self) -> None:
        """Cancel requests in flight, close the client, stop the event loop."""
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join()
        loop.close()

    async def _shutdown(self) -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.close()

    # -- online ----------------------------------------------------------------------------------
    async def _send_all(self, requests: list[Request], rows: list[list[int]],
                        on_send: Callable[[int, float], None] | None,
                        on_score: Callable[[int, Score], None] | None) -> list[Score]:
        """The Scores of ``requests``, the one for query rows ``rows[i]`` sent as ``requests[i]``."""
        async def one(request: Request, rows: list[int]) -> Score:
            usd = self.cost_usd({"prompt_tokens": request.prompt_tokens, "completion_tokens": _OUTPUT_TOKENS})
            score = await self._send(request, None if on_send is None else lambda: on_send(rows[0], usd))
            if on_score is not None:
                for row in rows:
                    on_score(row, _same_as(score, rows[0]) if row != rows[0] else score)
            return score

        return list(await asyncio.gather(*(one(request, group) for request, group in zip(requests, rows))))

    async def _send(self, request: Request, announce: Callable[[], None] | None = None) -> Score:
        """Send one request until it gives a value, fails for good, or has had ``max_attempts``;
        ``announce()`` before each attempt goes out."""
        raw: dict[str, Any] = {"cache_key": request.cache_key, "mode": self.mode,
                               "estimated_prompt_tokens": request.prompt_tokens}
        errors: list[str] = []
        cost = 0.0
        for attempt in range(1, self.max_attempts + 1):
            retry_after = None
            async with self._in_flight:
                try:
                    await self.limiter.acquire(request.tokens)
                except CostCapReached as err:
                    raw.update(not_sent=True, attempts=attempt - 1, errors=errors, cost_usd=cost)
                    return Score(None, json.dumps(raw), f"not sent: {err}", sent=False, cost_usd=cost)
                if announce is not None:
                    announce()
                try:
                    body, headers = await self._post(request)
                    self.limiter.observe(headers)
                    usage = body.get("usage") if isinstance(body, dict) else None
                    paid = self.cost_usd(usage)
                    cost += paid
                    self.limiter.spend(paid)
                    value, details = self._value_fn(body, request.target_span)
                except Exception as err:  # classified below: retried, or the row fails
                    retryable, retry_after = self._classify(err)
                    errors.append(self._describe(err))
                    if not retryable or attempt == self.max_attempts:
                        break
                else:
                    fingerprint = self._seen(body.get("system_fingerprint"))
                    raw.update(details, usage=usage, system_fingerprint=body.get("system_fingerprint"),
                               model=body.get("model"), attempts=attempt, errors=errors, cost_usd=cost)
                    return Score(float(value), json.dumps(raw), cost_usd=cost, fingerprint=fingerprint)
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            logger.debug("openai backend: retrying request %s in %.2f s after %s",
                         request.cache_key[:12], delay, errors[-1])
            await asyncio.sleep(delay)
        raw.update(attempts=attempt, errors=errors, cost_usd=cost)
        logger.debug("openai backend: request %s failed after %d attempt(s): %s",
                     request.cache_key[:12], attempt, errors[-1])
        return Score(None, json.dumps(raw), f"{errors[-1]} (after {attempt} attempt(s))", cost_usd=cost)

    async def _post(self, request: Request) -> tuple[Any, dict[str, str]]:
        """(parsed JSON body, x-ratelimit-* headers) of one call; MalformedResponse for a non-JSON body.

        ``client.post(..., cast_to=<httpx Response>)`` is the SDK's documented way to send a prepared
        body: it keeps the SDK's auth, errors and timeouts but skips its per-call parameter
        transformation (about a millisecond of CPU per request) and gives the raw headers.
        """
        path = request.endpoint.removeprefix("/v1")
        response = await self._client.post(path, body=request.body, cast_to=_http_response_class())
        headers = rate_limit_headers(response.headers)
        try:
            return json.loads(response.text), headers
        except ValueError:
            raise MalformedResponse(f"response body is not JSON: {response.text[:80]!r}") from None

    def _classify(self, err: BaseException) -> tuple[bool, float | None]:
        """(retry?, seconds the server asked to wait) for an exception of one attempt; a server's
        Retry-After also pauses every request sharing the limiter."""
        if isinstance(err, openai.APIStatusError):
            headers = err.response.headers
            self.limiter.observe(rate_limit_headers(headers))
            retry_after = retry_after_seconds(headers) if err.status_code == 429 else None
            if retry_after is not None:
                self.limiter.pause(retry_after)
            if err.code == "insufficient_quota":  # a 429 that no wait cures: the account is out of credit
                return False, None
            return err.status_code in (408, 409, 429) or err.status_code >= 500, retry_after
        retryable = (openai.APIConnectionError, openai.APIResponseValidationError, MalformedResponse)
        return isinstance(err, retryable), None

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: uniform in [1/2, 1] x min(backoff_max_s, backoff_s * 2^(attempt-1))."""
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._jitter.random())

    def _describe(self, err: BaseException) -> str:
        """A one-line error message with the API key scrubbed out."""
        text = f"{type(err).__name__}: {err}".replace("\n", " ")
        key = getattr(self._client, "api_key", None)
        if isinstance(key, str) and key:
            text = text.replace(key, "<redacted>")
        return text[:_ERROR_CHARS]

    def _seen(self, fingerprint: Any) -> str | None:
        """Record a response's ``system_fingerprint``; returns it when it is one (a string), else None."""
        if not isinstance(fingerprint, str):
            return None
        with self._lock:
            self._fingerprints.add(fingerprint)
        return fingerprint

    # -- batch -----------------------------------------------------------------------------------
    async def _send_batch(self, requests: list[Request]) -> list[Score]:
        """Score ``requests`` as one Batch API job (resumed from ``batch_state_dir`` when it exists)."""
        items = [BatchRequest(f"r{i}-{r.cache_key[:16]}", r.endpoint, r.body) for i, r in enumerate(requests)]
        base = {"mode": self.mode}
        try:
            await self.limiter.acquire(0, 0)
        except CostCapReached as err:
            return [Score(None, json.dumps({**base, "cache_key": r.cache_key, "not_sent": True, "cost_usd": 0.0}),
                          f"not sent: {err}", sent=False) for r in requests]
        state = Path(self.batch_state_dir) / f"batch-{requests_digest(items)[:32]}.json"
        try:
            outcome = await run_batch(self._client, items, state, poll_s=self.batch_poll_s, retry=self._retrying)
        except Exception as err:  # the whole batch failed: every row gets the reason
            message = self._describe(err)
            return [Score(None, json.dumps({**base, "cache_key": r.cache_key, "cost_usd": 0.0}), message)
                    for r in requests]
        scores = []
        for item, request in zip(items, requests):
            raw = {**base, "cache_key": request.cache_key, "estimated_prompt_tokens": request.prompt_tokens,
                   "batch_id": outcome.batch_id, "custom_id": item.custom_id, "attempts": 1}
            body = outcome.bodies.get(item.custom_id)
            if body is None:
                raw.update(cost_usd=0.0)
                scores.append(Score(None, json.dumps(raw), outcome.errors.get(item.custom_id, "no result")))
                continue
            usage = body.get("usage")
            cost = self.cost_usd(usage, batch=True)
            self.limiter.spend(cost)
            try:
                value, details = self._value_fn(body, request.target_span)
            except MalformedResponse as err:
                raw.update(cost_usd=cost, usage=usage)
                scores.append(Score(None, json.dumps(raw), self._describe(err), cost_usd=cost))
                continue
            fingerprint = self._seen(body.get("system_fingerprint"))
            raw.update(details, usage=usage, system_fingerprint=body.get("system_fingerprint"), model=body.get("model"),
                       errors=[], cost_usd=cost)
            scores.append(Score(float(value), json.dumps(raw), cost_usd=cost, fingerprint=fingerprint))
        return scores

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` retried like an online request (backoff, Retry-After); raises its last error."""
        attempt = 1
        while True:
            try:
                return await call()
            except Exception as err:
                retryable, retry_after = self._classify(err)
                if not retryable or attempt >= self.max_attempts:
                    raise
            await asyncio.sleep(retry_after if retry_after is not None else self._backoff(attempt))
            attempt += 1


def _same_as(score: Score, first_row: int) -> Score:
    """The Score of a row identical to ``first_row``: its answer, at no cost."""
    raw = json.loads(score.raw)
    raw.update(cost_usd=0.0, same_as_row=first_row)
    return replace(score, raw=json.dumps(raw), cost_usd=0.0)


@functools.lru_cache(maxsize=1)
def _http_response_class() -> type:
    """The Response class of the HTTP library the installed SDK is built on (httpx, or httpx2 in
    later releases): the ``cast_to`` that makes ``client.post`` return the raw response."""
    client_class = next(c for c in openai.DefaultAsyncHttpxClient.__mro__ if c.__name__ == "AsyncClient")
    return sys.modules[client_class.__module__.partition(".")[0]].Response


@functools.lru_cache(maxsize=1)
def _encoding() -> Any:
    """The o200k_base tokenizer of GPT-4o models; its tables ship inside bpe-openai (no download)."""
    return bpe_openai.get_encoding(_ENCODING)


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"openai backend: {name!r} must be one of {', '.join(allowed)}; got {value!r}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"openai backend: {name!r} must be a number, got {value!r}")
    return float(value)


def _non_negative(name: str, value: Any) -> None:
    if _number(name, value) < 0:
        raise ValueError(f"openai backend: {name!r} must be >= 0, got {value!r}")


def _check_template(name: str, template: str, allowed: frozenset[str]) -> None:
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as err:
        raise ValueError(f"openai backend: {name!r} is not a valid template: {err}") from None
    unknown = sorted(used - allowed)
    if unknown:
        raise ValueError(
            f"openai backend: {name!r} uses unknown placeholder {{{unknown[0]}}}; allowed: "
            f"{', '.join('{' + f + '}' for f in sorted(allowed))} (write literal braces as {{{{ and }}}})"
        )
