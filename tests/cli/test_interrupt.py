"""cli/interrupt.py: after a Ctrl-C the console is quiet and the run's Cancelled end becomes one line."""

from __future__ import annotations

import io
import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest
from prefect.exceptions import CancelledRun

from cli.interrupt import RunInterrupted, quiet_interrupt, unmute_console_logs


@pytest.fixture
def console_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("prefect.test-interrupt")
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        unmute_console_logs()


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # the handler raises during the sleep
    raise AssertionError("no KeyboardInterrupt after SIGINT")


def test_ctrl_c_mutes_the_console_and_the_cancelled_run_is_one_line(
    console_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = console_log
    before = signal.getsignal(signal.SIGINT)
    logger.error("before the interrupt")
    with pytest.raises(RunInterrupted, match=r"^interrupted: cancelled job ftjob_1$"), quiet_interrupt():
        try:
            _ctrl_c()
        except KeyboardInterrupt:
            # What the engine and the flow log while the job is cancelled stays off the console.
            logger.error("Crash detected! Execution was aborted by an interrupt signal.")
            raise CancelledRun("interrupted: cancelled job ftjob_1") from None
    assert stream.getvalue() == "before the interrupt\n"
    assert signal.getsignal(signal.SIGINT) is before


def test_without_ctrl_c_nothing_changes(console_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = console_log
    # A run cancelled some other way is not reported as an interrupt, and logs keep printing.
    with pytest.raises(CancelledRun), quiet_interrupt():
        logger.error("still shown")
        raise CancelledRun("cancelled elsewhere")
    assert stream.getvalue() == "still shown\n"


def test_a_second_ctrl_c_is_a_plain_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt) as info, quiet_interrupt():
        try:
            _ctrl_c()
        except KeyboardInterrupt:
            _ctrl_c()  # e.g. while the job is being cancelled: leave at once
    assert type(info.value) is KeyboardInterrupt
    unmute_console_logs()
