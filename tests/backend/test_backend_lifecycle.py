"""The job lifecycle table and its one transition function, on a real SQLite file (no server)."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from backend.db import Database
from backend.lifecycle import TRANSITIONS, InvalidTransition, JobNotFound, fail, load_job, transition
from contract.wire import JOB_STATUSES, TERMINAL_STATUSES

LEGAL = [(a, b) for a, b in itertools.product(JOB_STATUSES, repeat=2) if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in itertools.product(JOB_STATUSES, repeat=2) if b not in TRANSITIONS[a]]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(tmp_path / "backend.sqlite3")
    database.init_schema()
    return database


def _job(db: Database, status: str, job_id: str = "ftjob_1", owner: str = "alice") -> sqlite3.Row:
    db.execute(
        "INSERT INTO jobs (id, owner, created_at, model, base_model_ref, status, training_file, method_type,"
        " hyperparameters, seed, worker_pid, estimated_finish) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (job_id, owner, 1, "m", "m", status, "file-1", "supervised", "{}", 0, 4242, 99),
    )
    return load_job(db.conn(), job_id)


def _events(db: Database, job_id: str = "ftjob_1") -> list[str]:
    return [r["message"] for r in db.all("SELECT message FROM events WHERE job_id=? ORDER BY seq", (job_id,))]


def test_table_covers_exactly_the_wire_statuses() -> None:
    assert set(TRANSITIONS) == set(JOB_STATUSES)
    assert all(targets <= set(JOB_STATUSES) for targets in TRANSITIONS.values())
    # every non-terminal status can still end (be cancelled); nothing moves back to validating_files
    assert all("cancelled" in TRANSITIONS[s] for s in JOB_STATUSES if s not in TERMINAL_STATUSES)
    assert not any("validating_files" in targets for targets in TRANSITIONS.values())


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_states_are_final(db: Database, terminal: str) -> None:
    assert TRANSITIONS[terminal] == frozenset()
    job = _job(db, terminal)
    for target in JOB_STATUSES:
        with pytest.raises(InvalidTransition, match="the job has already finished"), db.tx() as conn:
            transition(conn, job, target, "must not be written")
    assert load_job(db.conn(), job["id"])["status"] == terminal
    assert _events(db) == []


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_every_illegal_transition_is_refused_and_writes_nothing(
    db: Database, current: str, target: str
) -> None:
    job = _job(db, current)
    with pytest.raises(InvalidTransition) as refused, db.tx() as conn:
        transition(conn, job, target, "must not be written", changes={"control": "cancel"})
    assert (refused.value.current, refused.value.target) == (current, target)
    after = load_job(db.conn(), job["id"])
    assert (after["status"], after["control"], after["worker_pid"]) == (current, "continue", 4242)
    assert _events(db) == []


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_every_legal_transition_moves_and_writes_its_events(db: Database, current: str, target: str) -> None:
    job = _job(db, current)
    with db.tx() as conn:
        transition(conn, job, target, [f"{current} -> {target}", "second event"], changes={"resume": 1})
    after = load_job(db.conn(), job["id"])
    assert after["status"] == target and after["resume"] == 1
    assert _events(db) == [f"{current} -> {target}", "second event"]
    if target in TERMINAL_STATUSES:
        assert after["finished_at"] is not None and after["estimated_finish"] is None
    if target in ("queued", "paused"):  # no worker, no estimate outside running
        assert after["worker_pid"] is None and after["estimated_finish"] is None
    if target == "running":
        assert after["worker_pid"] == 4242  # a caller's worker_pid is kept (set by the claim)


def test_compare_and_set_refuses_a_stale_row(db: Database) -> None:
    stale = _job(db, "running")
    db.execute("UPDATE jobs SET status='cancelled' WHERE id=?", (stale["id"],))  # someone else won
    with pytest.raises(InvalidTransition) as refused, db.tx() as conn:
        transition(conn, stale, "succeeded", "The job has successfully completed")
    assert refused.value.current == "cancelled"
    assert load_job(db.conn(), stale["id"])["status"] == "cancelled"
    assert _events(db) == []


def test_expect_narrows_the_table_and_names_the_action(db: Database) -> None:
    job = _job(db, "running")  # running -> queued is legal (shutdown), but resume wants a paused job
    with pytest.raises(InvalidTransition) as refused, db.tx() as conn:
        transition(conn, job, "queued", "Fine-tuning job resumed", expect=("paused",), action="resume")
    assert (
        str(refused.value)
        == "Cannot resume a job whose status is 'running': only a paused job can be resumed."
    )
    assert load_job(db.conn(), job["id"])["status"] == "running"


def test_changes_are_limited_to_job_columns(db: Database) -> None:
    job = _job(db, "queued")
    with pytest.raises(ValueError, match="owner"), db.tx() as conn:
        transition(conn, job, "running", changes={"owner": "mallory"})
    assert load_job(db.conn(), job["id"])["owner"] == "alice"


def test_load_job_is_owner_scoped(db: Database) -> None:
    _job(db, "queued")
    assert load_job(db.conn(), "ftjob_1", "alice")["id"] == "ftjob_1"
    with pytest.raises(JobNotFound):
        load_job(db.conn(), "ftjob_1", "bob")
    with pytest.raises(JobNotFound):
        load_job(db.conn(), "ftjob_missing")


def test_fail_only_from_the_expected_statuses(db: Database) -> None:
    _job(db, "running")
    assert not fail(
        db, "ftjob_1", "invalid_training_file", "gone", "training_file", expect=("validating_files",)
    )
    assert load_job(db.conn(), "ftjob_1")["status"] == "running"
    assert fail(db, "ftjob_1", "worker_crashed", "The worker exited", expect=("running",))
    after = load_job(db.conn(), "ftjob_1")
    assert after["status"] == "failed" and after["worker_pid"] is None
    assert '"code": "worker_crashed"' in after["error"]
    assert _events(db) == ["Fine-tuning job failed: The worker exited"]
    assert not fail(db, "ftjob_1", "worker_crashed", "again", expect=("running",))  # failed is final
    assert not fail(db, "ftjob_missing", "x", "y", expect=("running",))


def test_routes_answer_domain_errors_with_404_and_409(tmp_path: Path) -> None:
    import asyncio

    import httpx

    from backend.app import create_app
    from backend.settings import BackendSettings

    settings = BackendSettings(data_dir=tmp_path)
    app = create_app(settings)
    _job(app.state.backend.db, "succeeded")
    headers = {
        "Authorization": f"Bearer {settings.resolved_api_key().get_secret_value()}",
        "X-On-Behalf-Of": "alice",
    }

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t/api/v1/llm", headers=headers
        ) as c:
            return [
                await c.post("/fine_tuning/jobs/ftjob_1/cancel"),
                await c.post("/fine_tuning/jobs/ftjob_1/resume"),
                await c.get("/fine_tuning/jobs/ftjob_1", headers={"X-On-Behalf-Of": "bob"}),
            ]

    cancel, resume, other_owner = asyncio.run(calls())
    assert cancel.status_code == 409 and cancel.json()["error"] == {
        "message": "Cannot cancel a job whose status is 'succeeded': the job has already finished.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_state",
    }
    assert resume.status_code == 409 and resume.json()["error"]["code"] == "invalid_state"
    assert other_owner.status_code == 404
    assert other_owner.json()["error"]["code"] == "fine_tuning_job_not_found"
    assert other_owner.json()["error"]["message"] == "No fine_tuning_job found with id 'ftjob_1'."
