"""The CLI's one error boundary: a failure a user can cause or meet becomes one short message and an exit code.

Exit codes: 0 ok, 1 failure, 2 usage (bad option, missing file), 130 interrupted. When stdout's reader goes away
(``| head``) the command stops quietly with 1, as rich's console does for its output. A traceback is shown only with
``--debug`` or ``FTPIPE_DEBUG=1``; without it an unexpected error is still one line that says how to see more.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE

DEBUG_ENV = "FTPIPE_DEBUG"


def debug_enabled() -> bool:
    """True when tracebacks were asked for (``--debug`` sets the variable for the whole process)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


class CommandError(Exception):
    """A failure the command has already put in words (e.g. "no job X at URL"): printed as is, exit 1."""


def _api_hint(base_url: str | None) -> str:
    where = f" at {base_url}" if base_url else ""
    return f"the API{where}"


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for ``exc``; unknown errors say how to get the traceback."""
    # Imports stay inside: the boundary must not make ``ftpipe --help`` import httpx or Prefect.
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, CommandError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        path = exc.filename if exc.filename is not None else ""
        reason = exc.strerror or type(exc).__name__
        return f"{path}: {reason.lower()}", EXIT_USAGE
    client_errors = sys.modules.get("client.errors")
    if client_errors is not None:
        url = _request_url(exc)
        if isinstance(exc, client_errors.APIConnectionError):
            return (
                f"cannot reach {_api_hint(url)}: {exc}; check MKA1_BASE_URL (or --base-url) and the network",
                EXIT_FAILED,
            )
        if isinstance(exc, (client_errors.AuthenticationError, client_errors.PermissionDeniedError)):
            return (
                f"{_api_hint(url)} refused the key ({exc.status_code}: {exc}); check MKA1_API_KEY",
                EXIT_FAILED,
            )
        if isinstance(exc, client_errors.APIStatusError):
            return f"{_api_hint(url)} answered {exc.status_code}: {exc}", EXIT_FAILED
        if isinstance(exc, client_errors.APIError):
            return f"{_api_hint(url)}: {exc}", EXIT_FAILED
    service_registry = sys.modules.get("services.registry")
    if service_registry is not None and isinstance(exc, service_registry.ServiceError):
        return str(exc), EXIT_FAILED
    task_errors = sys.modules.get("tasks.errors")
    if task_errors is not None and isinstance(exc, task_errors.PipelineError):
        return f"{type(exc).__name__}: {exc}", EXIT_FAILED
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.HTTPError):
        return f"HTTP error: {exc}", EXIT_FAILED
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text} (run with --debug or {DEBUG_ENV}=1 for the traceback)", EXIT_FAILED


def _request_url(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    request = getattr(response, "request", None) or getattr(exc, "request", None)
    url = getattr(request, "url", None)
    if url is None:
        return os.environ.get("MKA1_BASE_URL") or None
    return str(url.copy_with(query=None)) if hasattr(url, "copy_with") else str(url)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end was closed (poll reports an error on the write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of what is still buffered stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (replaced in tests): nothing to flush at exit
        pass


def guarded(prog: str, handler: Callable[[], int]) -> int:
    """Run ``handler`` inside the boundary; print one ``prog: error: ...`` line for what escapes it."""
    try:
        code = handler()
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at interpreter exit
        return code
    except SystemExit:
        raise
    except BrokenPipeError as exc:
        if not _stdout_reader_gone():
            return _report(prog, exc)  # another pipe or socket broke: a failure like any other
        _discard_stdout()
        return EXIT_FAILED
    except BaseException as exc:  # noqa: BLE001 - the boundary: every escape is reported, not re-raised
        return _report(prog, exc)


def _report(prog: str, exc: BaseException) -> int:
    if debug_enabled():
        raise exc
    message, code = describe(exc)
    if code == EXIT_INTERRUPTED:
        print(f"{prog}: interrupted", file=sys.stderr)
    else:
        print(f"{prog}: error: {message}", file=sys.stderr)
    return code
