"""A local OpenAI-compatible server for tests and benchmarks (aiohttp, bound to 127.0.0.1 only).

Endpoints: ``POST /v1/chat/completions`` (next-token top logprobs), ``POST /v1/completions``
(``echo`` + ``logprobs``: prompt logprobs), ``POST /v1/files``, ``GET /v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches/{id}``.

Logprobs are a deterministic function of the prompt: the words of the last user message have
fixed weights (a hash of the word), ``p(True) = sigmoid(sum of weights)``, spread over the
variants "True", " True", "true" (and likewise for False); filler tokens fill the top 20. The word
"certainly" adds 40, which pushes every False variant out of the top 20.

Faults on demand: ``faults`` maps a fault name (``FAULTS``) to its probability per attempt; the
first ``max_faults_per_prompt`` attempts of each distinct request body draw a fault (a hash of
the body, the attempt number and ``fault_seed``), later attempts succeed, so a client that
retries enough gets the fault-free values. A request whose prompt contains ``fail_marker``
always gets a 500; one containing ``quota_marker`` a 429 with code "insufficient_quota".
``rpm_limit``/``tpm_limit`` enforce limits over a sliding minute (429 with Retry-After) and send
``x-ratelimit-*`` headers. Every request is recorded in ``received`` with its arrival time;
``busiest_window`` counts the most that arrived in any window.

Run alone (for benchmarks): ``python tests/openai_server.py --latency 0.2 --rpm 600``; it prints
its base URL on the first line of stdout and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

import bpe_openai

FAULTS: tuple[str, ...] = ("429", "429-retry-after", "500", "503", "slow", "drop", "malformed", "no-logprobs")
FINGERPRINT = "fp_fake_0001"
_WORD = re.compile(r"[a-z']+")
_FILLERS = ("The", "It", "Yes", "No", "A", "Maybe", "I", "This", "\n", "Answer", ".", "**", "Not", "Correct",
            "Both", "Neither", "In", "We", "That", "If", "There", "One", "So", "Because", "As", "To", "Well",
            "Sure", "Hmm", "Ok")
_ENCODING: list[Any] = []


def encoding() -> Any:
    """The o200k_base tokenizer (loaded once)."""
    if not _ENCODING:
        _ENCODING.append(bpe_openai.get_encoding("o200k_base"))
    return _ENCODING[0]


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def word_weight(word: str) -> float:
    return 40.0 if word == "certainly" else 3.0 * (_unit("weight", word) - 0.5)


def true_probability(text: str) -> float:
    score = 0.3 + sum(word_weight(word) for word in _WORD.findall(text.lower()))
    return 1.0 / (1.0 + math.exp(-score)) if score > -700 else 0.0


def next_token_logprobs(text: str) -> list[tuple[str, float]]:
    """All candidate first tokens for a prompt whose user message is ``text``, most likely first."""
    p = min(max(true_probability(text), 1e-300), 1 - 1e-16)
    candidates: list[tuple[str, float]] = []
    for label, mass in (("True", p), ("False", 1.0 - p)):
        for variant, share in ((label, 0.7), (" " + label, 0.2), (label.lower(), 0.1)):
            candidates.append((variant, math.log(0.9 * mass * share)))
    weights = [0.6**i for i in range(len(_FILLERS))]
    total = sum(weights)
    candidates += [(token, math.log(0.1 * w / total)) for token, w in zip(_FILLERS, weights)]
    return sorted(candidates, key=lambda item: -item[1])


def prompt_token_logprobs(tokens: list[int]) -> list[float | None]:
    """A logprob per prompt token (None for the first), each a hash of every token up to it."""
    state = hashlib.blake2b(digest_size=16)
    logprobs: list[float | None] = []
    for i, token in enumerate(tokens):
        state.update(token.to_bytes(4, "little"))
        logprobs.append(None if i == 0 else -0.05 - 4.0 * _unit(state.hexdigest()))
    return logprobs


def chat_prompt_tokens(messages: list[dict]) -> int:
    """Prompt tokens of a chat request as OpenAI counts them for gpt-4o models."""
    enc = encoding()
    total = 3
    for message in messages:
        total += 3 + sum(len(enc.encode(str(value))) for value in message.values())
    return total


@dataclass
class Received:
    """One request as the server saw it."""

    time: float
    endpoint: str
    tokens: int
    status: int
    fault: str | None
    digest: str
    authorization: str
    body: dict[str, Any]


@dataclass
class _Batch:
    record: dict[str, Any]
    polls: int = 0


@dataclass
class FakeOpenAIServer:
    """See the module docstring. ``start()`` returns the base URL (``http://127.0.0.1:PORT/v1``)."""

    api_key: str | None = None
    latency_s: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)
    max_faults_per_prompt: int = 2
    fault_seed: int = 0
    fail_marker: str | None = None
    quota_marker: str | None = None
    retry_after_s: float = 0.05
    slow_s: float = 2.0
    rpm_limit: float | None = None
    tpm_limit: float | None = None
    batch_polls: int = 1
    hold_batches: bool = False
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self._attempts: dict[str, int] = {}
        self._window: deque[tuple[float, int]] = deque()
        self._window_tokens = 0
        self.files: dict[str, tuple[str, bytes]] = {}
        self.batches: dict[str, _Batch] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> str:
        encoding()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _serve(self) -> int:
        app = web.Application(client_max_size=256 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}/content", self._download)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches/{batch_id}", self._get_batch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        return self._runner.addresses[0][1]

    # -- online endpoints ------------------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tokens = chat_prompt_tokens(body["messages"]) + int(body.get("max_completion_tokens") or 16)
        return await self._answer(request, "chat", body, tokens, self.chat_body)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tokens = len(encoding().encode(body["prompt"])) + int(body.get("max_tokens") or 16)
        return await self._answer(request, "completions", body, tokens, self.completion_body)

    async def _answer(self, request: web.Request, endpoint: str, body: dict, tokens: int, make) -> web.StreamResponse:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        authorization = request.headers.get("Authorization", "")
        now = time.monotonic()
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            # like the real API, the message names the key it got; clients must not repeat it
            given = authorization.removeprefix("Bearer ")
            self._record(now, endpoint, tokens, 401, None, digest, authorization, body)
            return _error(401, f"Incorrect API key provided: {given}.", "invalid_request_error")
        limited = self._over_limit(now, tokens)
        if limited is not None:
            self._record(now, endpoint, tokens, 429, "limit", digest, authorization, body)
            return _error(429, "Rate limit reached.", "requests", headers={"retry-after": f"{limited:.3f}"})
        self._window.append((now, tokens))
        self._window_tokens += tokens
        fault = self._fault(digest, body)
        status = {"429": 429, "429-retry-after": 429, "quota": 429, "500": 500, "503": 503}.get(fault or "", 200)
        self._record(now, endpoint, tokens, status, fault, digest, authorization, body)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        headers = self._rate_headers(now)
        if fault == "429":
            return _error(429, "Rate limit reached (no retry-after).", "requests", headers=headers)
        if fault == "429-retry-after":
            return _error(429, "Rate limit reached.", "requests",
                          headers={**headers, "retry-after": str(self.retry_after_s)})
        if fault == "quota":
            return _error(429, "You exceeded your current quota.", "insufficient_quota", headers=headers,
                          code="insufficient_quota")
        if fault in ("500", "503"):
            return _error(status, "The server had an error.", "server_error", headers=headers)
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        if fault == "drop":
            request.transport.abort()
            return web.Response(status=500)
        if fault == "malformed":
            return web.Response(body=b'{"id": "chatcmpl-broken", "choices": [', headers=headers,
                                content_type="application/json")
        payload = make(body)
        if fault == "no-logprobs":
            payload["choices"][0]["logprobs"] = None
        return web.json_response(payload, headers=headers)

    def _fault(self, digest: str, body: dict) -> str | None:
        prompt = json.dumps(body.get("messages") or body.get("prompt"))
        if self.fail_marker is not None and self.fail_marker in prompt:
            return "500"
        if self.quota_marker is not None and self.quota_marker in prompt:
            return "quota"
        attempt = self._attempts.get(digest, 0)
        self._attempts[digest] = attempt + 1
        if attempt >= self.max_faults_per_prompt:
            return None
        draw = _unit("fault", self.fault_seed, digest, attempt)
        for name in FAULTS:
            draw -= self.faults.get(name, 0.0)
            if draw < 0:
                return name
        return None

    def _over_limit(self, now: float, tokens: int) -> float | None:
        """Seconds until the sliding minute has room for this request, or None when it has room now."""
        while self._window and self._window[0][0] <= now - 60.0:
            self._window_tokens -= self._window.popleft()[1]
        if self.rpm_limit is not None and len(self._window) + 1 > self.rpm_limit:
            return self._window[0][0] + 60.0 - now
        if self.tpm_limit is not None and self._window_tokens + tokens > self.tpm_limit:
            return self._window[0][0] + 60.0 - now
        return None

    def _rate_headers(self, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        reset = f"{max(self._window[0][0] + 60.0 - now, 0.0):.3f}s" if self._window else "0s"
        if self.rpm_limit is not None:
            headers["x-ratelimit-limit-requests"] = str(int(self.rpm_limit))
            headers["x-ratelimit-remaining-requests"] = str(int(max(self.rpm_limit - len(self._window), 0)))
            headers["x-ratelimit-reset-requests"] = reset
        if self.tpm_limit is not None:
            used = self._window_tokens
            headers["x-ratelimit-limit-tokens"] = str(int(self.tpm_limit))
            headers["x-ratelimit-remaining-tokens"] = str(int(max(self.tpm_limit - used, 0)))
            headers["x-ratelimit-reset-tokens"] = reset
        return headers

    def _record(self, now: float, endpoint: str, tokens: int, status: int, fault: str | None, digest: str,
                authorization: str, body: dict[str, Any]) -> None:
        self.received.append(Received(now, endpoint, tokens, status, fault, digest, authorization, body))

    # -- response bodies (also used to run batches) ----------------------------------------------
    def chat_body(self, body: dict) -> dict:
        messages = body["messages"]
        text = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        candidates = next_token_logprobs(text)
        shown = candidates[: body.get("top_logprobs") or 0]
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in shown]
        token, logprob = candidates[0]
        first = {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top}
        logprobs = {"content": [first]}
        prompt_tokens = chat_prompt_tokens(messages)
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": token},
                         "logprobs": logprobs if body.get("logprobs") else None, "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
        }

    def completion_body(self, body: dict) -> dict:
        prompt = body["prompt"]
        enc = encoding()
        tokens = enc.encode(prompt)
        pieces = [enc.decode(tokens[: i + 1]) for i in range(len(tokens))]
        offsets = [0] + [len(piece) for piece in pieces[:-1]]
        texts = [pieces[0]] + [pieces[i][len(pieces[i - 1]):] for i in range(1, len(pieces))]
        logprobs = prompt_token_logprobs(tokens)
        echo = bool(body.get("echo"))
        out_tokens = (texts if echo else []) + ["."]
        out_logprobs = (logprobs if echo else []) + [-0.1]
        out_offsets = (offsets if echo else []) + [len(prompt)]
        return {
            "id": f"cmpl-{next(self._ids)}",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "text": (prompt if echo else "") + ".", "finish_reason": "length",
                         "logprobs": {"tokens": out_tokens, "token_logprobs": out_logprobs,
                                      "text_offset": out_offsets, "top_logprobs": None}}],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": 1, "total_tokens": len(tokens) + 1},
        }

    # -- files and batches -----------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        file_id = f"file-{next(self._ids)}"
        data = upload.file.read()
        self.files[file_id] = (upload.filename, data)
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "created_at": 0,
                                  "filename": upload.filename, "purpose": form.get("purpose", ""),
                                  "status": "processed"})

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return _error(404, f"No such file {file_id}", "invalid_request_error")
        return web.Response(body=self.files[file_id][1], content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("input_file_id") not in self.files:
            return _error(400, "unknown input_file_id", "invalid_request_error")
        batch_id = f"batch_{next(self._ids)}"
        record = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": 0,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        self.batches[batch_id] = _Batch(record)
        return web.json_response(record)

    async def _get_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "No such batch", "invalid_request_error")
        batch.polls += 1
        if batch.record["status"] in ("validating", "in_progress"):
            batch.record["status"] = "in_progress"
            if not self.hold_batches and batch.polls >= self.batch_polls:
                self._run_batch(batch.record)
        return web.json_response(batch.record)

    def _run_batch(self, record: dict) -> None:
        lines = self.files[record["input_file_id"]][1].decode().splitlines()
        done: list[str] = []
        failed: list[str] = []
        for line in lines:
            item = json.loads(line)
            body = item["body"]
            prompt = json.dumps(body.get("messages") or body.get("prompt"))
            request_id = f"req_{next(self._ids)}"
            if self.fail_marker is not None and self.fail_marker in prompt:
                response = {"status_code": 500, "request_id": request_id,
                            "body": {"error": {"message": "The server had an error.", "type": "server_error"}}}
                failed.append(json.dumps({"id": f"batch_req_{request_id}", "custom_id": item["custom_id"],
                                          "response": response, "error": None}))
                continue
            make = self.chat_body if item["url"] == "/v1/chat/completions" else self.completion_body
            response = {"status_code": 200, "request_id": request_id, "body": make(body)}
            done.append(json.dumps({"id": f"batch_req_{request_id}", "custom_id": item["custom_id"],
                                    "response": response, "error": None}))
        for key, rows in (("output_file_id", done), ("error_file_id", failed)):
            if rows:
                file_id = f"file-{next(self._ids)}"
                self.files[file_id] = (f"{record['id']}_{key}.jsonl", ("\n".join(rows) + "\n").encode())
                record[key] = file_id
        record["status"] = "completed"
        record["request_counts"] = {"total": len(lines), "completed": len(done), "failed": len(failed)}


def rate_excess(times: list[float], costs: list[float], per_minute: float) -> float:
    """The most cost sent in any interval ``[t_i, t_j)`` beyond what ``per_minute`` allows over
    ``t_j - t_i`` (``times`` sorted); <= one request's cost for a client that never bursts."""
    worst = -math.inf
    for i in range(len(times)):
        sent = 0.0
        for j in range(i + 1, len(times)):
            sent += costs[j - 1]
            worst = max(worst, sent - per_minute / 60 * (times[j] - times[i]))
    return worst


def busiest_window(times: list[float], costs: list[float], window_s: float = 60.0) -> float:
    """The most cost (requests: 1 each) that arrived in any closed interval of ``window_s`` seconds,
    as a server with a sliding-window limit counts it (``times`` sorted)."""
    worst = total = 0.0
    first = 0
    for j, time_j in enumerate(times):
        total += costs[j]
        while time_j - times[first] > window_s:
            total -= costs[first]
            first += 1
        worst = max(worst, total)
    return worst


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None,
           code: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": code}}, status=status,
                              headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per response")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute the server allows")
    parser.add_argument("--tpm", type=float, default=None, help="tokens per minute the server allows")
    args = parser.parse_args()
    server = FakeOpenAIServer(latency_s=args.latency, rpm_limit=args.rpm, tpm_limit=args.tpm)
    print(server.start(), flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
