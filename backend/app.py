"""FastAPI application factory: contract routes under /api/v1/llm (and /v1 for OpenAI SDK base URLs)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from backend import routes_files, routes_jobs, routes_models, routes_pricing, routes_responses
from backend.auth import BearerAuthMiddleware
from backend.context import BackendState
from backend.db import Database
from backend.errors import install_error_handlers
from backend.faults import FaultInjectionMiddleware, config_from_settings
from backend.generation import ArrivingGenerations, GenerationService
from backend.housekeeping import remove_leftovers
from backend.jobs import JobService
from backend.layout import Layout
from backend.limits import BodyLimitMiddleware
from backend.settings import BackendSettings, apply_base_model_cache_dir
from contract.wire import API_PREFIX, API_PREFIXES, BACKEND_SERVICE, HEALTH_PATH

log = logging.getLogger("backend")


def build_router() -> APIRouter:
    """All resource routes plus the unauthenticated health check."""
    router = APIRouter()

    @router.get(HEALTH_PATH, include_in_schema=False)
    def health() -> dict[str, Any]:
        # The pid lets the launcher check it is waiting on the server it started, not one already on the port.
        return {"status": "ok", "service": BACKEND_SERVICE, "pid": os.getpid()}

    router.include_router(routes_files.router)
    router.include_router(routes_jobs.router)
    router.include_router(routes_responses.router)
    # Before any /models/{id} route: otherwise "pricing" would be taken for a model id.
    router.include_router(routes_pricing.router)
    router.include_router(routes_models.router)
    return router


def create_app(settings: BackendSettings | None = None) -> FastAPI:
    """Build the app; the lifespan recovers interrupted jobs and starts/stops the worker processes."""
    settings = settings or BackendSettings()
    layout = Layout(settings.data_dir.expanduser().resolve())
    layout.ensure()
    db = Database(layout.db_path)
    db.init_schema()
    remove_leftovers(layout, db)
    apply_base_model_cache_dir(settings.base_model_cache_dir)
    jobs = JobService(settings, layout, db)
    state = BackendState(
        settings=settings,
        layout=layout,
        db=db,
        api_key=settings.resolved_api_key(),
        jobs=jobs,
        generation=GenerationService(jobs.training_workers),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.jobs.start()
        try:
            yield
        finally:
            state.jobs.stop()
            state.generation.close()

    app = FastAPI(
        title="ftpipe embedded backend", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.backend = state
    install_error_handlers(app)
    router = build_router()
    for prefix in API_PREFIXES:
        # The OpenAI-SDK alias stays out of the schema: one documented prefix.
        app.include_router(router, prefix=prefix, include_in_schema=prefix == API_PREFIX)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_body_bytes)
    # Around the body limit (which reads the body): a generation request counts as arriving while its body
    # is read and parsed (backend.generation).
    app.add_middleware(ArrivingGenerations, service=state.generation)
    faults = config_from_settings(
        settings.fault_rates,
        settings.fault_kinds,
        settings.fault_seed,
        settings.fault_slow_s,
        settings.fault_retry_after_s,
    )
    if faults.enabled:
        # Wraps the body limit and every handler: faults hit before them.
        app.add_middleware(FaultInjectionMiddleware, config=faults)
        log.warning("fault injection enabled: %s (seed %d)", settings.fault_rates, settings.fault_seed)
    # Outermost: no body is read, no schema listed and no fault counter shown without the key.
    app.add_middleware(BearerAuthMiddleware, api_key=state.api_key)
    return app
