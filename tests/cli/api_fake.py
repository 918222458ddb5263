"""A fake MKA1 API for the CLI's unit tests (httpx.MockTransport behind ``use_connection``) and a runner that
captures what a command printed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from client import ClientSettings
from flows.backend_runtime import Connection, use_connection

BASE = "http://fake.test/api/v1/llm"
JOB_ID = "ftjob_0123456789abcdef0123456789abcdef"
FT_MODEL = "ft:local:micro-chat:demo:0123456789ab"

Route = Callable[[httpx.Request], httpx.Response] | httpx.Response | Any


def reply(payload: Any, status: int = 200) -> httpx.Response:
    """A JSON answer."""
    return httpx.Response(status, json=payload)


def error(status: int, message: str, **fields: Any) -> httpx.Response:
    """The API's error body."""
    return reply({"error": {"message": message, "type": "invalid_request_error", **fields}}, status)


def job(job_id: str = JOB_ID, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    """A job object as the server returns it."""
    done = status == "succeeded"
    return {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": 1_700_000_000,
        "finished_at": 1_700_000_125 if status in ("succeeded", "failed", "cancelled") else None,
        "model": "local:micro-chat",
        "fine_tuned_model": FT_MODEL if done else None,
        "organization_id": "org-1",
        "status": status,
        "training_file": "file-abc",
        "validation_file": None,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
        "hyperparameters": {"n_epochs": 2},
        "seed": 7,
        "suffix": "demo",
        "metadata": {"team": "support"},
        "result_files": [],
        "trained_tokens": 1234 if done else None,
        "error": None,
        **extra,
    }


def event(n: int, message: str | None = None, level: str = "info") -> dict[str, Any]:
    """Event number ``n`` (ids and times grow with n)."""
    return {
        "id": f"ftevent_{n:04d}",
        "object": "fine_tuning.job.event",
        "created_at": 1_700_000_000 + n,
        "level": level,
        "message": message or f"event {n}",
        "type": "message",
        "data": None,
    }


def page(items: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    """A list envelope."""
    return {"object": "list", "data": items, "has_more": has_more}


@dataclass
class FakeAPI:
    """Routes ``(METHOD, path after the API root)`` to answers and records every request."""

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path.removeprefix("/api/v1/llm/"))
        route = self.routes.get(key)
        if route is None:
            return error(404, f"No route {key}")
        if isinstance(route, httpx.Response):
            return route
        if callable(route):
            answer: httpx.Response = route(request)
            return answer
        return reply(route)

    def bodies(self, method: str, path: str) -> list[Any]:
        """The JSON bodies sent to one route, in order."""
        return [
            json.loads(r.content)
            for r in self.requests
            if r.method == method and r.url.path.endswith("/" + path)
        ]

    @contextmanager
    def serving(self) -> Iterator[FakeAPI]:
        """Every command in the block talks to this fake (no retries: each answer is seen once)."""
        settings = ClientSettings(base_url=BASE, api_key="sk-test", max_retries=0)
        with use_connection(Connection(settings, "fake", False, httpx.MockTransport(self))):
            yield self


@dataclass
class Ran:
    """What one command did: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.out.splitlines() if line.strip()]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Ran:
    """``ftpipe argv...`` in-process; fails the test on a traceback."""
    from cli.main import main

    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err, captured.err
    return Ran(code, captured.out, captured.err)
