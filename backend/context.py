"""Process-wide backend state and the per-request auth/tenancy dependency."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from pydantic import SecretStr

from backend.db import Database
from backend.errors import BackendHTTPError
from backend.layout import Layout
from backend.settings import BackendSettings

if TYPE_CHECKING:
    from backend.generation import GenerationService
    from backend.jobs import JobService

DEFAULT_OWNER = "owner"
MAX_OWNER_LEN = 256


@dataclass
class BackendState:
    """Everything a request handler may need, built once by `create_app`."""

    settings: BackendSettings
    layout: Layout
    db: Database
    api_key: SecretStr
    jobs: JobService
    generation: GenerationService


@dataclass(frozen=True)
class RequestContext:
    """An authenticated request: the backend state plus the tenant it acts for."""

    state: BackendState
    owner: str

    @property
    def db(self) -> Database:
        return self.state.db


def require_auth(request: Request) -> RequestContext:
    """FastAPI dependency: check the bearer key and resolve the owner from X-On-Behalf-Of."""
    state: BackendState = request.app.state.backend
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BackendHTTPError(
            401, "Missing bearer API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    if not secrets.compare_digest(token.strip().encode(), state.api_key.get_secret_value().encode()):
        raise BackendHTTPError(401, "Incorrect API key provided.", code="invalid_api_key")
    owner = request.headers.get("x-on-behalf-of", "").strip() or DEFAULT_OWNER
    if len(owner) > MAX_OWNER_LEN:
        raise BackendHTTPError(
            400,
            f"X-On-Behalf-Of must be at most {MAX_OWNER_LEN} characters.",
            code="invalid_header",
            param="X-On-Behalf-Of",
        )
    return RequestContext(state=state, owner=owner)
