"""``ftpipe run``: the ``fine-tune`` flow (validate, upload, train, metrics, smoke test) with a status line.

Options and defaults come from the flow's parameter model (``flows.params``); every value is checked at
argument parsing, so a bad option never reaches validation or upload.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    contract_value,
    hide_console_tracebacks,
    json_object,
    key_value,
    model_default,
    model_help,
    positive_float,
    positive_int,
    quiet_prefect_logging,
    signed_unit_float,
    unit_float,
    usage_error,
)
from cli.estimate import add_budget_options

if TYPE_CHECKING:
    from flows.params import FineTuneParams

PROG = "ftpipe run"
EPILOG = """examples:
  ftpipe run datasets/customer-support
  ftpipe run datasets/customer-support --model local:micro-chat --epochs 2 --suffix demo
  ftpipe run --train prefs.jsonl --method dpo --beta 0.1
  MKA1_BASE_URL=https://... MKA1_API_KEY=... ftpipe run datasets/customer-support   (remote API)
"""


def register(sub: Any) -> None:
    """Add ``run`` to the command tree."""
    p = sub.add_parser(
        "run",
        help="validate, upload, train, collect metrics and smoke test",
        description="Run the fine-tune flow on a dataset folder or explicit JSONL files.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_options,
    )
    p.set_defaults(handler=run_command)


def add_options(p: argparse.ArgumentParser) -> None:
    """``run``'s options; defaults and help come from the flow's parameter model."""
    from contract.hyperparameters import BatchSize, Beta, LearningRateMultiplier, NEpochs, Seed
    from flows.params import FineTuneParams

    fp = FineTuneParams
    p.add_argument(
        "dataset",
        nargs="?",
        type=Path,
        help="dataset folder (train.jsonl [validation.jsonl] [eval.jsonl] [smoke.jsonl])",
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--train", type=Path, metavar="FILE", help=model_help(fp, "train_file", show_default=False)
    )
    data.add_argument(
        "--validation", type=Path, metavar="FILE", help=model_help(fp, "validation_file", show_default=False)
    )
    data.add_argument(
        "--smoke", type=Path, metavar="FILE", help=model_help(fp, "smoke_file", show_default=False)
    )

    data.add_argument(
        "--eval", type=Path, metavar="FILE", help=model_help(fp, "eval_file", show_default=False)
    )

    judge = p.add_argument_group("evaluation, gate and promotion")
    judge.add_argument(
        "--no-eval", dest="evaluate", action="store_false", help="skip the eval stage (smoke checks only)"
    )
    judge.add_argument(
        "--select-by",
        choices=("eval_score", "full_valid_loss"),
        default=model_default(fp, "select_by"),
        help=model_help(fp, "select_by", show_default=False),
    )
    judge.add_argument(
        "--gate-min-score",
        type=unit_float,
        default=model_default(fp, "gate_min_score"),
        metavar="X",
        help=model_help(fp, "gate_min_score"),
    )
    judge.add_argument(
        "--gate-min-improvement",
        type=signed_unit_float,
        default=model_default(fp, "gate_min_improvement"),
        metavar="X",
        help=model_help(fp, "gate_min_improvement"),
    )
    judge.add_argument(
        "--promote-as", metavar="NAME", default=None, help=model_help(fp, "promote_as", show_default=False)
    )
    judge.add_argument(
        "--judge-model", metavar="ID", default=None, help=model_help(fp, "judge_model", show_default=False)
    )
    judge.add_argument(
        "--eval-max-output-tokens",
        type=positive_int,
        default=model_default(fp, "eval_max_output_tokens"),
        metavar="N",
        help=model_help(fp, "eval_max_output_tokens"),
    )
    judge.add_argument(
        "--eval-concurrency",
        type=positive_int,
        default=model_default(fp, "eval_concurrency"),
        metavar="N",
        help=model_help(fp, "eval_concurrency"),
    )

    job = p.add_argument_group("job")
    job.add_argument("--model", default=model_default(fp, "model"), help=model_help(fp, "model"))
    job.add_argument(
        "--method",
        choices=("supervised", "dpo"),
        default=model_default(fp, "method"),
        help=model_help(fp, "method"),
    )
    job.add_argument(
        "--epochs",
        type=contract_value("n_epochs", NEpochs),
        default=model_default(fp, "n_epochs"),
        help=model_help(fp, "n_epochs"),
    )
    job.add_argument(
        "--batch-size",
        type=contract_value("batch_size", BatchSize),
        default=model_default(fp, "batch_size"),
        help=model_help(fp, "batch_size"),
    )
    job.add_argument(
        "--learning-rate-multiplier",
        "--lr-multiplier",
        dest="lr_multiplier",
        type=contract_value("learning_rate_multiplier", LearningRateMultiplier),
        default=model_default(fp, "learning_rate_multiplier"),
        help=model_help(fp, "learning_rate_multiplier"),
    )
    job.add_argument(
        "--beta",
        type=contract_value("beta", Beta),
        default=model_default(fp, "beta"),
        help=model_help(fp, "beta"),
    )
    job.add_argument("--suffix", default=model_default(fp, "suffix"), help=model_help(fp, "suffix"))
    job.add_argument(
        "--seed",
        type=contract_value("seed", Seed),
        default=model_default(fp, "seed"),
        help=model_help(fp, "seed"),
    )
    job.add_argument(
        "--metadata",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=model_help(fp, "metadata", show_default=False) + "; repeat for more pairs",
    )
    job.add_argument(
        "--integration",
        type=json_object,
        action="append",
        default=[],
        metavar="JSON",
        help=model_help(fp, "integrations", show_default=False) + "; repeat for more",
    )
    job.add_argument(
        "--fresh", action="store_true", help=model_help(fp, "fresh_job_if_failed", show_default=False)
    )

    out = p.add_argument_group("outputs and waiting")
    out.add_argument(
        "--output", type=Path, metavar="DIR", help=model_help(fp, "output_dir", show_default=False)
    )
    out.add_argument(
        "--state-dir", type=Path, metavar="DIR", help=model_help(fp, "state_dir", show_default=False)
    )
    out.add_argument(
        "--poll-interval",
        type=positive_float,
        default=model_default(fp, "poll_interval_s"),
        metavar="SECONDS",
        help=model_help(fp, "poll_interval_s"),
    )
    out.add_argument(
        "--poll-max-interval",
        type=positive_float,
        default=model_default(fp, "poll_max_interval_s"),
        metavar="SECONDS",
        help=model_help(fp, "poll_max_interval_s"),
    )
    out.add_argument(
        "--timeout",
        type=positive_float,
        default=model_default(fp, "wait_timeout_s"),
        metavar="SECONDS",
        help=model_help(fp, "wait_timeout_s"),
    )
    out.add_argument("--quiet", action="store_true", help="only warnings from Prefect's log")

    api = p.add_argument_group("API")
    api.add_argument(
        "--base-url",
        default=model_default(fp, "base_url"),
        metavar="URL",
        help=model_help(fp, "base_url", show_default=False) + " (default: MKA1_BASE_URL, else embedded)",
    )
    api.add_argument(
        "--on-behalf-of",
        default=model_default(fp, "on_behalf_of"),
        metavar="USER",
        help=model_help(fp, "on_behalf_of", show_default=False),
    )
    add_budget_options(p)


def params_from_args(args: argparse.Namespace) -> FineTuneParams:
    """The flow's parameters from parsed options (raises pydantic's ValidationError on a bad combination)."""
    from flows.params import FineTuneParams

    return FineTuneParams(
        dataset_dir=args.dataset,
        train_file=args.train,
        validation_file=args.validation,
        smoke_file=args.smoke,
        model=args.model,
        method=args.method,
        n_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate_multiplier=args.lr_multiplier,
        beta=args.beta,
        suffix=args.suffix,
        seed=args.seed,
        metadata=dict(args.metadata),
        eval_file=args.eval,
        evaluate=args.evaluate,
        select_by=args.select_by,
        gate_min_score=args.gate_min_score,
        promote_as=args.promote_as,
        judge_model=args.judge_model,
        eval_max_output_tokens=args.eval_max_output_tokens,
        eval_concurrency=args.eval_concurrency,
        gate_min_improvement=args.gate_min_improvement,
        integrations=list(args.integration),
        output_dir=args.output,
        state_dir=args.state_dir,
        poll_interval_s=args.poll_interval,
        poll_max_interval_s=args.poll_max_interval,
        wait_timeout_s=args.timeout,
        fresh_job_if_failed=args.fresh,
        base_url=args.base_url,
        on_behalf_of=args.on_behalf_of,
        max_cost=args.max_cost,
        max_tokens=args.max_tokens,
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the fine-tune flow with a live status line; 0 only when it succeeded."""
    from pydantic import ValidationError

    from flows.params import error_lines

    if args.dataset is None and args.train is None:
        return usage_error(PROG, "give a dataset folder or --train FILE")
    try:
        params = params_from_args(args)
    except ValidationError as exc:
        return usage_error(PROG, "; ".join(error_lines(exc)))
    from cli.preflight import PreflightError, preflight

    try:
        preflight(params)
    except PreflightError as exc:
        for line in exc.lines:
            print(f"{PROG}: {line}" if line is exc.lines[0] else line, file=sys.stderr)
        return exc.exit_code
    if args.quiet:
        quiet_prefect_logging()
    # The ephemeral server's telemetry heartbeat races the run for its SQLite lock; off unless asked for.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect is imported here, after the logging env is set, and only for the commands that need it.
    from rich.console import Console
    from rich.markup import escape

    from flows.fine_tune import fine_tune

    hide_console_tracebacks()
    from tasks.errors import BudgetExceeded, DatasetInvalid, GateFailed, JobFailed, PipelineError
    from tasks.progress import ProgressUpdate, subscribe
    from tasks.record import RunRecord
    from tasks.report import run_summary_text

    console = Console()
    with console.status("starting fine-tune flow...") as status:

        def show(update: ProgressUpdate) -> None:
            state = f" [{update.job_status}]" if update.job_status else ""
            status.update(f"{update.stage}{state}: {update.message}")

        try:
            with subscribe(show):
                result = fine_tune(**params.flow_arguments())
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: the remote job was asked to cancel[/yellow]")
            return EXIT_INTERRUPTED
        except DatasetInvalid as exc:
            console.print("[red]dataset invalid; nothing was uploaded:[/red]")
            for line in exc.issues:
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
            return EXIT_FAILED
        except BudgetExceeded as exc:
            console.print(
                f"[red]stopped before upload:[/red] {escape(exc.line)}", highlight=False, soft_wrap=True
            )
            return EXIT_FAILED
        except JobFailed as exc:
            detail = escape(f"[{exc.code}] {exc.message}")
            console.print(f"[red]job {exc.job_id} {exc.status}:[/red] {detail}", highlight=False)
            return EXIT_FAILED
        except GateFailed as exc:
            if isinstance(exc.record, RunRecord):
                console.print(run_summary_text(exc.record), markup=False, highlight=False, soft_wrap=True)
            console.print(
                f"[red]{escape(str(exc))}; nothing was promoted[/red]", highlight=False, soft_wrap=True
            )
            return EXIT_FAILED
        except PipelineError as exc:
            console.print(f"[red]{type(exc).__name__}:[/red] {escape(str(exc))}", highlight=False)
            return EXIT_FAILED
    console.print(run_summary_text(result), markup=False, highlight=False, soft_wrap=True)
    ok = result.status == "succeeded" and result.smoke_passed is not False
    return EXIT_OK if ok else EXIT_FAILED
