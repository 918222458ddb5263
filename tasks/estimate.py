"""Stage 2: the pre-flight estimate (tokens, cost, duration) and the budget gate, before any upload."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from client import MKA1Client
from estimate.core import Budget, JobEstimate, budget_problem, estimate_job
from estimate.render import markdown, summary_line
from estimate.tokens import Epochs, EstimateError, Method
from tasks import _runtime
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
    embedded: bool,
    budget: Budget,
) -> JobEstimate | None:
    """Estimate the job and publish it; raise ``BudgetExceeded`` when it does not fit ``budget``.

    Without a budget an estimate that cannot be made is a warning (None), not a failure.
    """
    log = _runtime.run_logger()
    publish(ProgressUpdate("estimate", f"counting the tokens of {Path(train_path).name} for {model}"))
    try:
        est = estimate_job(
            client, Path(train_path), model=model, method=method, n_epochs=n_epochs, embedded=embedded
        )
    except EstimateError as exc:
        if budget.is_set:
            raise EstimateFailed(f"cannot check the budget: {exc}") from exc
        log.warning("no pre-flight estimate: %s", exc)
        return None
    problem = budget_problem([est], budget)
    log.info("%s", summary_line(est))
    _runtime.markdown(
        markdown(est, budget, problem),
        key=_runtime.artifact_key("cost-estimate"),
        description="pre-flight token, cost and duration estimate",
    )
    if problem:
        raise BudgetExceeded(problem)
    return est
