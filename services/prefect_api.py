"""Which Prefect API a command's flow runs report to, and the local Prefect server ftpipe keeps for them.

A ``PREFECT_API_URL`` the user configured (env, profile, prefect.toml) always wins. Otherwise ftpipe
leases its own local Prefect server (``services.host prefect``, loopback, free port, the user's
PREFECT_HOME database): with ``FTPIPE_SERVICES_KEEP`` (the default) a long-lived one with its UI, reused by
later commands and stopped after the idle timeout; without, a temporary one (no UI) that lives only while
runs use it, as Prefect's own temporary server would, but which a killed run cannot orphan.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from services import manager
from services.registry import PREFECT_SERVICE, ServiceDir, ServiceRecord, client_label, config_digest
from services.settings import ServicesSettings

LOOPBACK = "127.0.0.1"
API_ENV = "PREFECT_API_URL"


@dataclass(frozen=True)
class PrefectApi:
    """The API a command's runs use: its URL, its UI (None without one), and who runs it."""

    api_url: str | None
    ui_url: str | None
    managed: bool  # an ftpipe service, leased by this command
    started: bool  # started by this command
    idle_timeout_s: float | None = None
    pid: int | None = None  # the server's process, when ftpipe runs it


def serving_pids() -> list[int]:
    """The process of ftpipe's Prefect server this process's runs report to (none for a configured API)."""
    return [_current.pid] if _current is not None and _current.pid is not None else []


_current: PrefectApi | None = None


def prefect_service(settings: ServicesSettings | None = None) -> ServiceDir:
    """The registry folder of ftpipe's local Prefect server."""
    return ServiceDir((settings or ServicesSettings()).root(), PREFECT_SERVICE)


def prefect_ui_url() -> str | None:
    """The Prefect UI of the API this process's runs report to, or None when there is no UI to open."""
    if _current is not None:
        return _current.ui_url
    if "prefect" not in sys.modules:
        return None
    from prefect.settings import get_current_settings

    current = get_current_settings()
    return current.ui_url if current.api.url else None


def _in_process_server_running() -> bool:
    # prefect_test_harness (and Prefect itself, once started) registers its temporary server here; runs in
    # this process already report to it. Only looked up when Prefect's server module is loaded anyway.
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return False
    server = getattr(server_module, "SubprocessASGIServer", None)
    instance = getattr(server, "_instances", {}).get(None)
    return bool(getattr(instance, "running", False))


def server_port() -> int:
    """A free loopback port for ftpipe's Prefect server, never the embedded backend's configured one (which is
    free until a run starts the backend, after this server)."""
    from backend.launcher import free_port
    from backend.settings import BackendSettings

    reserved = BackendSettings().port
    while (port := free_port(LOOPBACK)) == reserved:
        pass
    return port


def _server_env(keep: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(API_ENV, None)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["PYTHONUNBUFFERED"] = "1"
    if not keep:
        # What Prefect's own temporary server runs with: no UI, only the services an ephemeral server needs.
        env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    return env


def _config_hash(keep: bool) -> str:
    # Only what changes the server's shape: a temporary server (no UI) is not reused as the long-lived one.
    # (and a server of another Prefect install or version is not reused either).
    import prefect

    names = ("PREFECT_HOME", "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
    return config_digest(
        {
            "keep": str(keep),
            "python": sys.executable,
            "prefect": str(prefect.__version__),
            **{n: os.environ.get(n, "") for n in names},
        }
    )


def _flush_prefect_workers(timeout_s: float = 5.0) -> None:
    # Prefect sends run logs and events from background workers and flushes them at exit; a per-run
    # server is gone by then, so they are sent now. Best effort: a lost log line must not fail the run.
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout_s)
        EventsWorker.drain_all(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - see above
        pass


@contextmanager
def prefect_api_for_run(command: str | None = None) -> Iterator[PrefectApi]:
    """Point this process (and its children) at the Prefect API its runs should use, for the block.

    Import Prefect's settings here (so ``ftpipe --help`` never does); flows started inside the block report
    to the chosen API.
    """
    global _current
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, get_current_settings, temporary_settings

    configured = get_current_settings().api.url
    if configured:
        yield PrefectApi(configured, get_current_settings().ui_url, managed=False, started=False)
        return
    if _in_process_server_running():
        yield PrefectApi(None, None, managed=False, started=False)
        return

    settings = ServicesSettings()
    sd = prefect_service(settings)
    digest = _config_hash(settings.keep)

    def spec() -> manager.Spec:
        port = server_port()
        base = f"http://{LOOPBACK}:{port}"
        return manager.Spec(
            kind="prefect",
            host=LOOPBACK,
            port=port,
            health_url=f"{base}/api/health",
            url=f"{base}/api",
            env=_server_env(settings.keep),
            idle_timeout_s=settings.lifetime_s(),
            ui_url=base if settings.keep else None,
            config_hash=digest,
        )

    previous_env = os.environ.get(API_ENV)
    with manager.leased(
        sd,
        command or client_label(),
        spec,
        lambda record: record.url + "/health",
        start_timeout_s=settings.start_timeout_s,
        stop_when_unused=not settings.keep,
        config_hash=digest,
    ) as acquired:
        record: ServiceRecord = acquired.record
        api = PrefectApi(record.url, record.ui_url, True, acquired.started, record.idle_timeout_s, record.pid)
        os.environ[API_ENV] = record.url  # child processes (Dask workers, flow subprocesses) follow
        updates: dict[Any, Any] = {PREFECT_API_URL: record.url}
        if record.ui_url is None:
            # A per-run server serves no UI: no "View at ..." link, no UI URL for the progress display.
            updates[PREFECT_UI_URL] = ""
        try:
            with temporary_settings(updates=updates):
                _current = api
                yield api
        finally:
            _current = None
            if not settings.keep:
                _flush_prefect_workers()  # before the last client out stops the server
            if previous_env is None:
                os.environ.pop(API_ENV, None)
            else:
                os.environ[API_ENV] = previous_env
