"""The training worker pool: ``worker_concurrency`` spawned processes, supervised from the API process."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as MPEvent
from typing import TYPE_CHECKING

import psutil

from backend.layout import Layout
from backend.lifecycle import fail, transition
from backend.settings import BackendSettings

if TYPE_CHECKING:
    from backend.db import Database

log = logging.getLogger("backend.pool")

STOP_GRACE_S = 15.0
# A job whose worker dies (the OOM killer, a kill -9) is re-queued this many times, resuming from its latest
# checkpoint, before the next death fails it. Each death is one event starting with WORKER_DIED.
AUTO_RESUMES_AFTER_WORKER_DEATH = 1
WORKER_DIED = "The training worker exited unexpectedly"


class WorkerPool:
    """Starts, watches and stops the worker processes; a dead worker is replaced and its job resumed once."""

    def __init__(self, settings: BackendSettings, layout: Layout) -> None:
        self.settings = settings
        self.layout = layout
        self._ctx = mp.get_context("spawn")
        self._stop: MPEvent = self._ctx.Event()
        # Set when a job becomes runnable: an idle worker claims it at once instead of at its next idle poll.
        self._work: MPEvent = self._ctx.Event()
        self._procs: list[SpawnProcess] = []
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        """Spawn the workers and the supervising thread."""
        self._procs = [self._spawn(i) for i in range(self.settings.worker_concurrency)]
        self._monitor = threading.Thread(target=self._watch, name="ftpipe-worker-monitor", daemon=True)
        self._monitor.start()

    def _spawn(self, index: int) -> SpawnProcess:
        from backend.worker import worker_main

        cache = str(self.settings.base_model_cache_dir) if self.settings.base_model_cache_dir else None
        proc = self._ctx.Process(
            target=worker_main,
            args=(
                str(self.layout.root),
                self.settings.metrics_every_n_steps,
                cache,
                os.getpid(),
                self._stop,
                self.settings.max_steps_per_job,
                self._work,
            ),
            name=f"ftpipe-worker-{index}",
        )
        proc.start()
        return proc

    def _watch(self) -> None:
        from backend.db import Database

        db = Database(self.layout.db_path)
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self._procs):
                if proc.is_alive() or self._stopping.is_set():
                    continue
                log.error(
                    "worker %s (pid %s) exited with code %s; replacing it", proc.name, proc.pid, proc.exitcode
                )
                for row in db.all("SELECT id FROM jobs WHERE status='running' AND worker_pid=?", (proc.pid,)):
                    after_worker_death(db, row["id"], proc.exitcode)
                self._procs[i] = self._spawn(i)
        db.close()

    def notify(self) -> None:
        """A job was queued: wake an idle worker to claim it."""
        self._work.set()

    def stop(self) -> None:
        """Ask workers to stop (running jobs checkpoint and re-queue), then terminate stragglers."""
        self._stopping.set()
        self._stop.set()
        self._work.set()  # idle workers wait on it: they see the stop at once
        log.info("asked %d worker(s) to stop: running jobs save a checkpoint and re-queue", len(self._procs))
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                log.warning("worker %s did not stop in time; terminating it", proc.name)
                proc.terminate()
                proc.join(2.0)
                if proc.is_alive():
                    proc.kill()
                    proc.join(1.0)

    @staticmethod
    def wait_for_orphans(db: Database, timeout_s: float = 5.0) -> None:
        """Make sure workers of a backend that died are gone before their jobs are re-queued.

        Orphaned workers notice their parent is gone at the next step and exit on their own; one that
        is still alive after ``timeout_s`` is killed so two trainers never share a job directory.
        """
        pids = [
            r["worker_pid"]
            for r in db.all("SELECT worker_pid FROM jobs WHERE status='running' AND worker_pid IS NOT NULL")
        ]
        procs: list[psutil.Process] = []
        for pid in pids:
            try:
                p = psutil.Process(pid)
                if any("spawn_main" in part for part in p.cmdline()) and p.ppid() != os.getpid():
                    procs.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if not procs:
            return
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)
        for p in alive:
            log.warning("killing orphaned worker pid %s", p.pid)
            p.kill()
        psutil.wait_procs(alive, timeout=2.0)


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        hint = ", e.g. by the out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {exitcode}"


def after_worker_death(db: Database, job_id: str, exitcode: int | None) -> None:
    """The job of a worker that died: re-queued to resume from its latest checkpoint the first time(s), failed
    (``worker_crashed``, naming the cause) once it has used up ``AUTO_RESUMES_AFTER_WORKER_DEATH``."""
    reason = _exit_reason(exitcode)
    with db.tx() as conn:
        job = conn.execute("SELECT * FROM jobs WHERE id=? AND status='running'", (job_id,)).fetchone()
        if job is None:
            return
        if job["control"] == "pause":  # it was pausing: the latest resumable state is where a resume starts
            transition(conn, job, "paused", f"Fine-tuning job paused ({WORKER_DIED.lower()}: {reason})")
            return
        deaths = conn.execute(
            "SELECT COUNT(*) FROM events WHERE job_id=? AND instr(message, ?) = 1", (job_id, WORKER_DIED)
        ).fetchone()[0]
        if deaths < AUTO_RESUMES_AFTER_WORKER_DEATH:
            step = conn.execute(
                "SELECT MAX(step_number) FROM checkpoints WHERE job_id=?", (job_id,)
            ).fetchone()[0]
            start = (
                f"its last checkpoint (step {step})" if step is not None else "the start (no checkpoint yet)"
            )
            transition(
                conn,
                job,
                "queued",
                f"{WORKER_DIED} ({reason}); resuming automatically from {start}",
                changes={"resume": 1, "control": "continue"},
                level="warn",
            )
            log.warning("job %s: worker %s; re-queued to resume", job_id, reason)
            return
    fail(
        db,
        job_id,
        "worker_crashed",
        f"{WORKER_DIED} again ({reason}) after {deaths} automatic resume(s) from a checkpoint;"
        " not resuming again (if the machine is short of memory, try a smaller batch_size)",
        expect=("running",),
    )
