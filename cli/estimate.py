"""``ftpipe estimate``: trained tokens, cost and duration of a job, before anything is uploaded.

Talks to the same API a run would (the embedded backend, started if none is listening, or MKA1) for the
price and the job history; nothing is uploaded and no job is created.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.common import EXIT_FAILED, EXIT_OK, usage_error
from cli.options import add_api, add_budget, add_data_files, add_job_shape

PROG = "ftpipe estimate"
EPILOG = """examples:
  ftpipe estimate datasets/customer-support
  ftpipe estimate --train prefs.jsonl --method dpo --epochs 2
  ftpipe estimate datasets/customer-support --max-tokens 100000     (exit 1 when over)
  ftpipe estimate --train my/train.jsonl --validation my/valid.jsonl --batch-size 8 --json
  ftpipe estimate DIR --max-cost 5 --base-url https://apigw.mka1.com/api/v1/llm --on-behalf-of user-42
  FTPIPE_TRAINING_PRICES='{"meetkai:functionary-medium": 8}' ftpipe estimate data --model meetkai:functionary-medium
"""


def register(sub: Any) -> None:
    """Add ``estimate`` to the command tree."""
    p = sub.add_parser(
        "estimate",
        help="trained tokens, cost and duration of a job (uploads nothing)",
        description="Estimate what a run would train, cost and take; optionally check a budget.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_options,
    )
    p.set_defaults(handler=estimate_command)


def add_options(p: argparse.ArgumentParser) -> None:
    """``estimate``'s options: the run's data and job options that change the estimate, and the budget."""
    p.add_argument("dataset", nargs="?", type=Path, help="dataset folder (its train.jsonl is estimated)")
    add_data_files(p, validation_note="; times the validation passes")
    add_job_shape(p, batch_size_note="; only the duration depends on it")
    add_api(p)
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    add_budget(p)


def _in_folder(folder: Path | None, names: tuple[str, ...]) -> Path | None:
    if folder is None:
        return None
    return next((folder / n for n in names if (folder / n).is_file()), None)


def estimate_command(args: argparse.Namespace) -> int:
    """Print the estimate; exit 1 when it is over the budget (or the budget cannot be checked)."""
    import json

    from rich.console import Console
    from rich.markup import escape

    from client import MKA1Client
    from estimate.budget import Budget
    from estimate.core import budget_problem, estimate_job
    from estimate.render import rows
    from estimate.tokens import EstimateError
    from flows.backend_runtime import open_connection
    from flows.params import TRAIN_NAMES, VALIDATION_NAMES

    train = args.train or _in_folder(args.dataset, TRAIN_NAMES)
    if train is None:
        where = (
            f"no {' or '.join(TRAIN_NAMES)} in {args.dataset}"
            if args.dataset
            else "give a dataset folder or --train FILE"
        )
        return usage_error(PROG, where)
    validation = args.validation or _in_folder(args.dataset, VALIDATION_NAMES)
    for path in (train, validation):
        if path is not None and not path.is_file():
            return usage_error(PROG, f"{path}: no such file")
    budget = Budget(max_cost=args.max_cost, max_tokens=args.max_tokens)
    console = Console()
    try:
        with (
            console.status(f"estimating {train} for {args.model}..."),
            open_connection(args.base_url, args.on_behalf_of) as conn,
            MKA1Client(conn.settings, transport=conn.transport) as client,
        ):
            est = estimate_job(
                client,
                train,
                validation_path=validation,
                model=args.model,
                method=args.method,
                n_epochs=args.epochs,
                batch_size=args.batch_size,
                embedded=conn.embedded,
            )
    except EstimateError as exc:
        console.print(f"[red]cannot estimate:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_FAILED
    problem = budget_problem([est], budget)
    if args.json:
        print(
            json.dumps({**est.model_dump(mode="json"), "cost": est.cost, "budget_problem": problem}, indent=2)
        )
    else:
        for label, value in rows(est):
            console.print(f"[bold]{label}:[/bold] {escape(value)}", highlight=False, soft_wrap=True)
    if problem:
        console.print(f"[red]{escape(problem)}[/red]", highlight=False, soft_wrap=True)
        return EXIT_FAILED
    return EXIT_OK
