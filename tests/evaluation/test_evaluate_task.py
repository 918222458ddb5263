"""The eval stage against an httpx.MockTransport fake of POST /responses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import client.retry
from client import ClientSettings
from evaluation.evalset import EvalCase, EvalSet
from evaluation.results import EvalModel
from tasks import evaluate
from tasks.errors import EvaluationFailed
from tasks.evaluate import EvalOptions, evaluate_task

CASES = [
    EvalCase(prompt="Where is order A-1?", reference="Hi there! Order A-1 shipped with UPS."),
    EvalCase(prompt="Reset password?", reference="Hi there! Use the Forgot password link."),
    EvalCase(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund?"}],
        reference="Hi there! Refunds take 5 days.",
    ),
]
SMOKE = [EvalCase(prompt="Hello?", must_contain=["hi"])]
MODELS = [
    EvalModel("local:base", "base"),
    EvalModel("ft:x:ckpt-step-1", "checkpoint", step=1, full_valid_loss=2.0),
    EvalModel("ft:x", "fine-tuned", step=2, full_valid_loss=1.0),
]


class FakeResponses:
    """POST /responses: base answers noise, the checkpoint half the reference, the final model all of it."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[dict[str, Any]] = []
        self.fail: dict[str, list[int]] = {}  # model -> statuses to answer first

    def _answer(self, model: str, messages: Any) -> str:
        if isinstance(messages, str):  # the judge prompt
            return "Grade: 4"
        last = messages[-1]["content"]
        case = next(c for c in [*CASES, *SMOKE] if c.prompt_text() == last)
        ref = case.reference or "hi"
        if model == "local:base":
            return "olo olo olo"
        if model.startswith("ft:x:ckpt"):
            return " ".join(ref.split()[:3])
        return ref

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            queued = self.fail.get(body["model"])
            if queued:
                status = queued.pop(0)
                return httpx.Response(status, json={"error": {"message": f"injected {status}", "code": "x"}})
            text = self._answer(body["model"], body["input"])
            return httpx.Response(
                200,
                json={
                    "id": f"resp_{len(self.calls)}",
                    "object": "response",
                    "status": "completed",
                    "model": body["model"],
                    "output_text": text,
                    "usage": {"input_tokens": 3, "output_tokens": len(text.split()), "total_tokens": 9},
                },
            )
        finally:
            self.in_flight -= 1


def _run(fake: FakeResponses, tmp_path: Path, **kw: Any) -> evaluate.EvalOutcome:
    return evaluate_task.fn(
        ClientSettings(base_url="http://fake.test/v1", api_key="sk-test"),
        MODELS,
        [EvalSet("eval", "eval.jsonl", CASES), EvalSet("smoke", "smoke.jsonl", SMOKE)],
        tmp_path,
        select_by=kw.pop("select_by", "eval_score"),
        options=EvalOptions(**({"concurrency": 2} | kw)),
        transport=httpx.MockTransport(fake),
    )


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client's in-place retries (client.retry) wait 0 s here.
    monkeypatch.setattr(client.retry, "backoff_delay", lambda *args, **kwargs: 0.0)


def test_scores_every_model_and_selects_the_best(tmp_path: Path) -> None:
    fake = FakeResponses()
    out = _run(fake, tmp_path)
    assert len(out.frame) == 3 * 4 and out.calls == 12
    by_model = {s.model: s for s in out.summaries}
    assert by_model["ft:x"].score == 1.0 and by_model["ft:x"].exact_match == 1.0
    assert by_model["local:base"].score == 0.0
    assert 0 < by_model["ft:x:ckpt-step-1"].score < 1  # type: ignore[operator]
    assert by_model["ft:x"].smoke_passed and not by_model["local:base"].smoke_passed
    assert (out.selection.model, out.selection.criterion) == ("ft:x", "eval_score")
    # Bounded concurrency, and every request is greedy, capped and not stored (so a retry is harmless).
    assert fake.max_in_flight == 2
    assert all(
        c["store"] is False and c["temperature"] == 0 and c["max_output_tokens"] == 96 for c in fake.calls
    )
    assert any([m["role"] for m in c["input"]] == ["system", "user"] for c in fake.calls)
    # Asked shortest prompt first (less padding for a batching server); rows stay in set and case order.
    assert [c["input"][-1]["content"] for c in fake.calls[:2]] == ["Hello?", "Reset password?"]
    assert list(out.frame["case"][:4]) == [0, 1, 2, 0] and list(out.frame["set"][:4]) == ["eval"] * 3 + [
        "smoke"
    ]
    saved = pd.read_parquet(out.files["eval_parquet"])
    assert list(saved["model"].unique()) == [m.model for m in MODELS]
    assert saved["latency_s"].gt(0).all()
    assert out.files["eval_csv"].is_file()


def test_transient_errors_are_retried_in_place(tmp_path: Path) -> None:
    fake = FakeResponses()
    fake.fail["ft:x"] = [503, 429]
    out = _run(fake, tmp_path)
    assert {s.model: s.errors for s in out.summaries}["ft:x"] == 0
    assert out.calls == 12 and len(fake.calls) == 14


def test_a_failure_outlasting_the_client_retries_reasks_only_that_prompt(tmp_path: Path) -> None:
    fake = FakeResponses()
    fake.fail["ft:x"] = [503] * 5  # one prompt's call and the client's 4 in-place retries
    out = _run(fake, tmp_path, concurrency=1)
    assert {s.model: s.errors for s in out.summaries}["ft:x"] == 0
    assert out.frame["error"].isna().all()
    asked = [c["input"][-1]["content"] for c in fake.calls if c["model"] == "ft:x"]
    assert len(asked) == 4 + 5 and asked.count("Hello?") == 6  # kept answers are not asked again
    assert out.calls == 13


def test_a_fine_tuned_model_failing_every_round_fails_the_stage(tmp_path: Path) -> None:
    fake = FakeResponses()
    fake.fail["ft:x"] = [503] * 1000
    with pytest.raises(EvaluationFailed, match="ft:x could not be evaluated: .*injected 503"):
        _run(fake, tmp_path)
    assert len([c for c in fake.calls if c["model"] == "ft:x"]) == 4 * 5 * evaluate.ASK_ROUNDS


def test_a_checkpoint_that_refuses_is_reported_and_not_selected(tmp_path: Path) -> None:
    fake = FakeResponses()
    fake.fail["ft:x:ckpt-step-1"] = [404]
    out = _run(fake, tmp_path, select_by="full_valid_loss")
    ck = next(s for s in out.summaries if s.role == "checkpoint")
    assert ck.errors >= 2 and not ck.complete
    asked = [c for c in fake.calls if c["model"] == "ft:x:ckpt-step-1"]
    assert len(asked) <= 2  # after a 404 only the call already in flight completes; no new ones start
    errors = out.frame[out.frame["model"] == "ft:x:ckpt-step-1"]["error"].dropna()
    assert errors.str.contains("injected 404").any()
    assert out.selection.model == "ft:x"


def test_fine_tuned_model_failure_fails_the_stage(tmp_path: Path) -> None:
    fake = FakeResponses()
    fake.fail["ft:x"] = [400]
    with pytest.raises(EvaluationFailed, match="ft:x could not be evaluated: .*injected 400"):
        _run(fake, tmp_path)


def test_judge_grades_each_answer(tmp_path: Path) -> None:
    fake = FakeResponses()
    out = _run(fake, tmp_path, judge_model="judge-1")
    judged = [c for c in fake.calls if c["model"] == "judge-1"]
    assert len(judged) == 12
    assert any("REFERENCE:\nHi there! Order A-1 shipped with UPS." in c["input"] for c in judged)
    assert all(s.judge_grade == 4.0 for s in out.summaries)
