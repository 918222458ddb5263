"""The key is checked before anything else (issue 16 item 7): no body parsed, no schema, no fault counters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from backend.app import create_app
from backend.settings import BackendSettings

KEY = {"Authorization": "Bearer k"}


def _statuses(
    tmp_path: Path, requests: list[tuple[str, str, dict[str, object]]], **settings: object
) -> list[int]:
    async def run() -> list[int]:
        app = create_app(BackendSettings(data_dir=tmp_path, api_key="k", **settings))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return [(await c.request(m, url, **kw)).status_code for m, url, kw in requests]  # type: ignore[arg-type]

    return asyncio.run(run())


def test_unauthenticated_requests_are_refused_before_the_body_is_read(tmp_path: Path) -> None:
    broken_json = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    too_big = {"content": b"x" * 4096, "headers": {"content-type": "application/json"}}
    got = _statuses(
        tmp_path,
        [
            ("POST", "/api/v1/llm/fine_tuning/jobs", broken_json),  # would be a 400 if parsed first
            ("POST", "/api/v1/llm/responses", too_big),  # would be a 413 if measured first
            ("GET", "/openapi.json", {}),
            ("GET", "/api/v1/llm/_faults", {}),
            ("GET", "/api/v1/llm/health", {}),
            ("GET", "/api/v1/llm/fine_tuning/jobs", {"headers": KEY}),
            ("GET", "/openapi.json", {"headers": KEY}),
            ("GET", "/api/v1/llm/_faults", {"headers": KEY}),
        ],
        max_request_body_bytes=1024,
        fault_rates="files=0.5",  # faults on (the counters route exists) but off the routes probed here
    )
    assert got == [401, 401, 401, 401, 200, 200, 200, 200]


def test_no_header_can_name_the_header_less_tenant(tmp_path: Path) -> None:
    as_owner = {"headers": {**KEY, "X-On-Behalf-Of": "owner"}}
    as_alice = {"headers": {**KEY, "X-On-Behalf-Of": "alice"}}
    got = _statuses(
        tmp_path, [("GET", "/api/v1/llm/files", as_owner), ("GET", "/api/v1/llm/files", as_alice)]
    )
    assert got == [400, 200]
