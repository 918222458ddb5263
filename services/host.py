"""The process a local service runs in: ``python -m services.host {prefect|backend} --dir D --port P ...``.

It runs the server in its main thread (uvicorn, which stops gracefully on SIGTERM) and a watchdog thread
that stops it once no live client lease has been seen for ``--idle-timeout`` seconds. The watchdog takes
the service's lock before it decides and keeps it until this process exits, so a client arriving meanwhile
waits and then starts a fresh service instead of leasing one that is going away (or racing it for the port).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.registry import ServiceDir

# After asking the server to stop, the longest the watchdog lets the shutdown take (a backend pausing its
# workers needs up to ~20 s) before it ends the process itself.
FORCE_EXIT_AFTER_S = 60.0
PRIVATE_UMASK = 0o077

log = logging.getLogger("ftpipe.services")


class Watchdog:
    """Stops this process after ``idle_timeout_s`` without a live lease on its service."""

    def __init__(self, sd: ServiceDir, idle_timeout_s: float) -> None:
        self.sd = sd
        self.idle_timeout_s = idle_timeout_s
        # Lease files are tiny; a long timeout needs no fine polling, a per-run service (0 s) stops promptly.
        self.poll_s = min(2.0, max(0.25, idle_timeout_s / 20))
        self.last_busy = time.monotonic()
        self.idle_noted: bool | None = None

    def run(self) -> None:
        """Poll the leases until idle for long enough, then stop the server (never returns normally)."""
        while True:
            time.sleep(self.poll_s)
            if not self.idle_out():
                continue
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(FORCE_EXIT_AFTER_S)
            log.error("shutdown took over %.0fs: exiting", FORCE_EXIT_AFTER_S)
            os._exit(1)

    def idle_out(self) -> bool:
        """One look at the leases: True once idle for the timeout, the record removed and the service's lock
        held (its fd stays open until this process exits, so no client reuses or restarts it meanwhile)."""
        if self.sd.leases():
            self.last_busy = time.monotonic()
            if self.idle_noted is not False:
                self.sd.write_idle_since(None)
                self.idle_noted = False
            return False
        if self.idle_noted is not True:
            self.sd.write_idle_since(time.time() - (time.monotonic() - self.last_busy))
            self.idle_noted = True
        if time.monotonic() - self.last_busy < self.idle_timeout_s:
            return False
        fd = self.sd.open_lock()
        if not self.sd.acquire(fd, 0):
            os.close(fd)  # a client is starting, reusing or stopping it: look again next round
            return False
        if self.sd.leases():
            os.close(fd)
            return False
        # Keep `fd` (the lock) open: it is released when this process exits, after the port is freed.
        self.sd.remove_record(os.getpid())
        log.warning("no ftpipe client for %.0fs: stopping", time.monotonic() - self.last_busy)
        return True


def warm_routes(app: Any, path: str) -> None:
    """Walk every route of ``app`` once with a request for ``path`` (matching none), before it serves.

    FastAPI builds an included router's route state (dependants, pydantic adapters) the first time a request
    walks past its routes; Prefect's ~160 routes took 0.3 s idle and 0.55-0.85 s in a first run, on the
    client's first POST (its CSRF-token probe walks them all), i.e. inside the first flow run's start. Best
    effort: a failure only leaves the routes to be built lazily, as before.
    """
    import asyncio
    from contextlib import suppress

    from starlette.exceptions import HTTPException

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def walk() -> None:
        with suppress(HTTPException):  # a router without an app around it raises its 404
            await app.router(scope, receive, send)

    started = time.perf_counter()
    try:
        asyncio.run(walk())
    except Exception:
        log.warning("could not build the routes ahead (they are built on first use)", exc_info=True)
        return
    log.info("routes built in %.2fs", time.perf_counter() - started)


def serve_prefect(host: str, port: int) -> None:
    """Prefect's API (and its UI unless disabled) from ``create_app``, as ``prefect server start`` runs it."""
    base = f"http://{host}:{port}"
    os.environ.pop("PREFECT_API_URL", None)  # the server is no client of another API
    os.environ["PREFECT_SERVER_API_HOST"] = host
    os.environ["PREFECT_SERVER_API_PORT"] = str(port)
    os.environ.setdefault("PREFECT_UI_API_URL", f"{base}/api")
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app(final=True)
    warm_routes(app, "/api/ftpipe-warm-up")
    uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="error", lifespan="on", timeout_keep_alive=5)
    ).run()


def serve_backend(host: str, port: int) -> int:
    """The embedded backend (settings and key come from the env the starter built)."""
    from backend.cli import main as backend_main

    return backend_main(["serve", "--host", host, "--port", str(port)])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m services.host``."""
    ap = argparse.ArgumentParser(prog="python -m services.host", description=__doc__)
    ap.add_argument("kind", choices=("prefect", "backend"))
    ap.add_argument("--dir", type=Path, required=True, help="the service's registry folder")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--idle-timeout", type=float, required=True, help="seconds without a lease, then stop")
    args = ap.parse_args(argv)
    os.umask(PRIVATE_UMASK)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # Prefect's server configures the root logger too: one copy of each line
    sd = ServiceDir(args.dir.parent, args.dir.name)
    threading.Thread(target=Watchdog(sd, args.idle_timeout).run, name="idle-watchdog", daemon=True).start()
    log.info(
        "%s service pid %d on %s:%d, idle timeout %.0fs",
        args.kind,
        os.getpid(),
        args.host,
        args.port,
        args.idle_timeout,
    )
    try:
        if args.kind == "prefect":
            serve_prefect(args.host, args.port)
            return 0
        return serve_backend(args.host, args.port)
    finally:
        sd.remove_record(os.getpid())
        log.info("%s service pid %d stopped", args.kind, os.getpid())


if __name__ == "__main__":
    raise SystemExit(main())
