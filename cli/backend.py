"""``ftpipe backend ...``: the embedded backend's own commands (``serve``), registered from backend.cli."""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """examples:
  ftpipe backend serve --port 8765              the backend as a long-lived server (see 'ftpipe backend serve -h')
"""


def register(sub: Any) -> None:
    """Add ``backend`` to the command tree; its subcommands come from backend.cli on first use."""
    sub.add_parser(
        "backend",
        help="the embedded MKA1-compatible backend",
        description="The embedded MKA1-compatible backend that really trains (also: python -m backend).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_commands,
    )


def add_commands(p: argparse.ArgumentParser) -> None:
    """``backend serve`` (and whatever else backend.cli registers)."""
    from backend.cli import add_backend_commands

    add_backend_commands(p.add_subparsers(dest="backend_command", required=True, metavar="COMMAND"))
