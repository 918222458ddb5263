"""X-On-Behalf-Of isolation: another owner's files, jobs and models are invisible (404)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from backend_testkit import Api

from backend.launcher import RunningBackend

pytestmark = pytest.mark.integration


def test_other_owner_sees_nothing(
    backend: RunningBackend, api: Api, trained_job: dict[str, Any], train_file: Path
) -> None:
    stranger = Api(backend, owner="user-b")
    job_id, file_id = trained_job["id"], trained_job["training_file"]
    ckpt_model = None
    with api.client() as c:
        ckpt_model = c.get(f"/fine_tuning/jobs/{job_id}/checkpoints").json()["data"][0][
            "fine_tuned_model_checkpoint"
        ]
    with stranger.client() as c:
        assert c.get(f"/files/{file_id}").status_code == 404
        assert c.get(f"/files/{file_id}/content").status_code == 404
        assert c.delete(f"/files/{file_id}").status_code == 404
        assert file_id not in [f["id"] for f in c.get("/files").json()["data"]]
        assert c.get(f"/fine_tuning/jobs/{job_id}").status_code == 404
        assert c.get(f"/fine_tuning/jobs/{job_id}/events").status_code == 404
        assert c.get(f"/fine_tuning/jobs/{job_id}/checkpoints").status_code == 404
        for action in ("pause", "resume", "cancel"):
            assert c.post(f"/fine_tuning/jobs/{job_id}/{action}").status_code == 404
        assert job_id not in [j["id"] for j in c.get("/fine_tuning/jobs").json()["data"]]
        r = c.post("/fine_tuning/jobs", json={"model": "local:micro-chat", "training_file": file_id})
        assert r.status_code == 404 and r.json()["error"]["param"] == "training_file"
        for model in (trained_job["fine_tuned_model"], ckpt_model):
            r = c.post("/responses", json={"model": model, "input": "hi"})
            assert r.status_code == 404 and r.json()["error"]["param"] == "model"
        own = stranger.upload(train_file)
        r = c.post(
            "/fine_tuning/jobs", json={"model": trained_job["fine_tuned_model"], "training_file": own["id"]}
        )
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    # the file is still there for its owner
    with api.client() as c:
        assert c.get(f"/files/{file_id}").status_code == 200
        assert own["id"] not in [f["id"] for f in c.get("/files").json()["data"]]
