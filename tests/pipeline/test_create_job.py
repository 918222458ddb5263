"""create_job_task: idempotency key and attaching to an existing job instead of creating a duplicate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from client.models import Method
from tasks.create_job import FLOW_RUN_KEY, IDEMPOTENCY_KEY, JobSpec, create_job_task
from tests.pipeline.fake_api import SERVER_ID, FakeMKA1

SPEC = JobSpec(
    model="local:micro-chat",
    training_file="file-1",
    validation_file=None,
    method=Method(type="supervised"),
    suffix="t",
    seed=7,
)


def _create(fake: FakeMKA1, state: Path, spec: JobSpec = SPEC, flow_run_id: str = "run-1", **kw: object):
    with fake.client() as c:
        return create_job_task.fn(
            c,
            spec,
            metadata={"team": "qa"},
            state_dir=state,
            server_id=SERVER_ID,
            flow_run_id=flow_run_id,
            **kw,
        )


def test_key_depends_on_inputs_only() -> None:
    assert SPEC.idempotency_key() == replace(SPEC).idempotency_key()
    assert SPEC.idempotency_key() != replace(SPEC, seed=8).idempotency_key()
    assert SPEC.idempotency_key() != replace(SPEC, validation_file="file-2").idempotency_key()
    assert len(SPEC.idempotency_key()) == 64


def test_creates_with_metadata_then_attaches(fake: FakeMKA1, tmp_path: Path) -> None:
    first = _create(fake, tmp_path / "s", flow_run_id="run-1")
    assert not first.attached
    meta = fake.jobs[first.job.id]["metadata"]
    assert meta == {"team": "qa", IDEMPOTENCY_KEY: SPEC.idempotency_key(), FLOW_RUN_KEY: "run-1"}
    # A different flow run with the same inputs (and no local index) finds the same job on the server.
    second = _create(fake, tmp_path / "other-state", flow_run_id="run-2")
    assert (second.attached, second.job.id, second.how) == (True, first.job.id, "metadata-filter")
    third = _create(fake, tmp_path / "s", flow_run_id="run-3")
    assert (third.job.id, third.how) == (first.job.id, "index")
    assert fake.count("POST", "/fine_tuning/jobs") == 1


@pytest.mark.parametrize(("mode", "how"), [("ignore", "metadata-filter"), ("empty", "recent-scan")])
def test_finds_job_when_server_filter_is_unreliable(
    fake: FakeMKA1, tmp_path: Path, mode: str, how: str
) -> None:
    fake.metadata_filter = mode
    fake.add_job("running", {IDEMPOTENCY_KEY: "someone-else"})
    existing = fake.add_job("running", {IDEMPOTENCY_KEY: SPEC.idempotency_key()})
    fake.add_job("running", {})
    got = _create(fake, tmp_path / "s")
    assert (got.job.id, got.how) == (existing, how)
    assert fake.count("POST", "/fine_tuning/jobs") == 0


def test_dead_job_attached_unless_fresh_requested(fake: FakeMKA1, tmp_path: Path) -> None:
    dead = fake.add_job("failed", {IDEMPOTENCY_KEY: SPEC.idempotency_key()})
    assert _create(fake, tmp_path / "a").job.id == dead
    fresh = _create(fake, tmp_path / "b", fresh_if_dead=True)
    assert not fresh.attached and fresh.job.id != dead
    # Once a live job exists, it wins over the dead one even without asking for fresh.
    assert _create(fake, tmp_path / "c").job.id == fresh.job.id


def test_keyed_create_is_retried_in_place_with_the_same_key(fake: FakeMKA1, tmp_path: Path) -> None:
    """The create carries an Idempotency-Key derived from the inputs, so the client may resend it after a
    503; every attempt carries the same key (a server honouring it answers with one job)."""
    fake.inject("POST", "/fine_tuning/jobs", 503)
    got = _create(fake, tmp_path / "s")
    keys = [k for p, k in fake.post_keys if p == "/fine_tuning/jobs"]
    assert len(keys) == 2 and keys[0] == keys[1] == f"ftpipe-job-{SPEC.idempotency_key()}"
    assert not got.attached and got.how == "created" and len(fake.jobs) == 1


def test_exhausted_create_retries_surface_for_prefect_retry(fake: FakeMKA1, tmp_path: Path) -> None:
    fake.inject("POST", "/fine_tuning/jobs", 503, count=50)
    from client.errors import InternalServerError
    from client.retry import is_transient

    with fake.client(max_retries=1) as c, pytest.raises(InternalServerError) as info:
        create_job_task.fn(
            c, SPEC, metadata={}, state_dir=tmp_path / "s", server_id=SERVER_ID, flow_run_id=None
        )
    assert is_transient(info.value)
    assert fake.count("POST", "/fine_tuning/jobs") == 2  # the client's budget, then the Prefect task retry


def test_fresh_jobs_get_a_new_key_per_failed_job_they_replace(fake: FakeMKA1, tmp_path: Path) -> None:
    fake.add_job("failed", {IDEMPOTENCY_KEY: SPEC.idempotency_key()})
    _create(fake, tmp_path / "a", fresh_if_dead=True)
    assert fake.post_keys[-1][1] == f"ftpipe-job-{SPEC.idempotency_key()}-after-1"


def test_concurrent_duplicates_on_a_server_ignoring_the_key_are_cancelled(
    fake: FakeMKA1, tmp_path: Path
) -> None:
    """Another machine created the same job a moment earlier (this fake ignores Idempotency-Key): the
    younger job is cancelled and the run follows the older one."""
    fake.metadata_filter = "ignore"
    real_handle = fake.handle
    other: list[str] = []

    def racing(request: httpx.Request) -> httpx.Response:
        # The other launch's job lands between our look-up and our create.
        if request.method == "POST" and request.url.path.endswith("/fine_tuning/jobs") and not other:
            other.append(fake.add_job("queued", {IDEMPOTENCY_KEY: SPEC.idempotency_key()}))
        return real_handle(request)

    fake.handle = racing  # type: ignore[method-assign]
    got = _create(fake, tmp_path / "s")
    assert got.job.id == other[0] and got.how == "deduplicated"
    younger = [j for j in fake.jobs if j != other[0]]
    assert len(younger) == 1 and fake.jobs[younger[0]]["status"] == "cancelled"
