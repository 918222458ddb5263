"""``ftpipe models champion NAME``: the model that currently serves under NAME, with its record."""

from __future__ import annotations

import argparse
from typing import Any

from cli.common import EXIT_FAILED, EXIT_OK, prefect_env_defaults, usage_error

PROG = "ftpipe models"
EPILOG = """examples:
  ftpipe models champion support-bot             the champion's model id and record
  ftpipe models champion support-bot --history   every champion so far, oldest first
  ftpipe models champion support-bot --id-only   just the model id (for scripts)
"""


def register(sub: Any) -> None:
    """Add ``models`` to the command tree."""
    p = sub.add_parser(
        "models",
        help="champion models recorded by runs with --promote-as",
        description="Read the champions that `ftpipe run --promote-as NAME` records in Prefect Variables.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_options,
    )
    p.set_defaults(handler=models_command)


def add_options(p: argparse.ArgumentParser) -> None:
    """``models``' subcommands."""
    sub = p.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    champ = sub.add_parser(
        "champion",
        help="print the current champion of NAME and its record",
        description="Print the model that serves as champion NAME and its record (score, eval set, job, time).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    champ.add_argument("name", metavar="NAME", help="the name given to --promote-as")
    shown = champ.add_mutually_exclusive_group()
    shown.add_argument("--history", action="store_true", help="list every recorded champion, oldest first")
    shown.add_argument("--id-only", action="store_true", help="print only the model id")


def models_command(args: argparse.Namespace) -> int:
    """Print the champion (exit 1 when NAME has none)."""
    from evaluation.champion import check_name

    try:
        check_name(args.name)
    except ValueError as exc:
        return usage_error(f"{PROG} champion", str(exc))
    prefect_env_defaults()
    from cli.services import prefect_for_command

    # Champions are Prefect Variables: read through ftpipe's Prefect server (or the user's), never through a
    # temporary one Prefect would start on a random port of 8000-9000 (where the embedded backend may listen).
    with prefect_for_command(f"{PROG} champion"):
        return _show_champion(args)


def _show_champion(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from evaluation.champion import PrefectVariables, read_champion, read_history, variable_name

    console = Console()
    store = PrefectVariables()
    record = read_champion(store, args.name)
    if record is None:
        console.print(
            f"no champion named {args.name!r} (Prefect Variable {variable_name(args.name)} is unset)"
        )
        return EXIT_FAILED
    if args.id_only:
        print(record.model_id)
        return EXIT_OK
    if args.history:
        table = Table(title=f"champions of {args.name}, oldest first")
        for col in ("promoted_at", "model_id", "eval_score", "base_score", "eval_set_hash", "job_id"):
            table.add_column(col)
        for r in read_history(store, args.name):
            base = "-" if r.base_score is None else f"{r.base_score:.4f}"
            table.add_row(
                r.promoted_at, r.model_id, f"{r.eval_score:.4f}", base, r.eval_set_hash, r.job_id or "-"
            )
        console.print(table)
        return EXIT_OK
    console.print(record.model_id, markup=False, highlight=False)
    table = Table(show_header=False, title=f"champion {args.name} ({variable_name(args.name)})")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in record.model_dump(mode="json").items():
        table.add_row(key, "-" if value is None else str(value))
    console.print(table)
    return EXIT_OK
