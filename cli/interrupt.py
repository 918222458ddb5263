"""Ctrl-C during a flow run: the console goes quiet at once and the run ends in one line, exit 130.

The flow itself cancels its job and ends Cancelled (``flows/cancellation.py``); calling it then raises
Prefect's ``CancelledRun`` with the line to print. Here only what the terminal shows is handled: after the first
SIGINT no log line reaches the console (Prefect's run log still gets every record), and the CancelledRun that
the interrupt caused becomes a `RunInterrupted` (a KeyboardInterrupt, so a progress display shows it as one).
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from cli.common import console_log_handlers


class RunInterrupted(KeyboardInterrupt):
    """The run was interrupted and ended Cancelled; ``str()`` is the flow's line (e.g. which job it cancelled)."""


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


_MUTE = _DropAll()


def mute_console_logs() -> None:
    """No log record reaches a console handler any more (file and API handlers are untouched)."""
    for handler in console_log_handlers():
        if _MUTE not in handler.filters:
            handler.addFilter(_MUTE)


def unmute_console_logs() -> None:
    """Undo `mute_console_logs`."""
    for handler in console_log_handlers():
        handler.removeFilter(_MUTE)


@contextmanager
def quiet_interrupt() -> Iterator[None]:
    """While the block runs, Ctrl-C mutes the console logs and raises KeyboardInterrupt (a second Ctrl-C is
    Python's plain one); a ``CancelledRun`` after it leaves the block as `RunInterrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    interrupted = threading.Event()
    previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        interrupted.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        mute_console_logs()
        # The process is on its way out: keep Prefect's exit-time lines (e.g. stopping its temporary server)
        # off the terminal too. atexit runs last-registered first, so this runs before Prefect's own handlers.
        atexit.register(mute_console_logs)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except Exception as exc:
        from prefect.exceptions import CancelledRun

        if interrupted.is_set() and isinstance(exc, CancelledRun):
            raise RunInterrupted(str(exc)) from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        if interrupted.is_set():
            unmute_console_logs()
