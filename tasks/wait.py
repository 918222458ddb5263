"""Stage 4: follow a job to a terminal status, echoing its events and keeping a progress artifact.

The events of a job this run re-attached to are summarised in one line (status, steps, latest losses) instead
of being replayed; every poll with news publishes a typed ``ProgressUpdate`` (step, total, losses) for the CLI.

Each poll is retried in place by the client; failures that outlast those retries (429 with ``Retry-After``,
5xx, timeouts, resets) are absorbed by the loop, up to a bounded number in a row and with the same backoff
(``client.retry.backoff_delay``), so a flaky minute never fails a long training run. The poll interval
grows while nothing changes and snaps back on any news; a running job that had news lately keeps the base
interval, so its next step or its end is seen within one interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from client import MKA1Client
from client.models import FineTuningJob, FineTuningJobEvent, JobStatus
from client.retry import backoff_delay, is_transient, retry_delay_hint
from tasks import report, runtime
from tasks.errors import JobFailed, JobTimeout
from tasks.progress import ProgressUpdate, publish

# The embedded backend answers on loopback in a millisecond: polling it often costs next to nothing and
# shows a job's start and end within half a second (a remote API keeps PollPolicy's 2 s default).
EMBEDDED_POLL_INTERVAL_S = 0.5
# Once its job has logged the last step, the embedded backend saves the last checkpoint and ends the job within
# moments (~0.5 s for the sample job): polled this often then, the end is seen ~0.2 s sooner on average, and
# with it the fine-tuned model's eval starts.
EMBEDDED_ENDING_POLL_INTERVAL_S = 0.1

# Keys a metrics event may use for the planned number of steps.
_TOTAL_KEYS = ("total_steps", "n_steps", "max_steps", "num_steps")


@dataclass(frozen=True)
class PollPolicy:
    """How to poll: base interval, growth while idle, cap, overall timeout, error tolerance."""

    interval_s: float = 2.0
    max_interval_s: float = 15.0
    backoff: float = 1.5
    timeout_s: float = 3600.0
    max_consecutive_errors: int = 10
    # A running job with news this recent is between two events (or about to finish): no backing off.
    running_quiet_s: float = 30.0
    error_delay_max_s: float = 60.0
    # Each progress-artifact update is a call to the Prefect API; on a busy machine a call per poll
    # competes with the training it reports on. Status changes are always published at once.
    progress_every_s: float = 5.0
    # The interval once a running job has logged its last step (its end is due), for at most ``ending_for_s``
    # (a big model's save may take long); None: no change at the end.
    ending_interval_s: float | None = None
    ending_for_s: float = 10.0


def _number(value: object) -> float | None:
    # bool is an int subclass; a flag is never a step or a loss.
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass
class _Progress:
    step: int | None = None
    total: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None

    def absorb(self, event: FineTuningJobEvent) -> None:
        data = event.data or {}
        step = _number(data.get("step"))
        if step is not None:
            self.step = int(step)
        for key in _TOTAL_KEYS:
            total = _number(data.get(key))
            if total is not None and total > 0:
                self.total = int(total)
                break
        if event.type != "metrics":
            return  # a checkpoint's losses are epoch means: the metrics stage's "final" is the last step's
        train_loss, valid_loss = _number(data.get("train_loss")), _number(data.get("valid_loss"))
        self.train_loss = self.train_loss if train_loss is None else train_loss
        self.valid_loss = self.valid_loss if valid_loss is None else valid_loss

    def update(self, job: FineTuningJob, message: str, *, reattached: bool = False) -> ProgressUpdate:
        """The typed update for this poll."""
        return ProgressUpdate(
            "wait",
            message,
            job_id=job.id,
            job_status=str(job.status),
            fraction=self.percent(job.status) / 100 if self.total else None,
            step=self.step,
            total_steps=self.total,
            train_loss=self.train_loss,
            valid_loss=self.valid_loss,
            estimated_finish=job.estimated_finish,
            reattached=reattached,
        )

    @property
    def at_last_step(self) -> bool:
        """Whether the job logged its last planned step."""
        return self.step is not None and self.total is not None and self.step >= self.total

    def percent(self, status: Any) -> float:
        if status == JobStatus.SUCCEEDED:
            return 100.0
        if self.step is not None and self.total:
            return max(0.0, min(99.0, 100.0 * self.step / self.total))
        return 0.0


def _echo(log: Any, job_id: str, event: FineTuningJobEvent) -> None:
    level = {"warn": 30, "warning": 30, "error": 40}.get(event.level, 20)
    log.log(level, "[%s] %s", job_id, event.message)


@task(name="wait-for-job", cache_policy=NO_CACHE, persist_result=False)
@runtime.cancelled_on_interrupt("waiting for the job")  # Ctrl-C: the task run ends Cancelled, not Crashed
def wait_for_job_task(
    client: MKA1Client,
    job_id: str,
    policy: PollPolicy | None = None,
    *,
    sleep: Callable[[float], None] = runtime.interrupted_sleep,
    clock: Callable[[], float] = time.monotonic,
    on_events: Callable[[FineTuningJob, list[FineTuningJobEvent]], None] | None = None,
    attached: bool = False,
) -> FineTuningJob:
    """Poll ``job_id`` until succeeded|failed|cancelled; raise ``JobFailed`` / ``JobTimeout`` otherwise.

    ``on_events`` sees each poll's new events (oldest first) as they arrive: live metrics and curves.
    ``attached``: the job existed before this run, so its past events are summarised in one line.
    """
    policy = policy or PollPolicy()
    log = runtime.run_logger()
    log.info(
        "waiting for job %s (poll every %.1fs, timeout %.0fs)", job_id, policy.interval_s, policy.timeout_s
    )
    start = clock()
    interval = policy.interval_s
    since_id: str | None = None
    last_status: Any = None
    last_news = start
    errors = 0
    last_step_seen: float | None = None
    progress = _Progress()
    artifact = runtime.progress(
        0.0, key=runtime.artifact_key("job-progress"), description=f"job {job_id}: starting"
    )
    artifact_updated = clock()

    while True:
        try:
            job = client.jobs.retrieve(job_id)
            # Events after the status read, so a terminal status is never seen before its last events.
            events = client.jobs.new_events(job_id, since_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            errors += 1
            if errors > policy.max_consecutive_errors:
                log.error("giving up on job %s after %d transient errors in a row", job_id, errors - 1)
                raise
            delay = backoff_delay(
                errors,
                retry_delay_hint(exc),
                initial_s=policy.interval_s,
                max_s=policy.error_delay_max_s,
                retry_after_max_s=policy.error_delay_max_s,
            )
            log.warning(
                "transient error polling %s (%s); retry %d in %.1fs",
                job_id,
                type(exc).__name__,
                errors,
                delay,
            )
            if clock() - start + delay > policy.timeout_s:
                # No poll may have succeeded yet: say so rather than "still None".
                status = "unknown" if last_status is None else str(last_status)
                raise JobTimeout(job_id, status, clock() - start) from exc
            sleep(delay)
            continue
        errors = 0

        # The first poll of a job this run re-attached to returns its whole history: one line stands for it.
        summarise = attached and last_status is None
        for event in events:
            if not summarise:
                _echo(log, job_id, event)
            progress.absorb(event)
            since_id = event.id
        if summarise:
            summary = report.reattach_summary(
                job_id,
                job.status,
                progress.step,
                progress.total,
                progress.train_loss,
                progress.valid_loss,
                job.is_terminal,
            )
            log.info("%s", summary)
            publish(progress.update(job, summary, reattached=True))
        if events and on_events is not None:
            try:
                on_events(job, events)
            except Exception:
                log.debug("event observer failed", exc_info=True)  # an observer never fails the wait
        status_changed = job.status != last_status
        changed = bool(events) or status_changed
        if status_changed and not summarise:
            if job.status == JobStatus.PAUSED:
                log.warning("job %s is paused; waiting for it to be resumed", job_id)
            else:
                log.info("job %s is %s", job_id, job.status)
        last_status = job.status
        if changed:
            description = report.progress_description(job_id, job.status, progress.step, progress.total)
            now = clock()
            if status_changed or job.is_terminal or now - artifact_updated >= policy.progress_every_s:
                runtime.update_progress(artifact, progress.percent(job.status), description=description)
                artifact_updated = now
            if not summarise:
                publish(progress.update(job, description))

        if job.is_terminal:
            break
        elapsed = clock() - start
        if elapsed >= policy.timeout_s:
            raise JobTimeout(job_id, str(job.status), elapsed)
        if changed:
            last_news = clock()
        recent = job.status == JobStatus.RUNNING and clock() - last_news < policy.running_quiet_s
        interval = (
            policy.interval_s if changed or recent else min(interval * policy.backoff, policy.max_interval_s)
        )
        pause = interval
        if policy.ending_interval_s is not None and job.status == JobStatus.RUNNING and progress.at_last_step:
            last_step_seen = clock() if last_step_seen is None else last_step_seen
            if clock() - last_step_seen < policy.ending_for_s:
                pause = min(pause, policy.ending_interval_s)
        sleep(max(0.0, min(pause, policy.timeout_s - elapsed)))

    if job.status != JobStatus.SUCCEEDED:
        code = job.error.code if job.error else None
        message = job.error.message if job.error else None
        log.error("job %s %s: [%s] %s", job_id, job.status, code, message)
        raise JobFailed(job_id, str(job.status), code, message)
    log.info(
        "job %s succeeded: model %s, %s trained tokens", job_id, job.fine_tuned_model, job.trained_tokens
    )
    return job
