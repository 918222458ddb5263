"""The eval answer cache: what is reused, what is always asked, and that a broken cache never breaks a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import client.retry
from client import ClientSettings
from evaluation.evalset import EvalCase, EvalSet
from evaluation.results import EvalModel
from tasks.eval_cache import CACHE_DIR, AnswerCache, model_identity
from tasks.evaluate import EvalOptions, EvalOutcome, evaluate_task

CASES = [
    EvalCase(prompt="Where is order A-1?", reference="Hi there! Order A-1 shipped."),
    EvalCase(prompt="Reset password?", reference="Hi there! Use the link."),
]
EMBEDDED = "embedded:/data/backend"


class Server:
    """POST /responses answering ``<model> says <prompt>``; counts calls per model, can fail a model."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []
        self.status: dict[str, int] = {}
        self.response_status = "completed"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.asked.append((body["model"], body["input"]))
        if body["model"] in self.status:
            return httpx.Response(self.status[body["model"]], json={"error": {"message": "no", "code": "x"}})
        text = (
            "Grade: 5"
            if isinstance(body["input"], str)
            else f"{body['model']} says {body['input'][-1]['content']}"
        )
        return httpx.Response(
            200,
            json={
                "id": "resp_1",
                "object": "response",
                "status": self.response_status,
                "model": body["model"],
                "output_text": text,
                "usage": {"input_tokens": 1, "output_tokens": 4, "total_tokens": 5},
            },
        )

    def models_asked(self) -> list[str]:
        return [m for m, _ in self.asked]


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client.retry, "backoff_delay", lambda *args, **kwargs: 0.0)


def _evaluate(
    server: Server,
    cache: AnswerCache | None,
    tmp_path: Path,
    models: list[EvalModel],
    cases: list[EvalCase] = CASES,
    **options: Any,
) -> EvalOutcome:
    return evaluate_task.fn(
        ClientSettings(base_url="http://fake.test/v1", api_key="sk-test"),
        models,
        [EvalSet("eval", "eval.jsonl", cases)],
        tmp_path / "out",
        select_by="eval_score",
        options=EvalOptions(**({"concurrency": 2} | options)),
        transport=httpx.MockTransport(server),
        cache=cache,
    )


def test_a_second_run_asks_nothing_and_scores_the_same(tmp_path: Path) -> None:
    models = [EvalModel("local:tiny-chat", "base"), EvalModel("ft:local:tiny-chat:x:1", "fine-tuned")]
    server = Server()
    first = _evaluate(server, AnswerCache(tmp_path / "state", EMBEDDED), tmp_path, models)
    assert (first.calls, first.cached) == (4, 0)
    second = _evaluate(server, AnswerCache(tmp_path / "state", EMBEDDED), tmp_path, models)
    assert (second.calls, second.cached) == (0, 4) and len(server.asked) == 4
    columns = ["model", "answer", "score", "output_tokens", "latency_s"]
    assert second.frame[columns].equals(first.frame[columns])
    assert second.frame["cached"].all() and not first.frame["cached"].any()
    assert [s.score for s in second.summaries] == [s.score for s in first.summaries]


def test_only_immutable_model_ids_are_cached(tmp_path: Path) -> None:
    assert model_identity("ft:gpt-4o-mini:org::abc", "https://api.example/v1") == "ft:gpt-4o-mini:org::abc"
    assert model_identity("ft:local:tiny-chat:local:ab12:ckpt-step-38", EMBEDDED) is not None
    assert (model_identity("local:tiny-chat", EMBEDDED) or "").startswith("local:tiny-chat@")
    # A remote base id may be an alias the provider re-points; a local folder may be rewritten.
    assert model_identity("local:tiny-chat", "https://api.example/v1") is None
    assert model_identity("gpt-4o-mini", "https://api.example/v1") is None
    assert model_identity("local:/models/qwen", EMBEDDED) is None
    models = [EvalModel("gpt-4o-mini", "base"), EvalModel("ft:gpt-4o-mini:x", "fine-tuned")]
    server = Server()
    for _ in range(2):
        _evaluate(server, AnswerCache(tmp_path / "state", "https://api.example/v1"), tmp_path, models)
    assert (
        server.models_asked().count("gpt-4o-mini") == 4
        and server.models_asked().count("ft:gpt-4o-mini:x") == 2
    )


def test_the_key_covers_server_user_output_cap_and_case_content(tmp_path: Path) -> None:
    models = [EvalModel("ft:m", "fine-tuned")]
    server = Server()
    state = tmp_path / "state"
    _evaluate(server, AnswerCache(state, EMBEDDED), tmp_path, models)
    assert len(server.asked) == 2
    _evaluate(server, AnswerCache(state, "embedded:/other"), tmp_path, models)  # another server
    _evaluate(server, AnswerCache(state, EMBEDDED, "user-2"), tmp_path, models)  # another end user
    _evaluate(server, AnswerCache(state, EMBEDDED), tmp_path, models, max_output_tokens=32)
    assert len(server.asked) == 8
    changed = [CASES[0], EvalCase(prompt="Reset my password?", reference="Hi there! Use the link.")]
    _evaluate(server, AnswerCache(state, EMBEDDED), tmp_path, models, cases=changed)
    assert server.asked[-1][1][-1]["content"] == "Reset my password?" and len(server.asked) == 9
    # A reference or check is not part of the question: the answer is reused and scored anew.
    rescored = [CASES[0], EvalCase(prompt="Reset password?", reference="ft:m says Reset password?")]
    out = _evaluate(server, AnswerCache(state, EMBEDDED), tmp_path, models, cases=rescored)
    assert len(server.asked) == 9 and out.summaries[0].exact_match == 0.5


def test_failed_and_unfinished_answers_are_not_kept(tmp_path: Path) -> None:
    models = [EvalModel("ft:ok", "fine-tuned"), EvalModel("ft:gone", "checkpoint", step=1)]
    server = Server()
    server.status["ft:gone"] = 404
    _evaluate(server, AnswerCache(tmp_path / "state", EMBEDDED), tmp_path, models)
    server.response_status = "failed"
    _evaluate(server, AnswerCache(tmp_path / "state", EMBEDDED, "u"), tmp_path, models[:1])
    asked_before = len(server.asked)
    server.status.clear()
    server.response_status = "completed"
    out = _evaluate(server, AnswerCache(tmp_path / "state", EMBEDDED), tmp_path, models)
    assert server.models_asked()[asked_before:] == ["ft:gone", "ft:gone"]  # only the refused model again
    assert out.cached == 2
    _evaluate(server, AnswerCache(tmp_path / "state", EMBEDDED, "u"), tmp_path, models[:1])
    assert len(server.asked) == asked_before + 4  # the 'failed' answers were asked again


def test_a_corrupt_cache_is_asked_around_and_repaired(tmp_path: Path) -> None:
    models = [EvalModel("ft:m", "fine-tuned")]
    server = Server()
    state = tmp_path / "state"
    _evaluate(server, AnswerCache(state, EMBEDDED), tmp_path, models)
    (file,) = (state / CACHE_DIR).glob("*.json")
    for junk in ("{not json", json.dumps([1, 2]), json.dumps({"scope": "x", "answers": {"k": "v"}})):
        file.write_text(junk)
        out = _evaluate(server, AnswerCache(state, EMBEDDED), tmp_path, models)
        assert out.cached == 0 and out.frame["error"].isna().all()
    data = json.loads(file.read_text())
    entries = data["answers"]
    assert len(entries) == 2 and "sk-test" not in file.read_text()
    # An entry of the wrong shape is skipped, the others are used.
    entries[next(iter(entries))] = {"text": 7}
    file.write_text(json.dumps(data))
    out = _evaluate(server, AnswerCache(state, EMBEDDED), tmp_path, models)
    assert out.cached == 1 and len(server.asked) == 2 * 4 + 1
    assert not list((state / CACHE_DIR).glob("*.tmp"))


def test_judge_grades_are_cached_only_for_an_immutable_judge(tmp_path: Path) -> None:
    models = [EvalModel("ft:m", "fine-tuned")]
    server = Server()
    state = tmp_path / "state"
    for _ in range(2):
        out = _evaluate(server, AnswerCache(state, EMBEDDED), tmp_path, models, judge_model="ft:judge")
    assert server.models_asked().count("ft:judge") == 2 and out.summaries[0].judge_grade == 5.0
    for _ in range(2):
        _evaluate(server, AnswerCache(state, EMBEDDED), tmp_path, models, judge_model="gpt-judge")
    # The answers come from the cache; a judge that may change under its name grades them again.
    assert server.models_asked().count("gpt-judge") == 4 and server.models_asked().count("ft:m") == 2


def test_the_run_summary_says_how_many_answers_came_from_the_cache() -> None:
    from evaluation.outcome import EvaluationReport
    from evaluation.report import evaluation_summary_rows

    rows = dict(evaluation_summary_rows(EvaluationReport(calls=3, cached_answers=12)))
    assert rows["eval answers"] == "3 call(s), 12 answer(s) from the cache"
    assert "eval answers" not in dict(evaluation_summary_rows(EvaluationReport()))


def test_the_cache_keeps_the_most_recently_used_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run adds model ids (its checkpoints): the folder is bounded, and a model read since stays."""
    import os
    import time

    import tasks.eval_cache as eval_cache

    monkeypatch.setattr(eval_cache, "CACHE_KEEP", 3)
    cache = AnswerCache(tmp_path, EMBEDDED)
    answer = {"k": eval_cache.CachedAnswer("hi", 1, 0.1)}
    models = [f"ft:local:tiny-chat:local:{n:012d}" for n in range(5)]
    for n, model in enumerate(models[:3]):
        cache.store(model, answer)
        path = cache._index(cache._scope(model) or "").path
        os.utime(path, (time.time() - 100 + n, time.time() - 100 + n))  # stored in this order, long ago
    assert cache.load(models[0]) == answer  # read now: the most recently used
    cache.store(models[3], answer)
    cache.store(models[4], answer)
    kept = [m for m in models if cache.load(m)]
    assert kept == [models[0], models[3], models[4]]
    assert sorted(p.suffix for p in (tmp_path / CACHE_DIR).iterdir()) == [".json"] * 3 + [".lock"] * 3


def test_pruning_skips_a_file_another_run_is_writing(tmp_path: Path) -> None:
    import fcntl
    import time

    from tasks.eval_cache import prune

    folder = tmp_path / CACHE_DIR
    folder.mkdir()
    old, new = folder / "old.json", folder / "new.json"
    old.write_text("{}")
    time.sleep(0.01)
    new.write_text("{}")
    with open(folder / "old.json.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert prune(folder, 1) == []
        assert old.exists()
    assert prune(folder, 1) == [old]
    assert not old.exists() and new.exists()
