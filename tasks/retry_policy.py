"""The pipeline's single retry policy for tasks that talk to the API.

Only transient failures (as decided by ``client.errors.is_transient``) are retried, with exponential
backoff plus jitter so several runs hitting one rate limit do not retry in lockstep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff

from client.errors import is_transient, retry_delay_hint

T = TypeVar("T")

API_RETRIES = 4
API_BACKOFF_FACTOR = 2.0  # delays 2, 4, 8, 16 s
API_JITTER_FACTOR = 0.5
# In-place retries of one idempotent call: a task making several calls must not restart them all (and,
# at a high fault rate, run out of task retries) because one of them hit a transient error.
CALL_RETRIES = 4
CALL_BACKOFF_S = 0.5
CALL_BACKOFF_MAX_S = 8.0


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
    """Keyword arguments for ``@task`` on every stage that calls the API."""
    return {
        "retries": API_RETRIES,
        "retry_delay_seconds": exponential_backoff(backoff_factor=API_BACKOFF_FACTOR),
        "retry_jitter_factor": API_JITTER_FACTOR,
        "retry_condition_fn": retry_on_transient,
        # Tasks receive a live client and return API models: no input hashing, nothing persisted.
        "cache_policy": NO_CACHE,
        "persist_result": False,
    }


def retry_transient(call: Callable[[], T], *, sleep: Callable[[float], None] = time.sleep) -> T:
    """Run one idempotent API call, retrying transient failures in place (``Retry-After`` first).

    Only for reads and repeatable calls: creating POSTs stay under the task retry, which re-runs the
    task's reuse lookups first so a lost answer never duplicates an object.
    """
    for attempt in range(1, CALL_RETRIES + 2):
        try:
            return call()
        except Exception as exc:
            if attempt > CALL_RETRIES or not is_transient(exc):
                raise
            hint = retry_delay_hint(exc)
            delay = hint if hint is not None else min(CALL_BACKOFF_S * 2 ** (attempt - 1), CALL_BACKOFF_MAX_S)
            sleep(delay * random.uniform(1.0, 1.25))  # jitter: parallel runs do not retry in lockstep
    raise AssertionError("unreachable")  # the loop returns or raises
