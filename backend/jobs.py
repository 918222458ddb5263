"""Fine-tuning jobs on the API side: create, validate, pause/resume/cancel, restart recovery.

Status moves themselves (which may follow which, and their events) live in backend/lifecycle.py; this
service raises its JobNotFound / InvalidTransition, which the route layer answers with 404 / 409.

Restart semantics (also in backend/README.md): on startup, a job left ``running`` by a backend that died
is re-queued with ``resume=True`` (the trainer continues from its last resumable checkpoint, or starts
over when there is none) and gets the event "Resumed after backend restart"; a job that was being paused
becomes ``paused``; ``validating_files`` jobs are validated again. Nothing stored is ever dropped.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from backend.db import Database, new_job_id, now
from backend.errors import BackendHTTPError, not_found
from backend.layout import Layout
from backend.lifecycle import add_event, check, fail, load_job, transition
from backend.model_refs import ModelAccess, resolve_model
from backend.pool import WorkerPool
from backend.requests import JobCreate
from backend.settings import BackendSettings
from contract.wire import SEED_MAX, SEED_MIN

if TYPE_CHECKING:
    from validation.results import Issue

log = logging.getLogger("backend.jobs")

MAX_REPORTED_ISSUES = 5


class JobService:
    """Owns the validation threads and the training worker processes."""

    def __init__(self, settings: BackendSettings, layout: Layout, db: Database) -> None:
        self.settings = settings
        self.layout = layout
        self.db = db
        self._validator = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ftpipe-validate")
        self.pool = WorkerPool(settings, layout)

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover jobs interrupted by a previous backend, then start the workers."""
        self.recover()
        self.pool.start()

    def stop(self) -> None:
        """Stop workers (running jobs save a checkpoint and re-queue) and validation threads."""
        self.pool.stop()
        self._validator.shutdown(wait=False, cancel_futures=True)

    def training_workers(self) -> int:
        """Workers training now or about to: a queued job is claimed at once by an idle worker, so it counts."""
        row = self.db.one("SELECT COUNT(*) FROM jobs WHERE status IN ('running', 'queued')")
        return min(self.settings.worker_concurrency, int(row[0]) if row is not None else 0)

    def recover(self) -> None:
        """Re-queue jobs a dead backend left running; re-validate jobs left validating."""
        self.pool.wait_for_orphans(self.db)
        with self.db.tx() as conn:
            for job in conn.execute("SELECT * FROM jobs WHERE status = 'running'").fetchall():
                if job["control"] == "pause":
                    transition(
                        conn, job, "paused", "Fine-tuning job paused (backend restarted while pausing)"
                    )
                else:
                    transition(
                        conn,
                        job,
                        "queued",
                        "Resumed after backend restart",
                        changes={"resume": 1, "control": "continue"},
                    )
        for row in self.db.all("SELECT id FROM jobs WHERE status = 'validating_files' ORDER BY seq"):
            self._validator.submit(self._validate, row["id"])

    # create / read -----------------------------------------------------------------------------
    def create(self, owner: str, req: JobCreate) -> sqlite3.Row:
        """Check the request against this owner's files and models, store the job, start validation."""
        model = resolve_model(self.db, owner, req.model, ModelAccess.of(self.settings))
        self._require_training_file(owner, req.training_file, "training_file")
        if req.validation_file is not None:
            self._require_training_file(owner, req.validation_file, "validation_file")
        method_type, hp = req.resolved_method()
        hp_dict = hp.model_dump()
        if method_type != "dpo" and hp.beta != "auto":
            raise BackendHTTPError(
                400,
                "beta only applies to method type 'dpo'.",
                code="invalid_hyperparameter",
                param=f"{req.hyperparameters_param()}.beta",
            )
        job_id = new_job_id()
        seed = req.seed if req.seed is not None else random.randint(SEED_MIN, SEED_MAX)
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO jobs (id, owner, created_at, model, base_model_ref, status, training_file, validation_file,"
                " method_type, hyperparameters, seed, suffix, metadata, integrations) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    owner,
                    now(),
                    req.model,
                    model.trainer_base(),
                    "validating_files",
                    req.training_file,
                    req.validation_file,
                    method_type,
                    json.dumps(hp_dict),
                    seed,
                    req.suffix,
                    json.dumps(req.metadata) if req.metadata is not None else None,
                    json.dumps(req.integrations or []),
                ),
            )
            add_event(conn, job_id, owner, f"Created fine-tuning job: {job_id}")
            if model.kind == "base" and model.ref != req.model:
                add_event(conn, job_id, owner, f"Base model {req.model} is served by {model.ref}")
            add_event(conn, job_id, owner, "Validating training file: " + req.training_file)
        # Read before validation starts: the answer is always validating_files.
        created = self.get(owner, job_id)
        self._validator.submit(self._validate, job_id)
        return created

    def get(self, owner: str, job_id: str) -> sqlite3.Row:
        """This owner's job (JobNotFound otherwise)."""
        return load_job(self.db.conn(), job_id, owner)

    def _require_training_file(self, owner: str, file_id: str, param: str) -> None:
        row = self.db.one("SELECT purpose FROM files WHERE id = ? AND owner = ?", (file_id, owner))
        if row is None:
            raise not_found("file", file_id, param=param)
        if row["purpose"] != "fine-tune":
            raise BackendHTTPError(
                400,
                f"File '{file_id}' has purpose '{row['purpose']}', expected 'fine-tune'.",
                code="invalid_file_purpose",
                param=param,
            )

    # validation (runs on a background thread) -----------------------------------------------------
    def _validate(self, job_id: str) -> None:
        try:
            self._validate_inner(job_id)
        except Exception as exc:  # any crash must fail the job, never leave it validating forever
            log.exception("validation of %s crashed", job_id)
            fail(
                self.db,
                job_id,
                "validation_error",
                f"File validation crashed: {exc}",
                None,
                expect=("validating_files",),
            )
        finally:
            self.db.close()

    def _validate_inner(self, job_id: str) -> None:
        from validation.core import validate_file_with_hashes

        job = self.db.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if job is None or job["status"] != "validating_files":
            return
        kind: Literal["chat", "preference"] = "preference" if job["method_type"] == "dpo" else "chat"
        checks = [("training_file", job["training_file"], 10)]
        if job["validation_file"]:
            checks.append(("validation_file", job["validation_file"], 1))
        warnings: list[str] = []
        hashes = []
        for param, file_id, min_examples in checks:
            row = self.db.one("SELECT path FROM files WHERE id = ?", (file_id,))
            if row is None:
                fail(
                    self.db,
                    job_id,
                    f"invalid_{param}",
                    f"File '{file_id}' was deleted before validation.",
                    param,
                    expect=("validating_files",),
                )
                return
            report, hash_log = validate_file_with_hashes(
                Path(row["path"]), kind=kind, min_examples=min_examples
            )
            hashes.append(hash_log)
            if not report.ok:
                shown = [
                    f"line {i.line}: {i.field}: {i.message}" if i.line else f"{i.field}: {i.message}"
                    for i in report.errors[:MAX_REPORTED_ISSUES]
                ]
                # errors holds at most max_issues; error_count_total counts every one found.
                total = report.error_count_total
                more = total - len(shown)
                message = (
                    f"{param.replace('_', ' ').capitalize()} {file_id} has {total} error(s): "
                    + "; ".join(shown)
                )
                if more > 0:
                    message += f"; ... and {more} more"
                message += _method_hint(kind, report.errors)
                fail(self.db, job_id, f"invalid_{param}", message, param, expect=("validating_files",))
                return
            if report.warnings:
                warnings.append(_located(f"{_label(param)} {file_id}", "warning", report.warnings))
        if len(hashes) == 2 and (pairs := hashes[0].overlap(hashes[1])):
            listed = ", ".join(
                f"training line {t} = validation line {v}" for t, v in pairs[:MAX_REPORTED_ISSUES]
            )
            extra = len(pairs) - MAX_REPORTED_ISSUES
            warnings.append(
                f"Validation file {job['validation_file']}: {len(pairs)} example(s) also appear in the "
                f"training file: {listed}" + (f" (+{extra} more)" if extra > 0 else "")
            )
        with self.db.tx() as conn:
            job = load_job(conn, job_id)
            if job["status"] == "validating_files":  # else cancelled while validating: leave it so
                for warning in warnings:
                    add_event(conn, job_id, job["owner"], warning, level="warn")
                transition(
                    conn, job, "queued", ["Files validated, moving job to queued state", "Job enqueued"]
                )
        self.pool.notify()

    # transitions -----------------------------------------------------------------------------------
    def pause(self, owner: str, job_id: str) -> None:
        """Ask the worker to stop at a step boundary after a resumable checkpoint (running jobs only).

        The worker makes the move to ``paused`` itself once the checkpoint is written.
        """
        with self.db.tx() as conn:
            job = load_job(conn, job_id, owner)
            check(job, "paused", expect=("running",), action="pause")
            if job["control"] != "pause":
                conn.execute("UPDATE jobs SET control='pause' WHERE id=?", (job_id,))
                add_event(conn, job_id, owner, "Pause requested; stopping at the next step boundary")

    def resume(self, owner: str, job_id: str) -> None:
        """Re-queue a paused job; the worker continues from its resumable checkpoint."""
        with self.db.tx() as conn:
            job = load_job(conn, job_id, owner)
            transition(
                conn,
                job,
                "queued",
                "Fine-tuning job resumed",
                expect=("paused",),
                action="resume",
                changes={"resume": 1, "control": "continue"},
            )
        self.pool.notify()

    def cancel(self, owner: str, job_id: str) -> None:
        """Cancel a job in any non-terminal state; a running worker notices within a step."""
        with self.db.tx() as conn:
            job = load_job(conn, job_id, owner)
            transition(
                conn,
                job,
                "cancelled",
                "Fine-tuning job cancelled",
                action="cancel",
                changes={"control": "cancel"},
            )


def _label(param: str) -> str:
    return param.replace("_", " ").capitalize()


def _located(what: str, noun: str, issues: list[Issue]) -> str:
    """``<what> has N <noun>(s): line 3: $: duplicate of line 1; ...`` (the first few, then a count)."""
    shown = [
        f"line {i.line}: {i.field}: {i.message}" if i.line else f"{i.field}: {i.message}" for i in issues
    ]
    text = f"{what} has {len(issues)} {noun}(s): " + "; ".join(shown[:MAX_REPORTED_ISSUES])
    if len(shown) > MAX_REPORTED_ISSUES:
        text += f"; ... and {len(shown) - MAX_REPORTED_ISSUES} more"
    return text


def _method_hint(kind: str, errors: list[Issue]) -> str:
    """Name the method that fits when the file holds the other kind of examples (chat vs preference)."""
    other = "chat" if kind == "preference" else "preference"
    if not any(f"is in {other} format" in i.message for i in errors):
        return ""
    method = "supervised" if other == "chat" else "dpo"
    return f" (a {other} file trains with method type '{method}')"
