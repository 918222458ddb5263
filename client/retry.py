"""The retry policy: which failures are worth another try, and how long to wait before it.

Shape follows openai-python's ``_base_client``: only requests that are safe to send twice (see
``RequestSpec.idempotent``) are retried in place, up to ``ClientSettings.max_retries`` times, after the
server's ``Retry-After`` when it gives one (and when it is not absurdly long), else after an exponential
backoff with jitter. An ``x-should-retry: true|false`` header overrides the status-code rule. The wait loop
(``tasks/wait.py``) and the Prefect retry condition (``tasks/retry_policy.py``) reuse these functions.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import random
import time

import httpx

from client.errors import APIConnectionError, APIStatusError, RateLimitError

DEFAULT_MAX_RETRIES = 4  # as many as the per-call retries it replaced (0.5, 1, 2, 4 s)
INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 8.0  # backoff 0.5, 1, 2, 4, 8, 8 ... s
# A server asking for a longer pause than this is treated as "not now": the error surfaces instead of a
# call that silently hangs for minutes.
MAX_RETRY_AFTER_S = 60.0
JITTER = 0.25  # each computed delay is stretched by up to 25% so parallel runs do not retry in lockstep

_TRANSIENT_STATUSES = frozenset({408, 429})
_log = logging.getLogger("client.retry")


def is_transient(exc: BaseException) -> bool:
    """THE retry predicate: connection errors, timeouts, 408, 429 and 5xx, unless ``x-should-retry`` says."""
    if isinstance(exc, APIConnectionError):
        return True
    if isinstance(exc, APIStatusError):
        if exc.response is not None:
            # Not a standard header, but the OpenAI API and compatible gateways send it; obey it when present.
            verdict = exc.response.headers.get("x-should-retry")
            if verdict in ("true", "false"):
                return verdict == "true"
        return exc.status_code in _TRANSIENT_STATUSES or exc.status_code >= 500
    return False


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; RFC 9110 dates are GMT anyway
        when = when.replace(tzinfo=datetime.UTC)
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def retry_delay_hint(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait before retrying (``Retry-After`` on any error status), else None."""
    if isinstance(exc, RateLimitError) and exc.retry_after is not None:
        return exc.retry_after
    if isinstance(exc, APIStatusError) and exc.response is not None:
        return parse_retry_after(exc.response.headers)
    return None


def backoff_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    initial_s: float = INITIAL_DELAY_S,
    max_s: float = MAX_DELAY_S,
    retry_after_max_s: float = MAX_RETRY_AFTER_S,
) -> float:
    """Seconds before retry number ``attempt`` (1-based).

    The server's ``retry_after`` when given (capped at ``retry_after_max_s``), else ``initial_s`` doubled per
    attempt up to ``max_s``, stretched by up to ``JITTER``.
    """
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, retry_after_max_s)
    base = min(initial_s * 2.0 ** min(attempt - 1, 60), max_s)
    return base * (1.0 + JITTER * random.random())


def delay_before_retry(
    exc: BaseException, *, idempotent: bool, retries_taken: int, max_retries: int
) -> float | None:
    """Seconds to wait before sending the failed request again, or None when it must not be retried.

    Never for a request that is not idempotent: a creating POST whose answer was lost may already have
    created its object, so only a caller that can look it up first (a Prefect task retry) may try again.
    """
    if not idempotent or retries_taken >= max_retries or not is_transient(exc):
        return None
    hint = retry_delay_hint(exc)
    if hint is not None and hint > MAX_RETRY_AFTER_S:
        return None
    return backoff_delay(retries_taken + 1, hint)


def log_retry(
    method: str, path: str, exc: BaseException, delay: float, retry_no: int, max_retries: int
) -> None:
    """One INFO line per in-place retry, so a slow call in a run's log says why it was slow."""
    _log.info(
        "%s %s failed (%s); retry %d of %d in %.2fs",
        method,
        path,
        type(exc).__name__,
        retry_no,
        max_retries,
        delay,
    )
