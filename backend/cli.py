"""``serve`` command of the embedded backend (``python -m backend serve`` / ``ftpipe backend serve``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

SERVE_EPILOG = """examples:
  ftpipe backend serve                        127.0.0.1:8765, data in the user data dir (key printed once)
  ftpipe backend serve --host 0.0.0.0 --port 9000 --data-dir /srv/ftpipe --workers 2 --log-level warning
  ftpipe backend serve --port 0 --max-steps-per-job 50                       a free port; benchmarks
  ftpipe backend serve --fault-rates all=0.2 --fault-kinds 503,drop --fault-seed 1 --fault-slow-s 5 --fault-retry-after-s 1
"""

INTERRUPTED = 130  # exit code after Ctrl-C (SIGINT), as the ftpipe CLI


def add_backend_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``serve`` on a parent CLI's subparsers (``ftpipe backend serve ...``)."""
    serve = subparsers.add_parser(
        "serve",
        help="run the embedded MKA1-compatible backend",
        description="Serve the MKA1-compatible API; settings come from FTPIPE_BACKEND_* and these flags.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8765; 0 picks a free one)")
    serve.add_argument("--data-dir", type=Path, default=None, help="where files, jobs and models are kept")
    serve.add_argument("--workers", type=int, default=None, help="training worker processes (default 1)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="server log level (default: %(default)s)",
    )
    serve.add_argument(
        "--max-steps-per-job",
        type=int,
        default=None,
        help="benchmarks: train at most N optimizer steps per job",
    )
    faults = serve.add_argument_group("fault injection (reliability tests; off by default)")
    faults.add_argument(
        "--fault-rates", default=None, metavar="SPEC", help="e.g. 'all=0.2' or 'all=0.1,files.drop_after=0.3'"
    )
    faults.add_argument("--fault-kinds", default=None, help="comma-separated kinds (default: all)")
    faults.add_argument("--fault-seed", type=int, default=None, help="seed of the fault draws (default 0)")
    faults.add_argument(
        "--fault-slow-s", type=float, default=None, help="delay of 'slow' answers (default 65)"
    )
    faults.add_argument(
        "--fault-retry-after-s", type=float, default=None, help="Retry-After of injected 429/503 (default 1)"
    )
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    """Build settings from env + flags, print the URL and key once, and run uvicorn until stopped."""
    import os
    import socket

    import uvicorn

    from backend.app import create_app
    from backend.layout import PRIVATE_UMASK
    from backend.settings import BackendSettings
    from contract.wire import API_PREFIX

    # Files this server and its workers create (SQLite, uploads, checkpoints, logs) stay private.
    os.umask(PRIVATE_UMASK)
    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.workers is not None:
        overrides["worker_concurrency"] = args.workers
    for flag in (
        "max_steps_per_job",
        "fault_rates",
        "fault_kinds",
        "fault_seed",
        "fault_slow_s",
        "fault_retry_after_s",
    ):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    settings = BackendSettings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Bound before the app is built: a taken port is one line at once, not a traceback after the start-up work.
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        print(
            f"backend serve: cannot listen on {settings.host}:{settings.port} ({exc.strerror}); "
            "stop what uses it or choose another port: --port / FTPIPE_BACKEND_PORT",
            file=sys.stderr,
            flush=True,
        )
        return 1
    app = create_app(settings)
    port = sock.getsockname()[1]
    print(f"ftpipe backend listening on http://{settings.host}:{port}{API_PREFIX}", flush=True)
    if settings.api_key is None:
        # The one deliberate place a generated key is shown: the operator needs it to call the API.
        print(f"API key: {app.state.backend.api_key.get_secret_value()}", flush=True)
    else:
        # A configured key is already known to whoever set it; never copy it into (captured) stdout.
        print("API key: from FTPIPE_BACKEND_API_KEY (not shown)", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        # Ctrl-C: uvicorn has already shut down as on SIGTERM (workers checkpointed, jobs re-queued) and
        # re-raised the signal; that is the expected way out, so no traceback.
        print(
            "ftpipe backend stopped (interrupted): running jobs were checkpointed and re-queued", flush=True
        )
        return INTERRUPTED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m backend``."""
    parser = argparse.ArgumentParser(prog="python -m backend", description="ftpipe embedded backend")
    sub = parser.add_subparsers(dest="command", required=True)
    add_backend_commands(sub)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
