"""Keep API keys out of log records and exception text.

httpcore logs response headers at DEBUG (``receive_response_headers.complete``), and a misbehaving server or
proxy may echo the request's Authorization header back; a logging filter scrubs registered secrets and any
``Bearer <token>`` from records of the httpx/httpcore loggers.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

REDACTED = "[REDACTED]"
# Token chars stop at quotes/brackets/commas so reprs such as (b'Authorization', b'Bearer x') stay readable.
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s'\",)\]}]+")
# Child loggers need their own filter: a parent's filters do not see records propagated from children.
_HTTP_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
_MIN_SECRET_LEN = 4  # never "redact" trivially short strings everywhere

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Remember ``secret`` so that ``redact`` and the log filter replace it."""
    if secret and len(secret) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and bearer tokens replaced by ``[REDACTED]``."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _BEARER_RE.sub(lambda m: m.group(1) + REDACTED, text)


def redact_value(value: Any) -> Any:
    """Apply ``redact`` to every string inside a JSON-like value (dicts, lists, strings)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [redact_value(v) for v in value]
    return value


class SecretRedactingFilter(logging.Filter):
    """Rewrites each record's final message with secrets redacted; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logging module's problem, not ours
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


_FILTER = SecretRedactingFilter()


def install_log_redaction() -> None:
    """Attach the redacting filter to the httpx/httpcore loggers (idempotent)."""
    names = set(_HTTP_LOGGERS)
    names.update(n for n in list(logging.root.manager.loggerDict) if n.startswith(("httpx.", "httpcore.")))
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
