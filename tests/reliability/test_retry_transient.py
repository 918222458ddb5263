"""tasks.retry_policy.retry_transient: in-place retries of one idempotent call."""

from __future__ import annotations

import pytest

from client.errors import APIConnectionError, BadRequestError, RateLimitError
from tasks.retry_policy import CALL_RETRIES, retry_transient


def _flaky(failures: list[Exception]) -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "ok"

    return calls, call


def test_transient_errors_are_retried_honouring_retry_after() -> None:
    slept: list[float] = []
    calls, call = _flaky(
        [RateLimitError("slow down", status_code=429, retry_after=3.0), APIConnectionError("reset")]
    )
    assert retry_transient(call, sleep=slept.append) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 3 and 3.0 <= slept[0] <= 3.75 and 1.0 <= slept[1] <= 1.25


def test_permanent_error_is_raised_at_once() -> None:
    calls, call = _flaky([BadRequestError("bad", status_code=400)])
    with pytest.raises(BadRequestError):
        retry_transient(call, sleep=lambda _: None)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_gives_up_after_the_retry_budget() -> None:
    calls, call = _flaky([APIConnectionError("reset") for _ in range(CALL_RETRIES + 1)])
    with pytest.raises(APIConnectionError):
        retry_transient(call, sleep=lambda _: None)  # type: ignore[arg-type]
    assert len(calls) == CALL_RETRIES + 1
