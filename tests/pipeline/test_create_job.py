"""create_job_task: idempotency key and attaching to an existing job instead of creating a duplicate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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


def test_transient_create_error_surfaces_for_prefect_retry(fake: FakeMKA1, tmp_path: Path) -> None:
    fake.inject("POST", "/fine_tuning/jobs", 503)
    from client.errors import InternalServerError
    from client.retry import is_transient

    try:
        _create(fake, tmp_path / "s")
    except InternalServerError as exc:
        assert is_transient(exc)
        assert fake.count("POST", "/fine_tuning/jobs") == 1  # a creating POST is never repeated in place
    else:  # pragma: no cover - the fake must have failed the call
        raise AssertionError("expected a 503")
