"""Checks ``ftpipe run`` makes before Prefect starts: the files exist, the dataset is valid, the API answers.

Each mistake caught here costs seconds and uploads nothing; the flow repeats the checks for runs started
elsewhere (deployments), so these are an early answer, not the only guard.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from client import MKA1Client
    from client.settings import ClientSettings
    from flows.params import FineTuneParams

# An address nothing answers on is tried this many times, this far apart, before it is reported: long enough
# to ride out a server restart, short enough to answer in well under 5 s (not the client's minute). A server
# that answers with a transient failure is retried under the client's policy instead.
PREFLIGHT_ATTEMPTS = 3
PREFLIGHT_DELAY_S = 0.25
PREFLIGHT_TIMEOUT_S = 1.5


@dataclass(frozen=True)
class PreflightError(Exception):
    """A problem found before the run starts: ``lines`` to print, ``exit_code`` to return."""

    lines: tuple[str, ...]
    exit_code: int


def check_paths(params: FineTuneParams) -> None:
    """Every named file/folder exists and is of the right kind (a usage error otherwise)."""
    from cli.common import EXIT_USAGE

    problems: list[str] = []
    if params.dataset_dir is not None:
        d = Path(params.dataset_dir)
        if not d.exists():
            problems.append(f"{d}: no such dataset folder")
        elif not d.is_dir():
            problems.append(f"{d}: not a folder (give a dataset folder, or the file with --train)")
        elif params.train_file is None and not (d / "train.jsonl").is_file():
            problems.append(f"{d}: has no train.jsonl (or name the file with --train)")
    for option, value in (
        ("--train", params.train_file),
        ("--validation", params.validation_file),
        ("--smoke", params.smoke_file),
        ("--eval", params.eval_file),
    ):
        if value is None:
            continue
        p = Path(value)
        if not p.exists():
            problems.append(f"{option} {p}: no such file")
        elif p.is_dir():
            problems.append(f"{option} {p}: is a folder, not a JSONL file")
    if problems:
        raise PreflightError(tuple(problems), EXIT_USAGE)


def check_dataset(params: FineTuneParams) -> None:
    """Validate train/validation files the way ``ftpipe validate`` does; print its report when invalid."""
    from cli.common import EXIT_FAILED
    from cli.validate import report_lines
    from validation import validate_file

    lines: list[str] = []
    for path in (params.train_path(), params.validation_path()):
        if path is None:
            continue
        report = validate_file(path)
        if not report.ok:
            lines.extend(report_lines(path, report))
    if lines:
        raise PreflightError(("dataset invalid; nothing was uploaded:", *lines), EXIT_FAILED)


def check_api(settings: ClientSettings, model: str) -> None:
    """The API answers, accepts the key and knows ``model``; raises ``PreflightError`` when it does not.

    A server that answers but fails (5xx, 429, a dropped connection, an answer slower than the probe's timeout)
    is asked again under the client's retry policy (``client/retry.py``: ``Retry-After``, backoff, jitter,
    ``MKA1_MAX_RETRIES``). An address nothing answers on gets ``PREFLIGHT_ATTEMPTS`` quick tries, so a wrong
    URL is reported in about a second instead of after the whole backoff.
    """
    import httpx

    from cli.common import EXIT_FAILED
    from client import MKA1Client, retry
    from client._requests import RequestSpec
    from client.errors import (
        APIError,
        APIStatusError,
        AuthenticationError,
        NotFoundError,
        PermissionDeniedError,
    )

    root = settings.base_url
    probe_settings = settings.model_copy(
        update={"max_retries": 0, "timeout_s": PREFLIGHT_TIMEOUT_S, "connect_timeout_s": PREFLIGHT_TIMEOUT_S}
    )
    unreachable = retries = 0
    with MKA1Client(probe_settings) as client:
        while True:
            try:
                client.send(RequestSpec("GET", f"models/{model}", parse=lambda _: None))
                return
            except (AuthenticationError, PermissionDeniedError) as exc:
                raise PreflightError(
                    (f"the API at {root} refused the key ({exc.status_code}); check MKA1_API_KEY",),
                    EXIT_FAILED,
                ) from None
            except NotFoundError:
                # A server without GET /models/{id} answers 404 for every id; ask the list before blaming the model.
                if _has_models_endpoint(client):
                    raise PreflightError(
                        (
                            f"unknown model {model!r} at {root}; list them with GET {root}/models, or pass --model",
                        ),
                        EXIT_FAILED,
                    ) from None
                return
            except APIError as exc:
                cause = exc.__cause__
                if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout)):
                    unreachable += 1
                    last = f"cannot reach the API at {root} ({type(cause).__name__}: {cause or 'no answer'})"
                    delay: float | None = (
                        PREFLIGHT_DELAY_S * unreachable if unreachable < PREFLIGHT_ATTEMPTS else None
                    )
                else:
                    if not retry.is_transient(exc):
                        return  # some other refusal: the run's own calls will name it precisely
                    last = (
                        f"the API at {root} answered {exc.status_code}"
                        if isinstance(exc, APIStatusError)
                        else f"the API at {root} gave no answer ({type(cause).__name__ if cause else exc})"
                    )
                    delay = retry.delay_before_retry(
                        exc, idempotent=True, retries_taken=retries, max_retries=settings.max_retries
                    )
                    retries += 1
                if delay is None:
                    raise PreflightError(
                        (f"{last}; check MKA1_BASE_URL (or --base-url)",), EXIT_FAILED
                    ) from None
                time.sleep(delay)


def _has_models_endpoint(client: MKA1Client) -> bool:
    from client._requests import RequestSpec
    from client.errors import APIError

    try:
        client.send(RequestSpec("GET", "models", parse=lambda _: None))
    except APIError:
        return False
    return True


def check_embedded_model(model: str) -> None:
    """A base-model name the embedded backend cannot train on is refused here, before anything uploads.

    Built-ins, aliases and ``local:/dir`` folders are decided by the backend's own rules (read from the same
    settings the backend gets); other names (fine-tuned models) need the backend's database and are left to
    the job create.
    """
    from backend.errors import BackendHTTPError
    from backend.model_refs import LOCAL_PREFIX, ModelAccess, is_known_base_model
    from backend.settings import BackendSettings
    from backend.trainer.base_models import BUILTIN_MODELS
    from cli.common import EXIT_FAILED

    access = ModelAccess.of(BackendSettings())
    if not model.startswith(LOCAL_PREFIX) and model not in access.aliases:
        return
    try:
        known = is_known_base_model(access.aliases.get(model, model), access)
    except BackendHTTPError as exc:
        raise PreflightError((f"--model {model}: {exc.message}",), EXIT_FAILED) from None
    if not known:
        names = ", ".join([*BUILTIN_MODELS, *access.aliases])
        raise PreflightError(
            (
                f"--model {model}: unknown to the embedded backend; use one of {names}, "
                "local:/abs/path/to/hf-model-dir (under FTPIPE_BACKEND_LOCAL_MODEL_ROOTS) or a fine-tuned model",
            ),
            EXIT_FAILED,
        )


def check_local_port() -> None:
    """The embedded backend's port is free, or held by an ftpipe backend that accepts this run's key."""
    from backend.settings import BackendSettings
    from cli.common import EXIT_FAILED
    from flows.backend_runtime import LocalPortTaken, connection_overridden, reusable_local_backend

    if connection_overridden():
        return  # the run will not use a local backend
    try:
        reusable_local_backend(BackendSettings())
    except LocalPortTaken as exc:
        raise PreflightError((str(exc),), EXIT_FAILED) from None


def check_server(params: FineTuneParams) -> None:
    """The API side: the remote API answers and knows the model, or the embedded backend can be used."""
    from flows.backend_runtime import wants_remote

    if wants_remote(params.base_url):
        from client.settings import ClientSettings

        settings = ClientSettings(base_url=params.base_url) if params.base_url else ClientSettings()
        check_api(settings, params.model)
    else:
        check_embedded_model(params.model)
        check_local_port()


def preflight(params: FineTuneParams) -> None:
    """All checks; raises ``PreflightError`` (a dataset problem first, as when they ran one after the other).

    The server checks wait on the network while the dataset is validated on this thread, so they cost
    about the longer of the two. Their thread is a daemon: a dataset error is reported without waiting
    for an API that is slow to answer.
    """
    check_paths(params)
    outcome: list[BaseException] = []

    def server() -> None:
        try:
            check_server(params)
        except BaseException as exc:  # handed to the caller's thread below
            outcome.append(exc)

    thread = threading.Thread(target=server, name="ftpipe-preflight", daemon=True)
    thread.start()
    check_dataset(params)
    thread.join()
    if outcome:
        raise outcome[0]
