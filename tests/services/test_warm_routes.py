"""A service's routes are built before it serves, so the first request of its life does not build them."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic_core import core_schema

from services.host import warm_routes

BUILT: list[str] = []


class Probe(int):
    """An int whose schema records each time FastAPI builds a validator for it."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        BUILT.append(source.__name__)
        return core_schema.int_schema()


def _app() -> FastAPI:
    router = APIRouter()

    @router.get("/items/{n}")
    def item(n: Probe) -> int:
        return n

    app = FastAPI()
    app.include_router(router, prefix="/v1")
    return app


def test_warm_routes_builds_what_the_first_request_would() -> None:
    BUILT.clear()
    app = _app()
    declared = len(BUILT)
    warm_routes(app, "/v1/ftpipe-warm-up")
    warmed = len(BUILT)
    assert warmed > declared  # the included router's routes were built by the unmatched walk
    assert TestClient(app).get("/v1/items/3").json() == 3
    assert len(BUILT) == warmed  # ... so the first real request built nothing


def test_warm_routes_never_fails_the_service(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def router(self, scope: Any, receive: Any, send: Any) -> None:
            raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger="ftpipe.services"):
        warm_routes(Broken(), "/x")
    assert "built on first use" in caplog.text


def test_prefect_api_routes_are_built_before_the_first_request() -> None:
    """Prefect's own app: after the walk, the CSRF-token probe every client sends first is cheap."""
    from prefect.server.api.server import create_app

    app = create_app(final=True, ephemeral=True)
    warm_routes(app, "/api/ftpipe-warm-up")
    api: Any = next(getattr(r, "app", None) for r in app.routes if getattr(r, "path", None) == "/api")
    included = [r for r in api.router.routes if hasattr(r, "effective_candidates")]
    assert included and all(r._effective_candidates_version is not None for r in included)
