"""Gaps found by driving the server from outside: writes after a cancel, server paths in events, validation
warnings, hyperparameter and suffix messages, ft:ft: ids, and error messages naming internal arguments."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from backend_testkit import TERMINAL, Api, wait_for

from backend.launcher import RunningBackend

pytestmark = pytest.mark.integration

HP = "method.supervised.hyperparameters"


def _job_body(file_id: str, **hyperparameters: Any) -> dict[str, Any]:
    return {
        "model": "local:micro-chat",
        "training_file": file_id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    }


def _cancel(api: Api, job_id: str) -> dict[str, Any]:
    with api.client() as c:
        r = c.post(f"/fine_tuning/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _written(api: Api, job_id: str) -> tuple[list[str], list[str], set[str]]:
    with api.client() as c:
        checkpoints = c.get(f"/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": 1000}).json()["data"]
        models = {m["id"] for m in c.get("/models").json()["data"] if job_id.split("_")[-1][:12] in m["id"]}
    return [e["id"] for e in api.events(job_id)], [ck["id"] for ck in checkpoints], models


def test_nothing_is_written_after_cancel(api: Api, train_file: Path) -> None:
    job = api.create_job(api.upload(train_file)["id"], n_epochs=30, batch_size=1)
    wait_for(lambda: any(e["type"] == "metrics" for e in api.events(job["id"])))
    assert _cancel(api, job["id"])["status"] == "cancelled"
    before = _written(api, job["id"])
    time.sleep(1.0)  # several of the worker's 0.2 s control polls, and many training steps
    assert _written(api, job["id"]) == before
    assert api.events(job["id"])[-1]["message"] == "Fine-tuning job cancelled"


def test_checkpoint_events_name_no_server_path(
    api: Api, backend: RunningBackend, trained_job: dict[str, Any]
) -> None:
    events = api.events(trained_job["id"])
    assert str(backend.data_dir) not in json.dumps(events)
    saved = [e for e in events if e["message"].startswith("Checkpoint saved")]
    assert saved and all(type(e["data"]["step"]) is int and "model_dir" not in e["data"] for e in saved)
    assert all(type(e["data"]["step"]) is int for e in events if e["type"] == "metrics")


def test_duplicates_and_overlap_become_warn_events(api: Api, train_file: Path, tmp_path: Path) -> None:
    # train_file repeats its 8 examples twice; the validation file reuses three of them.
    valid = tmp_path / "valid.jsonl"
    valid.write_text("".join(train_file.read_text().splitlines(keepends=True)[:3]))
    job = api.create_job(api.upload(train_file)["id"], validation_file=api.upload(valid)["id"])
    api.wait_status(job["id"], {"queued", "running"} | TERMINAL)
    _cancel(api, job["id"])
    warns = [e["message"] for e in api.events(job["id"]) if e["level"] == "warn"]
    assert any("Training file" in m and "duplicate of line 1" in m for m in warns), warns
    assert any("3 example(s) also appear in the training file" in m for m in warns), warns


@pytest.mark.parametrize(
    ("hyperparameters", "param", "rule"),
    [
        ({"n_epochs": 0}, "n_epochs", "n_epochs must be an integer from 1 to 50, or 'auto'"),
        ({"n_epochs": "2"}, "n_epochs", "n_epochs must be an integer from 1 to 50, or 'auto'"),
        (
            {"learning_rate_multiplier": "2"},
            "learning_rate_multiplier",
            "learning_rate_multiplier must be a number > 0",
        ),
        ({"batch_size": 1000}, "batch_size", "batch_size must be an integer from 1 to 256, or 'auto'"),
    ],
)
def test_hyperparameter_errors_state_the_rule(
    api: Api, train_file: Path, hyperparameters: dict[str, Any], param: str, rule: str
) -> None:
    with api.client() as c:
        r = c.post("/fine_tuning/jobs", json=_job_body("file-unused", **hyperparameters))
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == f"{HP}.{param}", error
    assert rule in error["message"] and "more problem" not in error["message"], error


def test_integral_numbers_are_accepted_for_integer_hyperparameters(api: Api, train_file: Path) -> None:
    with api.client() as c:
        r = c.post("/fine_tuning/jobs", json=_job_body(api.upload(train_file)["id"], n_epochs=2.0))
    assert r.status_code == 200, r.text
    assert r.json()["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    _cancel(api, r.json()["id"])


def test_suffix_rule_is_stated(api: Api) -> None:
    with api.client() as c:
        r = c.post("/fine_tuning/jobs", json={**_job_body("file-unused"), "suffix": "team:a"})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "suffix", error
    assert "letters, digits, '.', '_' and '-'" in error["message"], error


def test_fine_tuning_a_fine_tuned_model_keeps_one_ft_prefix(
    api: Api, train_file: Path, trained_job: dict[str, Any]
) -> None:
    again = api.create_job(
        api.upload(train_file)["id"],
        n_epochs=1,
        batch_size=8,
        model=trained_job["fine_tuned_model"],
        suffix="again",
    )
    done = api.wait_status(again["id"], TERMINAL)
    assert done["status"] == "succeeded", done["error"]
    assert done["model"] == trained_job["fine_tuned_model"]
    assert done["fine_tuned_model"].startswith("ft:local:micro-chat:again:"), done["fine_tuned_model"]


def test_wrong_file_kind_names_the_method_not_an_argument(api: Api, tmp_path: Path) -> None:
    pref = tmp_path / "prefs.jsonl"
    line = {
        "input": {"messages": [{"role": "user", "content": "Say red."}]},
        "preferred_output": [{"role": "assistant", "content": "Red."}],
        "non_preferred_output": [{"role": "assistant", "content": "Blue."}],
    }
    pref.write_text("".join(json.dumps(line) + "\n" for _ in range(12)))
    job = api.create_job(api.upload(pref)["id"])
    done = api.wait_status(job["id"], TERMINAL)
    message = done["error"]["message"]
    assert done["status"] == "failed" and "method type 'dpo'" in message and "kind=" not in message, message
