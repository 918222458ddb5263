"""Model tolerance (unknown fields and statuses) and request validation."""

from __future__ import annotations

import pytest
from client_testkit import job_obj
from pydantic import ValidationError

from client.models import (
    TERMINAL_STATUSES,
    DpoHyperparameters,
    DpoMethod,
    FineTuningJob,
    FineTuningJobCheckpoint,
    JobCreateRequest,
    JobStatus,
    ListPage,
    Method,
    ResponseCreateRequest,
    ResponseObject,
)


def test_unknown_status_is_kept_and_not_terminal() -> None:
    job = FineTuningJob.model_validate(job_obj(status="warming_up"))
    assert job.status == "warming_up"
    assert not isinstance(job.status, JobStatus)
    assert job.known_status is None
    assert job.is_terminal is False


@pytest.mark.parametrize("status", list(JobStatus))
def test_known_statuses_become_enum(status: JobStatus) -> None:
    job = FineTuningJob.model_validate(job_obj(status=status.value))
    assert job.status is status
    assert job.is_terminal is (status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def test_terminal_set() -> None:
    assert {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED} == TERMINAL_STATUSES
    assert "succeeded" in TERMINAL_STATUSES  # StrEnum: plain strings compare equal


def test_unknown_fields_are_kept_and_round_trip() -> None:
    raw = job_obj(
        status="failed", error={"code": "oom", "message": "out of memory", "param": None, "extra": 1}
    )
    raw["brand_new_field"] = {"nested": [1, 2]}
    raw["method"]["reinforcement"] = {"grader": "x"}
    job = FineTuningJob.model_validate(raw)
    assert job.model_extra == {"brand_new_field": {"nested": [1, 2]}}
    assert job.error is not None and job.error.code == "oom" and job.error.model_extra == {"extra": 1}
    assert job.method is not None and job.method.model_extra == {"reinforcement": {"grader": "x"}}
    dumped = job.model_dump(mode="json")
    assert dumped["brand_new_field"] == {"nested": [1, 2]} and dumped["status"] == "failed"


def test_job_nulls_tolerated() -> None:
    job = FineTuningJob.model_validate(
        {"id": "ftjob_x", "status": "queued", "result_files": None, "method": None}
    )
    assert job.result_files == [] and job.method is None
    ckpt = FineTuningJobCheckpoint.model_validate({"id": "ftckpt_1", "metrics": None})
    assert ckpt.metrics.train_loss is None


def test_list_page_generic_and_cursor() -> None:
    page = ListPage[FineTuningJob].model_validate(
        {"object": "list", "data": [job_obj("ftjob_a"), job_obj("ftjob_b")], "has_more": True}
    )
    assert isinstance(page.data[0], FineTuningJob)
    assert page.next_cursor == "ftjob_b"
    assert ListPage[FineTuningJob](data=[], has_more=True).next_cursor is None
    assert ListPage[FineTuningJob](data=[], has_more=False, last_id="x").next_cursor is None


def test_job_create_request_validation() -> None:
    ok = JobCreateRequest(
        model="m",
        training_file="file-1",
        suffix="x" * 64,
        method=Method(type="dpo", dpo=DpoMethod(hyperparameters=DpoHyperparameters(beta="auto", n_epochs=2))),
        metadata={f"k{i}": "v" * 512 for i in range(16)},
    )
    body = ok.to_body()
    assert body["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "beta": "auto"}}}
    assert "validation_file" not in body and "seed" not in body

    bad_cases = [
        {"suffix": "x" * 65},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        {"metadata": {"k" * 65: "v"}},
        {"metadata": {"k": "v" * 513}},
        {"method": {"type": "reinforcement"}},
        {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
        {
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"learning_rate_multiplier": "fast"}},
            }
        },
        {"training_file": ""},
    ]
    for extra in bad_cases:
        with pytest.raises(ValidationError):
            JobCreateRequest.model_validate({"model": "m", "training_file": "file-1", **extra})


def test_response_request_accepts_string_or_messages() -> None:
    assert ResponseCreateRequest(model="m", input="hello").to_body() == {"model": "m", "input": "hello"}
    req = ResponseCreateRequest.model_validate(
        {
            "model": "m",
            "input": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "store": False,
        }
    )
    assert req.to_body()["input"][0] == {"type": "message", "role": "system", "content": "s"}
    assert req.to_body()["store"] is False
    with pytest.raises(ValidationError):
        ResponseCreateRequest.model_validate({"model": "m", "input": [{"role": "robot", "content": "x"}]})
    with pytest.raises(ValidationError):
        ResponseCreateRequest(model="m", input="x", temperature=3)


def test_output_text_prefers_server_field_else_joins() -> None:
    output = [
        {"type": "reasoning", "id": "rs_1"},
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Hello, "},
                {"type": "refusal", "refusal": "no"},
                {"type": "output_text", "text": "world"},
            ],
        },
    ]
    derived = ResponseObject.model_validate({"id": "resp_1", "output": output})
    assert derived.output_text == "Hello, world"
    server = ResponseObject.model_validate({"id": "resp_1", "output": output, "output_text": "from server"})
    assert server.output_text == "from server"
    empty = ResponseObject.model_validate({"id": "resp_1"})
    assert empty.output_text == "" and empty.output == []


def test_client_enums_and_fields_follow_the_contract() -> None:
    from client.models import CheckpointMetrics
    from contract import wire

    assert tuple(s.value for s in JobStatus) == wire.JOB_STATUSES
    assert {str(s) for s in TERMINAL_STATUSES} == wire.TERMINAL_STATUSES
    assert tuple(f for f in CheckpointMetrics.model_fields if f != "step") == wire.CHECKPOINT_METRICS


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("n_epochs", 51, "n_epochs must be an integer from 1 to 50"),
        ("n_epochs", "2", "n_epochs must be an integer from 1 to 50"),
        ("batch_size", -3, "batch_size must be an integer >= 1"),
        ("learning_rate_multiplier", 0, "learning_rate_multiplier must be a number > 0"),
        ("beta", 0.0, "beta must be a number > 0"),
    ],
)
def test_request_hyperparameters_use_the_contract_rules(field: str, value: object, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        DpoHyperparameters.model_validate({field: value})


def test_job_create_seed_range() -> None:
    assert JobCreateRequest(model="m", training_file="f", seed=0).to_body()["seed"] == 0
    for seed in (-1, 2**31):
        with pytest.raises(ValidationError, match="seed"):
            JobCreateRequest(model="m", training_file="f", seed=seed)
