"""In-process progress bus: stages publish, front ends (the CLI's rich status) subscribe.

Prefect runs sync tasks in the caller's process, so a plain listener list is enough and keeps the
tasks free of any UI dependency.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressUpdate:
    """One observation: which stage, a short human message, and the job's state when known."""

    stage: str
    message: str
    job_id: str | None = None
    job_status: str | None = None
    fraction: float | None = None


Listener = Callable[[ProgressUpdate], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


@contextmanager
def subscribe(listener: Listener) -> Iterator[None]:
    """Receive every update published while the context is open."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def publish(update: ProgressUpdate) -> None:
    """Hand an update to all listeners; a broken listener must never fail a stage."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(update)
        except Exception:
            _log.debug("progress listener failed", exc_info=True)
