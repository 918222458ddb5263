"""``ftpipe jobs ...`` against a fake API: what each command prints, sends and exits with."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from api_fake import BASE, FT_MODEL, JOB_ID, FakeAPI, error, event, job, page, reply, run_cli

from cli.present import when

OTHER = "ftjob_ffffffffffffffffffffffffffffffff"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("FTPIPE_DEBUG", raising=False)
    fake = FakeAPI()
    with fake.serving():
        yield fake


def test_list_prints_whole_ids_one_row_per_job(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("GET", "fine_tuning/jobs")] = page([job(), job(OTHER, status="running")])
    ran = run_cli(capsys, "jobs", "list")
    assert ran.code == 0
    header, first, second = ran.lines
    assert header.split() == ["ID", "STATUS", "MODEL", "FINE-TUNED", "MODEL", "CREATED", "FINISHED", "TOKENS"]
    assert first.split()[:4] == [JOB_ID, "succeeded", "local:micro-chat", FT_MODEL]
    assert first.split()[-1] == "1,234" and when(1_700_000_125) in first
    assert second.split()[:4] == [OTHER, "running", "local:micro-chat", "-"]
    assert api.requests[0].url.params["limit"] == "20"


def test_list_filters_status_across_pages_and_stops_at_the_limit(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    pages = {
        None: page([job(f"ftjob_{i}", status="succeeded") for i in range(3)], has_more=True),
        "ftjob_2": page(
            [job("ftjob_r1", status="running"), job("ftjob_r2", status="running")], has_more=True
        ),
        "ftjob_r2": page([job("ftjob_r3", status="running")]),
    }
    api.routes[("GET", "fine_tuning/jobs")] = lambda r: reply(pages[r.url.params.get("after")])
    ran = run_cli(capsys, "jobs", "list", "--status", "running", "--limit", "2", "--json")
    assert ran.code == 0
    assert [j["id"] for j in json.loads(ran.out)] == ["ftjob_r1", "ftjob_r2"]
    assert len(api.requests) == 2  # the third page was never needed


def test_list_passes_metadata_filters_and_says_when_nothing_matched(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.routes[("GET", "fine_tuning/jobs")] = page([job(status="failed")])
    ran = run_cli(capsys, "jobs", "list", "--metadata", "team=support", "--status", "running")
    assert ran.code == 0 and ran.lines == [f"no jobs with status running at {BASE}"]
    assert api.requests[0].url.params["metadata[team]"] == "support"


def _checkpoint(step: int, loss: float) -> dict[str, Any]:
    return {
        "id": f"ftckpt_{step}",
        "object": "fine_tuning.job.checkpoint",
        "fine_tuning_job_id": JOB_ID,
        "fine_tuned_model_checkpoint": f"{FT_MODEL}:ckpt-step-{step}",
        "step_number": step,
        "metrics": {"step": step, "train_loss": loss, "valid_loss": None},
    }


def test_show_prints_fields_checkpoints_by_step_and_the_chat_command(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}")] = job()
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}/checkpoints")] = page(
        [_checkpoint(16, 0.25), _checkpoint(8, 1.5)]
    )
    ran = run_cli(capsys, "jobs", "show", JOB_ID)
    assert ran.code == 0
    fields = dict(line.split(None, 1) for line in ran.lines[:18])
    assert fields["status"] == "succeeded" and fields["fine_tuned_model"] == FT_MODEL
    assert fields["hyperparameters"] == "n_epochs=2, batch_size=4" and fields["took"] == "2m05s"
    assert fields["trained_tokens"] == "1,234" and fields["error"] == "-"
    steps = [line.split()[0] for line in ran.lines if ":ckpt-step-" in line]
    assert steps == ["8", "16"]
    assert "0.2500" in next(line for line in ran.lines if ":ckpt-step-16" in line)
    assert ran.lines[-1] == f"try it:  ftpipe chat {FT_MODEL}"


def test_show_json_is_the_job_with_its_checkpoints(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}")] = job(
        status="failed", error={"code": "oom", "message": "x"}
    )
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}/checkpoints")] = page([])
    ran = run_cli(capsys, "jobs", "show", JOB_ID, "--json")
    data = json.loads(ran.out)
    assert data["id"] == JOB_ID and data["error"]["code"] == "oom" and data["checkpoints"] == []


def test_an_unknown_job_is_one_line_and_exit_1(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("GET", "fine_tuning/jobs/ftjob_nope")] = error(
        404, "No fine_tuning_job found with id 'ftjob_nope'."
    )
    for argv in (["show"], ["events"], ["cancel"], ["events", "--follow"]):
        ran = run_cli(capsys, "jobs", *argv[:1], "ftjob_nope", *argv[1:])
        assert ran.code == 1 and ran.out == ""
        assert ran.err == f"ftpipe jobs: error: no job 'ftjob_nope' at {BASE} (see 'ftpipe jobs list')\n"


def test_events_shows_the_newest_n_oldest_first(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}/events")] = page([event(3), event(2)], has_more=True)
    ran = run_cli(capsys, "jobs", "events", JOB_ID, "--limit", "2")
    assert ran.code == 0
    assert ran.lines == [f"{when(1_700_000_002)}  info   event 2", f"{when(1_700_000_003)}  info   event 3"]
    assert api.requests[0].url.params["limit"] == "2"


def test_events_follow_prints_each_event_once_until_the_job_ends(
    api: FakeAPI, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each poll: the job's status, then its events (newest first); the job fails on the third poll.
    statuses = iter(["running", "running", "failed"])
    shown = iter(
        [[event(1)], [event(2), event(1)], [event(4, "boom", "error"), event(3), event(2), event(1)]]
    )
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}")] = lambda _: reply(job(status=next(statuses)))
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}/events")] = lambda _: reply(page(next(shown)))
    slept: list[float] = []
    monkeypatch.setattr("cli.jobs.time.sleep", slept.append)
    ran = run_cli(capsys, "jobs", "events", JOB_ID, "--follow", "--interval", "0.5", "--json")
    assert [json.loads(line)["message"] for line in ran.lines] == ["event 1", "event 2", "event 3", "boom"]
    assert ran.code == 1 and slept == [0.5, 0.5]  # a failed job: exit 1 for scripts waiting on it


@pytest.mark.parametrize(
    ("action", "status", "printed"),
    [
        ("cancel", "cancelled", "cancelled"),
        ("resume", "queued", "queued"),
        ("pause", "paused", "paused"),
        ("pause", "running", "running (pause requested: it pauses at its next step and saves a checkpoint)"),
    ],
)
def test_actions_post_and_print_the_new_status(
    api: FakeAPI, capsys: pytest.CaptureFixture[str], action: str, status: str, printed: str
) -> None:
    api.routes[("POST", f"fine_tuning/jobs/{JOB_ID}/{action}")] = job(status=status)
    ran = run_cli(capsys, "jobs", action, JOB_ID)
    assert ran.code == 0 and ran.lines == [f"job {JOB_ID}: {printed}"]
    assert [r.method for r in api.requests] == ["POST"]  # an action is never repeated in place


def test_an_illegal_transition_names_the_state(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("POST", f"fine_tuning/jobs/{JOB_ID}/cancel")] = error(
        409, "Cannot cancel a job whose status is 'succeeded'.", code="invalid_state"
    )
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}")] = job(status="succeeded")
    ran = run_cli(capsys, "jobs", "cancel", JOB_ID)
    assert ran.code == 1 and ran.out == ""
    assert ran.err == (
        f"ftpipe jobs: error: cannot cancel job {JOB_ID}: its status is 'succeeded' "
        "(cancel needs a job that has not finished)\n"
    )


def test_an_unreachable_api_is_one_line_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MKA1_MAX_RETRIES", "0")
    ran = run_cli(capsys, "jobs", "list", "--base-url", "http://127.0.0.1:9/v1")
    assert ran.code == 1 and ran.out == ""
    (line,) = ran.err.splitlines()
    assert line.startswith("ftpipe jobs: error: cannot reach the API at http://127.0.0.1:9/v1")
    assert "check MKA1_BASE_URL" in line


def test_bad_options_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["list", "--status", "done"],
        ["list", "--limit", "0"],
        ["events", JOB_ID, "--all", "--limit", "3"],
    ):
        ran = run_cli(capsys, "jobs", *argv)
        assert ran.code == 2 and len(ran.err.splitlines()) == 1


def test_json_of_an_action_is_the_job(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("POST", f"fine_tuning/jobs/{JOB_ID}/cancel")] = httpx.Response(
        200, json=job(status="cancelled")
    )
    assert json.loads(run_cli(capsys, "jobs", "cancel", JOB_ID, "--json").out)["status"] == "cancelled"


@pytest.mark.parametrize(("width", "rich"), [(200, True), (120, False)])
def test_a_terminal_gets_a_table_only_when_it_fits_unwrapped(width: int, rich: bool) -> None:
    import io

    from rich.console import Console

    from cli.present import JOB_COLUMNS, Screen, job_row
    from client.models import FineTuningJob

    buf = io.StringIO()
    screen = Screen(buf)
    screen.console, screen.rich = Console(file=buf, width=width, force_terminal=True, color_system=None), True
    screen.table(JOB_COLUMNS, [job_row(FineTuningJob.model_validate(job()))])
    lines = buf.getvalue().splitlines()
    assert any(JOB_ID in line and FT_MODEL in line for line in lines)  # ids whole, on one line
    assert any("─" in line for line in lines) is rich  # the rich table's rule, or plain columns


def test_show_of_a_running_job_says_how_far_it_is(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = {
        **event(9, "Step 120/800: training loss=1.2346"),
        "type": "metrics",
        "data": {"step": 120, "total_steps": 800, "train_loss": 1.23456, "learning_rate": 1e-4},
    }
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}")] = job(status="running", estimated_finish=1_700_000_900)
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}/checkpoints")] = page([])
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}/events")] = page([event(10, "Saving"), metrics, event(8)])
    ran = run_cli(capsys, "jobs", "show", JOB_ID)
    fields = dict(line.split(None, 1) for line in ran.lines[:-1])
    assert fields["progress"] == "step 120/800 (15%), train_loss 1.2346"
    assert fields["estimated_finish"] == when(1_700_000_900)
    assert ran.lines[-1] == f"follow:  ftpipe jobs events {JOB_ID} --follow"
