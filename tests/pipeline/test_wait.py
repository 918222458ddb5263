"""wait_for_job_task: paused, 429 Retry-After, 5xx, timeouts, failure and give-up behaviour."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import httpx
import pytest

from client import MKA1Client
from client.errors import AuthenticationError, InternalServerError
from tasks.errors import JobFailed, JobTimeout
from tasks.progress import ProgressUpdate, subscribe
from tasks.wait import PollPolicy, wait_for_job_task
from tests.pipeline.fake_api import FakeMKA1

FAST = PollPolicy(interval_s=1.0, max_interval_s=4.0, backoff=2.0, timeout_s=600.0, max_consecutive_errors=3)


class FakeTime:
    """A clock that only moves when the task sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def _job(fake: FakeMKA1) -> str:
    with fake.client() as c:
        from client.models import JobCreateRequest

        return c.jobs.create(JobCreateRequest(model="m", training_file="file-1")).id


def _wait(fake: FakeMKA1, job_id: str, t: FakeTime, policy: PollPolicy = FAST):
    # Client retries off: these tests watch the loop's own handling of errors that outlast them.
    with fake.client(max_retries=0) as c:
        return wait_for_job_task.fn(c, job_id, policy, sleep=t.sleep, clock=t.clock)


def test_paused_429_503_then_success(fake: FakeMKA1, caplog: pytest.LogCaptureFixture) -> None:
    fake.timeline = ["queued", "running", "paused", "paused", "running", "succeeded"]
    job_id = _job(fake)
    fake.inject("GET", f"/fine_tuning/jobs/{job_id}", 429, headers={"Retry-After": "7"})
    fake.inject("GET", f"/fine_tuning/jobs/{job_id}/events", 503)
    t = FakeTime()
    updates: list[ProgressUpdate] = []
    with caplog.at_level(logging.INFO, logger="ftpipe.tasks"), subscribe(updates.append):
        job = _wait(fake, job_id, t)
    assert job.status == "succeeded" and job.fine_tuned_model
    assert t.sleeps[0] == 7.0  # honoured Retry-After
    assert 2.0 <= t.sleeps[1] <= 2.5  # second error in a row: doubled interval plus jitter
    text = caplog.text
    assert "paused" in text and "status -> succeeded" in text and "step 2" in text
    statuses = [u.job_status for u in updates if u.job_status]
    assert "paused" in statuses and statuses[-1] == "succeeded"
    assert any(u.fraction is not None for u in updates)


def test_interval_grows_while_nothing_changes(fake: FakeMKA1) -> None:
    fake.timeline = ["queued"] + ["paused"] * 6 + ["succeeded"]
    job_id = _job(fake)
    t = FakeTime()
    _wait(fake, job_id, t)
    # queued (change) -> 1s; paused (change) -> 1s; then unchanged polls back off 2, 4, 4 (capped) ...
    assert t.sleeps[:5] == [1.0, 1.0, 2.0, 4.0, 4.0]


class QuietRunFake(FakeMKA1):
    """Running polls after the first one bring no metrics event: a job between two logged steps."""

    def _event(
        self, jid: str, message: str, type: str = "message", data: dict[str, Any] | None = None
    ) -> None:
        if type == "metrics" and any(e["type"] == "metrics" for e in self.events[jid]):
            return
        super()._event(jid, message, type, data)


def test_interval_stays_while_a_running_job_had_news_lately() -> None:
    fake = QuietRunFake()
    fake.timeline = ["running"] * 6 + ["succeeded"]
    job_id = _job(fake)
    t = FakeTime()
    _wait(fake, job_id, t)
    # The last step's event came a few seconds ago: its end is caught one base interval after it happens.
    assert t.sleeps == [1.0] * 6


def test_interval_grows_once_a_running_job_is_quiet_for_long() -> None:
    fake = QuietRunFake()
    fake.timeline = ["running"] * 6 + ["succeeded"]
    job_id = _job(fake)
    t = FakeTime()
    _wait(fake, job_id, t, dataclasses.replace(FAST, running_quiet_s=2.5))
    assert t.sleeps == [1.0, 1.0, 1.0, 2.0, 4.0, 4.0]


def test_once_the_last_step_is_logged_the_end_is_polled_faster_for_a_while(fake: FakeMKA1) -> None:
    # 4 planned steps, one logged per running poll: from the 4th poll on the job's end is due.
    fake.total_steps = 4
    fake.timeline = ["running"] * 6 + ["succeeded"]
    job_id = _job(fake)
    t = FakeTime()
    assert _wait(fake, job_id, t, dataclasses.replace(FAST, ending_interval_s=0.1)).status == "succeeded"
    assert t.sleeps == [1.0, 1.0, 1.0, 0.1, 0.1, 0.1]
    # An end that takes longer than ending_for_s (a big model's save) goes back to the base interval.
    fake.timeline = ["running"] * 8 + ["succeeded"]
    job_id = _job(fake)
    t = FakeTime()
    _wait(fake, job_id, t, dataclasses.replace(FAST, ending_interval_s=0.1, ending_for_s=0.25))
    assert t.sleeps == [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 1.0, 1.0]
    # Without an ending interval (a remote API) nothing changes at the end.
    fake.timeline = ["running"] * 6 + ["succeeded"]
    job_id = _job(fake)
    t = FakeTime()
    _wait(fake, job_id, t)
    assert t.sleeps == [1.0] * 6


def test_failed_job_raises_with_code_and_message(fake: FakeMKA1) -> None:
    fake.timeline = ["running", "failed"]
    fake.error = {"code": "invalid_training_file", "message": "line 3 is broken"}
    job_id = _job(fake)
    with pytest.raises(JobFailed) as info:
        _wait(fake, job_id, FakeTime())
    assert (info.value.code, info.value.message, info.value.status) == (
        "invalid_training_file",
        "line 3 is broken",
        "failed",
    )
    assert job_id in str(info.value)


def test_timeout(fake: FakeMKA1) -> None:
    fake.timeline = ["running"] * 100
    job_id = _job(fake)
    t = FakeTime()
    with pytest.raises(JobTimeout):
        _wait(fake, job_id, t, PollPolicy(interval_s=1.0, max_interval_s=2.0, timeout_s=10.0))
    assert t.now <= 10.0 + 1e-9


def test_gives_up_after_bounded_consecutive_transient_errors(fake: FakeMKA1) -> None:
    job_id = _job(fake)
    fake.inject("GET", f"/fine_tuning/jobs/{job_id}", 502, count=4)
    t = FakeTime()
    with pytest.raises(InternalServerError):
        _wait(fake, job_id, t)
    assert len(t.sleeps) == 3  # max_consecutive_errors


def test_connection_errors_are_absorbed(fake: FakeMKA1) -> None:
    job_id = _job(fake)
    fake.inject("GET", f"/fine_tuning/jobs/{job_id}", 0, exc=httpx.ReadTimeout("slow"))
    fake.inject("GET", f"/fine_tuning/jobs/{job_id}/events", 0, exc=httpx.RemoteProtocolError("reset"))
    assert _wait(fake, job_id, FakeTime()).status == "succeeded"


def test_non_transient_error_fails_immediately(fake: FakeMKA1) -> None:
    job_id = _job(fake)
    fake.inject("GET", f"/fine_tuning/jobs/{job_id}", 401)
    t = FakeTime()
    with pytest.raises(AuthenticationError):
        _wait(fake, job_id, t)
    assert t.sleeps == []


def test_progress_artifact_updates_are_throttled_but_status_changes_are_not(
    fake: FakeMKA1, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.runtime as runtime

    fake.timeline = ["queued", *["running"] * 10, "succeeded"]
    job_id = _job(fake)
    descriptions: list[str] = []
    monkeypatch.setattr(runtime, "progress", lambda *a, **k: "artifact-id")
    monkeypatch.setattr(
        runtime, "update_progress", lambda artifact, value, description=None: descriptions.append(description)
    )
    policy = PollPolicy(interval_s=1.0, max_interval_s=1.0, timeout_s=600.0, progress_every_s=5.0)
    t = FakeTime()
    _wait(fake, job_id, t, policy)
    # 12 polls, each with news: queued (t=0), running (t=1), one throttled refresh (t=6), succeeded (t=11).
    assert len(descriptions) == 4
    assert [d.split(": ")[1].split()[0] for d in descriptions] == [
        "queued",
        "running",
        "running",
        "succeeded",
    ]


def test_timeout_before_any_successful_poll_names_no_status(fake: FakeMKA1) -> None:
    job_id = _job(fake)
    fake.inject("GET", f"/fine_tuning/jobs/{job_id}", 503, count=10)
    policy = PollPolicy(interval_s=1.0, timeout_s=5.0, max_consecutive_errors=10)
    with pytest.raises(JobTimeout) as info:
        _wait(fake, job_id, FakeTime(), policy)
    assert info.value.status == "unknown"
    assert f"job {job_id} still unknown after" in str(info.value)


def test_client_retries_absorb_a_blip_before_the_loop_sees_it(fake: FakeMKA1) -> None:
    job_id = _job(fake)
    fake.inject("GET", f"/fine_tuning/jobs/{job_id}", 503, headers={"Retry-After": "3"})
    fake.inject("GET", f"/fine_tuning/jobs/{job_id}/events", 0, exc=httpx.ConnectError("refused"))
    client_sleeps: list[float] = []
    t = FakeTime()
    client = MKA1Client(
        fake.settings(), transport=httpx.MockTransport(fake.handle), sleep=client_sleeps.append
    )
    with client:
        job = wait_for_job_task.fn(client, job_id, FAST, sleep=t.sleep, clock=t.clock)
    assert job.status == "succeeded"
    assert client_sleeps[0] == 3.0 and 0.5 <= client_sleeps[1] <= 0.625  # same backoff rule as the loop
    assert t.sleeps[0] == FAST.interval_s  # the loop only slept its poll interval: it never saw an error


def test_updates_carry_step_total_and_latest_losses(fake: FakeMKA1) -> None:
    fake.timeline = ["queued", "running", "running", "running", "succeeded"]
    job_id = _job(fake)
    updates: list[ProgressUpdate] = []
    with subscribe(updates.append):
        _wait(fake, job_id, FakeTime())
    running = [u for u in updates if u.job_status == "running"]
    # The fake's step n reports train_loss 1/n and valid_loss 1/(n+2), out of 4 steps.
    assert [(u.step, u.total_steps) for u in running] == [(1, 4), (2, 4), (3, 4)]
    assert [u.train_loss for u in running] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert [u.valid_loss for u in running] == [pytest.approx(1 / 3), 0.25, 0.2]
    assert [u.fraction for u in running] == [0.25, 0.5, 0.75]
    assert updates[-1].job_status == "succeeded" and updates[-1].fraction == 1.0
    assert not any(u.reattached for u in updates)


def test_a_reattached_finished_job_is_one_summary_line_not_a_replay(
    fake: FakeMKA1, caplog: pytest.LogCaptureFixture
) -> None:
    fake.timeline = ["queued", "running", "running", "running", "succeeded"]
    job_id = _job(fake)
    _wait(fake, job_id, FakeTime())
    # A checkpoint event's losses are epoch means: the summary's "final" losses are the last metrics point's.
    fake._event(job_id, "Checkpoint saved at step 3", data={"step": 3, "train_loss": 9.0, "valid_loss": 9.5})
    n_events = len(fake.events[job_id])
    seen: list[int] = []
    updates: list[ProgressUpdate] = []
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ftpipe.tasks"), subscribe(updates.append), fake.client() as c:
        job = wait_for_job_task.fn(
            c,
            job_id,
            FAST,
            sleep=FakeTime().sleep,
            on_events=lambda _job, events: seen.append(len(events)),
            attached=True,
        )
    assert job.status == "succeeded"
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if m.startswith(f"[{job_id}]")]  # no event replayed
    summary = f"re-attached to {job_id} (succeeded, 3 steps, final train loss 0.3333, valid 0.2000)"
    assert [m for m in messages if "re-attached" in m] == [summary]
    assert not [m for m in messages if m == f"job {job_id} is succeeded"]  # the summary says it
    (update,) = updates
    assert update.reattached and update.message == summary and update.step == 3 and update.fraction == 1.0
    assert seen == [n_events]  # the observers (metrics, tracking) still get every past event


def test_a_reattached_running_job_is_summarised_then_followed(
    fake: FakeMKA1, caplog: pytest.LogCaptureFixture
) -> None:
    fake.timeline = ["running", "running", "running", "succeeded"]
    job_id = _job(fake)
    with fake.client() as c:  # a first run saw two steps, then crashed
        c.jobs.retrieve(job_id)
        c.jobs.retrieve(job_id)
    updates: list[ProgressUpdate] = []
    with caplog.at_level(logging.INFO, logger="ftpipe.tasks"), subscribe(updates.append), fake.client() as c:
        wait_for_job_task.fn(c, job_id, FAST, sleep=FakeTime().sleep, attached=True)
    messages = [r.getMessage() for r in caplog.records]
    assert f"re-attached to {job_id} (running, step 3/4, train loss 0.3333, valid 0.2000)" in messages
    # Only what happened after re-attaching is echoed: the status change to succeeded.
    assert [m for m in messages if m.startswith(f"[{job_id}]")] == [f"[{job_id}] status -> succeeded"]
    assert [u.reattached for u in updates] == [True, False]
