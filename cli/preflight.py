"""Checks ``ftpipe run`` makes before Prefect starts: the files exist, the dataset is valid, the API answers.

Each mistake caught here costs seconds and uploads nothing; the flow repeats the checks for runs started
elsewhere (deployments), so these are an early answer, not the only guard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flows.params import FineTuneParams

# A refused or timed-out connection is tried this many times, this far apart, before it is reported: long
# enough to ride out a server restart, short enough to answer in well under 5 s (not the client's minute).
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


def check_api(base_url: str, api_key: str | None, model: str) -> None:
    """The API answers, accepts the key and knows ``model``; a short retry budget for transient errors."""
    import httpx

    from cli.common import EXIT_FAILED

    root = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{root}/models/{model}"
    last: str = ""
    for attempt in range(PREFLIGHT_ATTEMPTS):
        if attempt:
            time.sleep(PREFLIGHT_DELAY_S * attempt)
        try:
            resp = httpx.get(url, headers=headers, timeout=PREFLIGHT_TIMEOUT_S)
        except httpx.TransportError as exc:
            last = f"cannot reach the API at {root} ({type(exc).__name__}: {exc or 'no answer'})"
            continue
        if resp.status_code in (401, 403):
            raise PreflightError(
                (f"the API at {root} refused the key ({resp.status_code}); check MKA1_API_KEY",), EXIT_FAILED
            )
        if resp.status_code == 404:
            # A server without GET /models/{id} answers 404 for every id; ask the list before blaming the model.
            if _has_models_endpoint(root, headers):
                raise PreflightError(
                    (
                        f"unknown model {model!r} at {root}; list them with GET {root}/models, or pass --model",
                    ),
                    EXIT_FAILED,
                )
            return
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            last = f"the API at {root} answered {resp.status_code}"
            continue
        return
    raise PreflightError((f"{last}; check MKA1_BASE_URL (or --base-url)",), EXIT_FAILED)


def _has_models_endpoint(root: str, headers: dict[str, str]) -> bool:
    import httpx

    try:
        return httpx.get(f"{root}/models", headers=headers, timeout=PREFLIGHT_TIMEOUT_S).is_success
    except httpx.TransportError:
        return False


def preflight(params: FineTuneParams) -> None:
    """All checks, cheapest first; raises ``PreflightError``."""
    check_paths(params)
    check_dataset(params)
    from flows.backend_runtime import wants_remote

    if wants_remote(params.base_url):
        from client.settings import ClientSettings

        settings = ClientSettings(base_url=params.base_url) if params.base_url else ClientSettings()
        key = settings.api_key.get_secret_value() if settings.api_key else None
        check_api(settings.base_url, key, params.model)
