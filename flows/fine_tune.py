"""The ``fine-tune`` flow: validate -> upload -> create job -> wait -> metrics -> evaluate (gate, promotion)."""

# No `from __future__ import annotations`: a served deployment pickles the flow into a subprocess, where
# string annotations such as "FineTuneParams" can no longer be resolved.

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, wait
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled

from client import MKA1Client
from client.models import FineTuningJob
from contract.hyperparameters import BatchSize, Beta, LearningRateMultiplier, MethodType, NEpochs, Seed
from estimate.budget import MaxCost, MaxTokens
from estimate.core import compare
from estimate.duration import measured_training_seconds
from evaluation.champion import PrefectVariables
from evaluation.evalset import EvalCase
from evaluation.gate import DEFAULT_MIN_IMPROVEMENT
from evaluation.selection import SelectBy
from flows.backend_runtime import open_connection
from flows.cancellation import (
    Interrupted,
    cancel_job,
    interrupted_message,
    interrupted_outside_the_wait,
    on_cancellation_hook,
)
from flows.eval_ahead import LoadProbe, eval_ahead
from flows.experiment import ExperimentRun, dataset_label, run_name, run_tags
from flows.judging import JudgePlan, current_champion, judge_run, plan_judging
from flows.params import FineTuneParams
from flows.preload import preload
from services.prefect_api import serving_pids
from tasks import report, runtime
from tasks.create_job import JobSpec, create_job_task, record_job
from tasks.errors import GateFailed, JobFailed
from tasks.estimate import estimate_task
from tasks.eval_cache import AnswerCache
from tasks.evaluate import EvalOptions
from tasks.progress import ProgressUpdate, publish
from tasks.record import DatasetFile, RunRecord
from tasks.state import default_state_dir
from tasks.upload import UploadedFile, upload_file_task
from tasks.validate import ValidationSummary, validate_dataset_task
from tasks.wait import wait_for_job_task

# How long a failed or interrupted run waits for the uploads/estimate still running beside it (Ctrl-C target:
# exit within a few seconds).
SETTLE_TIMEOUT_S = 5.0


@contextmanager
def settled_on_error(
    futures: list[PrefectFuture[Any]], timeout_s: float = SETTLE_TIMEOUT_S
) -> Iterator[None]:
    """On an error or Ctrl-C in the block, wait (at most ``timeout_s``) for ``futures`` still running, so they
    finish before the client they use is closed instead of failing on it (one more error line each)."""
    try:
        yield
    except BaseException:
        pending = [f for f in futures if f.state.is_running() or f.state.is_pending()]
        if pending:
            with suppress(BaseException):  # a second Ctrl-C ends the wait, never the original error
                wait(pending, timeout=timeout_s)
        raise


def _judge_plan(params: FineTuneParams) -> JudgePlan:
    return plan_judging(
        evaluate=params.evaluate,
        eval_file=params.eval_path(),
        validation_file=params.validation_path(),
        smoke_file=params.smoke_path(),
        smoke_cases=list(params.smoke_prompts),
        select_by=params.select_by,
        min_score=params.gate_min_score,
        min_improvement=params.gate_min_improvement,
        # The flow receives every parameter explicitly, so "not set" can only be told by value.
        min_improvement_is_default=params.gate_min_improvement == DEFAULT_MIN_IMPROVEMENT,
        promote_as=params.promote_as,
        options=EvalOptions(
            max_output_tokens=params.eval_max_output_tokens,
            concurrency=params.eval_concurrency,
            judge_model=params.judge_model,
        ),
    )


def _resolved_hyperparameters(job: FineTuningJob) -> dict[str, Any]:
    """The hyperparameters as the job reports them (the method's block wins over the deprecated top level)."""
    method = job.method
    block = getattr(method, method.type, None) if method is not None else None
    reported = getattr(block, "hyperparameters", None)
    if reported is not None:
        return {k: v for k, v in reported.model_dump().items() if v is not None}
    return dict(job.hyperparameters or {})


def _dataset_file(role: str, path: Path, upload: UploadedFile, validation: ValidationSummary) -> DatasetFile:
    stats = validation.stats.get(role, {})
    return DatasetFile(
        role=role,  # type: ignore[arg-type]
        path=path.absolute(),
        sha256=upload.sha256,
        bytes=upload.bytes,
        examples=int(stats.get("examples", 0)),
        file_id=upload.file_id,
        reused=upload.reused,
    )


def _known_params(params: FineTuneParams, train: Path, validation: Path | None) -> dict[str, str]:
    """Params fixed before the job exists (the record adds the rest); the same strings the record logs."""
    known: dict[str, object] = {
        "base_model": params.model,
        "method": params.method,
        "seed": params.seed,
        "suffix": params.suffix,
        "training_file": train.absolute(),
        "validation_file": validation.absolute() if validation else None,
    }
    return {k: str(v) for k, v in known.items() if v is not None}


def _flow_run_name() -> str:
    """The run's name from its config, e.g. ``tiny-chat-support-bot-s42``."""
    given = current_flow_run.get_parameters()
    model = given.get("model") or FineTuneParams.model_fields["model"].default
    seed = given["seed"] if "seed" in given else FineTuneParams.model_fields["seed"].default
    return run_name(str(model), given.get("suffix"), seed)


# Built once: the signature's defaults and descriptions, from FineTuneParams (their one home).
_P = FineTuneParams.signature_defaults()


# Every parameter is top-level (Prefect merges a deployment run's overrides key by key); the signature lists
# FineTuneParams' fields in form order, and a test pins the two together.
@flow(
    name="fine-tune",
    flow_run_name=_flow_run_name,
    on_cancellation=[on_cancellation_hook],
    persist_result=False,
)
def fine_tune(
    dataset_dir: Path | None = _P["dataset_dir"],
    train_file: Path | None = _P["train_file"],
    validation_file: Path | None = _P["validation_file"],
    smoke_file: Path | None = _P["smoke_file"],
    model: str = _P["model"],
    method: MethodType = _P["method"],
    n_epochs: NEpochs = _P["n_epochs"],
    batch_size: BatchSize = _P["batch_size"],
    learning_rate_multiplier: LearningRateMultiplier = _P["learning_rate_multiplier"],
    beta: Beta | None = _P["beta"],
    suffix: str | None = _P["suffix"],
    seed: Seed | None = _P["seed"],
    metadata: dict[str, str] = _P["metadata"],
    integrations: list[dict[str, Any]] = _P["integrations"],
    smoke_prompts: list[EvalCase] = _P["smoke_prompts"],
    eval_file: Path | None = _P["eval_file"],
    evaluate: bool = _P["evaluate"],
    select_by: SelectBy | None = _P["select_by"],
    gate_min_score: float | None = _P["gate_min_score"],
    gate_min_improvement: float | None = _P["gate_min_improvement"],
    promote_as: str | None = _P["promote_as"],
    judge_model: str | None = _P["judge_model"],
    eval_max_output_tokens: int = _P["eval_max_output_tokens"],
    eval_concurrency: int | None = _P["eval_concurrency"],
    poll_interval_s: float | None = _P["poll_interval_s"],
    poll_max_interval_s: float = _P["poll_max_interval_s"],
    wait_timeout_s: float = _P["wait_timeout_s"],
    output_dir: Path | None = _P["output_dir"],
    state_dir: Path | None = _P["state_dir"],
    fresh_job_if_failed: bool = _P["fresh_job_if_failed"],
    base_url: str | None = _P["base_url"],
    on_behalf_of: str | None = _P["on_behalf_of"],
    max_cost: MaxCost = _P["max_cost"],
    max_tokens: MaxTokens = _P["max_tokens"],
) -> RunRecord:
    """Fine-tune ``model`` on the dataset and return the run's record (also written to result.json)."""
    # locals() is exactly the arguments here; they are checked together (dataset_dir or train_file, beta
    # only for DPO, metadata limits) before anything is read or uploaded.
    params = FineTuneParams.from_arguments(dict(locals()))
    experiment = ExperimentRun.prepare(
        model=params.model, flow_run_id=current_flow_run.get_id(), warn=runtime.run_logger().warning
    )
    try:
        with runtime.untagged_task_runs():
            return _fine_tune(params, experiment)
    except GateFailed:
        raise  # the job succeeded and its tracked run is already finished; only the model was rejected
    except JobFailed as exc:
        experiment.ended_without_success(exc.job_id, exc.status, str(exc))
        raise
    except KeyboardInterrupt as exc:
        # Ctrl-C: the job was cancelled below (if one ran), or here when the interrupt came outside the wait.
        # Returning a Cancelled state is Prefect's way to end the run Cancelled rather than Crashed; the caller
        # gets CancelledRun carrying the message.
        exc = interrupted_outside_the_wait(params, current_flow_run.get_id(), exc)
        experiment.ended_without_success(experiment.job_id, "cancelled", "the flow run was interrupted")
        return Cancelled(message=interrupted_message(exc, experiment.job_id))  # type: ignore[return-value]
    except (asyncio.CancelledError, TerminationSignal):
        experiment.ended_without_success(experiment.job_id, "cancelled", "the flow run was interrupted")
        raise
    except BaseException as exc:
        experiment.ended_without_success(experiment.job_id, "failed", f"{type(exc).__name__}: {exc}")
        raise


def _fine_tune(params: FineTuneParams, experiment: ExperimentRun) -> RunRecord:
    # What other processes keep busy, until the eval-during-training decision (not the Prefect server serving
    # this run's start).
    load = LoadProbe(serving=serving_pids())
    started = time.monotonic()
    started_at = datetime.now(UTC)
    log = runtime.run_logger()
    train_path, validation_path = params.train_path(), params.validation_path()
    judge_plan = _judge_plan(params)  # a broken eval/smoke file fails the run before compute is spent
    champions = PrefectVariables()
    current_champion(judge_plan, champions)  # so does an unreadable champion record
    state_dir = params.state_dir or default_state_dir()
    flow_run_id = current_flow_run.get_id()
    run_url = runtime.prefect_ui_url(flow_run_id)
    publish(ProgressUpdate("run", "flow run started", flow_run_id=flow_run_id, ui_url=run_url))

    validation = validate_dataset_task(train_path, validation_path, n_epochs=params.n_epochs)
    experiment.begin(
        name=current_flow_run.get_name() or run_name(params.model, params.suffix, params.seed),
        tags=run_tags(
            params.model,
            params.method,
            dataset_label(params.dataset_dir, train_path),
            current_deployment.get_name(),
        ),
        params=_known_params(params, train_path, validation_path),
    )

    background: list[PrefectFuture[Any]] = []  # task runs beside the flow thread that use the client
    others = load.read()  # before the connection, whose backend may be starting (its start-up is not a load)
    with (
        open_connection(params.base_url, params.on_behalf_of) as conn,
        MKA1Client(conn.settings, transport=conn.transport) as client,
        # Eval work started while the job trains; abandoned (calls cancelled) if the run stops before judging.
        eval_ahead(
            judge_plan,
            conn.settings,
            conn.transport,
            AnswerCache(state_dir, conn.server_id, conn.settings.on_behalf_of),
            embedded=conn.embedded,
            others=others,
        ) as ahead,
        preload() as preloader,
        settled_on_error(background),  # exits first: a failed run waits for them before the client closes
    ):
        log.info("using %s API at %s", "embedded" if conn.embedded else "remote", conn.settings.base_url)
        budget = params.budget()
        estimating: dict[str, Any] = {
            "model": params.model,
            "method": params.method,
            "n_epochs": params.n_epochs,
            "batch_size": params.batch_size,
            "embedded": conn.embedded,
            "budget": budget,
        }
        # With a budget, before any upload: over it, the run stops here (BudgetExceeded) with nothing sent.
        # Without one the estimate only informs (and the estimate-vs-actual record), so it is made beside the
        # uploads and the training (a first count loads the model's tokenizer: seconds) and joined after them.
        estimate, estimate_run = None, None
        if budget.is_set:
            estimate = estimate_task(client, train_path, **estimating)
        else:
            estimate_run = estimate_task.submit(client, train_path, announce=False, **estimating)
            background.append(estimate_run)
        # Both files at once: each is a hash, a lookup and maybe an upload, mostly waiting on the server.
        uploads = {
            role: upload_file_task.submit(
                client, path, state_dir=state_dir, server_id=conn.server_id, role=role
            )
            for role, path in (("training", train_path), ("validation", validation_path))
            if path is not None
        }
        background.extend(uploads.values())
        train_up = uploads["training"].result()
        val_up = uploads["validation"].result() if "validation" in uploads else None
        spec = JobSpec(
            model=params.model,
            training_file=train_up.file_id,
            validation_file=val_up.file_id if val_up else None,
            method=params.job_method(),
            suffix=params.suffix,
            seed=params.seed,
            integrations=list(params.integrations),
        )
        handle = create_job_task(
            client,
            spec,
            metadata=params.metadata,
            state_dir=state_dir,
            server_id=conn.server_id,
            flow_run_id=flow_run_id,
            fresh_if_dead=params.fresh_job_if_failed,
        )
        job_id = handle.job.id
        experiment.job_created(job_id)
        ahead.start(handle.job.model or params.model)
        preloader.start()  # the flow only polls while the job trains
        obo = client.settings.on_behalf_of
        finished: FineTuningJob | None = None
        try:
            finished = runtime.unless_interrupted(
                wait_for_job_task(
                    client,
                    job_id,
                    params.poll_policy(embedded=conn.embedded),
                    on_events=ahead.observer(client, experiment.observe),
                    attached=handle.attached,
                )
            )
        except (KeyboardInterrupt, asyncio.CancelledError, TerminationSignal) as exc:
            log.warning("flow interrupted while waiting: cancelling job %s", job_id)
            status = cancel_job(client, job_id, log)
            if status is not None:
                record_job(
                    state_dir,
                    conn.server_id,
                    obo,
                    handle.idempotency_key,
                    handle.job.model_copy(update={"status": status}),
                    flow_run_id,
                )
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(job_id, status) from exc
            raise
        finally:
            # Keep jobs.json's status current so the cancellation hook skips finished jobs; a wait that
            # returned already holds the terminal job, so only the failure paths read it again.
            try:
                latest = finished or client.jobs.retrieve(job_id)
                record_job(state_dir, conn.server_id, obo, handle.idempotency_key, latest, flow_run_id)
            except Exception:
                log.debug("could not refresh job %s status in the state dir", job_id)
        job = finished
        ahead.job_succeeded(job)  # the fine-tuned model's eval starts now, beside the metrics stage
        if estimate_run is not None:
            try:
                estimate = estimate_run.result()
            except Exception as exc:  # it only informs: the trained model must not be lost over it
                log.warning("no estimate for this run (%s: %s)", type(exc).__name__, exc)

        output_dir = params.output_dir or Path("runs") / job_id
        from tasks.metrics import collect_metrics_task  # with pandas: not a cost of the flow's start

        metrics = collect_metrics_task(client, job_id, output_dir)
        vs_actual = (
            compare(estimate, job.trained_tokens, measured_training_seconds(client, job))
            if estimate is not None
            else None
        )
        judged = None
        if job.fine_tuned_model and judge_plan.sets:
            judged = judge_run(
                plan=ahead.plan,  # the eval concurrency resolved for this server
                settings=conn.settings,
                transport=conn.transport,
                base_model=job.model or params.model,
                job=job,
                checkpoints_parquet=metrics.files.get("checkpoints_parquet"),
                final_metrics=metrics.final_metrics,
                output_dir=output_dir,
                flow_run_id=str(flow_run_id) if flow_run_id else None,
                store=champions,
                state_dir=state_dir,
                final_step=metrics.total_steps,
                ahead=ahead,
                cache=ahead.cache,
            )

    evaluation = judged.report if judged else None
    result_path = metrics.output_dir / "result.json"
    result = RunRecord(
        job_id=job_id,
        status=str(job.status),
        base_model=job.model or params.model,
        method=job.method.type if job.method else params.method,
        hyperparameters=_resolved_hyperparameters(job),
        seed=job.seed if job.seed is not None else params.seed,
        suffix=job.suffix if job.suffix is not None else params.suffix,
        metadata=job.metadata or dict(params.metadata),
        integrations=job.integrations or [],
        fine_tuned_model=job.fine_tuned_model,
        trained_tokens=job.trained_tokens,
        total_steps=metrics.total_steps,
        idempotency_key=handle.idempotency_key,
        job_attached=handle.attached,
        training=_dataset_file("training", train_path, train_up, validation),
        validation=(
            _dataset_file("validation", validation_path, val_up, validation)
            if validation_path is not None and val_up is not None
            else None
        ),
        flow_run_id=flow_run_id,
        flow_run_name=current_flow_run.get_name(),
        flow_run_url=run_url,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        duration_s=time.monotonic() - started,
        final_metrics=metrics.final_metrics,
        metric_definitions=metrics.definitions,
        output_dir=metrics.output_dir,
        outputs={**metrics.files, **(judged.files if judged else {}), "result_json": result_path},
        smoke_passed=judged.smoke_passed if judged else None,
        smoke_answers=judged.smoke_answers if judged else [],
        evaluation=evaluation,
        promoted_as=params.promote_as if evaluation is not None and evaluation.promoted else None,
        estimate=vs_actual,
    )
    result_path.write_text(result.to_json(), encoding="utf-8")
    result = experiment.succeeded(result, metrics.checkpoint_values)
    runtime.markdown(
        report.run_summary_markdown(result),
        key=runtime.artifact_key("fine-tune-result"),
        description="run summary",
    )
    log.info("fine-tune finished: job %s %s, model %s", job_id, job.status, job.fine_tuned_model)
    if evaluation is not None and evaluation.gate_passed is False:
        # The record is written first, so a failed gate still leaves the scores behind.
        raise GateFailed(
            "gate failed: " + "; ".join(evaluation.gate_failures), evaluation.gate_failures, result
        )
    return result
