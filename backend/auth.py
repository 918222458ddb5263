"""Bearer-key check for every route but the health check, before the body is read or parsed.

One home for the key check: an unauthenticated caller never makes the server parse a JSON body, read an
upload, list the OpenAPI schema or reach the fault-injection counters.
"""

from __future__ import annotations

import secrets

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.errors import error_response
from contract.wire import API_PREFIXES, HEALTH_PATH

OPEN_PATHS = frozenset(prefix + HEALTH_PATH for prefix in API_PREFIXES)


def key_problem(authorization: str, api_key: SecretStr) -> tuple[str, str] | None:
    """(code, message) of a 401 for this Authorization header, or None when it carries the key."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "missing_api_key", "Missing bearer API key: send 'Authorization: Bearer <key>'."
    if not secrets.compare_digest(token.strip().encode(), api_key.get_secret_value().encode()):
        return "invalid_api_key", "Incorrect API key provided."
    return None


class BearerAuthMiddleware:
    """401 in the contract's error shape for any request without the server's key (health excepted)."""

    def __init__(self, app: ASGIApp, api_key: SecretStr) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        problem = key_problem(headers.get(b"authorization", b"").decode("latin-1"), self.api_key)
        if problem is None:
            await self.app(scope, receive, send)
            return
        code, message = problem
        await error_response(401, message, code, None)(scope, receive, send)
