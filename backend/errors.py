"""Contract-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` for every failure."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from backend.lifecycle import InvalidTransition, JobNotFound

# FastAPI is imported where a response is built: clients (preflight, `ftpipe jobs`) raise and read these
# errors through backend.settings / backend.model_refs without paying the web framework's import.
if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

log = logging.getLogger("backend")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class BackendHTTPError(Exception):
    """The server's error: raised anywhere in a request to answer with a contract error (the client's
    ``client.errors.APIError`` is what a caller sees on the other side)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def not_found(kind: str, ident: str, param: str | None = None) -> BackendHTTPError:
    """404 for an object this owner cannot see (missing or someone else's: indistinguishable)."""
    return BackendHTTPError(404, f"No {kind} found with id '{ident}'.", code=f"{kind}_not_found", param=param)


def error_body(status: int, message: str, code: str | None, param: str | None) -> dict[str, Any]:
    """The wire error object."""
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    """A JSONResponse holding a contract error."""
    from fastapi.responses import JSONResponse

    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message, code, param), status_code=status, headers=headers)


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    # FastAPI prefixes "body"/"query"/"path"; pydantic adds union-branch names we don't want to expose.
    parts = [
        str(p) for p in loc[1:] if not (isinstance(p, str) and ("[" in p or p in {"int", "float", "str"}))
    ]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure (ours, FastAPI's, Starlette's, unexpected) to a contract error."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(BackendHTTPError)
    async def _api_error(_: Request, exc: BackendHTTPError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.param)

    # The job service's domain errors (backend/lifecycle.py): an unknown job and a refused status move.
    @app.exception_handler(JobNotFound)
    async def _job_not_found(_: Request, exc: JobNotFound) -> JSONResponse:
        return error_response(404, str(exc), "fine_tuning_job_not_found")

    @app.exception_handler(InvalidTransition)
    async def _invalid_transition(_: Request, exc: InvalidTransition) -> JSONResponse:
        return error_response(409, str(exc), "invalid_state")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "Invalid request."}
        param = _loc_to_param(tuple(first.get("loc", ())))
        msg = str(first.get("msg", "Invalid request."))
        if first.get("type") == "json_invalid":
            return error_response(400, "The request body is not valid JSON.", "invalid_json", None)
        if first.get("type") == "model_attributes_type":
            return error_response(400, "The request body must be a JSON object.", "invalid_request", None)
        if first.get("type") == "extra_forbidden":
            return error_response(
                400,
                f"Unknown parameter '{param}': the embedded backend does not accept it.",
                "unknown_parameter",
                param,
            )
        msg = msg.removeprefix("Value error, ")  # pydantic's prefix for a validator's own ValueError
        message = f"Invalid value for '{param}': {msg}" if param else msg
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s))"
        return error_response(400, message, "invalid_request", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(404, f"Unknown route: {request.method} {request.url.path}", "not_found")
        if exc.status_code == 405:
            return error_response(
                405, f"Method {request.method} not allowed on {request.url.path}", "method_not_allowed"
            )
        return error_response(exc.status_code, str(exc.detail), None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "The server had an error while processing your request.", "server_error")
