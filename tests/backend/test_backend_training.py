"""Real training on local:micro-chat through the HTTP API: metrics, checkpoints, result file, Responses."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from backend_testkit import Api

pytestmark = pytest.mark.integration

SIX_METRICS = {
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
}


def test_job_succeeds_with_resolved_fields(trained_job: dict[str, Any]) -> None:
    job = trained_job
    assert job["object"] == "fine_tuning.job"
    assert job["id"].startswith("ftjob_") and len(job["id"]) == len("ftjob_") + 32
    assert job["fine_tuned_model"] and job["fine_tuned_model"].startswith("ft:local:micro-chat:shared:")
    assert job["finished_at"] is not None and job["finished_at"] >= job["created_at"]
    assert job["trained_tokens"] > 0
    assert job["error"] is None
    assert job["organization_id"]
    hp = job["method"]["supervised"]["hyperparameters"]
    assert hp["n_epochs"] == 2 and hp["batch_size"] == 4
    assert isinstance(hp["learning_rate_multiplier"], float)  # "auto" was resolved by the trainer
    assert job["hyperparameters"]["n_epochs"] == 2


def test_loss_decreases_and_lifecycle_events(api: Api, trained_job: dict[str, Any]) -> None:
    events = api.events(trained_job["id"])
    messages = [e["message"] for e in events]
    for expected in (
        "Created fine-tuning job",
        "Files validated",
        "Job enqueued",
        "Fine-tuning job started",
        "successfully completed",
    ):
        assert any(expected in m for m in messages), (expected, messages)
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert len(metrics) >= 2
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert [m["step"] for m in metrics] == sorted(m["step"] for m in metrics)
    assert metrics[-1]["step"] == metrics[-1]["total_steps"]  # the curve reaches the last step


def test_checkpoints_have_all_metrics_and_work_in_responses(api: Api, trained_job: dict[str, Any]) -> None:
    with api.client() as c:
        page = c.get(f"/fine_tuning/jobs/{trained_job['id']}/checkpoints").json()
        assert page["object"] == "list" and page["data"]
        steps = [ck["step_number"] for ck in page["data"]]
        assert steps == sorted(steps, reverse=True)  # newest first
        for ck in page["data"]:
            assert ck["id"].startswith("ftckpt_")
            assert ck["fine_tuning_job_id"] == trained_job["id"]
            assert set(ck["metrics"]) >= SIX_METRICS, ck["metrics"]
            assert ck["metrics"]["step"] == ck["step_number"]
            r = c.post(
                "/responses",
                json={
                    "model": ck["fine_tuned_model_checkpoint"],
                    "input": "Say the color red.",
                    "max_output_tokens": 8,
                },
            )
            assert r.status_code == 200, r.text
            assert r.json()["model"] == ck["fine_tuned_model_checkpoint"]
            assert r.json()["usage"]["output_tokens"] >= 1
        # after=<newest id> returns the older ones only
        if len(page["data"]) > 1:
            older = c.get(
                f"/fine_tuning/jobs/{trained_job['id']}/checkpoints", params={"after": page["data"][0]["id"]}
            ).json()
            assert [ck["id"] for ck in older["data"]] == [ck["id"] for ck in page["data"][1:]]


def test_result_file_holds_step_metrics(api: Api, trained_job: dict[str, Any]) -> None:
    (result_id,) = trained_job["result_files"]
    with api.client() as c:
        meta = c.get(f"/files/{result_id}").json()
        assert meta["purpose"] == "fine-tune-results"
        rows = list(csv.DictReader(io.StringIO(c.get(f"/files/{result_id}/content").text)))
    metric_events = [e for e in api.events(trained_job["id"]) if e["type"] == "metrics"]
    assert len(rows) == len(metric_events)
    assert float(rows[0]["train_loss"]) == pytest.approx(metric_events[0]["data"]["train_loss"])


def test_responses_with_fine_tuned_model(api: Api, trained_job: dict[str, Any]) -> None:
    with api.client() as c:
        r = c.post(
            "/responses",
            json={
                "model": trained_job["fine_tuned_model"],
                "input": [{"type": "message", "role": "user", "content": "Say the color blue."}],
                "max_output_tokens": 12,
                "metadata": {"k": "v"},
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "response" and body["id"].startswith("resp_")
        assert body["output_text"].strip()
        assert body["output"][0]["content"][0]["text"] == body["output_text"]
        u = body["usage"]
        assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"] and u["input_tokens"] > 0
        follow = c.post(
            "/responses",
            json={
                "model": "local:micro-chat",
                "input": "And now?",
                "previous_response_id": body["id"],
                "max_output_tokens": 4,
            },
        )
        assert follow.status_code == 200, follow.text
        assert follow.json()["usage"]["input_tokens"] > u["input_tokens"]  # earlier turns were included
