"""Pick the API a run talks to: a remote MKA1 API when configured, else the embedded local backend.

Remote when the ``base_url`` parameter, ``MKA1_API_KEY`` or ``MKA1_BASE_URL`` is set. Otherwise the
embedded backend: one ftpipe started earlier for the same data dir is leased (``services.embedded``: it is
shared by concurrent runs and stops when unused), else one someone serves at the configured local URL is
reused (health check + a key check), else one is started as a shared service; a port held by anything else
stops the run with ``LocalPortTaken``. Keys travel only inside ``ClientSettings`` (a ``SecretStr``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from client import ClientSettings, MKA1Client
from client.errors import AuthenticationError, PermissionDeniedError
from client.tls import ssl_context
from contract.wire import API_PREFIX, HEALTH_PATH
from tasks.errors import PipelineError

if TYPE_CHECKING:
    from backend.settings import BackendSettings

# /health of a busy backend may be slow on a loaded machine: a few patient tries before calling it foreign.
HEALTH_ATTEMPTS = 3
HEALTH_TIMEOUT_S = 5.0
PORT_SETTING = "FTPIPE_BACKEND_PORT"
KEY_SETTING = "FTPIPE_BACKEND_API_KEY"


class LocalPortTaken(PipelineError):
    """The embedded backend's port is held by something this run cannot use (nothing was started)."""


@dataclass(frozen=True)
class Connection:
    """Where to send requests and how to identify that server in the local indexes."""

    settings: ClientSettings
    server_id: str
    embedded: bool
    transport: httpx.BaseTransport | None = None


_override_lock = threading.Lock()
_override: Connection | None = None


@contextmanager
def use_connection(connection: Connection) -> Iterator[None]:
    """Force every run in this process onto ``connection`` (tests: a MockTransport-backed fake)."""
    global _override
    with _override_lock:
        previous, _override = _override, connection
    try:
        yield
    finally:
        with _override_lock:
            _override = previous


def connection_overridden() -> bool:
    """True inside ``use_connection``: runs go to that connection, not to a local backend or remote API."""
    return _override is not None


def wants_remote(base_url: str | None) -> bool:
    """True when the caller configured a remote API (explicit URL or MKA1_* env)."""
    return bool(base_url or os.environ.get("MKA1_API_KEY") or os.environ.get("MKA1_BASE_URL"))


def _settings(**overrides: Any) -> ClientSettings:
    # Explicit kwargs win over MKA1_* env; the rest (timeouts, obo) still come from the env.
    return ClientSettings(**{k: v for k, v in overrides.items() if v is not None})


def _key_accepted(base_url: str, api_key: SecretStr) -> bool:
    """True when the running backend accepts ``api_key``; False on 401/403.

    Transient failures are retried in place by the client and re-raised when they persist: a False here
    would start a second backend on the same data directory and port.
    """
    with MKA1Client(_settings(base_url=base_url, api_key=api_key)) as client:
        try:
            next(iter(client.files.list(limit=1)), None)
        except (AuthenticationError, PermissionDeniedError):
            return False
    return True


def _health(url: str) -> httpx.Response | str:
    """The health route's answer, or why there was none after ``HEALTH_ATTEMPTS`` patient tries."""
    from client.retry import backoff_delay

    why = ""
    for attempt in range(1, HEALTH_ATTEMPTS + 1):
        try:
            return httpx.get(url, timeout=HEALTH_TIMEOUT_S, verify=ssl_context())
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if attempt < HEALTH_ATTEMPTS:
            time.sleep(backoff_delay(attempt))
    return why


def reusable_local_backend(bs: BackendSettings) -> bool:
    """True when an ftpipe backend accepting this run's key listens on the configured port; False when the
    port is free (or 0: a free one is picked at start).

    Raises ``LocalPortTaken`` when another program holds the port, or an ftpipe backend that refuses the key:
    starting a backend there would fail to bind, and its health wait could be answered by the old server.
    """
    from backend.launcher import health_pid

    if not bs.port:
        return False
    try:
        with socket.create_connection((bs.host, bs.port), timeout=HEALTH_TIMEOUT_S):
            pass
    except OSError:
        return False  # nothing listens: start one
    local_url = f"http://{bs.host}:{bs.port}{API_PREFIX}"
    answer = _health(local_url + HEALTH_PATH)
    if isinstance(answer, str) or health_pid(answer) is None:
        what = (
            answer
            if isinstance(answer, str)
            else f"HTTP {answer.status_code}, not an ftpipe backend's answer"
        )
        raise LocalPortTaken(
            f"port {bs.port} on {bs.host} is used by a program that is not an ftpipe backend "
            f"(GET {local_url}{HEALTH_PATH}: {what}); stop it or use another port: {PORT_SETTING}"
        )
    if _key_accepted(local_url, bs.resolved_api_key()):
        return True
    whose = (
        KEY_SETTING
        if bs.api_key is not None
        else f"this run's key ({bs.data_dir.expanduser() / 'api_key'}; {KEY_SETTING} is unset)"
    )
    raise LocalPortTaken(
        f"port {bs.port} is used by an ftpipe backend that refuses {whose}; "
        f"set the same key as that backend ({KEY_SETTING}) or another port: {PORT_SETTING}"
    )


def embedded_server_id(bs: BackendSettings) -> str:
    """How the local indexes name the embedded backend of ``bs.data_dir``, wherever it listens."""
    return f"embedded:{bs.data_dir.expanduser().resolve()}"


def server_identity(base_url: str | None = None, on_behalf_of: str | None = None) -> tuple[str, str | None]:
    """(server id, end user) that ``open_connection(base_url, on_behalf_of)`` would index a run under."""
    if _override is not None:
        return _override.server_id, _override.settings.on_behalf_of
    if wants_remote(base_url):
        settings = _settings(base_url=base_url, on_behalf_of=on_behalf_of)
        return settings.base_url, settings.on_behalf_of
    from backend.settings import BackendSettings

    return embedded_server_id(BackendSettings()), _settings(on_behalf_of=on_behalf_of).on_behalf_of


def running_connection(base_url: str | None = None, on_behalf_of: str | None = None) -> Connection | None:
    """The connection ``open_connection`` would yield, when that needs nothing started or leased: the remote
    API, or an embedded backend already running (ftpipe's kept one, else an ftpipe backend on the configured
    port). None when no embedded backend runs, or raises ``LocalPortTaken`` when the port holds another."""
    if _override is not None:
        return _override
    if wants_remote(base_url):
        settings = _settings(base_url=base_url, on_behalf_of=on_behalf_of)
        return Connection(settings, settings.base_url, embedded=False)
    from backend.settings import BackendSettings
    from services.embedded import managed_backend

    bs = BackendSettings()
    if bs.api_key is None and not (bs.data_dir.expanduser() / "api_key").is_file():
        return None  # no backend ever served this data dir: nothing to find, and no key to create
    record = managed_backend(bs)
    if record is not None:
        url = record.url
    elif reusable_local_backend(bs):
        url = f"http://{bs.host}:{bs.port}{API_PREFIX}"
    else:
        return None
    settings = _settings(base_url=url, api_key=bs.resolved_api_key(), on_behalf_of=on_behalf_of)
    return Connection(settings, embedded_server_id(bs), True)


@contextmanager
def open_connection(base_url: str | None = None, on_behalf_of: str | None = None) -> Iterator[Connection]:
    """Yield the connection for one run (the single way in: runs, estimates, ``ftpipe jobs``/``chat``).

    The embedded backend is leased for the block; it stops when no client has used it for the services'
    idle timeout (at once with ``FTPIPE_SERVICES_KEEP=false``), never while another run uses it.
    """
    if _override is not None:
        yield _override
        return
    if wants_remote(base_url):
        settings = _settings(base_url=base_url, on_behalf_of=on_behalf_of)
        yield Connection(settings=settings, server_id=settings.base_url, embedded=False)
        return

    # Imported lazily: a remote run never needs the backend's heavier dependencies.
    from backend.settings import BackendSettings
    from services.embedded import managed_backend, shared_backend

    bs = BackendSettings()
    server_id = embedded_server_id(bs)
    key = bs.resolved_api_key()
    # One ftpipe keeps for this data dir is leased; one someone serves by hand (`ftpipe backend serve`) is
    # used as it is.
    if managed_backend(bs) is None and reusable_local_backend(bs):
        local_url = f"http://{bs.host}:{bs.port}{API_PREFIX}"
        yield Connection(
            _settings(base_url=local_url, api_key=bs.resolved_api_key(), on_behalf_of=on_behalf_of),
            server_id,
            True,
        )
        return
    with shared_backend(bs) as record:
        if not _key_accepted(record.url, key):
            from services.registry import ServiceError

            raise ServiceError(
                f"the embedded backend ftpipe started at {record.url} (pid {record.pid}) refuses the current "
                "FTPIPE_BACKEND_API_KEY; stop it with 'ftpipe services stop backend' and retry"
            )
        settings = _settings(base_url=record.url, api_key=key, on_behalf_of=on_behalf_of)
        yield Connection(settings, server_id, True)
