"""Blocking MKA1 client: sends the specs built in ``client._requests``."""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx

from client import _requests as req
from client import _responses, retry
from client.errors import APIError
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
from client.pricing import Pricing
from client.settings import ClientSettings

T = TypeVar("T")
R = TypeVar("R")


class MKA1Client:
    """Synchronous client; use as a context manager (or call ``close()``)."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        transport: httpx.BaseTransport | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings if settings is not None else ClientSettings()
        self._sleep = sleep  # tests pass a recorder instead of waiting out the backoff
        self._http = httpx.Client(**req.client_kwargs(self.settings, transport))
        self.files = Files(self)
        self.jobs = Jobs(self)
        self.responses = Responses(self)
        self.pricing = Pricing(self)

    def __repr__(self) -> str:
        return req.client_repr(type(self).__name__, self.settings)

    def __enter__(self) -> MKA1Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def send(self, spec: req.RequestSpec[T]) -> T:
        """Send one request, retrying it in place when ``client.retry`` allows; raise ``client.errors`` on failure."""
        return self._retrying(spec, self._send_once)

    @contextlib.contextmanager
    def open_stream(self, spec: req.RequestSpec[T]) -> Iterator[httpx.Response]:
        """Send ``spec`` and yield its successful response unread (closed on exit); error statuses raise.

        Only the opening is retried in place (as ``send`` would retry the request); reading is the caller's.
        """
        response = self._retrying(spec, self._open_once)
        try:
            yield response
        finally:
            response.close()

    def _open_once(self, spec: req.RequestSpec[T]) -> httpx.Response:
        try:
            with req.httpx_request_args(spec, self.settings) as args:
                response = self._http.send(self._http.build_request(**args), stream=True)
            if response.status_code >= 400:
                try:
                    response.read()
                finally:
                    response.close()
        except httpx.TransportError as exc:
            raise _responses.transport_error(exc, f"{spec.method} {spec.path}") from exc
        return _responses.handle(response, lambda r: r)

    def iter_lines(self, response: httpx.Response, what: str) -> Iterator[str]:
        """``response``'s text lines as they arrive; a connection lost mid-stream is ``APIConnectionError``."""
        try:
            yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise _responses.transport_error(exc, what) from exc

    def _retrying(self, spec: req.RequestSpec[T], attempt: Callable[[req.RequestSpec[T]], R]) -> R:
        retries_taken = 0
        while True:
            try:
                return attempt(spec)
            except APIError as exc:
                delay = retry.delay_before_retry(
                    exc,
                    idempotent=spec.idempotent,
                    retries_taken=retries_taken,
                    max_retries=self.settings.max_retries,
                )
                if delay is None:
                    raise
                retries_taken += 1
                retry.log_retry(spec.method, spec.path, exc, delay, retries_taken, self.settings.max_retries)
                self._sleep(delay)

    def _send_once(self, spec: req.RequestSpec[T]) -> T:
        try:
            with req.httpx_request_args(spec, self.settings) as args:
                response = self._http.request(**args)
        except httpx.TransportError as exc:
            raise _responses.transport_error(exc, f"{spec.method} {spec.path}") from exc
        return _responses.handle(response, spec.parse)

    def paginate(self, make_spec: Callable[[str | None], req.RequestSpec[ListPage[T]]]) -> Iterator[T]:
        """Yield items across pages, following ``after=<last id>`` while ``has_more``."""
        cursor = req.Cursor()
        while True:
            page = self.send(make_spec(cursor.after))
            yield from page.data
            if not cursor.advance(page):
                return


class Files:
    """``/files`` endpoints."""

    def __init__(self, client: MKA1Client) -> None:
        self._c = client

    def upload(
        self,
        path: str | Path,
        purpose: str = "fine-tune",
        filename: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> FileObject:
        """Upload a file, streamed from disk (``idempotency_key``: a repeat returns the first file)."""
        return self._c.send(req.files_upload(path, purpose, filename, idempotency_key))

    def retrieve(self, file_id: str) -> FileObject:
        """Get one file's metadata."""
        return self._c.send(req.files_retrieve(file_id))

    def list(
        self, purpose: str | None = None, order: req.Order | None = None, limit: int | None = None
    ) -> Iterator[FileObject]:
        """Iterate over all files (``limit`` is the page size)."""
        return self._c.paginate(lambda after: req.files_list(after, limit, order, purpose))

    def delete(self, file_id: str) -> FileDeleted:
        """Delete a file."""
        return self._c.send(req.files_delete(file_id))

    def content(self, file_id: str) -> bytes:
        """Download a file's content."""
        return self._c.send(req.files_content(file_id))


class Jobs:
    """``/fine_tuning/jobs`` endpoints."""

    def __init__(self, client: MKA1Client) -> None:
        self._c = client

    def create(self, request: JobCreateRequest, *, idempotency_key: str | None = None) -> FineTuningJob:
        """Create a fine-tuning job (``idempotency_key``: a repeat returns the first job)."""
        return self._c.send(req.jobs_create(request, idempotency_key))

    def retrieve(self, job_id: str) -> FineTuningJob:
        """Get a job."""
        return self._c.send(req.jobs_retrieve(job_id))

    def list(
        self, metadata: Mapping[str, str] | None = None, limit: int | None = None
    ) -> Iterator[FineTuningJob]:
        """Iterate over jobs, optionally filtered by metadata (``limit`` is the page size)."""
        return self._c.paginate(lambda after: req.jobs_list(after, limit, metadata))

    def list_events(
        self, job_id: str, after: str | None = None, limit: int | None = None
    ) -> ListPage[FineTuningJobEvent]:
        """One page of events, newest first."""
        return self._c.send(req.jobs_events(job_id, after, limit))

    def new_events(
        self, job_id: str, since_id: str | None, page_size: int = req.EVENTS_PAGE_SIZE
    ) -> builtins.list[FineTuningJobEvent]:
        """Events newer than ``since_id`` (all when None), oldest first."""
        collector = req.NewEventsCollector(since_id)
        while collector.feed(self._c.send(req.jobs_events(job_id, collector.cursor.after, page_size))):
            pass
        return collector.result()

    def list_checkpoints(self, job_id: str, limit: int | None = None) -> Iterator[FineTuningJobCheckpoint]:
        """Iterate over a job's checkpoints."""
        return self._c.paginate(lambda after: req.jobs_checkpoints(job_id, after, limit))

    def pause(self, job_id: str) -> FineTuningJob:
        """Pause a running job."""
        return self._c.send(req.jobs_action(job_id, "pause"))

    def resume(self, job_id: str) -> FineTuningJob:
        """Resume a paused job."""
        return self._c.send(req.jobs_action(job_id, "resume"))

    def cancel(self, job_id: str) -> FineTuningJob:
        """Cancel a job."""
        return self._c.send(req.jobs_action(job_id, "cancel"))


class Responses:
    """``/responses`` endpoint."""

    def __init__(self, client: MKA1Client) -> None:
        self._c = client

    def create(self, request: ResponseCreateRequest, *, idempotency_key: str | None = None) -> ResponseObject:
        """Generate a response (e.g. from a fine-tuned model); a keyed repeat returns the first answer."""
        return self._c.send(req.responses_create(request, idempotency_key))

    def stream(self, request: ResponseCreateRequest) -> Generator[ResponseStreamEvent, None, None]:
        """Generate with ``stream: true``, yielding each event as it arrives (the text grows with each
        ``response.output_text.delta``; the last event carries the final response). A server that answers
        whole instead yields its one final event. Closing the generator early closes the connection."""
        spec = req.responses_stream(request)
        with self._c.open_stream(spec) as response:
            if not _responses.is_event_stream(response):
                response.read()
                yield spec.parse(response)
                return
            decoder = _responses.SSEDecoder()
            for line in self._c.iter_lines(response, f"{spec.method} {spec.path} (stream)"):
                data = decoder.feed(line)
                if data is None:
                    continue
                event = _responses.stream_event(data, response.status_code)
                if event is None:
                    return
                yield event


__all__ = ["Files", "Jobs", "MKA1Client", "Responses"]
