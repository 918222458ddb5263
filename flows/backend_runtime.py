"""Pick the API a run talks to: a remote MKA1 API when configured, else the embedded local backend.

Remote when the ``base_url`` parameter, ``MKA1_API_KEY`` or ``MKA1_BASE_URL`` is set. Otherwise a backend
already listening at the configured local URL is reused (health check + a key check), or one is started
for the duration of the run. Keys travel only inside ``ClientSettings`` (a ``SecretStr``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from client import ClientSettings, MKA1Client
from client.errors import AuthenticationError, PermissionDeniedError
from contract.wire import API_PREFIX

HEALTH_PATH = "/health"


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


def wants_remote(base_url: str | None) -> bool:
    """True when the caller configured a remote API (explicit URL or MKA1_* env)."""
    return bool(base_url or os.environ.get("MKA1_API_KEY") or os.environ.get("MKA1_BASE_URL"))


def _settings(**overrides: Any) -> ClientSettings:
    # Explicit kwargs win over MKA1_* env; the rest (timeouts, obo) still come from the env.
    return ClientSettings(**{k: v for k, v in overrides.items() if v is not None})


def is_healthy(base_url: str, timeout_s: float = 2.0) -> bool:
    """True when ``<base_url>/health`` answers 2xx."""
    try:
        resp = httpx.get(base_url.rstrip("/") + HEALTH_PATH, timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return resp.is_success


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


@contextmanager
def open_connection(base_url: str | None = None, on_behalf_of: str | None = None) -> Iterator[Connection]:
    """Yield the connection for one run; an embedded backend started here stops when the block exits."""
    if _override is not None:
        yield _override
        return
    if wants_remote(base_url):
        settings = _settings(base_url=base_url, on_behalf_of=on_behalf_of)
        yield Connection(settings=settings, server_id=settings.base_url, embedded=False)
        return

    # Imported lazily: a remote run never needs the backend's heavier dependencies.
    from backend.launcher import start_backend
    from backend.settings import BackendSettings

    bs = BackendSettings()
    server_id = f"embedded:{bs.data_dir.expanduser().resolve()}"
    local_url = f"http://{bs.host}:{bs.port}{API_PREFIX}"
    key = bs.resolved_api_key()
    if bs.port and is_healthy(local_url) and _key_accepted(local_url, key):
        yield Connection(
            _settings(base_url=local_url, api_key=key, on_behalf_of=on_behalf_of), server_id, True
        )
        return
    with start_backend(bs) as rb:
        settings = _settings(base_url=rb.base_url, api_key=rb.api_key, on_behalf_of=on_behalf_of)
        yield Connection(settings, server_id, True)
