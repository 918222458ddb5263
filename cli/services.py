"""``ftpipe services status|stop``: the local Prefect server and embedded backends ftpipe keeps running."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from cli.common import EXIT_OK, positive_float

if TYPE_CHECKING:
    from rich.console import Console

    from services.manager import ServiceStatus
    from services.prefect_api import PrefectApi

PROG = "ftpipe services"
EPILOG = """examples:
  ftpipe services status              what runs: pid, URL, uptime, clients, when it idles out
  ftpipe services status --json       the same as JSON
  ftpipe services stop                stop everything ftpipe started (gracefully)
  ftpipe services stop backend        stop the embedded backend(s): training jobs pause at a checkpoint
  ftpipe services stop runner         stop the warm runner (runs it started go on to their end)

The warm runner is a process with Python, Prefect and ftpipe loaded that serves `ftpipe run` without
importing them again; a run starts it in the background when none serves its code and settings.
Settings: FTPIPE_SERVICES_KEEP=false (start them per run, stop them after it; no runner),
FTPIPE_SERVICES_RUNNER=false (no warm runner: every run imports everything itself),
FTPIPE_SERVICES_IDLE_TIMEOUT_S (default 1800: a service with no run for that long stops itself),
FTPIPE_SERVICES_DIR (where their state is kept; default <FTPIPE_STATE_DIR>/services).
"""
KINDS = ("prefect", "backend", "runner", "all")


def register(sub: Any) -> None:
    """Add ``services`` to the command tree."""
    p = sub.add_parser(
        "services",
        help="the local Prefect server, embedded backend and warm runner ftpipe keeps running: status, stop",
        description="Background services ftpipe started: a local Prefect server (with its UI), the "
        "embedded backend and the warm runner, shared by runs and stopped after an idle timeout.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_commands,
    )
    p.set_defaults(handler=status_command)


def add_commands(p: argparse.ArgumentParser) -> None:
    """``status`` and ``stop``."""
    sub = p.add_subparsers(dest="services_command", metavar="COMMAND")
    status = sub.add_parser(
        "status",
        help="list the running services (the default)",
        description="List the services ftpipe started: pid, URL, uptime, memory, clients, idle-out time.",
        epilog="example:\n  ftpipe services status --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of a table (e.g. ftpipe services status --json)",
    )
    status.set_defaults(handler=status_command)
    stop = sub.add_parser(
        "stop",
        help="stop services gracefully",
        description="Stop services ftpipe started. The backend pauses running training jobs at a "
        "checkpoint (they resume when it next starts); runs still using a service lose it.",
        epilog="examples:\n  ftpipe services stop\n  ftpipe services stop prefect\n"
        "  ftpipe services stop backend --timeout 90",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stop.add_argument(
        "which",
        nargs="?",
        choices=KINDS,
        default="all",
        help="which services (default: %(default)s; e.g. ftpipe services stop prefect)",
    )
    stop.add_argument(
        "--timeout",
        type=positive_float,
        default=45.0,
        metavar="SECONDS",
        help="wait this long for a graceful stop, then kill (default: %(default)s; e.g. --timeout 90)",
    )
    stop.set_defaults(handler=stop_command)
    p.set_defaults(json=False)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _clients(st: ServiceStatus, now: float) -> str:
    if not st.leases:
        idle = f"idle {_age(now - st.idle_since)}" if st.idle_since is not None else "idle"
        if st.stops_at is not None:
            return f"{idle}, stops in {_age(st.stops_at - now)}"
        return idle
    return ", ".join(f"{lease.command} (pid {lease.pid})" for lease in st.leases)


def status_command(args: argparse.Namespace) -> int:
    """Print what runs; always 0 (nothing running is a fine answer)."""
    import json

    from services.manager import statuses
    from services.settings import ServicesSettings

    root = ServicesSettings().root()
    found = statuses(root)
    now = time.time()
    if getattr(args, "json", False):
        print(
            json.dumps(
                [
                    {
                        "name": st.record.name,
                        "kind": st.record.kind,
                        "pid": st.record.pid,
                        "url": st.record.url,
                        "ui_url": st.record.ui_url,
                        "data_dir": st.record.data_dir,
                        "started_at": st.record.started_at,
                        "uptime_s": round(st.record.uptime_s(), 1),
                        "rss_bytes": st.rss_bytes,
                        "owner": {"pid": st.record.owner_pid, "command": st.record.owner_command},
                        "idle_timeout_s": st.record.idle_timeout_s,
                        "leases": [
                            {"pid": lease.pid, "command": lease.command, "since": lease.since}
                            for lease in st.leases
                        ],
                        "idle_since": st.idle_since,
                        "stops_at": st.stops_at,
                        "log": st.record.log_path,
                    }
                    for st in found
                ],
                indent=2,
            )
        )
        return EXIT_OK
    from services.runner_host import starting_pid

    importing = starting_pid(root)
    starting = f"warm runner starting (pid {importing}, importing; not serving yet)" if importing else ""
    if not found:
        print(starting or f"no ftpipe services running (state: {root})")
        return EXIT_OK
    from cli.present import Screen

    rows = []
    for st in found:
        r = st.record
        rows.append(
            (
                f"backend ({r.data_dir})" if r.kind == "backend" else r.kind,
                str(r.pid),
                r.url,
                r.ui_url or "-",
                _age(r.uptime_s()),
                f"{st.rss_bytes / 2**20:.0f} MiB" if st.rss_bytes is not None else "-",
                _clients(st, now),
                r.owner_command,
            )
        )
    # Screen: a rich table only when whole URLs fit the terminal, else plain columns (folded URLs cannot be copied).
    header = ("service", "pid", "URL", "UI", "up", "memory", "clients / idle-out", "started by")
    Screen().table(header, rows, title="ftpipe services")
    if starting:
        print(starting)
    print(f"stop them with: ftpipe services stop [prefect|backend|runner|all]   (state: {root})")
    return EXIT_OK


def stop_command(args: argparse.Namespace) -> int:
    """Stop the chosen services; 0 also when none was running."""
    from services.manager import stop_services
    from services.registry import KINDS as ALL_KINDS
    from services.settings import ServicesSettings

    kinds = set(ALL_KINDS) if args.which == "all" else {args.which}
    stopped = stop_services(ServicesSettings().root(), kinds, args.timeout)
    if not stopped:
        print(f"no {'ftpipe' if args.which == 'all' else args.which} service was running")
    for s in stopped:
        how = "stopped" if s.graceful else f"killed (no graceful stop within {args.timeout:g}s)"
        if s.kind == "runner":
            users = f"; {s.leases} run(s) it started go on to their end" if s.leases else ""
        else:
            users = f"; {s.leases} run(s) were still using it" if s.leases else ""
        print(f"{s.name} (pid {s.pid}) {how}{users}")
    return EXIT_OK


@contextmanager
def prefect_for_command(prog: str, console: Console | None = None) -> Iterator[PrefectApi]:
    """The Prefect API for one command's flow runs (see ``services.prefect_api``), said once when started."""
    from services.prefect_api import prefect_api_for_run

    with ExitStack() as stack:
        waiting = console.status("connecting to Prefect...") if console is not None else nullcontext()
        with waiting:
            api = stack.enter_context(prefect_api_for_run(prog))
        announce(api, console)
        yield api


def announce(api: PrefectApi, console: Console | None = None) -> None:
    """Say once, when ftpipe started its long-lived Prefect server, where its UI is and how to stop it."""
    if not (api.managed and api.started and api.ui_url):
        return
    idle = f", stops after {_age(api.idle_timeout_s)} without runs" if api.idle_timeout_s else ""
    line = (
        f"Prefect UI: {api.ui_url}  (local Prefect server kept running by ftpipe{idle}; "
        "'ftpipe services stop prefect' stops it)"
    )
    if console is not None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        print(line, file=sys.stderr)
