"""Process-wide backend state and the per-request auth/tenancy dependency."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request
from pydantic import SecretStr

from backend.db import Database
from backend.errors import BackendHTTPError
from backend.settings import BackendSettings

if TYPE_CHECKING:
    from backend.generation import GenerationService
    from backend.jobs import JobService

DEFAULT_OWNER = "owner"
MAX_OWNER_LEN = 256


@dataclass
class Layout:
    """Where things live under data_dir."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "backend.sqlite3"

    @property
    def files(self) -> Path:
        return self.root / "files"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def server_log(self) -> Path:
        """stdout/stderr of a launcher-started server (mode 0600)."""
        return self.logs / "server.log"

    def ensure(self) -> None:
        """Create the directories (private to this user)."""
        for d in (self.root, self.files, self.tmp, self.jobs, self.logs):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)


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
