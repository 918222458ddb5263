"""Asynchronous MKA1 client: sends the specs built in ``client._requests``."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
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
from client.pricing import AsyncPricing
from client.settings import ClientSettings

T = TypeVar("T")
R = TypeVar("R")

# Connections per httpx pool. httpcore 1.0 re-scans every connection of a pool for each idle one whenever a
# request starts or ends, which is quadratic in the pool's size: an eval's 105 calls through one pool of 128
# connections spent ~1 s of the caller's CPU there. Larger limits are spread over pools of this size.
POOL_SIZE = 16


class AsyncMKA1Client:
    """Asynchronous client; use as an async context manager (or await ``aclose()``)."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_connections: int | None = None,
    ) -> None:
        """``max_connections``: open (and kept-alive) connections, for callers with more requests in flight
        than httpx's default pool (100 open, 20 kept) holds, over pools of at most POOL_SIZE (each request
        goes to the pool with the fewest in flight); ignored with a ``transport``."""
        self.settings = settings if settings is not None else ClientSettings()
        self._sleep = sleep  # tests pass a recorder instead of waiting out the backoff
        kwargs = req.client_kwargs(self.settings, transport)
        sizes = [None] if max_connections is None or transport is not None else _pool_sizes(max_connections)
        self._pools: list[httpx.AsyncClient] = []
        for size in sizes:
            if size is not None:
                kwargs["limits"] = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            self._pools.append(httpx.AsyncClient(**kwargs))
        self._in_flight = [0] * len(self._pools)
        self.files = AsyncFiles(self)
        self.jobs = AsyncJobs(self)
        self.responses = AsyncResponses(self)
        self.pricing = AsyncPricing(self)

    def __repr__(self) -> str:
        return req.client_repr(type(self).__name__, self.settings)

    async def __aenter__(self) -> AsyncMKA1Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying connection pools (all of them, also when closing one fails)."""
        async with contextlib.AsyncExitStack() as pools:
            for pool in self._pools:
                pools.push_async_callback(pool.aclose)

    @contextlib.contextmanager
    def _pool(self) -> Iterator[httpx.AsyncClient]:
        """The pool with the fewest requests in flight, held for one request."""
        i = min(range(len(self._pools)), key=self._in_flight.__getitem__)
        self._in_flight[i] += 1
        try:
            yield self._pools[i]
        finally:
            self._in_flight[i] -= 1

    async def send(self, spec: req.RequestSpec[T]) -> T:
        """Send one request, retrying it in place when ``client.retry`` allows; raise ``client.errors`` on failure."""
        return await self._retrying(spec, self._send_once)

    @contextlib.asynccontextmanager
    async def open_stream(self, spec: req.RequestSpec[T]) -> AsyncIterator[httpx.Response]:
        """Send ``spec`` and yield its successful response unread (closed on exit); error statuses raise.

        Only the opening is retried in place (as ``send`` would retry the request); reading is the caller's.
        """
        # The pool counts the stream as in flight until it is closed: its connection is busy until then.
        with self._pool() as http:
            response = await self._retrying(spec, lambda s: self._open_once(s, http))
            try:
                yield response
            finally:
                await response.aclose()

    async def _open_once(self, spec: req.RequestSpec[T], http: httpx.AsyncClient) -> httpx.Response:
        try:
            with req.httpx_request_args(spec, self.settings) as args:
                response = await http.send(http.build_request(**args), stream=True)
            if response.status_code >= 400:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx.TransportError as exc:
            raise _responses.transport_error(exc, f"{spec.method} {spec.path}") from exc
        return _responses.handle(response, lambda r: r)

    async def iter_lines(self, response: httpx.Response, what: str) -> AsyncIterator[str]:
        """``response``'s text lines as they arrive; a connection lost mid-stream is ``APIConnectionError``."""
        try:
            async for line in response.aiter_lines():
                yield line
        except httpx.TransportError as exc:
            raise _responses.transport_error(exc, what) from exc

    async def _retrying(
        self, spec: req.RequestSpec[T], attempt: Callable[[req.RequestSpec[T]], Awaitable[R]]
    ) -> R:
        retries_taken = 0
        while True:
            try:
                return await attempt(spec)
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
                await self._sleep(delay)

    async def _send_once(self, spec: req.RequestSpec[T]) -> T:
        try:
            with req.httpx_request_args(spec, self.settings) as args, self._pool() as http:
                response = await http.request(**args)
        except httpx.TransportError as exc:
            raise _responses.transport_error(exc, f"{spec.method} {spec.path}") from exc
        return _responses.handle(response, spec.parse)

    async def paginate(
        self, make_spec: Callable[[str | None], req.RequestSpec[ListPage[T]]]
    ) -> AsyncIterator[T]:
        """Yield items across pages, following ``after=<last id>`` while ``has_more``."""
        cursor = req.Cursor()
        while True:
            page = await self.send(make_spec(cursor.after))
            for item in page.data:
                yield item
            if not cursor.advance(page):
                return


class AsyncFiles:
    """``/files`` endpoints."""

    def __init__(self, client: AsyncMKA1Client) -> None:
        self._c = client

    async def upload(
        self,
        path: str | Path,
        purpose: str = "fine-tune",
        filename: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> FileObject:
        """Upload a file, streamed from disk (``idempotency_key``: a repeat returns the first file)."""
        return await self._c.send(req.files_upload(path, purpose, filename, idempotency_key))

    async def retrieve(self, file_id: str) -> FileObject:
        """Get one file's metadata."""
        return await self._c.send(req.files_retrieve(file_id))

    def list(
        self, purpose: str | None = None, order: req.Order | None = None, limit: int | None = None
    ) -> AsyncIterator[FileObject]:
        """Iterate over all files (``limit`` is the page size)."""
        return self._c.paginate(lambda after: req.files_list(after, limit, order, purpose))

    async def delete(self, file_id: str) -> FileDeleted:
        """Delete a file."""
        return await self._c.send(req.files_delete(file_id))

    async def content(self, file_id: str) -> bytes:
        """Download a file's content."""
        return await self._c.send(req.files_content(file_id))


class AsyncJobs:
    """``/fine_tuning/jobs`` endpoints."""

    def __init__(self, client: AsyncMKA1Client) -> None:
        self._c = client

    async def create(self, request: JobCreateRequest, *, idempotency_key: str | None = None) -> FineTuningJob:
        """Create a fine-tuning job (``idempotency_key``: a repeat returns the first job)."""
        return await self._c.send(req.jobs_create(request, idempotency_key))

    async def retrieve(self, job_id: str) -> FineTuningJob:
        """Get a job."""
        return await self._c.send(req.jobs_retrieve(job_id))

    def list(
        self, metadata: Mapping[str, str] | None = None, limit: int | None = None
    ) -> AsyncIterator[FineTuningJob]:
        """Iterate over jobs, optionally filtered by metadata (``limit`` is the page size)."""
        return self._c.paginate(lambda after: req.jobs_list(after, limit, metadata))

    async def list_events(
        self, job_id: str, after: str | None = None, limit: int | None = None
    ) -> ListPage[FineTuningJobEvent]:
        """One page of events, newest first."""
        return await self._c.send(req.jobs_events(job_id, after, limit))

    async def new_events(
        self, job_id: str, since_id: str | None, page_size: int = req.EVENTS_PAGE_SIZE
    ) -> builtins.list[FineTuningJobEvent]:
        """Events newer than ``since_id`` (all when None), oldest first."""
        collector = req.NewEventsCollector(since_id)
        while collector.feed(await self._c.send(req.jobs_events(job_id, collector.cursor.after, page_size))):
            pass
        return collector.result()

    def list_checkpoints(
        self, job_id: str, limit: int | None = None
    ) -> AsyncIterator[FineTuningJobCheckpoint]:
        """Iterate over a job's checkpoints."""
        return self._c.paginate(lambda after: req.jobs_checkpoints(job_id, after, limit))

    async def pause(self, job_id: str) -> FineTuningJob:
        """Pause a running job."""
        return await self._c.send(req.jobs_action(job_id, "pause"))

    async def resume(self, job_id: str) -> FineTuningJob:
        """Resume a paused job."""
        return await self._c.send(req.jobs_action(job_id, "resume"))

    async def cancel(self, job_id: str) -> FineTuningJob:
        """Cancel a job."""
        return await self._c.send(req.jobs_action(job_id, "cancel"))


class AsyncResponses:
    """``/responses`` endpoint."""

    def __init__(self, client: AsyncMKA1Client) -> None:
        self._c = client

    async def create(
        self, request: ResponseCreateRequest, *, idempotency_key: str | None = None
    ) -> ResponseObject:
        """Generate a response (e.g. from a fine-tuned model); a keyed repeat returns the first answer."""
        return await self._c.send(req.responses_create(request, idempotency_key))

    async def stream(self, request: ResponseCreateRequest) -> AsyncGenerator[ResponseStreamEvent, None]:
        """Generate with ``stream: true``, yielding each event as it arrives (see ``Responses.stream``)."""
        spec = req.responses_stream(request)
        async with self._c.open_stream(spec) as response:
            if not _responses.is_event_stream(response):
                await response.aread()
                yield spec.parse(response)
                return
            decoder = _responses.SSEDecoder()
            async for line in self._c.iter_lines(response, f"{spec.method} {spec.path} (stream)"):
                data = decoder.feed(line)
                if data is None:
                    continue
                event = _responses.stream_event(data, response.status_code)
                if event is None:
                    return
                yield event


__all__ = ["AsyncFiles", "AsyncJobs", "AsyncMKA1Client", "AsyncResponses"]


def _pool_sizes(max_connections: int) -> list[int | None]:
    """``max_connections`` split into pools of at most POOL_SIZE, as even as can be."""
    n = max(1, -(-max_connections // POOL_SIZE))
    base, extra = divmod(max(1, max_connections), n)
    return [base + (i < extra) for i in range(n)]
