"""Process-wide backend state and the per-request auth/tenancy dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from pydantic import SecretStr

from backend.auth import key_problem
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
    # BearerAuthMiddleware already refused a wrong key before the body was read; checked here as well
    # so that a route can never be reached without it, whatever the middleware stack.
    problem = key_problem(request.headers.get("authorization", ""), state.api_key)
    if problem is not None:
        raise BackendHTTPError(401, problem[1], code=problem[0])
    header = request.headers.get("x-on-behalf-of", "").strip()
    if header == DEFAULT_OWNER:
        # X-On-Behalf-Of scopes data but is no credential: no header may name the header-less tenant.
        raise BackendHTTPError(
            400,
            f"X-On-Behalf-Of '{DEFAULT_OWNER}' is reserved for requests sent without the header.",
            code="invalid_header",
            param="X-On-Behalf-Of",
        )
    owner = header or DEFAULT_OWNER
    if len(owner) > MAX_OWNER_LEN:
        raise BackendHTTPError(
            400,
            f"X-On-Behalf-Of must be at most {MAX_OWNER_LEN} characters.",
            code="invalid_header",
            param="X-On-Behalf-Of",
        )
    return RequestContext(state=state, owner=owner)
