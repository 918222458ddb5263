"""Run-context helpers: a logger and artifact publishers that also work when a task's ``.fn`` is called bare.

Inside a Prefect run they use ``get_run_logger`` and the artifact API; outside one (unit tests, plain
scripts) they fall back to the stdlib logger and skip artifacts, so stage logic never depends on a server.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, cast
from uuid import UUID

from prefect import artifacts as _artifacts
from prefect.context import get_run_context
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

P = ParamSpec("P")
T = TypeVar("T")
_FALLBACK = logging.getLogger("ftpipe.tasks")
_KEY_BAD = re.compile(r"[^a-z0-9-]+")


def in_run() -> bool:
    """True inside a Prefect flow or task run."""
    try:
        get_run_context()
    except MissingContextError:
        return False
    return True


def cancelled_on_interrupt(what: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """A task body interrupted by Ctrl-C returns Prefect's Cancelled state (message: ``interrupted while
    <what>``) instead of raising; outside a run the KeyboardInterrupt passes through.

    Prefect records a task run that raises KeyboardInterrupt as Crashed; a returned state is how a Prefect 3
    task ends Cancelled. The caller gets the state in place of the value: `unless_interrupted` turns it back
    into the interrupt.
    """

    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def body(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                if not in_run():
                    raise
                from prefect.states import Cancelled

                return cast(T, Cancelled(message=f"interrupted while {what}"))

        return body

    return wrap


def unless_interrupted(value: T) -> T:
    """``value``, or KeyboardInterrupt again when it is the Cancelled state of a `cancelled_on_interrupt` task."""
    from prefect.states import State

    if isinstance(value, State) and value.is_cancelled():
        raise KeyboardInterrupt(value.message)
    return value


# Set by a flow that was interrupted while other threads run its subflows (a sweep): their waits stop at once,
# as if Ctrl-C had reached them, so each subflow cancels its own job and ends Cancelled.
_INTERRUPT = threading.Event()


def interrupt_waits() -> None:
    """Every wait in this process stops as interrupted (`interrupted_sleep` raises KeyboardInterrupt)."""
    _INTERRUPT.set()


def reset_interrupt() -> None:
    """Waits run normally again (a new sweep starts)."""
    _INTERRUPT.clear()


def interrupt_requested() -> bool:
    """True after `interrupt_waits` (until `reset_interrupt`)."""
    return _INTERRUPT.is_set()


def interrupted_sleep(seconds: float) -> None:
    """``time.sleep`` that ends early, raising KeyboardInterrupt, when `interrupt_waits` is called."""
    if _INTERRUPT.wait(seconds):
        raise KeyboardInterrupt("the flow that started this run was interrupted")


def quoted(value: T) -> T:
    """``value`` as a task argument Prefect passes on without walking it or resolving futures in it
    (``prefect.utilities.annotations.quote``, not its ``opaque``, which resolves a top-level future): it visits
    every element of a collection argument twice at a task's start, ~0.15 s for an eval's answers."""
    from prefect.utilities.annotations import quote

    return cast(T, quote(value))


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger when in a run, else a plain module logger."""
    if in_run():
        return get_run_logger()
    return _FALLBACK


# Concurrency limits listed per request while looking for one on a run's tags.
_LIMITS_PAGE = 200


def limit_on_tags(tags: set[str]) -> bool:
    """Whether a Prefect concurrency limit is set on one of ``tags`` (``tag:<tag>``); True when the API cannot
    tell, so a limit is never missed."""
    if not tags:
        return False
    from prefect.client.orchestration import get_client

    wanted = {f"tag:{t}" for t in tags}
    try:
        with get_client(sync_client=True) as client:
            offset = 0
            while True:
                page = client.read_global_concurrency_limits(limit=_LIMITS_PAGE, offset=offset)
                if any(limit.name in wanted for limit in page):
                    return True
                if len(page) < _LIMITS_PAGE:
                    return False
                offset += len(page)
    except Exception:
        _FALLBACK.debug("could not list the concurrency limits; task runs keep their tags", exc_info=True)
        return True


@contextmanager
def untagged_task_runs() -> Iterator[None]:
    """Task runs started inside do not inherit the flow run's tags, unless a concurrency limit is set on one.

    Before each task run that has tags Prefect asks the API for slots of the ``tag:<tag>`` limits, in a write
    transaction. Against the local SQLite server that races the run's own log and event writes, loses with
    "database is locked" (503) and the client asks again 2 s later: measured 1.8-2.5 s lost at about one task
    start in three, and at every first task after the job's wait (the metrics, after training). The flow run
    keeps its tags (runs are filtered by them); a limit set on one of them still holds: the tasks keep the tags.
    """
    from prefect.context import TagsContext

    inherited = TagsContext.get().current_tags
    if not inherited or limit_on_tags(set(inherited)):
        yield
        return
    with TagsContext(current_tags=set()):
        yield


def prefect_ui_url(flow_run_id: UUID | str | None) -> str | None:
    """The flow run's page in the Prefect UI, or None when no UI is configured (the temporary server has none).

    ``PREFECT_UI_URL`` is derived from ``PREFECT_API_URL`` unless set, so this works with any long-lived server
    the CLI points Prefect at.
    """
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=str(flow_run_id)) if flow_run_id else None


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes."""
    key = "-".join(_KEY_BAD.sub("-", p.lower()).strip("-") for p in parts if p)
    return key[:120] or "ftpipe"


def markdown(text: str, *, key: str | None = None, description: str | None = None) -> UUID | None:
    """Publish a markdown artifact (no-op outside a run)."""
    if not in_run():
        return None
    return cast(UUID, _artifacts.create_markdown_artifact(markdown=text, key=key, description=description))


def table(
    rows: list[dict[str, Any]], *, key: str | None = None, description: str | None = None
) -> UUID | None:
    """Publish a table artifact (no-op outside a run or for an empty table)."""
    if not in_run() or not rows:
        return None
    return cast(UUID, _artifacts.create_table_artifact(table=rows, key=key, description=description))


def link(url: str, *, text: str, key: str | None = None, description: str | None = None) -> UUID | None:
    """Publish a link artifact (no-op outside a run)."""
    if not in_run():
        return None
    return cast(
        UUID, _artifacts.create_link_artifact(link=url, link_text=text, key=key, description=description)
    )


def progress(value: float, *, key: str | None = None, description: str | None = None) -> UUID | None:
    """Create a progress artifact (0-100; no-op outside a run)."""
    if not in_run():
        return None
    return cast(UUID, _artifacts.create_progress_artifact(progress=value, key=key, description=description))


def update_progress(artifact_id: UUID | None, value: float, *, description: str | None = None) -> None:
    """Move an existing progress artifact (no-op when it was never created)."""
    if artifact_id is None:
        return
    _artifacts.update_progress_artifact(artifact_id=artifact_id, progress=value, description=description)
