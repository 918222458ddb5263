"""Turn httpx responses into models, or into the right ``client.errors`` exception."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from client.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    RateLimitError,
    error_class_for_status,
)
from client.models import ListPage, ResponseObject, ResponseStreamEvent
from client.redaction import redact, redact_value
from client.retry import parse_retry_after

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_SNIPPET_CHARS = 200


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    """Parser for a JSON body holding one ``cls``."""

    def _parse(response: httpx.Response) -> M:
        return _validate(response, cls)

    return _parse


def page(item_cls: type[M]) -> Callable[[httpx.Response], ListPage[M]]:
    """Parser for a list envelope of ``item_cls``."""
    page_cls: type[ListPage[M]] = ListPage[item_cls]  # type: ignore[valid-type]

    def _parse(response: httpx.Response) -> ListPage[M]:
        return _validate(response, page_cls)

    return _parse


def raw_bytes(response: httpx.Response) -> bytes:
    """Parser for raw content endpoints."""
    return response.content


def _validate(response: httpx.Response, cls: type[M]) -> M:
    try:
        return cls.model_validate_json(response.content)
    except ValidationError as exc:
        raise APIResponseValidationError(
            redact(
                f"HTTP {response.status_code} from {response.request.method} {response.request.url.path}: "
                f"response is not a valid {cls.__name__} ({exc.error_count()} errors; first: "
                f"{_first_error(exc)}); body starts {_snippet(response)!r}"
            ),
            status_code=response.status_code,
        ) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(part) for part in err["loc"]) or "<root>"
    return f"{loc}: {err['msg']}"


def handle(response: httpx.Response, parser: Callable[[httpx.Response], T]) -> T:
    """Raise for an error status, else decode the body with ``parser``."""
    if response.status_code >= 400:
        raise status_error(response)
    return parser(response)


def status_error(response: httpx.Response) -> APIStatusError:
    """Build the exception for an error response; copes with HTML, empty and non-JSON bodies."""
    status = response.status_code
    cls = error_class_for_status(status)
    request_id = response.headers.get("x-request-id")
    body, err = _error_body(response)
    reason = response.reason_phrase or "error"
    if err is not None:
        message = str(err.get("message") or reason)
        code = _opt_str(err.get("code"))
        text = f"HTTP {status} {reason}" + (f" [{code}]" if code else "") + f": {message}"
    else:
        code = None
        snippet = _snippet(response)
        text = f"HTTP {status} {reason}: " + (
            f"unexpected error body: {snippet!r}" if snippet else "(empty body)"
        )
        message = text
    if request_id:
        text += f" (request id {request_id})"
    kwargs: dict[str, Any] = {
        "status_code": status,
        "code": code,
        "param": _opt_str(err.get("param")) if err else None,
        "type": _opt_str(err.get("type")) if err else None,
        "request_id": request_id,
        "body": redact_value(body),
        "response": response,
    }
    exc: APIStatusError
    if cls is RateLimitError:
        exc = RateLimitError(redact(text), retry_after=parse_retry_after(response.headers), **kwargs)
    else:
        exc = cls(redact(text), **kwargs)
    exc.message = redact(message)  # the bare server message; str(exc) carries status and request id
    return exc


def _error_body(response: httpx.Response) -> tuple[Any, dict[str, Any] | None]:
    """The decoded body (JSON value, else text) and its ``error`` object when it has one."""
    raw = response.content
    if not raw.strip():
        return None, None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return response.text, None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return body, err
        if isinstance(err, str):  # some gateways send {"error": "text"}
            return body, {"message": err}
        if isinstance(body.get("message"), str):
            return body, {"message": body["message"]}
        if isinstance(body.get("detail"), str):  # FastAPI default error shape
            return body, {"message": body["detail"]}
    return body, None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _snippet(response: httpx.Response) -> str:
    text = response.content[: _SNIPPET_CHARS * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text[:_SNIPPET_CHARS] + ("..." if len(text) > _SNIPPET_CHARS else "")


def transport_error(exc: httpx.TransportError, request_desc: str) -> APIError:
    """Map an httpx transport failure to ``APITimeoutError`` / ``APIConnectionError``."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(redact(f"{request_desc} timed out ({type(exc).__name__}: {detail})"))
    # A refused/unreachable host and a connection the server dropped mid-exchange need different fixes.
    what = "failed to connect" if isinstance(exc, httpx.ConnectError) else "lost its connection"
    return APIConnectionError(redact(f"{request_desc} {what} ({type(exc).__name__}: {detail})"))


# ------------------------------------------------------------------------------------------- streaming

SSE_MEDIA_TYPE = "text/event-stream"


def is_event_stream(response: httpx.Response) -> bool:
    """True when the server answered with Server-Sent Events (not every server streams when asked)."""
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == SSE_MEDIA_TYPE


class SSEDecoder:
    """Turns Server-Sent Event lines into event data, one line at a time (shared by the sync and async
    clients). WHATWG rules: ``data:`` lines of one event are joined with newlines, a blank line ends the
    event, ``:`` starts a comment, other fields are skipped, an event the stream ends inside is dropped."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """The finished event's data when ``line`` ends one, else None."""
        if not line:
            data, self._data = self._data, []
            return "\n".join(data) if data else None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def whole_answer_event(response: httpx.Response) -> ResponseStreamEvent:
    """A server that ignored ``stream: true`` answered whole (body already read): its one final event."""
    final = _validate(response, ResponseObject)
    status = final.status if final.status in ("failed", "incomplete") else "completed"
    return ResponseStreamEvent(type=f"response.{status}", response=final)


def stream_event(data: str, status_code: int) -> ResponseStreamEvent | None:
    """One event's data as a model; None for the ``[DONE]`` terminator some gateways append."""
    if data == "[DONE]":
        return None
    try:
        return ResponseStreamEvent.model_validate_json(data)
    except ValidationError as exc:
        raise APIResponseValidationError(
            redact(f"stream event is not valid ({_first_error(exc)}): {data[:_SNIPPET_CHARS]!r}"),
            status_code=status_code,
        ) from None
