"""Pieces every ``ftpipe`` command shares: exit codes, the parser class, option types, quiet logging."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from pydantic import BaseModel

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and options added on first use.

    ``configure`` adds a command's options when that command is parsed or its help is shown, so building the
    whole tree imports nothing a command needs for its defaults (``ftpipe --help`` stays instant).
    """

    def __init__(self, *args: Any, configure: Callable[[Parser], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._configure = configure

    def ensure_options(self) -> Parser:
        """Add the options now if ``configure`` has not run yet."""
        if self._configure is not None:
            configure, self._configure = self._configure, None
            configure(self)
        return self

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        return super(Parser, self.ensure_options()).parse_known_args(args, namespace)

    def format_usage(self) -> str:
        return super(Parser, self.ensure_options()).format_usage()

    def format_help(self) -> str:
        return super(Parser, self.ensure_options()).format_help()

    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the option, the rule and where to read more.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def usage_error(prog: str, message: str) -> int:
    """Print a usage error the way the parser does and return the usage exit code."""
    print(f"{prog}: error: {message} (see '{prog} --help')", file=sys.stderr)
    return EXIT_USAGE


def model_default(model: type[BaseModel], name: str) -> Any:
    """A parameter model's default for ``name``: the CLI never repeats a default the model declares."""
    return model.model_fields[name].get_default(call_default_factory=True)


def model_help(model: type[BaseModel], name: str, *, show_default: bool = True) -> str:
    """The field's description as option help, with argparse's default placeholder."""
    text = model.model_fields[name].description or name.replace("_", " ")
    return f"{text} (default: %(default)s)" if show_default else text


def non_negative_float(text: str) -> float:
    """argparse ``type=`` for amounts of money."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def contract_value(name: str, annotation: Any) -> Callable[[str], Any]:
    """argparse ``type=`` for a contract-constrained value: the error is the contract's rule, in one line."""
    from pydantic import TypeAdapter, ValidationError

    from contract.wire import AUTO, HYPERPARAMETER_RULES

    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    rule = f"must be {HYPERPARAMETER_RULES[name]}"

    def parse(text: str) -> Any:
        try:
            value: Any = text if text == AUTO else _number(text)
            return adapter.validate_python(value)
        except (ValueError, ValidationError):  # ValidationError is a ValueError; both mean "not in range"
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}") from None

    parse.__name__ = name
    return parse


def positive_float(text: str) -> float:
    """argparse ``type=`` for seconds and intervals."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def float_in(low: float, high: float, name: str) -> Callable[[str], float]:
    """argparse ``type=`` for a number from ``low`` to ``high``; ``name`` is what argparse's errors call it."""

    def parse(text: str) -> float:
        return _bounded_float(text, low, high)

    parse.__name__ = name
    return parse


def _bounded_float(text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """argparse ``type=`` for a score threshold in 0..1."""
    return _bounded_float(text, 0.0, 1.0)


def signed_unit_float(text: str) -> float:
    """argparse ``type=`` for a score difference in -1..1."""
    return _bounded_float(text, -1.0, 1.0)


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts and limits."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, str]:
    """argparse ``type=`` for ``KEY=VALUE`` pairs."""
    key, sep, val = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, val


def json_object(text: str) -> dict[str, object]:
    """argparse ``type=`` for one JSON object (e.g. a job integration)."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at char {exc.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


# Set before Prefect is imported, unless the user set them. The ephemeral server's telemetry heartbeat races
# a run for its SQLite lock; and its start (imports + database migrations on a new PREFECT_HOME) takes over
# Prefect's default 20 s on a loaded 2-core machine, which failed whole runs before they began.
PREFECT_ENV_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def prefect_env_defaults() -> None:
    """Apply ``PREFECT_ENV_DEFAULTS`` for a command that is about to import Prefect."""
    for name, value in PREFECT_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


# The loggers Prefect's logging.yml levels from PREFECT_LOGGING_LEVEL (the rest inherit from "prefect").
_PREFECT_LEVELLED_LOGGERS = ("prefect", "prefect.extra", "prefect.client", "prefect.infrastructure")


def quiet_prefect_logging() -> None:
    """Only warnings from Prefect's loggers, here and in worker processes started from here."""
    # If Prefect was imported already it has configured logging, so the env var alone only reaches child
    # processes (Dask workers); this process's loggers are lowered directly.
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    for name in _PREFECT_LEVELLED_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def console_log_handlers() -> list[logging.Handler]:
    """Handlers that print to a stream (Prefect's console handler, a progress display's routed ones)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                found[id(handler)] = handler
    return list(found.values())


class _NoTraceback(logging.Formatter):
    """Wraps a console formatter: the message line only, the traceback left to the Prefect run log."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        # The same record also reaches Prefect's API handler, so it is restored after this handler's line.
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def hide_console_tracebacks() -> None:
    """Prefect's console handlers print one line per failure, no traceback (unless FTPIPE_DEBUG is set).

    The run's own log in Prefect (API handler) keeps the full traceback; the CLI prints the one-line reason.
    """
    from cli.errors import debug_enabled

    if debug_enabled():
        return
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler.formatter, _NoTraceback):
                handler.setFormatter(_NoTraceback(handler.formatter or logging.Formatter()))
