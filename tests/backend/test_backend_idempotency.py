"""Idempotency-Key on creating POSTs: Stripe's semantics (issue 16), on the real server over HTTP."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_testkit import Api, write_chat_jsonl
from test_backend_errors import assert_error

from backend.launcher import RunningBackend

pytestmark = pytest.mark.integration


def _job_body(file_id: str, **extra: Any) -> dict[str, Any]:
    hp = {"n_epochs": 1, "batch_size": 4}
    return {
        "model": "local:micro-chat",
        "training_file": file_id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        **extra,
    }


def _keyed(c: httpx.Client, path: str, key: str, **kw: Any) -> httpx.Response:
    return c.post(path, headers={"Idempotency-Key": key}, **kw)


def _cancel(c: httpx.Client, *job_ids: str) -> None:
    for job_id in set(job_ids):  # keep the shared server's worker free for the other tests
        c.post(f"/fine_tuning/jobs/{job_id}/cancel")


def test_repeated_job_create_returns_the_first_job_and_another_body_conflicts(
    api: Api, backend: RunningBackend, train_file: Path
) -> None:
    file_id = api.upload(train_file)["id"]
    key = f"job-{uuid.uuid4()}"
    with api.client() as c:
        first = _keyed(c, "/fine_tuning/jobs", key, json=_job_body(file_id, suffix="idem"))
        again = _keyed(c, "/fine_tuning/jobs", key, json=_job_body(file_id, suffix="idem"))
        assert first.status_code == again.status_code == 200, (first.text, again.text)
        assert again.json()["id"] == first.json()["id"]
        err = assert_error(
            _keyed(c, "/fine_tuning/jobs", key, json=_job_body(file_id, suffix="other")),
            409,
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
        assert "different request body" in err["message"]
        tagged = [
            j
            for j in c.get("/fine_tuning/jobs", params={"limit": 100}).json()["data"]
            if j["suffix"] == "idem"
        ]
        # Keys are per owner: another end user's identical request is its own job.
        with Api(backend, "idem-other-user").client() as other:
            own_file = other.post(
                "/files", files={"file": ("t.jsonl", train_file.read_bytes())}, data={"purpose": "fine-tune"}
            ).json()["id"]
            theirs = _keyed(other, "/fine_tuning/jobs", key, json=_job_body(own_file, suffix="idem"))
            assert theirs.status_code == 200 and theirs.json()["id"] != first.json()["id"]
            _cancel(other, theirs.json()["id"])
        _cancel(c, first.json()["id"])
    assert [j["id"] for j in tagged] == [first.json()["id"]]


def test_concurrent_identical_creates_make_one_job(api: Api, train_file: Path) -> None:
    file_id = api.upload(train_file)["id"]
    key = f"race-{uuid.uuid4()}"
    barrier = threading.Barrier(6)
    answers: list[httpx.Response] = []

    def launch() -> None:
        with api.client() as c:
            barrier.wait()
            answers.append(_keyed(c, "/fine_tuning/jobs", key, json=_job_body(file_id, suffix="race")))

    threads = [threading.Thread(target=launch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
    ids = {r.json()["id"] for r in answers}
    with api.client() as c:
        _cancel(c, *ids)
    assert len(ids) == 1


def test_repeated_upload_returns_the_first_file_until_it_is_deleted(api: Api, tmp_path: Path) -> None:
    data = write_chat_jsonl(tmp_path / "t.jsonl").read_bytes()
    key = f"file-{uuid.uuid4()}"
    with api.client() as c:

        def upload(content: bytes) -> httpx.Response:
            return _keyed(
                c, "/files", key, files={"file": ("t.jsonl", content)}, data={"purpose": "fine-tune"}
            )

        first, again = upload(data).json(), upload(data).json()
        assert again["id"] == first["id"]
        assert_error(upload(data + data), 409, code="idempotency_key_reused")
        assert c.delete(f"/files/{first['id']}").status_code == 200
        # The first file is gone: the key no longer has an answer, so the repeat stores the file anew.
        anew = upload(data).json()
        assert anew["id"] != first["id"] and c.get(f"/files/{anew['id']}").status_code == 200


def test_repeated_stored_response_is_answered_once(api: Api, trained_job: dict[str, Any]) -> None:
    key = f"resp-{uuid.uuid4()}"
    body = {"model": trained_job["fine_tuned_model"], "input": "Where is my order?", "max_output_tokens": 4}
    with api.client() as c:
        first, again = (_keyed(c, "/responses", key, json=body) for _ in range(2))
        assert first.status_code == again.status_code == 200, (first.text, again.text)
        assert again.json() == first.json()
        assert_error(
            _keyed(c, "/responses", key, json={**body, "input": "Hi"}), 409, code="idempotency_key_reused"
        )
        assert_error(c.post("/responses", headers={"Idempotency-Key": "x" * 300}, json=body), 400)
