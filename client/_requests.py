"""Transport-agnostic request building, shared by the sync and async clients.

Each endpoint function returns a ``RequestSpec`` (method, path, query, JSON body or upload, and the parser for
a successful response). The clients only turn a spec into an httpx call and feed the response back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from client import _responses as parse
from client._version import USER_AGENT
from client.models import (
    FileDeleted,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    JobCreateRequest,
    ListPage,
    ResponseCreateRequest,
    ResponseObject,
    ResponseStreamEvent,
)
from client.redaction import install_log_redaction, register_secret
from client.settings import ClientSettings
from client.tls import ssl_context

T = TypeVar("T")
Order = Literal["asc", "desc"]
JobAction = Literal["pause", "resume", "cancel"]

# Page size new_events asks for: one call usually covers everything since the last poll.
EVENTS_PAGE_SIZE = 100


@dataclass(frozen=True)
class Upload:
    """A file part streamed from disk, plus the form's ``purpose`` field."""

    path: Path
    purpose: str
    filename: str
    content_type: str


# Methods whose repetition leaves the server as one call would (RFC 9110 9.2.2). POST is not among them.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class RequestSpec(Generic[T]):
    """Everything needed to send one API call and decode its successful response."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: tuple[tuple[str, str], ...] = ()
    json: dict[str, Any] | None = None
    upload: Upload | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    # Sent as ``Idempotency-Key``; a server honouring it answers a repeat with the first call's object.
    idempotency_key: str | None = None
    # A POST that keeps nothing on the server (a Responses call with ``store: false``) is safe to repeat.
    stores_nothing: bool = False

    @property
    def idempotent(self) -> bool:
        """Safe to send again after a lost answer, so the client may retry it in place."""
        return self.method in IDEMPOTENT_METHODS or self.idempotency_key is not None or self.stores_nothing


# ------------------------------------------------------------------------------------------ client setup


def default_headers(settings: ClientSettings) -> dict[str, str]:
    """Headers sent on every request: auth (if a key is set), end-user scope and User-Agent."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    if settings.on_behalf_of:
        headers["X-On-Behalf-Of"] = settings.on_behalf_of
    return headers


def default_timeout(settings: ClientSettings) -> httpx.Timeout:
    """Timeout for ordinary calls."""
    return httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)


def upload_timeout(settings: ClientSettings) -> httpx.Timeout:
    """Timeout for uploads: writes of a large body to a slow link need far longer than a JSON call."""
    return httpx.Timeout(settings.upload_timeout_s, connect=settings.connect_timeout_s)


def client_kwargs(settings: ClientSettings, transport: Any = None) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client``/``httpx.AsyncClient``; also arms secret redaction."""
    if settings.api_key is not None:
        register_secret(settings.api_key.get_secret_value())
    install_log_redaction()
    kwargs: dict[str, Any] = {
        "base_url": settings.base_url + "/",
        "headers": default_headers(settings),
        "timeout": default_timeout(settings),
        "follow_redirects": False,
        "verify": ssl_context(),
    }
    if transport is not None:
        kwargs["transport"] = transport
    return kwargs


def client_repr(name: str, settings: ClientSettings) -> str:
    """A repr that identifies the client without any credential."""
    return f"{name}(base_url={settings.base_url!r}, on_behalf_of={settings.on_behalf_of!r})"


@contextlib.contextmanager
def httpx_request_args(spec: RequestSpec[Any], settings: ClientSettings) -> Iterator[dict[str, Any]]:
    """Arguments for ``client.request(**args)``; opens (and afterwards closes) the upload file.

    httpx's multipart encoder reads an open file object in 64 KiB chunks and sets Content-Length from
    ``fstat``, so the upload is streamed, never loaded whole (see bench/upload_memory.py).
    """
    args: dict[str, Any] = {"method": spec.method, "url": spec.path.lstrip("/")}
    if spec.params:
        args["params"] = list(spec.params)
    if spec.json is not None:
        args["json"] = spec.json
    headers = dict(spec.extra_headers)
    if spec.idempotency_key is not None:
        headers["Idempotency-Key"] = spec.idempotency_key
    if headers:
        args["headers"] = headers
    if spec.upload is None:
        yield args
        return
    up = spec.upload
    with up.path.open("rb") as fh:
        args["data"] = {"purpose": up.purpose}  # httpx writes data fields before files: purpose comes first
        args["files"] = {"file": (up.filename, fh, up.content_type)}
        args["timeout"] = upload_timeout(settings)
        yield args


def _id(value: str) -> str:
    if not value:
        raise ValueError("id must be a non-empty string")
    return quote(value, safe="")


def _query(**values: str | int | None) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in values.items() if v is not None)


def upload_content_type(path: Path) -> str:
    """``application/jsonl`` for JSONL datasets, ``application/octet-stream`` otherwise."""
    return "application/jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "application/octet-stream"


# ------------------------------------------------------------------------------------------------ files


def files_upload(
    path: str | Path,
    purpose: str = "fine-tune",
    filename: str | None = None,
    idempotency_key: str | None = None,
) -> RequestSpec[FileObject]:
    """``POST /files`` (multipart ``file`` + ``purpose``); with a key, a repeat returns the first file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"upload source is not a file: {p}")
    upload = Upload(path=p, purpose=purpose, filename=filename or p.name, content_type=upload_content_type(p))
    return RequestSpec(
        "POST", "files", parse.model(FileObject), upload=upload, idempotency_key=idempotency_key
    )


def files_list(
    after: str | None = None, limit: int | None = None, order: Order | None = None, purpose: str | None = None
) -> RequestSpec[ListPage[FileObject]]:
    """``GET /files`` (one page)."""
    params = _query(after=after, limit=limit, order=order, purpose=purpose)
    return RequestSpec("GET", "files", parse.page(FileObject), params=params)


def files_retrieve(file_id: str) -> RequestSpec[FileObject]:
    """``GET /files/{id}``."""
    return RequestSpec("GET", f"files/{_id(file_id)}", parse.model(FileObject))


def files_delete(file_id: str) -> RequestSpec[FileDeleted]:
    """``DELETE /files/{id}``."""
    return RequestSpec("DELETE", f"files/{_id(file_id)}", parse.model(FileDeleted))


def files_content(file_id: str) -> RequestSpec[bytes]:
    """``GET /files/{id}/content`` (raw bytes)."""
    return RequestSpec(
        "GET", f"files/{_id(file_id)}/content", parse.raw_bytes, extra_headers={"Accept": "*/*"}
    )


# ------------------------------------------------------------------------------------------------- jobs


def jobs_create(request: JobCreateRequest, idempotency_key: str | None = None) -> RequestSpec[FineTuningJob]:
    """``POST /fine_tuning/jobs``; with a key, a repeat returns the first job."""
    return RequestSpec(
        "POST",
        "fine_tuning/jobs",
        parse.model(FineTuningJob),
        json=request.to_body(),
        idempotency_key=idempotency_key,
    )


def jobs_list(
    after: str | None = None, limit: int | None = None, metadata: Mapping[str, str] | None = None
) -> RequestSpec[ListPage[FineTuningJob]]:
    """``GET /fine_tuning/jobs`` (one page), filtered with ``metadata[k]=v``."""
    params = _query(after=after, limit=limit)
    if metadata:
        params += tuple((f"metadata[{k}]", v) for k, v in metadata.items())
    return RequestSpec("GET", "fine_tuning/jobs", parse.page(FineTuningJob), params=params)


def jobs_retrieve(job_id: str) -> RequestSpec[FineTuningJob]:
    """``GET /fine_tuning/jobs/{id}``."""
    return RequestSpec("GET", f"fine_tuning/jobs/{_id(job_id)}", parse.model(FineTuningJob))


def jobs_events(
    job_id: str, after: str | None = None, limit: int | None = None
) -> RequestSpec[ListPage[FineTuningJobEvent]]:
    """``GET /fine_tuning/jobs/{id}/events`` (one page, newest first)."""
    return RequestSpec(
        "GET",
        f"fine_tuning/jobs/{_id(job_id)}/events",
        parse.page(FineTuningJobEvent),
        params=_query(after=after, limit=limit),
    )


def jobs_checkpoints(
    job_id: str, after: str | None = None, limit: int | None = None
) -> RequestSpec[ListPage[FineTuningJobCheckpoint]]:
    """``GET /fine_tuning/jobs/{id}/checkpoints`` (one page)."""
    return RequestSpec(
        "GET",
        f"fine_tuning/jobs/{_id(job_id)}/checkpoints",
        parse.page(FineTuningJobCheckpoint),
        params=_query(after=after, limit=limit),
    )


def jobs_action(job_id: str, action: JobAction) -> RequestSpec[FineTuningJob]:
    """``POST /fine_tuning/jobs/{id}/pause|resume|cancel``."""
    # Not retried in place: repeated after a lost answer, the action would report a 409 for a change that
    # did happen.
    return RequestSpec("POST", f"fine_tuning/jobs/{_id(job_id)}/{action}", parse.model(FineTuningJob))


# -------------------------------------------------------------------------------------------- responses


def responses_create(
    request: ResponseCreateRequest, idempotency_key: str | None = None
) -> RequestSpec[ResponseObject]:
    """``POST /responses``; retried in place only with ``store: false`` or an idempotency key (otherwise a
    stored answer would be kept twice)."""
    return RequestSpec(
        "POST",
        "responses",
        parse.model(ResponseObject),
        json=request.to_body(),
        stores_nothing=request.store is False,
        idempotency_key=idempotency_key,
    )


def responses_stream(request: ResponseCreateRequest) -> RequestSpec[ResponseStreamEvent]:
    """``POST /responses`` with ``stream: true`` (Server-Sent Events); ``parse`` reads the answer of a server
    that answered whole instead. Only the opening is retried in place (same rule as ``responses_create``):
    once events flow, a lost stream is an error, never a second generation."""
    return RequestSpec(
        "POST",
        "responses",
        parse.whole_answer_event,
        json={**request.to_body(), "stream": True},
        extra_headers={"Accept": f"{parse.SSE_MEDIA_TYPE}, application/json"},
        stores_nothing=request.store is False,
    )


# ------------------------------------------------------------------------------------------- pagination


class Cursor:
    """Tracks ``after`` across pages and refuses to loop if a server repeats a cursor."""

    def __init__(self) -> None:
        self.after: str | None = None
        self._seen: set[str] = set()

    def advance(self, page: ListPage[Any]) -> bool:
        """Move past ``page``; False when there is nothing more to fetch."""
        nxt = page.next_cursor
        if nxt is None or nxt in self._seen:
            return False
        self._seen.add(nxt)
        self.after = nxt
        return True


class NewEventsCollector:
    """Gathers events newer than ``since_id`` from newest-first pages; ``result()`` is oldest first."""

    def __init__(self, since_id: str | None) -> None:
        self._since_id = since_id
        self._newer: list[FineTuningJobEvent] = []
        self.cursor = Cursor()
        self.done = False

    def feed(self, page: ListPage[FineTuningJobEvent]) -> bool:
        """Consume one page; True if another page should be fetched (``cursor.after`` is set)."""
        for event in page.data:
            if self._since_id is not None and event.id == self._since_id:
                self.done = True
                return False
            self._newer.append(event)
        if not self.cursor.advance(page):
            self.done = True
        return not self.done

    def result(self) -> list[FineTuningJobEvent]:
        """The collected events in chronological (oldest-first) order."""
        return list(reversed(self._newer))
