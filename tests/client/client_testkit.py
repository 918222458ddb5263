"""Test kit for the client tests: a recording fake API (httpx.MockTransport) and a sync/async runner."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from client import AsyncMKA1Client, ClientSettings, MKA1Client

SECRET = "sk-test-SECRET-123"
BASE = "https://api.test/api/v1/llm"

Handler = Callable[[httpx.Request], httpx.Response]


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    """A JSON response as the server would send it."""
    return httpx.Response(
        status,
        content=json.dumps(payload).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


@dataclass
class FakeAPI:
    """Routes ``(METHOD, path-after-base)`` to handlers and records every request it sees."""

    routes: dict[tuple[str, str], Handler | httpx.Response | Any] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.raw_path.decode().split("?")[0]
        prefix = "/api/v1/llm/" if path.startswith("/api/v1/llm/") else "/v1/"
        key = (request.method, path[len(prefix) :])
        if key not in self.routes:
            return json_response({"error": {"message": f"no route {key}", "type": "test"}}, 404)
        route = self.routes[key]
        if isinstance(route, httpx.Response):
            return route
        if callable(route):
            return route(request)
        return json_response(route)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@dataclass
class Runner:
    """Runs a call against the sync or the async client, so each test covers both."""

    mode: str
    settings: ClientSettings
    # The delays the client's retry loop asked for; nothing really sleeps.
    slept: list[float] = field(default_factory=list)

    def call(self, api: Handler, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(client)``; awaits coroutines and drains (async) iterators into lists."""
        transport_handler = api
        if self.mode == "sync":
            with MKA1Client(
                self.settings, transport=httpx.MockTransport(transport_handler), sleep=self.slept.append
            ) as c:
                result = fn(c)
                return list(result) if isinstance(result, Iterator) else result

        async def record(seconds: float) -> None:
            self.slept.append(seconds)

        async def main() -> Any:
            async with AsyncMKA1Client(
                self.settings, transport=httpx.MockTransport(transport_handler), sleep=record
            ) as c:
                result = fn(c)
                if inspect.isawaitable(result):
                    return await result
                if isinstance(result, AsyncIterator):
                    return [item async for item in result]
                raise AssertionError(f"async client returned a plain {type(result).__name__}")

        return asyncio.run(main())


@dataclass
class FormPart:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(request: httpx.Request) -> dict[str, FormPart]:
    """Decode a multipart/form-data request body into its parts, keyed by field name."""
    import email.parser
    import email.policy

    ctype = request.headers["content-type"]
    raw = b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + request.content
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert msg.is_multipart(), ctype
    parts: dict[str, FormPart] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        parts[name] = FormPart(
            name, part.get_filename(), part.get_content_type() if part["content-type"] else None, payload
        )
    return parts


def file_obj(file_id: str = "file-abc123", **extra: Any) -> dict[str, Any]:
    """A file object as the server returns it."""
    return {
        "id": file_id,
        "object": "file",
        "bytes": 12,
        "created_at": 1700000000,
        "filename": "train.jsonl",
        "purpose": "fine-tune",
        "expires_at": None,
        "status": "processed",
        **extra,
    }


def job_obj(
    job_id: str = "ftjob_0123456789abcdef0123456789abcdef", status: str = "queued", **extra: Any
) -> dict[str, Any]:
    """A fine-tuning job object as the server returns it."""
    return {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": 1700000000,
        "finished_at": None,
        "model": "local:micro-chat",
        "fine_tuned_model": None,
        "organization_id": "org-1",
        "status": status,
        "training_file": "file-abc123",
        "validation_file": None,
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 2.0}
            },
        },
        "hyperparameters": {"n_epochs": 3},
        "seed": 7,
        "suffix": None,
        "metadata": {"run": "a"},
        "result_files": [],
        "trained_tokens": None,
        "estimated_finish": None,
        "integrations": [],
        "error": None,
        **extra,
    }


def event_obj(event_id: str, created_at: int = 1700000000, **extra: Any) -> dict[str, Any]:
    """A job event object."""
    return {
        "id": event_id,
        "object": "fine_tuning.job.event",
        "created_at": created_at,
        "level": "info",
        "message": f"event {event_id}",
        "type": "message",
        "data": {},
        **extra,
    }


def ckpt_obj(ckpt_id: str, step: int) -> dict[str, Any]:
    """A checkpoint object."""
    return {
        "id": ckpt_id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": 1700000000,
        "fine_tuning_job_id": "ftjob_1",
        "fine_tuned_model_checkpoint": f"ft:local:ckpt-{step}",
        "step_number": step,
        "metrics": {"step": step, "train_loss": 1.5, "valid_loss": None},
    }


def list_env(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A list envelope."""
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def paged(items: list[dict[str, Any]], page_size: int) -> Handler:
    """A list endpoint over ``items`` that honours ``after`` (and ignores ``limit``, like a fixed-size server)."""

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        start = 0
        if after is not None:
            start = [i["id"] for i in items].index(after) + 1
        chunk = items[start : start + page_size]
        return json_response(list_env(chunk, start + page_size < len(items)))

    return handler
