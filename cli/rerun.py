"""``ftpipe run``'s answer to an unchanged re-run, given before Prefect or the flow modules are imported.

A run that ended well (exit 0) is recorded in ``<state dir>/finished-runs.json`` under the digest of all
that decides its outcome: the flow parameters it received (less the ones that only change how it waits or
where it keeps its indexes), the sha256 of each input file as the flow resolves it (train, validation, eval,
smoke), the API identity (the server id jobs.json uses: the base URL of a remote API, the data dir of the
embedded backend wherever it listens; and the end user) and the output folder. The same command again
finds the entry, checks that result.json is the file it wrote and, with one GET, that the job
still exists, succeeded and has the same fine-tuned model, then prints that run's summary.

The output folder is part of the digest: a run writes its frames, plot and result.json there, so a re-run
naming another folder must produce them there (the flow does; this answer writes nothing).
Not answered here, the flow runs as before: ``--rerun``, ``--fresh``, ``--promote-as`` (the champion may
have changed), ``--max-cost`` (prices may have changed), a failed gate or smoke check (not recorded), any
changed byte or option, a job gone or not succeeded, no embedded backend running (none is started for
this), an unreachable API. The ledger is a hint: a corrupt or missing file, or any other surprise while
reading it, also means "run the flow".
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from flows.params import FineTuneParams
    from tasks.record import RunRecord

FORCE_FLAG = "--rerun"
LEDGER_VERSION = 1
# How the run waits and where it keeps its indexes; what it produces does not depend on them.
NOT_OUTCOME = frozenset(
    {"poll_interval_s", "poll_max_interval_s", "wait_timeout_s", "state_dir", "fresh_job_if_failed"}
)
# Stand in the digest by what they resolve to: file contents, the resolved API, the absolute folder.
RESOLVED = frozenset(
    {
        "dataset_dir",
        "train_file",
        "validation_file",
        "eval_file",
        "smoke_file",
        "base_url",
        "on_behalf_of",
        "output_dir",
    }
)
# The ledger keeps the most recently recorded runs; an older one's re-run runs the flow (and is recorded again).
MAX_ENTRIES = 200
# One quick look at the job: a slow or unreachable API is the flow's to report, under its own retries (an
# address that does not answer costs at most the connect timeout before the preflight's own probe).
LOOK_TIMEOUT_S = 5.0
LOOK_CONNECT_TIMEOUT_S = 1.5
log = logging.getLogger(__name__)


class FinishedRun(BaseModel):
    """One ledger entry: the run's job and model, and the result.json it wrote."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    fine_tuned_model: str
    result_json: Path
    result_sha256: str
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    recorded_at: datetime


def outcome_key(params: FineTuneParams) -> str | None:
    """The digest a finished run of ``params`` is recorded under; None when its outcome may not be reused
    (``--promote-as``, ``--max-cost``) or an input cannot be read (the flow reports that)."""
    if params.promote_as is not None or params.max_cost is not None:
        return None
    from flows.backend_runtime import server_identity
    from tasks.state import sha256_file

    try:
        files = {
            role: sha256_file(path) if path is not None else None
            for role, path in (
                ("train", params.train_path()),
                ("validation", params.validation_path()),
                ("eval", params.eval_path()),
                ("smoke", params.smoke_path()),
            )
        }
        server_id, on_behalf_of = server_identity(params.base_url, params.on_behalf_of)
        # The default, runs/<job id>, is relative to where the command runs.
        output = (
            params.output_dir.resolve() if params.output_dir else Path.cwd().resolve() / "runs" / "<job id>"
        )
    except (OSError, ValueError):  # a missing file, an invalid MKA1_* setting: the flow path names it
        return None
    payload: dict[str, Any] = {
        "ledger_version": LEDGER_VERSION,
        "params": params.model_dump(mode="json", exclude=set(NOT_OUTCOME | RESOLVED)),
        "files": files,
        "api": {"server_id": server_id, "on_behalf_of": on_behalf_of},
        "output_dir": str(output),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _state_dir(params: FineTuneParams) -> Path:
    from tasks.state import default_state_dir

    return params.state_dir or default_state_dir()


def remember(params: FineTuneParams, key: str, record: RunRecord) -> None:
    """Record a run that ended well under ``key`` (computed when it started); never raises."""
    try:
        from tasks.state import finished_runs_index, sha256_file

        result_json = record.outputs.get("result_json")
        # Inputs edited while the run ran: its record is not the outcome of what is on disk now.
        if result_json is None or record.fine_tuned_model is None or outcome_key(params) != key:
            return
        entry = FinishedRun(
            job_id=record.job_id,
            fine_tuned_model=record.fine_tuned_model,
            result_json=result_json,
            result_sha256=sha256_file(result_json),
            flow_run_id=record.flow_run_id,
            flow_run_url=record.flow_run_url,
            recorded_at=datetime.now(UTC),
        )
        finished_runs_index(_state_dir(params)).update(_recorded(key, entry))
    except Exception:  # the ledger only saves a later re-run time; the run itself succeeded
        log.debug("could not record the finished run in the state dir", exc_info=True)


def _recorded(key: str, entry: FinishedRun) -> Callable[[dict[str, Any]], None]:
    """Set ``key``, then drop the oldest entries beyond ``MAX_ENTRIES`` (unreadable ones first)."""

    def change(data: dict[str, Any]) -> None:
        data[key] = entry.model_dump(mode="json")

        def recorded_at(k: str) -> str:  # ISO timestamps in UTC sort as text
            value = data[k]
            return str(value.get("recorded_at", "")) if isinstance(value, dict) else ""

        for old in sorted(data, key=recorded_at)[: max(0, len(data) - MAX_ENTRIES)]:
            del data[old]

    return change


def unchanged_run(params: FineTuneParams, key: str) -> tuple[FinishedRun, RunRecord] | None:
    """The recorded run of ``key`` when every check passes (see the module's docstring), else None."""
    try:
        return _verified(params, key)
    except Exception:  # a hint that cannot be read or checked is no answer: the flow runs
        log.debug("could not check the finished-runs ledger", exc_info=True)
        return None


def _verified(params: FineTuneParams, key: str) -> tuple[FinishedRun, RunRecord] | None:
    from tasks.state import finished_runs_index

    raw = finished_runs_index(_state_dir(params)).get(key)
    if not isinstance(raw, dict):
        return None
    entry = FinishedRun.model_validate(raw)
    try:
        text = entry.result_json.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(text).hexdigest() != entry.result_sha256:
        return None
    from tasks.record import RunRecord

    record = RunRecord.model_validate_json(text)
    if record.job_id != entry.job_id or record.fine_tuned_model != entry.fine_tuned_model:
        return None
    return (entry, record) if _job_unchanged(params, entry) else None


def _job_unchanged(params: FineTuneParams, entry: FinishedRun) -> bool:
    """One GET: the job still exists, succeeded and names the same fine-tuned model."""
    from client import MKA1Client
    from client.errors import APIError
    from client.models import JobStatus
    from flows.backend_runtime import LocalPortTaken, running_connection

    try:
        conn = running_connection(params.base_url, params.on_behalf_of)
    except LocalPortTaken:
        return False
    if conn is None:
        return False
    quick = conn.settings.model_copy(
        update={"max_retries": 0, "timeout_s": LOOK_TIMEOUT_S, "connect_timeout_s": LOOK_CONNECT_TIMEOUT_S}
    )
    try:
        with MKA1Client(quick, transport=conn.transport) as client:
            job = client.jobs.retrieve(entry.job_id)
    except APIError:
        return False
    return job.status == JobStatus.SUCCEEDED and job.fine_tuned_model == entry.fine_tuned_model


def show_unchanged(params: FineTuneParams, key: str) -> bool:
    """Print the recorded run's summary when nothing changed since it ran; False: run the flow."""
    if params.fresh_job_if_failed:  # --fresh is about the job: the flow decides whether it needs a new one
        return False
    found = unchanged_run(params, key)
    if found is None:
        return False
    from tasks.report import run_summary_text, unchanged_run_line

    _, record = found
    print(unchanged_run_line(record, FORCE_FLAG))
    print(run_summary_text(record))
    return True
