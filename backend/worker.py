"""Training worker process: claims queued jobs from SQLite and runs the real trainer on them."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import os
import signal
import sqlite3
import time
from multiprocessing.synchronize import Event as MPEvent
from pathlib import Path
from typing import Any

from backend.db import Database, new_checkpoint_id, new_file_id, now
from backend.layout import Layout
from backend.lifecycle import add_event, fail, transition
from backend.model_refs import root_base_model
from backend.settings import apply_base_model_cache_dir
from backend.trainer.spec import ControlSignal, TrainingError, TrainingOutcome, TrainingSpec
from contract.wire import CHECKPOINT_METRICS

log = logging.getLogger("backend.worker")

CONTROL_POLL_S = 0.2
IDLE_POLL_S = 0.5
METRIC_COLUMNS = ("step", *CHECKPOINT_METRICS)


def fine_tuned_model_id(job: sqlite3.Row, base: str) -> str:
    """``ft:<base>:<suffix or local>:<job short id>``: opaque, unique, readable.

    ``base`` is the base model the job's model descends from (`root_base_model`), so fine-tuning a
    fine-tuned model gives ``ft:<base>:...`` again, not ``ft:ft:...``.
    """
    return f"ft:{base}:{job['suffix'] or 'local'}:{job['id'].split('_', 1)[-1][:12]}"


def worker_main(
    data_dir: str,
    metrics_every: int,
    cache_dir: str | None,
    parent_pid: int,
    stop: MPEvent,
    max_steps: int | None = None,
    work: MPEvent | None = None,
) -> None:
    """Process entry point: loop claiming jobs until asked to stop or the API process disappears.

    An idle worker sleeps on ``work`` (set by the API process when a job is queued, and at shutdown) and
    looks for jobs every ``IDLE_POLL_S`` regardless, so a lost wake-up costs at most that long.
    """
    # A terminal's Ctrl-C reaches the whole foreground process group, workers included: the server alone
    # decides, and stops them through `stop` (checkpoint, re-queue) rather than a KeyboardInterrupt mid-step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s [worker %(process)d] %(message)s"
    )
    apply_base_model_cache_dir(cache_dir)
    layout = Layout(Path(data_dir))
    db = Database(layout.db_path)
    from backend.trainer.train import train  # heavy import (torch): once per worker, before the first job

    idle = work if work is not None else stop
    while not stop.is_set() and os.getppid() == parent_pid:
        if work is not None:
            # Cleared before the claim: a job queued after this line sets it again, so none is slept through.
            work.clear()
        job = _claim(db)
        if job is None:
            idle.wait(IDLE_POLL_S)
            continue
        _run(db, layout, job, metrics_every, parent_pid, stop, train, max_steps)


def _claim(db: Database) -> sqlite3.Row | None:
    with db.tx() as conn:
        job: sqlite3.Row | None = conn.execute(
            "SELECT * FROM jobs WHERE status='queued' ORDER BY seq LIMIT 1"
        ).fetchone()
        if job is None:
            return None
        message = "Fine-tuning job started" + (
            " (resuming from the last checkpoint)" if job["resume"] else ""
        )
        transition(
            conn,
            job,
            "running",
            message,
            changes={
                "worker_pid": os.getpid(),
                "started_at": job["started_at"] or now(),
                "control": "continue",
            },
        )
    return job


class JobCallbacks:
    """TrainingCallbacks writing events/checkpoints to SQLite and reading pause/cancel requests from it."""

    def __init__(self, db: Database, job: sqlite3.Row, parent_pid: int, stop: MPEvent) -> None:
        self.db = db
        self.job = job
        self._parent_pid = parent_pid
        self._stop = stop
        self._last_poll = 0.0
        self._signal: ControlSignal = "continue"
        self._eta_origin: tuple[float, int] | None = None
        self.shutdown_requested = False

    @functools.cached_property
    def model_id(self) -> str:
        """The fine-tuned model id this job produces (its checkpoints' ids extend it)."""
        return fine_tuned_model_id(self.job, root_base_model(self.db, self.job["owner"], self.job["model"]))

    def on_event(
        self, message: str, *, level: str = "info", type: str = "message", data: dict | None = None
    ) -> None:
        """Forward a trainer event (metrics included) as a job event; metrics also refresh the ETA.

        Written only while the job is still ``running``: once the API cancelled it, nothing more appears.
        """
        with self.db.tx() as conn:
            if not self._running(conn):
                return
            add_event(conn, self.job["id"], self.job["owner"], message, level=level, type=type, data=data)
        if type == "metrics" and data:
            self._update_eta(data)
        elif message == "Training started" or message.startswith("Resumed from step"):
            # Measure from here rather than from the first metrics event: the job gets an ETA one metrics
            # interval sooner (step 10 of the sample job instead of step 20).
            self._eta_origin = (time.monotonic(), int((data or {}).get("step", 0)))

    def _update_eta(self, data: dict[str, Any]) -> None:
        step, total = data.get("step"), data.get("total_steps")
        if not isinstance(step, int) or not isinstance(total, int) or total <= 0:
            return
        t = time.monotonic()
        if self._eta_origin is None:
            self._eta_origin = (t, step)
            return
        t0, s0 = self._eta_origin
        if step > s0:
            eta = now() + int((t - t0) / (step - s0) * max(0, total - step))
            self.db.execute(
                "UPDATE jobs SET estimated_finish=? WHERE id=? AND status='running'", (eta, self.job["id"])
            )

    def on_checkpoint(self, step: int, metrics: dict[str, float], model_dir: Path) -> None:
        """Register a checkpoint and its model id (usable in Responses)."""
        model_id = f"{self.model_id}:ckpt-step-{step}"
        full_metrics = {"step": step, **{k: float(v) for k, v in metrics.items() if k != "step"}}
        job_id, owner = self.job["id"], self.job["owner"]
        with self.db.tx() as conn:
            if not self._running(conn):  # cancelled meanwhile: no checkpoint, no usable checkpoint model
                return
            conn.execute(
                "INSERT INTO models (id, owner, created_at, path, kind, job_id) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET path=excluded.path",
                (model_id, owner, now(), str(Path(model_dir).resolve()), "checkpoint", job_id),
            )
            existing = conn.execute(
                "SELECT id FROM checkpoints WHERE job_id=? AND step_number=?", (job_id, step)
            ).fetchone()
            if existing is None:
                conn.execute(
                    "INSERT INTO checkpoints (id, owner, job_id, created_at, step_number, metrics, model_id) VALUES (?,?,?,?,?,?,?)",
                    (new_checkpoint_id(), owner, job_id, now(), step, json.dumps(full_metrics), model_id),
                )
            else:
                conn.execute(
                    "UPDATE checkpoints SET metrics=? WHERE id=?", (json.dumps(full_metrics), existing["id"])
                )

    def _running(self, conn: sqlite3.Connection) -> bool:
        """Whether the job is still ``running`` (read in the caller's write transaction, so the API's cancel
        lands either before this write, which is then skipped, or after it); if not, training stops."""
        if _still_running(conn, self.job["id"]) is not None:
            return True
        self._signal = "cancel"
        return False

    def control(self) -> ControlSignal:
        """pause/cancel requested through the API (read at most every 0.2 s), or backend shutdown.

        Called before every step. A dead API process and a shutdown request are checked on every call (both
        are cheap), so neither lets the job run on for another polling interval.
        """
        _exit_if_orphaned(self._parent_pid)
        t = time.monotonic()
        if t - self._last_poll >= CONTROL_POLL_S and self._signal != "cancel":
            self._last_poll = t
            row = self.db.one("SELECT status, control FROM jobs WHERE id=?", (self.job["id"],))
            if row is None or row["status"] != "running" or row["control"] == "cancel":
                self._signal = "cancel"
            elif row["control"] == "pause":
                self._signal = "pause"
            else:
                self._signal = "continue"
        if self._signal == "continue" and self._stop.is_set():
            self.shutdown_requested = True
            return "pause"
        return self._signal


def _exit_if_orphaned(parent_pid: int) -> None:
    """Exit at once, writing nothing more, when the API process that started this worker is gone.

    The job stays ``running`` in SQLite: the next backend re-queues it and resumes it from its last
    checkpoint ("Resumed after backend restart"). An orphan that went on would race that backend.
    """
    if os.getppid() != parent_pid:
        os._exit(0)


def _run(
    db: Database,
    layout: Layout,
    job: sqlite3.Row,
    metrics_every: int,
    parent_pid: int,
    stop: MPEvent,
    train: Any,
    max_steps: int | None = None,
) -> None:
    job_id = job["id"]
    callbacks = JobCallbacks(db, job, parent_pid, stop)
    try:
        spec = _spec(db, layout, job, metrics_every, max_steps)
        outcome: TrainingOutcome = train(spec, callbacks)
    except TrainingError as exc:
        _exit_if_orphaned(parent_pid)
        fail(db, job_id, exc.code, exc.message, exc.param, expect=("running",))
        return
    except Exception as exc:
        log.exception("training of %s crashed", job_id)
        _exit_if_orphaned(parent_pid)
        fail(
            db,
            job_id,
            "training_error",
            f"Training crashed: {type(exc).__name__}: {exc}",
            expect=("running",),
        )
        return
    # The outcome is the API process's to record: a worker whose backend died meanwhile leaves the job
    # running for the next backend to resume, even when training just finished.
    _exit_if_orphaned(parent_pid)
    hp = json.loads(job["hyperparameters"])
    hp.update({k: v for k, v in outcome.resolved_hyperparameters.items() if k in hp})
    if outcome.status == "succeeded":
        _succeed(db, layout, job, callbacks.model_id, outcome, hp)
    elif outcome.status == "paused":
        _paused(db, job, hp, shutdown=callbacks.shutdown_requested)
    else:
        with db.tx() as conn:
            current = _still_running(conn, job_id)
            if current is not None:  # else the API cancelled it already
                transition(
                    conn, current, "cancelled", "Fine-tuning job cancelled", changes={"worker_pid": None}
                )
            conn.execute(
                "UPDATE jobs SET worker_pid=NULL, hyperparameters=? WHERE id=?", (json.dumps(hp), job_id)
            )


def _still_running(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
    """The job row if it is still ``running`` (read inside the caller's write transaction)."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM jobs WHERE id=? AND status='running'", (job_id,)
    ).fetchone()
    return row


def _spec(
    db: Database, layout: Layout, job: sqlite3.Row, metrics_every: int, max_steps: int | None = None
) -> TrainingSpec:
    def path_of(file_id: str, param: str) -> Path:
        row = db.one("SELECT path FROM files WHERE id=?", (file_id,))
        if row is None:
            raise TrainingError(
                f"invalid_{param}", f"File '{file_id}' was deleted before training started.", param
            )
        return Path(row["path"])

    hp = json.loads(job["hyperparameters"])
    return TrainingSpec(
        job_id=job["id"],
        base_model=job["base_model_ref"],
        training_file=path_of(job["training_file"], "training_file"),
        validation_file=path_of(job["validation_file"], "validation_file")
        if job["validation_file"]
        else None,
        output_dir=layout.jobs / job["id"],
        method=job["method_type"],
        n_epochs=hp["n_epochs"],
        batch_size=hp["batch_size"],
        learning_rate_multiplier=hp["learning_rate_multiplier"],
        beta=hp["beta"],
        seed=job["seed"],
        resume=bool(job["resume"]),
        metrics_every_n_steps=metrics_every,
        max_steps=max_steps,
    )


def _metrics_csv(db: Database, job_id: str) -> bytes:
    rows = [
        json.loads(r["data"])
        for r in db.all("SELECT data FROM events WHERE job_id=? AND type='metrics' ORDER BY seq", (job_id,))
        if r["data"]
    ]
    extra = sorted({k for r in rows for k in r} - set(METRIC_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*METRIC_COLUMNS, *extra], extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in writer.fieldnames})
    return buf.getvalue().encode("utf-8")


def _succeed(
    db: Database,
    layout: Layout,
    job: sqlite3.Row,
    model_id: str,
    outcome: TrainingOutcome,
    hp: dict[str, Any],
) -> None:
    job_id, owner = job["id"], job["owner"]
    if outcome.final_model_dir is None:
        fail(
            db,
            job_id,
            "training_error",
            "The trainer reported success without a model directory.",
            expect=("running",),
        )
        return
    result_id = new_file_id()
    result_path = layout.files / result_id
    content = _metrics_csv(db, job_id)
    tmp = layout.tmp / f"{result_id}.part"
    try:
        tmp.write_bytes(content)
        os.replace(tmp, result_path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # tmp/ must only hold writes in progress
        raise
    with db.tx() as conn:
        current = _still_running(conn, job_id)
        if current is None:  # cancelled at the very end: keep the cancellation, drop the result
            result_path.unlink(missing_ok=True)
            return
        transition(
            conn,
            current,
            "succeeded",
            changes={
                "fine_tuned_model": model_id,
                "trained_tokens": outcome.trained_tokens,
                "result_files": json.dumps([result_id]),
                "hyperparameters": json.dumps(hp),
                "worker_pid": None,
                "error": None,
            },
        )
        conn.execute(
            "INSERT INTO files (id, owner, created_at, bytes, filename, purpose, status, path, sha256)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (
                result_id,
                owner,
                now(),
                len(content),
                "step_metrics.csv",
                "fine-tune-results",
                "processed",
                str(result_path),
                hashlib.sha256(content).hexdigest(),
            ),
        )
        conn.execute(
            "INSERT INTO models (id, owner, created_at, path, kind, job_id) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET path=excluded.path",
            (model_id, owner, now(), str(Path(outcome.final_model_dir).resolve()), "fine-tuned", job_id),
        )
        add_event(conn, job_id, owner, f"New fine-tuned model created: {model_id}")
        add_event(conn, job_id, owner, "The job has successfully completed")


def _paused(db: Database, job: sqlite3.Row, hp: dict[str, Any], *, shutdown: bool) -> None:
    with db.tx() as conn:
        current = _still_running(conn, job["id"])
        if current is None:
            return
        if shutdown and current["control"] != "pause":
            transition(
                conn,
                current,
                "queued",
                "Backend shutting down: checkpoint saved, job re-queued to resume",
                changes={"resume": 1, "hyperparameters": json.dumps(hp)},
            )
        else:
            transition(
                conn,
                current,
                "paused",
                "Fine-tuning job paused",
                changes={"control": "continue", "hyperparameters": json.dumps(hp)},
            )
