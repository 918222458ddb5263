"""``ftpipe run``: the ``fine-tune`` flow (validate, upload, train, metrics, smoke test) with a status line.

Options and defaults come from the flow's parameter model (``flows.params``); every value is checked at
argument parsing, so a bad option never reaches validation or upload.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from contextlib import nullcontext
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
    positive_float,
    positive_int,
    prefect_env_defaults,
    quiet_prefect_logging,
    signed_unit_float,
    unit_float,
    usage_error,
)
from cli.options import add_api, add_budget, add_data_files, add_job_shape, add_progress, field_option

if TYPE_CHECKING:
    from flows.params import FineTuneParams

PROG = "ftpipe run"
# Prefect's flow-run heartbeat frequency (and its legacy name): a user who sets it keeps the heartbeats.
HEARTBEAT_ENV = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")
EPILOG = """examples:
  ftpipe run datasets/customer-support
  ftpipe run datasets/customer-support --model local:micro-chat --epochs 2 --suffix demo
  ftpipe run DIR --batch-size 8 --lr-multiplier 0.5 --seed 7 --metadata team=support --metadata owner=ana
  ftpipe run --train prefs.jsonl --method dpo --beta 0.1
  ftpipe run --train my/train.jsonl --validation my/valid.jsonl --smoke my/smoke.jsonl --eval my/eval.jsonl
  ftpipe run DIR --promote-as support-bot --select-by eval_score --gate-min-score 0.5 --gate-min-improvement 0.02
  ftpipe run DIR --judge-model local:tiny-chat --eval-max-output-tokens 64 --eval-concurrency 4
  ftpipe run DIR --rerun        (run the flow again although nothing changed since its last success)
  ftpipe run DIR --no-eval --fresh --integration '{"type": "wandb", "wandb": {"project": "support"}}'
  ftpipe run DIR --output out/support --state-dir /tmp/ftpipe-state --quiet
  ftpipe run DIR --poll-interval 2 --poll-max-interval 30 --timeout 3600
  ftpipe run DIR --max-cost 5 --max-tokens 200000        (stop before upload when the estimate is over)
  ftpipe run datasets/customer-support --progress plain > run.log   (one line per event, no colours)
  MKA1_API_KEY=... ftpipe run DIR --base-url https://apigw.mka1.com/api/v1/llm --on-behalf-of user-42   (remote API)
(DIR: a dataset folder holding train.jsonl [validation.jsonl] [eval.jsonl] [smoke.jsonl])
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
    from contract.hyperparameters import Beta, LearningRateMultiplier, Seed
    from flows.params import FineTuneParams as fp

    p.add_argument(
        "dataset",
        nargs="?",
        type=Path,
        help="dataset folder (train.jsonl [validation.jsonl] [eval.jsonl] [smoke.jsonl])",
    )
    data = p.add_argument_group("data")
    add_data_files(data)
    for flag, field in (("--smoke", "smoke_file"), ("--eval", "eval_file")):
        field_option(data, flag, model=fp, field=field, show_default=False, type=Path, metavar="FILE")

    judge = p.add_argument_group("evaluation, gate and promotion")
    judge.add_argument(
        "--no-eval", dest="evaluate", action="store_false", help="skip the eval stage (smoke checks only)"
    )
    field_option(
        judge,
        "--select-by",
        model=fp,
        field="select_by",
        show_default=False,
        choices=("eval_score", "full_valid_loss"),
    )
    field_option(judge, "--gate-min-score", model=fp, field="gate_min_score", type=unit_float, metavar="X")
    field_option(
        judge,
        "--gate-min-improvement",
        model=fp,
        field="gate_min_improvement",
        type=signed_unit_float,
        metavar="X",
    )
    field_option(judge, "--promote-as", model=fp, field="promote_as", show_default=False, metavar="NAME")
    field_option(judge, "--judge-model", model=fp, field="judge_model", show_default=False, metavar="ID")
    field_option(
        judge,
        "--eval-max-output-tokens",
        model=fp,
        field="eval_max_output_tokens",
        type=positive_int,
        metavar="N",
    )
    field_option(
        judge,
        "--eval-concurrency",
        model=fp,
        field="eval_concurrency",
        show_default=False,
        type=positive_int,
        metavar="N",
    )

    job = p.add_argument_group("job")
    add_job_shape(job)
    field_option(
        job,
        "--learning-rate-multiplier",
        "--lr-multiplier",
        model=fp,
        field="learning_rate_multiplier",
        dest="lr_multiplier",
        type=contract_value("learning_rate_multiplier", LearningRateMultiplier),
    )
    field_option(job, "--beta", model=fp, field="beta", type=contract_value("beta", Beta))
    field_option(job, "--suffix", model=fp, field="suffix")
    field_option(job, "--seed", model=fp, field="seed", type=contract_value("seed", Seed))
    field_option(
        job,
        "--metadata",
        model=fp,
        field="metadata",
        show_default=False,
        note="; repeat for more pairs",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
    )
    field_option(
        job,
        "--integration",
        model=fp,
        field="integrations",
        show_default=False,
        note="; repeat for more",
        type=json_object,
        action="append",
        default=[],
        metavar="JSON",
    )
    field_option(
        job,
        "--fresh",
        model=fp,
        field="fresh_job_if_failed",
        show_default=False,
        action="store_true",
        default=False,
    )
    job.add_argument(
        "--rerun",
        action="store_true",
        help="run the flow even when this command already ran to success and nothing changed since "
        "(without it, that run's summary is shown again without running anything)",
    )

    out = p.add_argument_group("outputs and waiting")
    for flag, field in (("--output", "output_dir"), ("--state-dir", "state_dir")):
        field_option(out, flag, model=fp, field=field, show_default=False, type=Path, metavar="DIR")
    field_option(
        out,
        "--poll-interval",
        model=fp,
        field="poll_interval_s",
        show_default=False,
        type=positive_float,
        metavar="SECONDS",
    )
    for flag, field in (("--poll-max-interval", "poll_max_interval_s"), ("--timeout", "wait_timeout_s")):
        field_option(out, flag, model=fp, field=field, type=positive_float, metavar="SECONDS")
    out.add_argument("--quiet", action="store_true", help="only warnings from Prefect's log")
    add_progress(out)

    add_api(p.add_argument_group("API"))
    add_budget(p)


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


# What `run_command` and the flow it calls import, for the warm runner to import once (services/runner_host.py).
PRELOAD = (
    "pydantic",
    "flows.params",
    "contract.hyperparameters",
    "cli.rerun",
    "cli.preflight",
    "rich.markup",
    "cli.interrupt",
    "cli.progress_display",
    "flows.fine_tune",
    "prefect",
    "cli.services",
    "services.prefect_api",
    "services.embedded",
    "flows.backend_runtime",
    "flows.experiment",
    "tasks.errors",
    "tasks.record",
    "tasks.report",
    # Imported by Prefect and ftpipe only once a run starts (measured: 159 modules, ~0.4 s before "Beginning
    # flow run"): the flow engine, the parameter encoder (FastAPI's), the backend's launcher and tokenizer.
    "prefect.flow_engine",
    "prefect.engine",
    "prefect.utilities.visualization",
    "prefect.telemetry.run_telemetry",
    "prefect.concurrency.v1.context",
    "fastapi.encoders",
    "backend.launcher",
    "backend.lifecycle",
    "backend.trainer.tokenizer",
    "backend.trainer.corpus",
    "cli.errors",
    "rich.status",
    "sqlite3",
    "http.cookies",
    "encodings.idna",
)
# Imported by the flow while the job trains (the eval of checkpoints and of the fine-tuned model, the metrics).
DURING_RUN = (
    "prefect.task_engine",
    "backend.model_refs",
    "backend.faults",
    "tasks.evaluate",
    "backend.generation",
    "evaluation.scoring",
    "tasks.metrics",
    "pyarrow.dataset",
    "pyarrow.pandas_compat",
)


def preload() -> None:
    """Import what ``ftpipe run`` needs after the environment steps it takes first (``prefect_env_defaults``),
    starting no thread: the warm runner's start-up. With it, what the flow imports while the job trains and
    after (``flows.preload``: seconds of CPU on 2 cores, beside the training)."""
    import importlib

    prefect_env_defaults()
    for name in PRELOAD:
        importlib.import_module(name)
    from flows.preload import AFTER_TRAINING

    for name in (*AFTER_TRAINING, *DURING_RUN):
        importlib.import_module(name)
    from cli.main import build_parser

    build_parser()


def heartbeats_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the user set Prefect's flow-run heartbeat frequency (its current or legacy variable)."""
    env = os.environ if environ is None else environ
    return any(env.get(name, "").strip() for name in HEARTBEAT_ENV)


def run_command(args: argparse.Namespace) -> int:
    """Run the fine-tune flow showing its progress (``--progress``); 0 only when it succeeded."""
    from pydantic import ValidationError

    from flows.params import error_lines

    if args.dataset is None and args.train is None:
        return usage_error(PROG, "give a dataset folder or --train FILE")
    try:
        params = params_from_args(args)
    except ValidationError as exc:
        return usage_error(PROG, "; ".join(error_lines(exc)))
    from cli import rerun

    # Before Prefect is imported: an unchanged re-run of a finished run is answered from the state dir.
    key = rerun.outcome_key(params)
    if key is not None and not args.rerun and rerun.show_unchanged(params, key):
        return EXIT_OK
    from cli.preflight import PreflightError, preflight

    try:
        preflight(params)
    except PreflightError as exc:
        for line in exc.lines:
            print(f"{PROG}: {line}" if line is exc.lines[0] else line, file=sys.stderr)
        return exc.exit_code
    if args.quiet:
        quiet_prefect_logging()
    prefect_env_defaults()
    # Prefect is imported here, after the logging env is set, and only for the commands that need it.
    from rich.markup import escape

    from cli.interrupt import RunInterrupted, quiet_interrupt
    from cli.progress_display import make_console, show_progress
    from flows.fine_tune import fine_tune

    hide_console_tracebacks()
    from prefect import tags
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from cli.services import prefect_for_command
    from flows.experiment import creation_tags
    from tasks.errors import BudgetExceeded, DatasetInvalid, GateFailed, JobFailed, PipelineError
    from tasks.record import RunRecord
    from tasks.report import run_summary_text

    console = make_console(args.progress)
    try:
        with (
            prefect_for_command(PROG, console),
            show_progress(args.progress, console),
            quiet_interrupt(),
            tags(*creation_tags(params)),  # set at creation, the flow need not add them in a round trip
            # No flow-run heartbeats unless the user set their frequency: Prefect joins their thread at the
            # flow's end, and it sleeps in 1 s steps (measured: 0.22-0.77 s, mean 0.47, from the flow's return
            # to the call's; 0.02-0.03 s without). A terminal run is watched by its user, and a Ctrl-C ends it
            # Cancelled (cli.interrupt); the heartbeat events only feed a zombie-run automation, which
            # deployments (workers) still get.
            nullcontext()
            if heartbeats_configured()
            else temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        ):
            result = fine_tune(**params.flow_arguments())
    except RunInterrupted as exc:  # Ctrl-C: the flow cancelled its job and ended Cancelled
        line = f"[yellow]{escape(str(exc))} (Prefect run marked Cancelled)[/yellow]"
        console.print(line, highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the flow
        console.print("[yellow]interrupted[/yellow]")
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
        console.print(f"[red]{escape(str(exc))}; nothing was promoted[/red]", highlight=False, soft_wrap=True)
        return EXIT_FAILED
    except PipelineError as exc:
        console.print(f"[red]{type(exc).__name__}:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_FAILED
    console.print(run_summary_text(result), markup=False, highlight=False, soft_wrap=True)
    ok = result.status == "succeeded" and result.smoke_passed is not False
    if ok and key is not None:
        rerun.remember(params, key, result)
    return EXIT_OK if ok else EXIT_FAILED
