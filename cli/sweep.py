"""``ftpipe sweep``: run the ``fine-tune-sweep`` flow from a YAML/JSON file and print the comparison.

Progress is shown as ``ftpipe run`` shows it, one line per config; Ctrl-C cancels every running config's job and
ends in one line, exit 130.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    positive_int,
    prefect_env_defaults,
    quiet_prefect_logging,
    usage_error,
)
from cli.options import add_budget, add_progress

PROG = "ftpipe sweep"

EPILOG = """examples:
  ftpipe sweep sweep.yaml
  ftpipe sweep sweep.yaml --max-concurrency 4 --task-runner dask --output runs/lr-sweep
  ftpipe sweep sweep.yaml --max-cost 20 --max-tokens 2000000 --quiet    (budget over all configs)
  ftpipe sweep sweep.yaml --progress plain > sweep.log    (one line per config's stage and 5% of training)

A sweep file holds `base` (fine-tune parameters), `configs` and/or `grid`; see deployments/README.md.
"""


def register(sub: Any) -> None:
    """Add ``sweep`` to the command tree."""
    p = sub.add_parser(
        "sweep",
        help="run a sweep described by a YAML/JSON file and compare the configs",
        description="Fine-tune once per config (concurrently), compare the results and pick the best.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_options,
    )
    p.set_defaults(handler=sweep_command)


def add_options(p: argparse.ArgumentParser) -> None:
    """``sweep``'s options (everything else is in the sweep file)."""
    p.add_argument("config", type=Path, help="sweep file (YAML or JSON): base, configs and/or grid, ...")
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="DIR",
        help="comparison folder (default runs/sweep-<name>)",
    )
    p.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=None,
        metavar="N",
        help="configs training at the same time",
    )
    p.add_argument(
        "--task-runner",
        choices=("thread", "dask"),
        default=None,
        help="where config tasks run (default: thread)",
    )
    p.add_argument("--quiet", action="store_true", help="only warnings from Prefect's log")
    add_progress(p)
    add_budget(p)


def sweep_command(args: argparse.Namespace) -> int:
    """Load the file, apply the flags, run the sweep flow; 0 only if every config succeeded."""
    from pydantic import ValidationError
    from rich.markup import escape
    from rich.table import Table

    from cli.progress_display import make_console
    from flows.params import error_lines
    from flows.sweep_config import SweepParams, load_sweep_file

    console = make_console(args.progress)
    try:
        params = load_sweep_file(args.config)
        overrides = {
            k: v
            for k, v in {
                "output_dir": args.output,
                "max_concurrency": args.max_concurrency,
                "task_runner": args.task_runner,
            }.items()
            if v is not None
        }
        budget = {
            k: v
            for k, v in {"max_cost": args.max_cost, "max_tokens": args.max_tokens}.items()
            if v is not None
        }
        data = params.model_dump()
        data["base"] = {**data["base"], **budget}  # a budget flag is for the whole sweep: the base carries it
        params = SweepParams.model_validate({**data, **overrides})
    except ValidationError as exc:
        return usage_error(PROG, f"bad sweep file {args.config}: " + "; ".join(error_lines(exc)))
    except (OSError, ValueError) as exc:
        return usage_error(PROG, f"bad sweep file: {exc}")
    if args.quiet:
        quiet_prefect_logging()
    prefect_env_defaults()
    # Prefect is imported only now: a bad sweep file is reported without starting it.
    from cli.interrupt import quiet_interrupt
    from cli.progress_display import show_progress
    from cli.services import prefect_for_command
    from flows import sweep as sweep_flow

    try:
        with (
            prefect_for_command(PROG, console),
            show_progress(args.progress, console, per_config=True),
            quiet_interrupt(),
        ):
            state = sweep_flow.sweep(**params.flow_arguments(), return_state=True)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the flow
        console.print("[yellow]interrupted[/yellow]")
        return EXIT_INTERRUPTED
    if state.is_cancelled():  # Ctrl-C: every running config cancelled its job (flows/sweep.py)
        line = f"[yellow]{escape(state.message or 'interrupted')} (Prefect run marked Cancelled)[/yellow]"
        console.print(line, highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    if not state.is_completed():
        console.print(f"[red]sweep failed:[/red] {sweep_flow.error_text(state)}")
        return EXIT_FAILED
    result = state.result()
    table = Table(title=f"sweep {result.name} (best by {result.select_by})")
    cols = ("name", "status", result.select_by, "trained_tokens", "duration_s", "fine_tuned_model", "error")
    for col in cols:
        table.add_column(col)
    for row in result.rows:
        is_best = result.best is not None and row["name"] == result.best["name"]
        cells = [
            f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))
            for v in (row.get(c) for c in cols)
        ]
        table.add_row(*cells, style="bold green" if is_best else None)
    console.print(table)
    console.print(f"outputs: {result.output_dir}")
    return EXIT_OK if result.n_failed == 0 else EXIT_FAILED
