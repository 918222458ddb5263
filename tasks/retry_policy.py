"""Prefect task retries for the stages that are not idempotent (upload, job create, smoke prompts).

Single calls that are safe to repeat are retried in place by the client (``client.retry``). A creating POST
is not, so its stage is retried as a whole: the task re-runs its reuse lookups before creating again, which
is why a lost answer never duplicates a file or a job. Only transient failures (``client.retry.is_transient``)
are retried, with exponential backoff plus jitter.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff

from client.retry import is_transient

API_RETRIES = 4
API_BACKOFF_FACTOR = 2.0  # delays 2, 4, 8, 16 s
API_JITTER_FACTOR = 0.5


def retry_on_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is a transient API error."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            result = state.result(raise_on_failure=False)
        except Exception:  # an unreadable result is not evidence of a transient fault
            return False
        exc = result if isinstance(result, BaseException) else None
    return exc is not None and is_transient(exc)


def api_task_options() -> dict[str, Any]:
    """Keyword arguments for ``@task`` on a stage that creates something through the API."""
    return {
        "retries": API_RETRIES,
        "retry_delay_seconds": exponential_backoff(backoff_factor=API_BACKOFF_FACTOR),
        "retry_jitter_factor": API_JITTER_FACTOR,
        "retry_condition_fn": retry_on_transient,
        # Tasks receive a live client and return API models: no input hashing, nothing persisted.
        "cache_policy": NO_CACHE,
        "persist_result": False,
    }
