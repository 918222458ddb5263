"""Restart semantics: data survives; a job running when the server dies is resumed, never stuck."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_testkit import TERMINAL, Api, wait_for

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from tests.backend_workers import frozen_when

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    settings = BackendSettings(data_dir=tmp_path_factory.mktemp("restart-data"), metrics_every_n_steps=2)
    rb = start_backend(settings, port=0)
    try:
        yield rb
    finally:
        rb.stop()


def _snapshot(api: Api) -> dict[str, list[str]]:
    with api.client() as c:
        jobs = c.get("/fine_tuning/jobs", params={"limit": 100}).json()["data"]
        snap = {"files": [f["id"] for f in c.get("/files").json()["data"]], "jobs": [j["id"] for j in jobs]}
        for j in jobs:
            snap[j["id"] + "/events"] = [
                e["id"]
                for e in c.get(f"/fine_tuning/jobs/{j['id']}/events", params={"limit": 1000}).json()["data"]
            ]
            snap[j["id"] + "/checkpoints"] = [
                x["id"] for x in c.get(f"/fine_tuning/jobs/{j['id']}/checkpoints").json()["data"]
            ]
    return snap


def test_kill_mid_training_then_restart(own_backend: RunningBackend, train_file: Path) -> None:
    api = Api(own_backend)
    short = api.create_job(api.upload(train_file)["id"], n_epochs=1, batch_size=4)
    short_done = api.wait_status(short["id"], TERMINAL)
    assert short_done["status"] == "succeeded"
    long_job = api.create_job(api.upload(train_file)["id"], n_epochs=10, batch_size=1)

    def checkpointed() -> bool:
        return any(e["message"].startswith("Checkpoint saved") for e in api.events(long_job["id"]))

    # Kill once the job has a checkpoint (end of epoch 1) so there is something to resume from. Its worker
    # is held still until the server is dead, so the job cannot finish first; released, the orphaned worker
    # sees its server gone and exits without writing.
    with frozen_when(own_backend, checkpointed):
        before = _snapshot(api)
        assert api.job(long_job["id"])["status"] == "running"
        own_backend.kill()
    own_backend.start()

    after = _snapshot(api)
    for key, ids in before.items():
        assert set(ids) <= set(after.get(key, [])), key
    done = api.wait_status(long_job["id"], TERMINAL)
    assert done["status"] == "succeeded", done["error"]
    messages = [e["message"] for e in api.events(long_job["id"])]
    assert "Resumed after backend restart" in messages
    assert any(m.startswith("Resumed from step") for m in messages)
    # models of the earlier job still work after the restart
    with api.client() as c:
        r = c.post(
            "/responses",
            json={
                "model": short_done["fine_tuned_model"],
                "input": "Say the color red.",
                "max_output_tokens": 4,
            },
        )
        assert r.status_code == 200, r.text
        assert c.get(f"/files/{short_done['result_files'][0]}/content").status_code == 200


def test_graceful_restart_requeues_running_job(own_backend: RunningBackend, train_file: Path) -> None:
    api = Api(own_backend)
    job = api.create_job(api.upload(train_file)["id"], n_epochs=6, batch_size=1)
    stop = threading.Thread(target=own_backend.stop)  # SIGTERM, then waits for the server to exit
    with frozen_when(own_backend, lambda: any(e["type"] == "metrics" for e in api.events(job["id"]))):
        assert api.job(job["id"])["status"] == "running"
        asked = _stop_requests(own_backend)
        stop.start()
        # The worker moves again only once the server has asked it to stop, so it cannot finish first.
        wait_for(lambda: _stop_requests(own_backend) > asked, timeout=60)
    stop.join()
    own_backend.start()
    done = api.wait_status(job["id"], TERMINAL)
    assert done["status"] == "succeeded", done["error"]
    messages = [e["message"] for e in api.events(job["id"])]
    assert any("job re-queued to resume" in m or m == "Resumed after backend restart" for m in messages)


def _stop_requests(rb: RunningBackend) -> int:
    """How often the server logged asking its workers to stop (backend/pool.py, after setting the event)."""
    return rb.log_path.read_text(encoding="utf-8", errors="replace").count("worker(s) to stop")
