"""``ftpipe``: the one argparse tree. Each command lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cli.common import Parser

if TYPE_CHECKING:
    from services.runner import RunnerClient

# A new command is a module with ``register(subparsers)``: ``subparsers.add_parser(name, help=...,
# configure=add_options)`` and ``set_defaults(handler=...)`` (args -> exit code). Heavy imports go inside
# ``add_options`` (defaults) or the handler (the work), never at module level.
COMMAND_MODULES = (
    "cli.run",
    "cli.runs",
    "cli.estimate",
    "cli.validate",
    "cli.sweep",
    "cli.backend",
    "cli.models",
    "cli.jobs",
    "cli.chat",
    "cli.services",
)

EPILOG = """examples:
  ftpipe run datasets/customer-support           train on the sample dataset (embedded backend)
  ftpipe estimate datasets/customer-support        trained tokens, cost and duration; uploads nothing
  ftpipe validate datasets/customer-support/train.jsonl
  ftpipe runs compare JOB_ID_A JOB_ID_B          compare tracked runs (table + overlaid loss curves)
  ftpipe sweep sweep.yaml --max-concurrency 2
  ftpipe backend serve --port 8765
  ftpipe models champion support-bot              the model promoted with --promote-as support-bot
  ftpipe --version
  ftpipe jobs list                                 the newest fine-tuning jobs (show, events, cancel ...)
  ftpipe chat ft:local:micro-chat:demo:... "Hi"    ask a model (one answer; no prompt: a conversation)
  ftpipe services status                          the local Prefect server and backend ftpipe keeps running
"""


class _Version(argparse.Action):
    """``--version``, reading the package version only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from client._version import __version__

        print(f"{parser.prog} {__version__}")
        parser.exit(0)


def build_parser() -> Parser:
    """The full command tree; each command adds its options only when it is used (see ``Parser``)."""
    parser = Parser(
        prog="ftpipe",
        description="Fine-tuning pipeline for the MKA1 (OpenAI-compatible) API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks for errors (same as FTPIPE_DEBUG=1); example: ftpipe --debug run DIR",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ftpipe`` console script; returns the exit code."""
    from cli.errors import DEBUG_ENV, guarded

    runner = None
    if argv is None and "run" in sys.argv[1:3]:  # this process's own `ftpipe [--debug] run`: the warm runner?
        from services.runner import RunnerClient

        runner = RunnerClient.for_command(sys.argv)
        code = runner.serve() if runner is not None else None
        if code is not None:
            return code
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if runner is not None and runner.missed != "busy":
        start_runner(runner)
    if args.debug:
        os.environ[DEBUG_ENV] = "1"
    code = guarded(f"ftpipe {args.command}", lambda: int(args.handler(args)))
    if argv is None:  # the process's own command line: it exits next (a caller passing argv goes on)
        exiting()
    return code


def start_runner(runner: RunnerClient) -> None:
    """Start the warm runner for this command's key in the background (this command runs here meanwhile).

    Best effort: whatever stops it (a bad FTPIPE_SERVICES_* value, which the command itself then reports; a
    lock held by another start or stop) is said in the runner's log, never to the command.
    """
    from services.runner import MIN_LIFETIME_S, note

    try:
        from services.runner_host import start_runner as start
        from services.settings import ServicesSettings

        settings = ServicesSettings()
        if not (settings.keep and settings.runner) or settings.lifetime_s() < MIN_LIFETIME_S:
            return
        start(runner.env, runner.cwd, runner.key, "ftpipe run", settings.lifetime_s())
    except Exception as exc:  # noqa: BLE001 - the command runs in this process all the same
        note(runner.dir, f"could not start a runner for ftpipe run (pid {os.getpid()}): {exc!r}")


def exiting() -> None:
    """Spare the exit the interpreter's last garbage collection over every object a run loaded.

    With Prefect, pandas, matplotlib and a tokenizer loaded, that pass took 1-1.9 s after the summary was
    printed (2 cores); objects moved to the permanent generation are freed by the exit without it. Exit
    handlers still run (Prefect sends the logs and events it holds).
    """
    import gc

    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
