"""Stage 2: the pre-flight estimate (tokens, cost, duration) and the budget gate, before any upload."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from client import MKA1Client
from estimate.budget import Budget
from estimate.core import JobEstimate, JobInputs, budget_problem, estimate_job, totals
from estimate.render import markdown, rows, summary_line, totals_line
from estimate.tokens import Epochs, EstimateError, Method
from tasks import runtime
from tasks.errors import BudgetExceeded, EstimateFailed
from tasks.progress import ProgressUpdate, publish


@task(name="estimate-cost", cache_policy=NO_CACHE, persist_result=False)
def estimate_task(
    client: MKA1Client | None,
    train_path: Path,
    *,
    model: str,
    method: Method,
    n_epochs: Epochs,
    batch_size: int | str = "auto",
    embedded: bool,
    budget: Budget,
    announce: bool = True,
) -> JobEstimate | None:
    """Estimate the job and publish it; raise ``BudgetExceeded`` when it does not fit ``budget``.

    Without a budget an estimate that cannot be made is a warning (None), not a failure. ``announce``: show
    it as the run's stage (not when it is made beside the uploads and the training, whose stages show).
    """
    log = runtime.run_logger()
    if announce:
        publish(ProgressUpdate("estimate", f"counting the tokens of {Path(train_path).name} for {model}"))
    try:
        # No calibration run here: it would add seconds to every first run on a model; the job history
        # (this server's last jobs on the model) gives the duration from the second run on.
        est = estimate_job(
            client,
            Path(train_path),
            model=model,
            method=method,
            n_epochs=n_epochs,
            batch_size=batch_size,
            embedded=embedded,
            calibrate=False,
        )
    except EstimateError as exc:
        if budget.is_set:
            raise EstimateFailed(f"cannot check the budget: {exc}") from exc
        log.warning("no pre-flight estimate: %s", exc)
        return None
    problem = budget_problem([est], budget)
    log.info("%s", summary_line(est))
    runtime.markdown(
        markdown(est, budget, problem),
        key=runtime.artifact_key("cost-estimate"),
        description="pre-flight token, cost and duration estimate",
    )
    if problem:
        raise BudgetExceeded(problem)
    return est


@task(name="estimate-sweep", cache_policy=NO_CACHE, persist_result=False)
def estimate_sweep_task(
    client: MKA1Client | None, jobs: list[JobInputs], *, embedded: bool, budget: Budget
) -> list[JobEstimate]:
    """Estimate every config; raise ``BudgetExceeded`` when their sum does not fit ``budget``.

    Runs before any config is launched. Durations come from job history only: a calibration run per config
    would cost more than the estimate is worth.
    """
    log = runtime.run_logger()
    publish(ProgressUpdate("estimate", f"estimating {len(jobs)} config(s)"))
    named: list[tuple[str | None, JobEstimate]] = []
    for job in jobs:
        try:
            est = estimate_job(
                client,
                job.train_path,
                validation_path=job.validation_path,
                model=job.model,
                method=job.method,
                n_epochs=job.n_epochs,
                batch_size=job.batch_size,
                embedded=embedded,
                calibrate=False,
            )
        except EstimateError as exc:
            if budget.is_set:
                raise EstimateFailed(f"cannot check the sweep's budget: config {job.name}: {exc}") from exc
            log.warning("no estimate for config %s: %s", job.name, exc)
            continue
        named.append((job.name, est))
    estimates = [est for _, est in named]
    total = totals(estimates)
    problem = budget_problem(estimates, budget)
    log.info("%s", totals_line(total))
    runtime.table(
        [{"config": name, **dict(rows(est))} for name, est in named],
        key=runtime.artifact_key("sweep-estimate"),
        description=totals_line(total) + (f"; stopped: {problem}" if problem else ""),
    )
    if problem:
        raise BudgetExceeded(problem)
    return estimates
