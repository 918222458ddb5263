"""In-process progress bus: stages publish typed updates, front ends (``cli/progress_display.py``) subscribe.

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
    """One observation: which stage, a short human message, and what is known of the job at that moment.

    ``stage`` is the pipeline stage that published it (``run``, ``validate``, ``estimate``, ``upload``,
    ``create-job``, ``wait``, ``metrics``, ``evaluate``, ``smoke``); the job's status tells a waiting job's
    phase (queued, running, paused, ...). ``fraction`` is the stage's completion in 0..1 when known.
    """

    stage: str
    message: str
    job_id: str | None = None
    job_status: str | None = None
    fraction: float | None = None
    step: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    # The server's own finish estimate (Unix seconds), used until the display has measured a step rate.
    estimated_finish: float | None = None
    # True on the one update that summarises the past events of a job this run re-attached to.
    reattached: bool = False
    # Set on the ``run`` update a flow publishes when it starts: its id and, when a UI is reachable, its page.
    flow_run_id: str | None = None
    ui_url: str | None = None


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
