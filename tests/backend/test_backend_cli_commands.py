"""``ftpipe jobs ...`` and ``ftpipe chat`` against the real embedded backend over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from backend_testkit import Api, wait_for

from backend.launcher import RunningBackend
from cli.main import main
from client import ClientSettings
from flows.backend_runtime import Connection, use_connection
from tests.backend_workers import frozen_when

pytestmark = pytest.mark.integration


def ftpipe(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return code, out, err


@pytest.fixture
def on_backend(backend: RunningBackend, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Commands talk to the session's backend (real HTTP; only the choice of server is forced)."""
    monkeypatch.delenv("FTPIPE_DEBUG", raising=False)
    settings = ClientSettings(base_url=backend.base_url, api_key=backend.api_key)
    with use_connection(Connection(settings, f"embedded:{backend.data_dir}", True)):
        yield


def test_commands_find_the_running_embedded_backend(
    backend: RunningBackend, trained_job: dict[str, Any], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # No override: open_connection reuses the backend listening at the configured local URL.
    for name, value in {
        "FTPIPE_BACKEND_HOST": backend.host,
        "FTPIPE_BACKEND_PORT": str(backend.port),
        "FTPIPE_BACKEND_DATA_DIR": str(backend.data_dir),
        "FTPIPE_BACKEND_API_KEY": backend.api_key.get_secret_value(),
    }.items():
        monkeypatch.setenv(name, value)
    code, out, _ = ftpipe(capsys, "jobs", "list", "--limit", "1000", "--json")
    assert code == 0 and trained_job["id"] in [j["id"] for j in json.loads(out)]


def test_list_show_and_events_of_a_finished_job(
    on_backend: None, trained_job: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    job_id, model = trained_job["id"], trained_job["fine_tuned_model"]
    code, out, _ = ftpipe(capsys, "jobs", "list", "--status", "succeeded", "--limit", "1000")
    assert code == 0
    row = next(line.split() for line in out.splitlines() if line.startswith(job_id))
    assert row[1:4] == ["succeeded", "local:micro-chat", model]

    code, out, _ = ftpipe(capsys, "jobs", "show", job_id)
    assert code == 0 and f"fine_tuned_model  {model}" in out
    assert f"{model}:ckpt-step-" in out  # the checkpoints, with model ids to chat with
    assert out.rstrip().endswith(f"try it:  ftpipe chat {model}")

    code, out, _ = ftpipe(capsys, "jobs", "events", job_id, "--all", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [e["created_at"] for e in events] == sorted(e["created_at"] for e in events)
    assert events[0]["message"] == f"Created fine-tuning job: {job_id}"
    assert events[-1]["message"] == "The job has successfully completed"

    # Following a finished job prints its newest events and ends at once, with the job's outcome.
    code, out, _ = ftpipe(capsys, "jobs", "events", job_id, "--follow", "--limit", "1")
    assert code == 0 and out.splitlines()[-2:] == [out.splitlines()[-2], f"job {job_id} succeeded"]
    assert out.splitlines()[0].endswith("The job has successfully completed")

    code, out, err = ftpipe(capsys, "jobs", "cancel", job_id)
    assert code == 1 and out == ""
    assert err == (
        f"ftpipe jobs: error: cannot cancel job {job_id}: its status is 'succeeded' "
        "(cancel needs a job that has not finished)\n"
    )
    code, _, err = ftpipe(capsys, "jobs", "show", "ftjob_nope")
    assert code == 1 and err.startswith("ftpipe jobs: error: no job 'ftjob_nope' at http://127.0.0.1:")


def test_pause_resume_cancel_and_follow_a_running_job(
    on_backend: None, api: Api, backend: RunningBackend, train_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = api.upload(train_file)
    job_id = api.create_job(f["id"], n_epochs=30, batch_size=1, suffix="cli")["id"]

    def pause_requested() -> bool:
        return any(e["message"].startswith("Pause requested") for e in api.events(job_id))

    # The worker is held still until the pause request is recorded, so the job cannot finish before it.
    with ThreadPoolExecutor(1) as pool:
        with frozen_when(backend, lambda: api.job(job_id)["status"] == "running"):
            pausing = pool.submit(main, ["jobs", "pause", job_id])
            wait_for(pause_requested)
        assert pausing.result() == 0
    api.wait_status(job_id, {"paused"})
    out = capsys.readouterr().out
    assert out.startswith(f"job {job_id}: ")  # paused, or running while the worker saved its checkpoint

    code, out, _ = ftpipe(capsys, "jobs", "show", job_id)
    assert code == 0 and "status            paused" in out
    assert out.rstrip().endswith(f"resume:  ftpipe jobs resume {job_id}")

    code, out, _ = ftpipe(capsys, "jobs", "resume", job_id)
    assert code == 0 and out in (f"job {job_id}: queued\n", f"job {job_id}: running\n")
    code, out, _ = ftpipe(capsys, "jobs", "list", "--status", "queued", "--status", "running", "--json")
    assert job_id in [j["id"] for j in json.loads(out)]
    code, out, _ = ftpipe(capsys, "jobs", "cancel", job_id)
    assert code == 0 and out == f"job {job_id}: cancelled\n"

    code, out, _ = ftpipe(capsys, "jobs", "events", job_id, "--follow", "--all", "--interval", "0.2")
    lines = out.splitlines()
    assert code == 1 and lines[-1] == f"job {job_id} cancelled"  # not succeeded: exit 1
    assert any(line.endswith("Fine-tuning job cancelled") for line in lines)
    code, _, err = ftpipe(capsys, "jobs", "resume", job_id)
    assert code == 1 and "its status is 'cancelled' (resume needs a paused job)" in err


def test_chat_streamed_whole_and_json_agree(
    on_backend: None,
    fluent_job: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = fluent_job["fine_tuned_model"]
    prompt = "Say the color green."
    monkeypatch.setattr("sys.stdin", _Terminal())
    code, streamed, err = ftpipe(capsys, "chat", model, prompt, "--max-output-tokens", "24")
    assert code == 0 and streamed.endswith("\n") and streamed.strip()
    code, whole, _ = ftpipe(capsys, "chat", model, prompt, "--max-output-tokens", "24", "--no-stream")
    code, raw, _ = ftpipe(capsys, "chat", model, prompt, "--max-output-tokens", "24", "--json")
    # Greedy decoding: the same answer however it travels.
    assert streamed == whole == json.loads(raw)["output_text"] + "\n"
    assert streamed.startswith("The color is")  # the fine-tuned model's learnt answer, not the base model's


def test_chat_conversation_and_unknown_model(
    on_backend: None,
    fluent_job: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal())
    typed = iter(["Say the color red.", "Say the color blue.", "/exit"])
    monkeypatch.setattr("builtins.input", lambda _prompt: next(typed))
    code, out, err = ftpipe(capsys, "chat", fluent_job["fine_tuned_model"], "--max-output-tokens", "24")
    answers = out.splitlines()
    assert code == 0 and len(answers) == 2 and all(a.startswith("model> ") and a[7:].strip() for a in answers)
    assert all(a.startswith("model> The color is") for a in answers)
    assert err.startswith(f"chatting with {fluent_job['fine_tuned_model']} at http://127.0.0.1:")

    code, out, err = ftpipe(capsys, "chat", "ft:local:micro-chat:nope:000000000000", "Hi")
    assert code == 1 and out == "" and err.startswith("ftpipe chat: error: unknown model ")


class _Terminal:
    def isatty(self) -> bool:
        return True
