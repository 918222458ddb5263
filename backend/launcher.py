"""Run the backend in a subprocess (``python -m backend serve``) and wait until it answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
from pydantic import SecretStr

from backend.layout import Layout
from backend.settings import BackendSettings
from contract.wire import API_PREFIX, BACKEND_SERVICE, HEALTH_PATH

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
ENV_PREFIX = str(BackendSettings.model_config.get("env_prefix", "")).upper()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the server binds it with SO_REUSEADDR right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def health_pid(response: httpx.Response) -> int | None:
    """The server pid an ftpipe backend's health answer carries; None for any other answer."""
    try:
        body = response.json() if response.status_code == 200 else None
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("service") != BACKEND_SERVICE:
        return None
    pid = body.get("pid")
    return pid if isinstance(pid, int) else None


def backend_env(
    settings: BackendSettings, *, data_dir: Path, port: int, api_key: SecretStr
) -> dict[str, str]:
    """This environment without its own backend settings, plus every field of `settings` as an env var.

    Built from the model's fields, so a newly added setting reaches the server too. The API key travels
    only here (never argv, never printed): the server then treats it as configured and does not echo it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    values = settings.model_dump(mode="json")  # secrets come out masked; the key is set below
    values.update(data_dir=str(data_dir), port=port)
    for name in BackendSettings.model_fields:
        value = values[name]
        if value is None:
            continue  # unset optional setting: the server applies the same default
        env[f"{ENV_PREFIX}{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env[f"{ENV_PREFIX}API_KEY"] = api_key.get_secret_value()
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RunningBackend:
    """A backend subprocess bound to one loopback port and one data_dir; a context manager."""

    def __init__(self, settings: BackendSettings, port: int) -> None:
        self.settings = settings
        self.host = settings.host
        self.port = port if port != 0 else free_port(settings.host)
        self.data_dir = settings.data_dir.expanduser().resolve()
        self.api_key: SecretStr = settings.resolved_api_key()
        self.base_url = f"http://{self.host}:{self.port}{API_PREFIX}"
        self.log_path = Layout(self.data_dir).server_log
        self._proc: subprocess.Popen[bytes] | None = None

    # process control ---------------------------------------------------------------------------
    def start(self) -> RunningBackend:
        """Start the server process and block until /health answers."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "backend", "serve", "--host", self.host, "--port", str(self.port)],
                env=self._child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_healthy()
        return self

    def _child_env(self) -> dict[str, str]:
        return backend_env(self.settings, data_dir=self.data_dir, port=self.port, api_key=self.api_key)

    def _wait_healthy(self) -> None:
        from client.tls import ssl_context

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        url = self.base_url + HEALTH_PATH
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"backend exited with code {self._proc.returncode} during startup:\n{self.log_tail()}"
                )
            try:
                # Only our child's answer counts: another server already on the port would answer too.
                if health_pid(httpx.get(url, timeout=1.0, verify=ssl_context())) == self._proc.pid:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(
            f"backend did not answer {url} within {STARTUP_TIMEOUT_S:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, n_chars: int = 4000) -> str:
        """End of the server log with the API key masked."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")[-n_chars:]
        except OSError:
            return ""
        return text.replace(self.api_key.get_secret_value(), "***")

    def stop(self) -> None:
        """Graceful stop (SIGTERM: running jobs checkpoint and re-queue); SIGKILL if it hangs."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the server (its workers notice and exit on their own)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        """Stop gracefully and start again on the same port and data_dir."""
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        """The server process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def __enter__(self) -> RunningBackend:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_backend(settings: BackendSettings | None = None, *, port: int | None = None) -> RunningBackend:
    """Start a backend subprocess; use as ``with start_backend(settings) as rb: ...``.

    ``port`` 0 (the default when neither ``port`` nor ``settings`` is given) picks a free loopback port.
    """
    if settings is None:
        settings = BackendSettings()
        chosen = 0 if port is None else port
    else:
        chosen = settings.port if port is None else port
    return RunningBackend(settings, chosen).start()
