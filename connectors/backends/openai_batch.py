"""OpenAI Batch API: requests -> JSONL with ``custom_id`` -> upload -> batch -> poll -> results by ``custom_id``.

The batch id is written to a caller-given state file right after the batch is created, so a
caller killed while its batch runs finds the batch on its next call with the same requests and
resumes polling instead of paying twice. The state of a completed batch is kept (its results can
be downloaded again for free); the state of a failed, expired or cancelled batch is removed once
its partial results are collected, so the next call submits anew.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

TERMINAL: tuple[str, ...] = ("completed", "failed", "expired", "cancelled")
COMPLETION_WINDOW = "24h"

T = TypeVar("T")
# Runs an API call (a zero-argument coroutine factory) with the caller's retry policy.
Retry = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]


@dataclass(frozen=True)
class BatchRequest:
    """One line of a batch input file: ``custom_id`` unique within the batch, ``url`` the endpoint."""

    custom_id: str
    url: str
    body: dict[str, Any]


@dataclass
class BatchOutcome:
    """What a finished batch gave: a response body or an error reason per ``custom_id``."""

    batch_id: str
    status: str
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def batch_jsonl(requests: Sequence[BatchRequest]) -> bytes:
    """The batch input file: one ``{"custom_id", "method": "POST", "url", "body"}`` JSON object per line."""
    ids = [request.custom_id for request in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("custom_id values must be unique within a batch")
    lines = (json.dumps({"custom_id": r.custom_id, "method": "POST", "url": r.url, "body": r.body},
                        sort_keys=True, separators=(",", ":")) for r in requests)
    return ("\n".join(lines) + "\n").encode()


def requests_digest(requests: Sequence[BatchRequest]) -> str:
    """sha256 of the batch input file: equal digests mean the same requests."""
    return hashlib.sha256(batch_jsonl(requests)).hexdigest()


async def run_batch(client: Any, requests: Sequence[BatchRequest], state_path: str | os.PathLike, *,
                    poll_s: float, retry: Retry) -> BatchOutcome:
    """Submit ``requests`` (or resume the batch recorded in ``state_path``), wait, collect.

    ``client``: an ``openai.AsyncOpenAI``. All requests must share one endpoint. Raises the API
    error of a call that still fails after ``retry``'s attempts; ValueError when ``state_path``
    records a batch of other requests.
    """
    if not requests:
        return BatchOutcome(batch_id="", status="completed")
    urls = {request.url for request in requests}
    if len(urls) != 1:
        raise ValueError(f"a batch holds requests to one endpoint, got {sorted(urls)}")
    state_path = Path(state_path)
    batch_id = await _submit_or_resume(client, requests, urls.pop(), state_path, retry)
    batch = await retry(lambda: client.batches.retrieve(batch_id))
    while batch.status not in TERMINAL:
        await asyncio.sleep(poll_s)
        batch = await retry(lambda: client.batches.retrieve(batch_id))
    outcome = await _collect(client, batch, [request.custom_id for request in requests], retry)
    if batch.status == "completed":
        _write_state(state_path, {**_read_state(state_path), "status": batch.status})
    else:
        state_path.unlink(missing_ok=True)
    return outcome


async def _submit_or_resume(client: Any, requests: Sequence[BatchRequest], url: str, state_path: Path,
                            retry: Retry) -> str:
    digest = requests_digest(requests)
    state = _read_state(state_path)
    if state:
        if state.get("digest") != digest:
            raise ValueError(f"batch state file {state_path} records a batch of other requests")
        return state["batch_id"]
    content = batch_jsonl(requests)
    upload = await retry(lambda: client.files.create(file=(f"spex-ray-{digest[:16]}.jsonl", content), purpose="batch"))
    batch = await retry(lambda: client.batches.create(
        input_file_id=upload.id, endpoint=url, completion_window=COMPLETION_WINDOW,
        metadata={"spex_ray_digest": digest[:32]},
    ))
    _write_state(state_path, {"digest": digest, "batch_id": batch.id, "input_file_id": upload.id,
                              "endpoint": url, "requests": len(requests), "status": batch.status})
    return batch.id


async def _collect(client: Any, batch: Any, custom_ids: list[str], retry: Retry) -> BatchOutcome:
    outcome = BatchOutcome(batch_id=batch.id, status=batch.status)
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = await retry(lambda file_id=file_id: client.files.content(file_id))
        for line in content.content.decode("utf-8").splitlines():
            if line.strip():
                _record_line(outcome, line)
    reason = _batch_errors(batch) or f"no result in batch {batch.id} (status {batch.status})"
    for custom_id in custom_ids:
        if custom_id not in outcome.bodies and custom_id not in outcome.errors:
            outcome.errors[custom_id] = reason
    return outcome


def _record_line(outcome: BatchOutcome, line: str) -> None:
    """Put one output/error file line into ``outcome``; unreadable lines are skipped (their ids end up missing)."""
    try:
        item = json.loads(line)
        custom_id = item["custom_id"]
    except (ValueError, KeyError, TypeError):
        return
    error = item.get("error")
    response = item.get("response") or {}
    if error:
        outcome.errors[custom_id] = f"batch request error: {error.get('code')}: {error.get('message')}"
    elif response.get("status_code") == 200 and isinstance(response.get("body"), dict):
        outcome.bodies[custom_id] = response["body"]
    else:
        body = response.get("body") if isinstance(response.get("body"), dict) else {}
        message = (body.get("error") or {}).get("message", "no body")
        outcome.errors[custom_id] = f"batch request failed: HTTP {response.get('status_code')}: {message}"


def _batch_errors(batch: Any) -> str | None:
    errors = getattr(batch, "errors", None)
    data = getattr(errors, "data", None) or []
    messages = [f"{getattr(e, 'code', None)}: {getattr(e, 'message', None)}" for e in data]
    return f"batch {batch.id} {batch.status}: {'; '.join(messages)}" if messages else None


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as err:
        raise ValueError(f"batch state file {path} is not valid JSON: {err}") from None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(temporary, path)
