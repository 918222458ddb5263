"""``ftpipe chat`` against a fake Responses API: streamed and whole answers, the fallback, a conversation's
history, piped prompts, champions and the errors a user can meet."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_fake import BASE, FT_MODEL, FakeAPI, error, reply, run_cli


def response(text: str, status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "model": FT_MODEL,
        "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
        ],
        "output_text": text,
        **extra,
    }


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def streamed(pieces: list[str], final_status: str = "completed") -> httpx.Response:
    events = [{"type": "response.created", "response": response("", status="in_progress")}]
    events += [{"type": "response.output_text.delta", "delta": p} for p in pieces]
    events.append({"type": f"response.{final_status}", "response": response("".join(pieces), final_status)})
    return httpx.Response(200, content=sse(*events), headers={"content-type": "text/event-stream"})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPI]:
    monkeypatch.delenv("FTPIPE_DEBUG", raising=False)
    monkeypatch.setattr("sys.stdin", Terminal())  # a terminal, unless a test pipes a prompt
    fake = FakeAPI()
    with fake.serving():
        yield fake


def test_one_answer_is_streamed_and_nothing_is_stored(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.routes[("POST", "responses")] = lambda _: streamed(["Hel", "lo ", "there"])
    ran = run_cli(
        capsys, "chat", FT_MODEL, "Hi", "--instructions", "Be brief.", "--max-output-tokens", "32",
        "--temperature", "0.7", "--top-p", "0.9",
    )  # fmt: skip
    assert ran.code == 0 and ran.out == "Hello there\n" and ran.err == ""
    (body,) = api.bodies("POST", "responses")
    assert body == {
        "model": FT_MODEL,
        "input": [{"type": "message", "role": "user", "content": "Hi"}],
        "instructions": "Be brief.",
        "max_output_tokens": 32,
        "temperature": 0.7,
        "top_p": 0.9,
        "store": False,
        "stream": True,
    }


def test_no_stream_asks_for_the_whole_answer(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("POST", "responses")] = response("Whole answer")
    ran = run_cli(capsys, "chat", FT_MODEL, "Hi", "--no-stream")
    assert ran.code == 0 and ran.out == "Whole answer\n"
    assert "stream" not in api.bodies("POST", "responses")[0]


def test_a_server_that_refuses_to_stream_is_asked_whole(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            return error(400, "stream is not supported", param="stream")
        return reply(response("Fallback"))

    api.routes[("POST", "responses")] = answer
    ran = run_cli(capsys, "chat", FT_MODEL, "Hi")
    assert ran.code == 0 and ran.out == "Fallback\n"
    assert [b.get("stream") for b in api.bodies("POST", "responses")] == [True, None]


def test_a_server_that_ignores_stream_is_shown_once(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("POST", "responses")] = response("Whole anyway")
    ran = run_cli(capsys, "chat", FT_MODEL, "Hi")
    assert ran.code == 0 and ran.out == "Whole anyway\n"


def test_a_piped_prompt_gets_one_answer(
    api: FakeAPI, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Say hi\nplease\n"))
    api.routes[("POST", "responses")] = lambda _: streamed(["hi"])
    ran = run_cli(capsys, "chat", FT_MODEL)
    assert ran.code == 0 and ran.out == "hi\n"
    assert api.bodies("POST", "responses")[0]["input"][0]["content"] == "Say hi\nplease"


def test_json_prints_the_final_response(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("POST", "responses")] = response("Hello", usage={"input_tokens": 3, "output_tokens": 1})
    ran = run_cli(capsys, "chat", FT_MODEL, "Hi", "--json")
    data = json.loads(ran.out)
    assert data["output_text"] == "Hello" and data["usage"]["output_tokens"] == 1
    assert "stream" not in api.bodies("POST", "responses")[0]


def test_a_conversation_resends_its_history(
    api: FakeAPI, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([["Hello!"], ["Fine."], ["Fresh."]])
    api.routes[("POST", "responses")] = lambda _: streamed(next(answers))
    typed = iter(["Hi", "", "How are you?", "/reset", "Again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda _prompt: next(typed))
    ran = run_cli(capsys, "chat", FT_MODEL)
    assert ran.code == 0
    assert ran.out == "model> Hello!\nmodel> Fine.\nmodel> Fresh.\n"
    assert f"chatting with {FT_MODEL} at {BASE}" in ran.err and "(conversation cleared)" in ran.err
    inputs = [[(m["role"], m["content"]) for m in b["input"]] for b in api.bodies("POST", "responses")]
    assert inputs == [
        [("user", "Hi")],
        [("user", "Hi"), ("assistant", "Hello!"), ("user", "How are you?")],
        [("user", "Again")],
    ]


def test_ctrl_c_drops_the_answer_and_ctrl_d_ends(
    api: FakeAPI, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted() -> Iterator[bytes]:
        yield sse({"type": "response.output_text.delta", "delta": "Half"})
        raise KeyboardInterrupt

    answers = iter(
        [
            httpx.Response(200, content=interrupted(), headers={"content-type": "text/event-stream"}),
            streamed(["Whole."]),
        ]
    )
    api.routes[("POST", "responses")] = lambda _: next(answers)

    def typed() -> Iterator[str]:
        yield "First"
        yield "Second"
        raise EOFError

    lines = typed()
    monkeypatch.setattr("builtins.input", lambda _prompt: next(lines))
    ran = run_cli(capsys, "chat", FT_MODEL)
    assert ran.code == 0 and "that answer is dropped" in ran.err
    second = api.bodies("POST", "responses")[1]["input"]
    assert [m["content"] for m in second] == ["Second"]  # the interrupted turn is not in the history


def test_a_failed_answer_is_exit_1_with_the_reason(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    failed = response("", status="failed", error={"code": "server_error", "message": "The model failed."})
    api.routes[("POST", "responses")] = lambda _: httpx.Response(
        200,
        content=sse({"type": "response.failed", "response": failed}),
        headers={"content-type": "text/event-stream"},
    )
    ran = run_cli(capsys, "chat", FT_MODEL, "Hi")
    assert ran.code == 1
    assert (
        ran.err.splitlines()[-1] == "ftpipe chat: error: the model failed: [server_error] The model failed."
    )


def test_an_answer_cut_at_the_cap_says_so(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("POST", "responses")] = lambda _: streamed(["Cut"], final_status="incomplete")
    ran = run_cli(capsys, "chat", FT_MODEL, "Hi", "--max-output-tokens", "1")
    assert ran.code == 0 and ran.out == "Cut\n"
    assert ran.err == "(answer cut at the output-token cap (1); raise --max-output-tokens)\n"


def test_an_unknown_model_is_one_line(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("POST", "responses")] = error(404, "The model 'nope' does not exist.", param="model")
    ran = run_cli(capsys, "chat", "nope", "Hi")
    assert ran.code == 1 and ran.out == ""
    assert ran.err == (
        f"ftpipe chat: error: unknown model 'nope' at {BASE}: The model 'nope' does not exist. "
        "(model ids: 'ftpipe jobs show JOB_ID')\n"
    )


class _Variables:
    values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)


def test_champion_names_the_model(
    api: FakeAPI, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    record = {
        "name": "support-bot",
        "model_id": FT_MODEL,
        "eval_score": 0.8,
        "eval_set_hash": "abc",
        "eval_set_size": 3,
        "promoted_at": "2026-12-01T00:00:00Z",
    }
    monkeypatch.setattr(_Variables, "values", {"ftpipe-champion-support-bot": record})
    monkeypatch.setattr("evaluation.champion.PrefectVariables", _Variables)
    api.routes[("POST", "responses")] = lambda _: streamed(["Hi!"])
    ran = run_cli(capsys, "chat", "--champion", "support-bot", "Hello")
    assert ran.code == 0 and ran.out == "Hi!\n"
    body = api.bodies("POST", "responses")[0]
    assert body["model"] == FT_MODEL and body["input"][0]["content"] == "Hello"
    ran = run_cli(capsys, "chat", "--champion", "nobody", "Hello")
    assert ran.code == 1 and "no champion named 'nobody'" in ran.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give a MODEL (or --champion NAME)"),
        (["--champion", "x", FT_MODEL, "Hi"], "give MODEL or --champion, not both"),
        ([FT_MODEL, "--json"], "--json needs a PROMPT (or piped stdin)"),
        ([FT_MODEL, "Hi", "--temperature", "3"], "must be a number from 0 to 2, got '3'"),
        (["--champion", "Bad Name", "Hi"], "champion name 'Bad Name'"),
    ],
)
def test_usage_errors_are_one_line(
    api: FakeAPI, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    ran = run_cli(capsys, "chat", *argv)
    assert ran.code == 2 and ran.out == "" and message in ran.err and len(ran.err.splitlines()) == 1
    assert api.requests == []
