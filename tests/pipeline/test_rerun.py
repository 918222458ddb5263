"""The unchanged re-run answer (``cli/rerun.py``): what its digest covers, and when the recorded run is shown
instead of running the flow (fake API in process; the real backend and the no-Prefect check are in
``test_rerun_cli.py``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from cli import rerun
from cli.main import build_parser, main
from cli.run import params_from_args
from flows.backend_runtime import use_connection
from flows.params import FineTuneParams
from tasks.record import RunRecord
from tasks.state import finished_runs_index
from tests.pipeline.conftest import write_jsonl
from tests.pipeline.fake_api import FakeMKA1


@pytest.fixture(autouse=True)
def _embedded_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MKA1_API_KEY", "MKA1_BASE_URL", "MKA1_ON_BEHALF_OF", "FTPIPE_BACKEND_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FTPIPE_BACKEND_DATA_DIR", str(tmp_path / "backend"))


def _params(*argv: str) -> FineTuneParams:
    return params_from_args(build_parser().parse_args(["run", *argv]))


def _full_dataset(d: Path) -> Path:
    """train, validation, eval and smoke files: every input the digest must cover."""
    write_jsonl(d / "train.jsonl", [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(3)])
    write_jsonl(d / "validation.jsonl", [{"messages": [{"role": "user", "content": "v"}]}])
    write_jsonl(d / "eval.jsonl", [{"prompt": "e", "reference": "r"}])
    write_jsonl(d / "smoke.jsonl", [{"prompt": "s"}])
    return d


def test_the_digest_ignores_presentation_waiting_and_paths_but_not_what_decides_the_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _full_dataset(tmp_path / "ds")
    base = [str(ds), "--output", str(tmp_path / "out")]
    key = rerun.outcome_key(_params(*base))
    assert key is not None
    same = [
        ["--progress", "plain"],
        ["--quiet"],
        ["--poll-interval", "5", "--poll-max-interval", "60", "--timeout", "10"],
        ["--state-dir", str(tmp_path / "elsewhere")],
        ["--fresh"],
        ["--rerun"],
        ["--train", str(ds / "train.jsonl")],  # the file the folder resolves to anyway
    ]
    for extra in same:
        assert rerun.outcome_key(_params(*base, *extra)) == key, extra
    # The same bytes under another folder are the same inputs.
    shutil.copytree(ds, tmp_path / "copy")
    assert rerun.outcome_key(_params(str(tmp_path / "copy"), "--output", str(tmp_path / "out"))) == key

    differ = [
        ["--model", "local:micro-chat"],
        ["--seed", "7"],
        ["--epochs", "2"],
        ["--batch-size", "4"],
        ["--lr-multiplier", "0.5"],
        ["--suffix", "x"],
        ["--metadata", "team=a"],
        ["--integration", '{"type": "wandb", "wandb": {"project": "p"}}'],
        ["--no-eval"],
        ["--select-by", "full_valid_loss"],
        ["--gate-min-score", "0.5"],
        ["--gate-min-improvement", "0.2"],
        ["--judge-model", "local:micro-chat"],
        ["--eval-max-output-tokens", "8"],
        ["--eval-concurrency", "2"],
        ["--max-tokens", "1000"],
        ["--on-behalf-of", "user-2"],
        ["--output", str(tmp_path / "other-out")],
        ["--base-url", "http://127.0.0.1:9/api/v1/llm"],
    ]
    keys = {key: ["(none)"]}
    for extra in differ:
        assert keys.setdefault(rerun.outcome_key(_params(*base, *extra)) or "", extra) == extra, extra
    # The default output folder (runs/<job id>) is relative to where the command runs.
    default = rerun.outcome_key(_params(str(ds)))
    monkeypatch.chdir(tmp_path)
    assert rerun.outcome_key(_params(str(ds))) != default
    # Another embedded backend (data dir) or end user is another API identity.
    monkeypatch.setenv("FTPIPE_BACKEND_DATA_DIR", str(tmp_path / "backend-2"))
    assert rerun.outcome_key(_params(*base)) != key
    monkeypatch.setenv("FTPIPE_BACKEND_DATA_DIR", str(tmp_path / "backend"))
    monkeypatch.setenv("MKA1_ON_BEHALF_OF", "user-3")
    assert rerun.outcome_key(_params(*base)) != key
    monkeypatch.delenv("MKA1_ON_BEHALF_OF")
    assert rerun.outcome_key(_params(*base)) == key


@pytest.mark.parametrize("name", ["train.jsonl", "validation.jsonl", "eval.jsonl", "smoke.jsonl"])
def test_one_changed_byte_of_any_input_file_changes_the_digest(tmp_path: Path, name: str) -> None:
    ds = _full_dataset(tmp_path / "ds")
    base = [str(ds), "--output", str(tmp_path / "out")]
    key = rerun.outcome_key(_params(*base))
    original = (ds / name).read_bytes()
    i = original.index(b'"', 5)
    (ds / name).write_bytes(original[:i] + b"'" + original[i + 1 :])
    assert rerun.outcome_key(_params(*base)) != key
    (ds / name).write_bytes(original)
    assert rerun.outcome_key(_params(*base)) == key


def test_no_digest_where_the_outcome_may_differ_or_an_input_is_missing(tmp_path: Path) -> None:
    ds = _full_dataset(tmp_path / "ds")
    assert rerun.outcome_key(_params(str(ds), "--promote-as", "bot")) is None  # the champion may have changed
    assert rerun.outcome_key(_params(str(ds), "--max-cost", "5")) is None  # so may the price
    assert rerun.outcome_key(_params(str(ds), "--eval", str(tmp_path / "missing.jsonl"))) is None


# --------------------------------------------------------------------------- the ledger, with a fake API


def _argv(dataset_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(dataset_dir),
        "--model",
        "local:micro-chat",
        "--poll-interval",
        "0.01",
        "--state-dir",
        str(tmp_path / "state"),
        "--output",
        str(tmp_path / "out"),
        "--progress",
        "none",
        "--quiet",
        *extra,
    ]


@pytest.fixture
def finished(
    prefect_harness: None,
    fake: FakeMKA1,
    dataset_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> tuple[str, str]:
    """One run of the flow to success: (its printed output, its job id)."""
    with use_connection(fake.connection()):
        assert main(_argv(dataset_dir, tmp_path)) == 0
    (job_id,) = fake.jobs
    return capsys.readouterr().out, job_id


def test_an_unchanged_rerun_prints_the_recorded_summary_after_one_get_of_the_job(
    finished: tuple[str, str],
    fake: FakeMKA1,
    dataset_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, job_id = finished
    fake.calls.clear()
    with use_connection(fake.connection()):
        assert main(_argv(dataset_dir, tmp_path)) == 0
    out = capsys.readouterr().out
    assert fake.calls == [("GET", f"/fine_tuning/jobs/{job_id}")]  # nothing uploaded, created or asked
    line, rest = out.split("\n", 1)
    assert line.startswith("unchanged since run ") and f"job {job_id} still succeeded" in line
    assert line.endswith("nothing was run; --rerun runs the flow again")
    assert rest == first  # the same summary (scores, rows, next commands) the flow printed

    with use_connection(fake.connection()):  # --rerun: the flow runs, and re-attaches
        assert main(_argv(dataset_dir, tmp_path, "--rerun")) == 0
    out = capsys.readouterr().out
    assert "unchanged since" not in out and fake.count("GET", "/files.*") > 0
    assert re.search(r"attached to existing job +yes", out)


def _unchanged(dataset_dir: Path, tmp_path: Path, fake: FakeMKA1) -> bool:
    params = _params(*_argv(dataset_dir, tmp_path)[1:])
    with use_connection(fake.connection()):  # the fake is the API identity in the digest, too
        key = rerun.outcome_key(params)
        assert key is not None
        return rerun.unchanged_run(params, key) is not None


def test_the_flow_runs_when_the_job_or_result_json_changed(
    finished: tuple[str, str], fake: FakeMKA1, dataset_dir: Path, tmp_path: Path
) -> None:
    _, job_id = finished
    assert _unchanged(dataset_dir, tmp_path, fake)
    job = dict(fake.jobs[job_id])
    for change in ({"status": "cancelled"}, {"fine_tuned_model": "ft:other"}):
        fake.jobs[job_id] = job | change
        assert not _unchanged(dataset_dir, tmp_path, fake), change
    del fake.jobs[job_id]  # 404
    assert not _unchanged(dataset_dir, tmp_path, fake)
    fake.jobs[job_id] = job
    fake.inject("GET", "/fine_tuning/jobs/.*", status=503)  # not retried: the flow's retries decide
    assert not _unchanged(dataset_dir, tmp_path, fake)
    assert _unchanged(dataset_dir, tmp_path, fake)

    result = tmp_path / "out" / "result.json"
    text = result.read_text(encoding="utf-8")
    result.write_text(text.replace('"succeeded"', '"succeeded" '), encoding="utf-8")
    assert not _unchanged(dataset_dir, tmp_path, fake)
    result.unlink()
    assert not _unchanged(dataset_dir, tmp_path, fake)
    result.write_text(text, encoding="utf-8")
    assert _unchanged(dataset_dir, tmp_path, fake)


def test_a_corrupt_or_foreign_ledger_means_the_flow_runs_and_is_rewritten(
    finished: tuple[str, str],
    fake: FakeMKA1,
    dataset_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger = finished_runs_index(tmp_path / "state").path
    entries = json.loads(ledger.read_text(encoding="utf-8"))
    (key,) = entries
    for broken in ("{not json", json.dumps([1, 2]), json.dumps({key: {"job_id": 3}})):
        ledger.write_text(broken, encoding="utf-8")
        assert not _unchanged(dataset_dir, tmp_path, fake)
    with use_connection(fake.connection()):
        assert main(_argv(dataset_dir, tmp_path)) == 0  # the flow ran (re-attached) and recorded it again
    assert re.search(r"attached to existing job +yes", capsys.readouterr().out)
    assert set(json.loads(ledger.read_text(encoding="utf-8"))) == {key}
    assert _unchanged(dataset_dir, tmp_path, fake)


def test_fresh_a_failed_smoke_check_or_a_promotion_never_take_the_shortcut(
    finished: tuple[str, str],
    fake: FakeMKA1,
    dataset_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with use_connection(fake.connection()):
        assert main(_argv(dataset_dir, tmp_path, "--fresh")) == 0
    assert "unchanged since" not in capsys.readouterr().out

    # A run whose smoke check failed exits 1 and is not recorded: its re-run runs the flow again.
    write_jsonl(dataset_dir / "smoke.jsonl", [{"prompt": "Say nothing", "must_contain": ["zebra-42"]}])
    with use_connection(fake.connection()):
        assert main(_argv(dataset_dir, tmp_path, "--no-eval")) == 1
        assert main(_argv(dataset_dir, tmp_path, "--no-eval")) == 1
    assert "unchanged since" not in capsys.readouterr().out
    assert len(json.loads(finished_runs_index(tmp_path / "state").path.read_text(encoding="utf-8"))) == 1


def _recorded_run(tmp_path: Path, *options: str) -> tuple[FineTuneParams, str, RunRecord]:
    """A run of ``options`` on a full dataset, recorded as finished (its result.json written)."""
    from datetime import UTC, datetime

    from tasks.record import DatasetFile

    ds = _full_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    params = _params(str(ds), "--output", str(out), "--state-dir", str(tmp_path / "state"), *options)
    key = rerun.outcome_key(params)
    assert key is not None
    now = datetime.now(UTC)
    record = RunRecord(
        job_id="ftjob-1",
        status="succeeded",
        base_model="local:tiny-chat",
        method="supervised",
        fine_tuned_model="ft:1",
        idempotency_key="k",
        training=DatasetFile(
            role="training", path=ds / "train.jsonl", sha256="0" * 64, bytes=1, examples=3, file_id="file-1"
        ),
        started_at=now,
        finished_at=now,
        duration_s=1.0,
        output_dir=out,
        outputs={"result_json": out / "result.json"},
    )
    out.mkdir()
    (out / "result.json").write_text(record.to_json(), encoding="utf-8")
    rerun.remember(params, key, record)
    return params, key, record


def test_the_ledger_keeps_the_most_recent_runs(tmp_path: Path) -> None:
    ledger = finished_runs_index(tmp_path / "state")
    ledger.path.parent.mkdir(parents=True)
    old = {f"old-{i:03d}": {"recorded_at": f"2026-01-01T{i // 60:02d}:{i % 60:02d}:00Z"} for i in range(200)}
    ledger.path.write_text(json.dumps({**old, "unreadable": 7}), encoding="utf-8")
    params, key, record = _recorded_run(tmp_path)
    kept = ledger.read()
    assert len(kept) == rerun.MAX_ENTRIES == 200 and kept[key]["job_id"] == "ftjob-1"
    # The unreadable entry and the oldest went; the newest old ones stayed.
    assert "unreadable" not in kept and "old-000" not in kept and "old-001" in kept and "old-199" in kept
    rerun.remember(params.model_copy(update={"seed": 7}), key, record)  # inputs changed since: not recorded
    assert ledger.read() == kept


def test_an_api_that_does_not_answer_means_the_flow_runs(tmp_path: Path) -> None:
    from backend.launcher import free_port

    params, key, _ = _recorded_run(tmp_path, "--base-url", f"http://127.0.0.1:{free_port()}/api/v1/llm")
    assert finished_runs_index(tmp_path / "state").get(key) is not None
    assert rerun.unchanged_run(params, key) is None  # connection refused: no answer, the flow reports it
