"""``ftpipe``: run the fine-tune flow, validate datasets, or serve the embedded backend."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from validation.core import DEFAULT_MAX_LINE_BYTES, DEFAULT_MIN_EXAMPLES, DEFAULT_TOKEN_LIMIT

MAX_ISSUES_SHOWN = 20
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _auto_int(value: str) -> int | str:
    return value if value == "auto" else int(value)


def _auto_float(value: str) -> float | str:
    return value if value == "auto" else float(value)


def _pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, val


DELEGATED_COMMANDS = ("backend", "sweep")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree for all subcommands."""
    parser = argparse.ArgumentParser(prog="ftpipe", description="Fine-tuning pipeline for the MKA1 API.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="validate, upload, train, collect metrics and smoke test")
    run.add_argument(
        "dataset", nargs="?", type=Path, help="dataset folder (train.jsonl [validation.jsonl] [smoke.jsonl])"
    )
    run.add_argument("--train", type=Path, help="training JSONL (instead of / overriding the folder's)")
    run.add_argument("--validation", type=Path, help="validation JSONL")
    run.add_argument("--smoke", type=Path, help="smoke prompts JSONL")
    run.add_argument("--model", default="local:tiny-chat", help="base model (default: %(default)s)")
    run.add_argument("--method", choices=("supervised", "dpo"), default="supervised")
    run.add_argument("--epochs", type=_auto_int, default="auto", help="n_epochs or 'auto'")
    run.add_argument("--batch-size", type=_auto_int, default="auto")
    run.add_argument("--lr-multiplier", type=_auto_float, default="auto")
    run.add_argument("--beta", type=_auto_float, default=None, help="DPO beta")
    run.add_argument("--suffix", default=None)
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--metadata", type=_pair, action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--output", type=Path, default=None, help="output folder (default runs/<job id>)")
    run.add_argument("--state-dir", type=Path, default=None, help="upload/job index folder")
    run.add_argument("--poll-interval", type=float, default=2.0)
    run.add_argument("--poll-max-interval", type=float, default=15.0)
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the job")
    run.add_argument("--base-url", default=None, help="remote API root (default: MKA1_BASE_URL or embedded)")
    run.add_argument("--on-behalf-of", default=None, help="end-user id (X-On-Behalf-Of)")
    run.add_argument(
        "--fresh", action="store_true", help="new job if the previous identical job failed/was cancelled"
    )
    run.add_argument("--quiet", action="store_true", help="only warnings from Prefect's log")

    val = sub.add_parser("validate", help="validate JSONL files (non-zero exit when invalid)")
    val.add_argument("files", nargs="+", type=Path)
    val.add_argument("--kind", choices=("auto", "chat", "preference"), default="auto")
    val.add_argument("--max-issues", type=int, default=MAX_ISSUES_SHOWN)
    val.add_argument("--min-examples", type=int, default=DEFAULT_MIN_EXAMPLES, help="fewer is an error")
    val.add_argument(
        "--token-limit",
        type=int,
        default=DEFAULT_TOKEN_LIMIT,
        help="longer examples get a truncation warning",
    )
    val.add_argument(
        "--max-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES, help="longer lines are errors"
    )

    be = sub.add_parser("backend", help="the embedded MKA1-compatible backend", add_help=False)
    be.add_argument("backend_args", nargs=argparse.REMAINDER)

    sw = sub.add_parser("sweep", help="run a sweep described by a YAML/JSON file", add_help=False)
    sw.add_argument("sweep_args", nargs=argparse.REMAINDER)
    return parser


def _params_from_args(args: argparse.Namespace) -> Any:
    from flows.params import BackendOptions, FineTuneParams, Hyperparameters, PollingSettings

    return FineTuneParams(
        dataset_dir=args.dataset,
        train_file=args.train,
        validation_file=args.validation,
        smoke_file=args.smoke,
        model=args.model,
        method=args.method,
        hyperparameters=Hyperparameters(
            n_epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate_multiplier=args.lr_multiplier,
            beta=args.beta,
        ),
        suffix=args.suffix,
        seed=args.seed,
        metadata=dict(args.metadata),
        output_dir=args.output,
        state_dir=args.state_dir,
        polling=PollingSettings(
            interval_s=args.poll_interval, max_interval_s=args.poll_max_interval, timeout_s=args.timeout
        ),
        fresh_job_if_failed=args.fresh,
        backend=BackendOptions(base_url=args.base_url, on_behalf_of=args.on_behalf_of),
    )


def summary_table(result: Any) -> Table:
    """Final summary of a run (job, status, model, metrics, tokens, duration, outputs)."""
    table = Table(title="fine-tune result", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("job id", result.job_id)
    table.add_row("status", result.status)
    table.add_row("fine-tuned model", str(result.fine_tuned_model))
    for name, value in result.final_metrics.items():
        table.add_row(name, f"{value:.4f}")
    table.add_row("trained tokens", str(result.trained_tokens))
    table.add_row("upload reused", "yes" if result.uploads_reused else "no")
    table.add_row("attached to existing job", "yes" if result.job_attached else "no")
    table.add_row("smoke test", {True: "passed", False: "failed", None: "skipped"}[result.smoke_passed])
    if result.smoke_answers:
        first = result.smoke_answers[0]
        table.add_row("smoke answer", f"{first['prompt']!r}\n-> {first['output'].strip()!r}")
    table.add_row("duration", f"{result.duration_s:.1f}s")
    table.add_row("output dir", str(result.output_dir))
    return table


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Run the fine-tune flow with a live status line; 0 only when it succeeded."""
    if args.dataset is None and args.train is None:
        console.print("[red]give a dataset folder or --train FILE[/red]")
        return EXIT_USAGE
    if args.quiet:
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    # The ephemeral server's telemetry heartbeat races the run for its SQLite lock; off unless asked for.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect is imported here, after the logging env is set, and only for the commands that need it.
    from pydantic import ValidationError

    from flows.fine_tune import fine_tune
    from tasks.errors import DatasetInvalid, JobFailed, PipelineError
    from tasks.progress import ProgressUpdate, subscribe

    try:
        params = _params_from_args(args)
    except ValidationError as exc:
        console.print(f"[red]invalid arguments:[/red] {exc}")
        return EXIT_USAGE

    with console.status("starting fine-tune flow...") as status:

        def show(update: ProgressUpdate) -> None:
            state = f" [{update.job_status}]" if update.job_status else ""
            status.update(f"{update.stage}{state}: {update.message}")

        try:
            with subscribe(show):
                result = fine_tune(params)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: the remote job was asked to cancel[/yellow]")
            return EXIT_INTERRUPTED
        except DatasetInvalid as exc:
            console.print("[red]dataset invalid; nothing was uploaded:[/red]")
            for line in exc.issues:
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
            return EXIT_FAILED
        except JobFailed as exc:
            console.print(
                f"[red]job {exc.job_id} {exc.status}:[/red] [{exc.code}] {exc.message}", markup=False
            )
            return EXIT_FAILED
        except PipelineError as exc:
            console.print(f"[red]{type(exc).__name__}:[/red] {exc}")
            return EXIT_FAILED
    console.print(summary_table(result))
    ok = result.status == "succeeded" and result.smoke_passed is not False
    return EXIT_OK if ok else EXIT_FAILED


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    """Validate each file alone; print located issues (capped) and exit non-zero if any has errors."""
    from tasks.validate import cap_issues, stats_dict
    from validation import validate_file

    worst = EXIT_OK
    for path in args.files:
        if not path.is_file():
            console.print(f"{path}: no such file", markup=False)
            worst = EXIT_FAILED
            continue
        report = validate_file(
            path,
            kind=args.kind,
            min_examples=args.min_examples,
            token_limit=args.token_limit,
            max_line_bytes=args.max_line_bytes,
        )
        errors = [str(i) for i in report.errors]
        warnings = [str(i) for i in report.warnings]
        n_err, n_warn = report.error_count_total, report.warning_count_total
        verdict = "[green]ok[/green]" if report.ok else "[red]INVALID[/red]"
        console.print(f"{path}: {verdict} ({n_err} error(s), {n_warn} warning(s))")
        for line in cap_issues(errors, args.max_issues, total=n_err):
            console.print(f"  error: {line}", markup=False, highlight=False, soft_wrap=True)
        for line in cap_issues(warnings, max(0, args.max_issues - len(errors)), total=n_warn):
            console.print(f"  warning: {line}", markup=False, highlight=False, soft_wrap=True)
        if report.ok:
            stats = stats_dict(report.stats)
            console.print(
                "  " + ", ".join(f"{k}={v}" for k, v in stats.items()), markup=False, highlight=False
            )
        else:
            worst = EXIT_FAILED
    return worst


def _delegate(command: str, rest: list[str]) -> int:
    """Hand ``rest`` to a subcommand that owns its flags (the backend server, the sweep runner)."""
    if command == "backend":
        from backend.cli import main as backend_main

        return int(backend_main(rest) or 0)
    from flows.sweep import sweep_main

    return int(sweep_main(rest) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ftpipe`` console script."""
    arg_list = list(argv) if argv is not None else sys.argv[1:]
    # argparse's REMAINDER cannot take a leading "--flag" (e.g. "--help"), so delegating subcommands get
    # their argument lists before parsing; the parser still lists them for `ftpipe --help`.
    if arg_list and arg_list[0] in DELEGATED_COMMANDS:
        return _delegate(arg_list[0], arg_list[1:])
    args = build_parser().parse_args(arg_list)
    console = Console()
    if args.command == "run":
        return cmd_run(args, console)
    return cmd_validate(args, console)


if __name__ == "__main__":
    sys.exit(main())
