"""The embedded backend as a shared local service: one per data dir, leased by every run that uses it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from contract.wire import HEALTH_PATH
from services import manager
from services.registry import ServiceDir, ServiceRecord, client_label, config_digest, service_name_for_backend
from services.settings import ServicesSettings

if TYPE_CHECKING:
    from backend.settings import BackendSettings


def backend_service(bs: BackendSettings, settings: ServicesSettings | None = None) -> ServiceDir:
    """The registry folder of the backend serving ``bs.data_dir``."""
    settings = settings or ServicesSettings()
    return ServiceDir(settings.root(), service_name_for_backend(bs.data_dir))


def managed_backend(bs: BackendSettings) -> ServiceRecord | None:
    """The running backend ftpipe started for this data dir, if any."""
    return backend_service(bs).live_record()


@contextmanager
def shared_backend(bs: BackendSettings, command: str | None = None) -> Iterator[ServiceRecord]:
    """Lease the backend for ``bs.data_dir``, starting it (in its own session) when none runs.

    It outlives this block: with ``FTPIPE_SERVICES_KEEP`` (the default) until it has had no client for
    the idle timeout, otherwise until its last client leaves.
    """
    from backend.launcher import backend_env, free_port
    from contract.wire import API_PREFIX

    settings = ServicesSettings()
    sd = backend_service(bs, settings)
    data_dir = bs.data_dir.expanduser().resolve()
    key = bs.resolved_api_key()
    # What the server would be started with, minus where it listens and its key: a change restarts it.
    config = backend_env(bs, data_dir=data_dir, port=0, api_key=key)
    digest = config_digest(
        {k: v for k, v in config.items() if k.startswith("FTPIPE_BACKEND_") and not k.endswith("_API_KEY")}
    )

    def spec() -> manager.Spec:
        port = bs.port or free_port(bs.host)
        url = f"http://{bs.host}:{port}{API_PREFIX}"
        return manager.Spec(
            kind="backend",
            host=bs.host,
            port=port,
            health_url=url + HEALTH_PATH,
            url=url,
            env=backend_env(bs, data_dir=data_dir, port=port, api_key=key),
            idle_timeout_s=settings.lifetime_s(),
            data_dir=str(data_dir),
            config_hash=digest,
            health_names_pid=True,
        )

    with manager.leased(
        sd,
        command or client_label(),
        spec,
        lambda record: record.url + HEALTH_PATH,
        start_timeout_s=settings.start_timeout_s,
        stop_when_unused=not settings.keep,
        config_hash=digest,
    ) as acquired:
        yield acquired.record
