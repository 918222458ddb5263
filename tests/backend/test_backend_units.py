"""Small pure-function checks: settings/key persistence, filename sanitising, JSONL check, error params."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from backend.errors import BackendHTTPError, _loc_to_param
from backend.multipart_upload import sanitize_filename
from backend.routes_files import check_jsonl
from backend.settings import BASE_MODEL_CACHE_ENV, BackendSettings, apply_base_model_cache_dir


def test_api_key_generated_once_with_private_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTPIPE_BACKEND_API_KEY", raising=False)
    s = BackendSettings(data_dir=tmp_path)
    key = s.resolved_api_key().get_secret_value()
    assert len(key) > 30
    assert stat.S_IMODE((tmp_path / "api_key").stat().st_mode) == 0o600
    assert BackendSettings(data_dir=tmp_path).resolved_api_key().get_secret_value() == key
    assert key not in repr(s) and key not in str(s.resolved_api_key())


def test_env_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FTPIPE_BACKEND_PORT", "9999")
    monkeypatch.setenv("FTPIPE_BACKEND_DATA_DIR", str(tmp_path))
    s = BackendSettings()
    assert s.port == 9999 and s.data_dir == tmp_path and s.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.jsonl", "a.jsonl"),
        ("../../x.jsonl", "x.jsonl"),
        ("C:\\dir\\y.txt", "y.txt"),
        ("..", "upload"),
        ("a\x00b", "ab"),
    ],
)
def test_sanitize_filename(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_check_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"b": 2}\n')
    check_jsonl(p)
    p.write_text('{"a": 1}\n\n"str"\n')
    with pytest.raises(BackendHTTPError) as e:
        check_jsonl(p)
    assert e.value.param == "file" and "line 3" in e.value.message
    p.write_text("\n\n")
    with pytest.raises(BackendHTTPError):
        check_jsonl(p)


def test_loc_to_param() -> None:
    assert _loc_to_param(
        ("body", "method", "supervised", "hyperparameters", "n_epochs", "literal['auto']")
    ) == ("method.supervised.hyperparameters.n_epochs")
    assert _loc_to_param(("body", "input", 0, "role")) == "input[0].role"
    assert _loc_to_param(("query", "limit")) == "limit"
    assert _loc_to_param(("body",)) is None


def test_base_model_cache_setting_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API process (Responses) must use the cache that the workers get: the explicit setting."""
    from backend.app import create_app

    monkeypatch.setenv(BASE_MODEL_CACHE_ENV, str(tmp_path / "from-env"))
    create_app(BackendSettings(data_dir=tmp_path / "data", base_model_cache_dir=tmp_path / "from-setting"))
    assert os.environ[BASE_MODEL_CACHE_ENV] == str(tmp_path / "from-setting")


def test_base_model_cache_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.trainer.base_models import CACHE_ENV, default_cache_dir

    assert BASE_MODEL_CACHE_ENV == CACHE_ENV
    monkeypatch.delenv(CACHE_ENV, raising=False)
    apply_base_model_cache_dir(None)
    assert CACHE_ENV not in os.environ  # neither given: the trainer's default
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    apply_base_model_cache_dir(None)
    assert default_cache_dir() == tmp_path / "env"  # no setting: the env var
    apply_base_model_cache_dir(tmp_path / "setting")
    assert default_cache_dir() == tmp_path / "setting"  # the setting wins


def test_child_env_round_trips_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the launcher hands its server subprocess rebuilds the same settings, field for field."""
    from pydantic import SecretStr

    from backend.launcher import ENV_PREFIX, RunningBackend

    sample: dict[str, object] = {
        "host": "127.0.0.2",
        "port": 9123,
        "data_dir": tmp_path / "data",
        "api_key": SecretStr("sk-sample"),
        "worker_concurrency": 3,
        "max_upload_bytes": 1234,
        "max_request_body_bytes": 5678,
        "metrics_every_n_steps": 7,
        "model_aliases": {"acme:chat-large": "local:micro-chat"},
        "local_model_roots": [tmp_path / "models", tmp_path / "more models"],
        "base_model_cache_dir": tmp_path / "cache",
        "max_steps_per_job": 11,
        "fault_rates": "all=0.25,files.drop=0.5",
        "fault_kinds": "429,drop",
        "fault_seed": 42,
        "fault_slow_s": 1.5,
        "fault_retry_after_s": 2.5,
        "training_price_per_million": 4.5,
        "price_currency": "EUR",
    }
    # A new setting must get a non-default sample here, so this test covers it too.
    assert set(sample) == set(BackendSettings.model_fields)
    settings = BackendSettings(**sample)  # type: ignore[arg-type]
    for name, field in BackendSettings.model_fields.items():
        assert getattr(settings, name) != field.get_default(call_default_factory=True), name
    monkeypatch.setenv(f"{ENV_PREFIX}WORKER_CONCURRENCY", "9")  # a stale parent value must not leak through
    env = RunningBackend(settings, port=settings.port)._child_env()
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, value)
    rebuilt = BackendSettings()
    for name in BackendSettings.model_fields:
        assert getattr(rebuilt, name) == getattr(settings, name), name
    assert rebuilt.api_key is not None and rebuilt.api_key.get_secret_value() == "sk-sample"


def test_failed_result_csv_write_leaves_no_part_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend import worker
    from backend.db import Database
    from backend.layout import Layout
    from backend.trainer.spec import TrainingOutcome

    layout = Layout(tmp_path / "data")
    layout.ensure()
    layout.files.rmdir()  # the rename into files/ fails after the .part file was written
    monkeypatch.setattr(worker, "_metrics_csv", lambda db, job_id: b"step\n1\n")
    outcome = TrainingOutcome(status="succeeded", trained_tokens=1, final_model_dir=tmp_path / "model")
    job: Any = {"id": "ftjob-x", "owner": "owner"}
    with pytest.raises(OSError):
        worker._succeed(Database(layout.db_path), layout, job, "ft:m:local:x", outcome, {})
    assert list(layout.tmp.iterdir()) == []


def test_launcher_log_path_is_the_layouts(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from backend.launcher import RunningBackend
    from backend.layout import Layout

    rb = RunningBackend(BackendSettings(data_dir=tmp_path, api_key=SecretStr("k")), port=1)
    assert rb.log_path == Layout(tmp_path.resolve()).server_log
    assert rb.log_path.parent == Layout(tmp_path.resolve()).logs


def test_estimated_finish_from_the_first_metrics_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step rate is measured from "Training started", so the first metrics event already sets an ETA."""
    from contextlib import nullcontext
    from multiprocessing import Event
    from types import SimpleNamespace

    from backend import worker

    ticks = iter([100.0, 110.0, 115.0])
    monkeypatch.setattr(worker, "time", SimpleNamespace(monotonic=lambda: next(ticks)))
    monkeypatch.setattr(worker, "now", lambda: 1_000)
    monkeypatch.setattr(worker, "add_event", lambda *a, **k: None)
    monkeypatch.setattr(worker, "_still_running", lambda conn, job_id: {"id": job_id})
    executed: list[tuple[str, tuple[object, ...]]] = []
    db = SimpleNamespace(execute=lambda sql, params: executed.append((sql, params)), tx=lambda: nullcontext())
    job = {"id": "ftjob_1", "owner": "o", "model": "local:micro-chat", "suffix": None}
    callbacks = worker.JobCallbacks(db, job, parent_pid=1, stop=Event())  # type: ignore[arg-type]
    callbacks.on_event("Training started", data={"total_steps": 100})
    callbacks.on_event("Step 10/100", type="metrics", data={"step": 10, "total_steps": 100})
    callbacks.on_event("Step 20/100", type="metrics", data={"step": 20, "total_steps": 100})
    # 10 s for the first 10 steps: 90 steps left at 1 s each; then 15 s for 20: 80 left at 0.75 s.
    assert [params for _, params in executed] == [(1_090, "ftjob_1"), (1_060, "ftjob_1")]


def test_backend_modules_import_no_cycle() -> None:
    """Every import counts (module level, TYPE_CHECKING, lazy): a cycle means a concept has no one home."""
    import ast

    root = Path(__file__).resolve().parents[2]
    modules = {
        ".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): f
        for f in (root / "backend").rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for dep in sorted(graph[start]):
            if dep in path:
                return [*path[path.index(dep) :], dep]
            found = cycle_from(dep, [*path, dep])
            if found:
                return found
        return None

    for name in sorted(graph):
        assert cycle_from(name, [name]) is None, " -> ".join(cycle_from(name, [name]) or [])


class _Exited(Exception):
    """Stands in for os._exit inside the test process."""


def test_worker_sees_shutdown_and_a_dead_server_before_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither waits for the 0.2 s DB poll, and an orphaned worker writes nothing more (not even an outcome)."""
    from multiprocessing import Event
    from types import SimpleNamespace

    from backend import worker
    from backend.trainer.spec import TrainingOutcome

    def exit_(code: int) -> None:
        raise _Exited(code)

    monkeypatch.setattr(os, "_exit", exit_)
    reads: list[object] = []
    db = SimpleNamespace(
        one=lambda sql, params: reads.append(params) or {"status": "running", "control": "continue"}
    )
    job = {"id": "ftjob_1", "owner": "o", "model": "local:micro-chat", "suffix": None}
    stop = Event()
    alive = worker.JobCallbacks(db, job, parent_pid=os.getppid(), stop=stop)  # type: ignore[arg-type]
    assert alive.control() == "continue" and len(reads) == 1
    stop.set()  # the server is shutting down: the very next step pauses (no DB read in between)
    assert alive.control() == "pause" and alive.shutdown_requested and len(reads) == 1

    orphan = worker.JobCallbacks(db, job, parent_pid=-1, stop=Event())  # type: ignore[arg-type]
    with pytest.raises(_Exited):
        orphan.control()
    assert len(reads) == 1

    # Training finished just as the server died: the outcome is left for the next backend (no DB access).
    monkeypatch.setattr(worker, "_spec", lambda *args: None)
    done = TrainingOutcome(status="succeeded", trained_tokens=1, final_model_dir=Path("/nonexistent"))
    with pytest.raises(_Exited):
        worker._run(SimpleNamespace(), None, job, 2, -1, Event(), lambda spec, cb: done)  # type: ignore[arg-type]


def test_default_alias_runs_the_guide_model_on_tiny_chat(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.launcher import ENV_PREFIX

    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    assert BackendSettings().model_aliases == {"meetkai:functionary-medium": "local:tiny-chat"}


def test_old_database_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    from backend.db import Database

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # a files table as an older backend wrote it
        conn.execute(
            "CREATE TABLE files (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,"
            " created_at INTEGER NOT NULL, bytes INTEGER NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'processed', status_details TEXT, path TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO files (id, owner, created_at, bytes, filename, purpose, path) VALUES"
            " ('file-1', 'o', 1, 2, 'a.jsonl', 'fine-tune', '/x')"
        )
    db = Database(path)
    db.init_schema()
    row = db.one("SELECT sha256 FROM files WHERE id = 'file-1'")
    assert row is not None and row["sha256"] is None
    db.close()
