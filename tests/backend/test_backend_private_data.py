"""Issue 16: model folders are confined to operator roots, data stays private, crashes leave no litter."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from backend_testkit import Api
from test_backend_errors import assert_error

from backend.app import create_app
from backend.errors import BackendHTTPError
from backend.launcher import RunningBackend
from backend.model_refs import ModelAccess, is_known_base_model
from backend.settings import BackendSettings


def _hf_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}", encoding="utf-8")
    return path


def _refusal(access: ModelAccess, path: Path | str) -> BackendHTTPError:
    with pytest.raises(BackendHTTPError) as info:
        is_known_base_model(f"local:{path}", access)
    return info.value


def test_local_model_dirs_only_under_roots_and_never_under_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "srv" / "data"
    weights = _hf_dir(data_dir / "jobs" / "ftjob-x" / "final")
    allowed = _hf_dir(tmp_path / "models" / "llama")
    elsewhere = _hf_dir(tmp_path / "home" / "secret-model")
    (tmp_path / "models" / "link-to-weights").symlink_to(weights)
    # Even a root that contains the data dir does not expose another tenant's weights.
    access = ModelAccess(data_dir=data_dir, local_roots=(tmp_path / "models", tmp_path / "srv"))

    assert is_known_base_model(f"local:{allowed}", access)
    for hidden in (
        weights,
        tmp_path / "models" / "link-to-weights",
        tmp_path / "models" / ".." / "srv" / "data",
    ):
        assert _refusal(access, hidden).status == 404
    outside = _refusal(access, elsewhere)
    assert outside.status == 400 and outside.code == "model_path_not_allowed"
    assert "FTPIPE_BACKEND_LOCAL_MODEL_ROOTS" in outside.message
    # The answer is the same whether or not the folder exists: no oracle for the host's files.
    assert _refusal(access, tmp_path / "home" / "nothing-here").message.replace(
        "nothing-here", "secret-model"
    ) == (outside.message)
    assert _refusal(ModelAccess(data_dir=data_dir), allowed).status == 400  # no roots: nothing allowed


def test_local_model_roots_setting_takes_a_path_list_or_the_launchers_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FTPIPE_BACKEND_LOCAL_MODEL_ROOTS", f"/a{os.pathsep}/b")
    assert BackendSettings().local_model_roots == [Path("/a"), Path("/b")]
    monkeypatch.setenv("FTPIPE_BACKEND_LOCAL_MODEL_ROOTS", '["/c"]')
    assert BackendSettings().local_model_roots == [Path("/c")]
    monkeypatch.delenv("FTPIPE_BACKEND_LOCAL_MODEL_ROOTS")
    assert BackendSettings().local_model_roots == []


@pytest.mark.integration
def test_no_caller_can_use_fine_tuned_weights_by_path(
    backend: RunningBackend, trained_job: dict[str, Any]
) -> None:
    model_dirs = [p.parent for p in backend.data_dir.glob(f"jobs/{trained_job['id']}/**/config.json")]
    assert model_dirs, "the trained job left no model folder to aim at"
    training_file = trained_job["training_file"]
    for owner in (None, "mallory"):
        with Api(backend, owner).client() as c:
            for model_dir in model_dirs:
                model = f"local:{model_dir}"
                assert_error(c.post("/responses", json={"model": model, "input": "hi"}), 404, param="model")
                body = {"model": model, "training_file": training_file}
                assert_error(c.post("/fine_tuning/jobs", json=body), 404, param="model")


@pytest.mark.integration
def test_server_files_are_private_to_its_user(backend: RunningBackend, trained_job: dict[str, Any]) -> None:
    """The launched server runs under umask 077: database, uploads, checkpoints and logs are 0600/0700."""
    assert trained_job["status"] == "succeeded"
    loose = [
        (str(p), oct(stat.S_IMODE(p.stat().st_mode)))
        for p in [backend.data_dir, *backend.data_dir.rglob("*")]
        if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077
    ]
    assert loose == []


def test_create_app_tightens_an_old_data_dir_and_removes_leftovers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    create_app(BackendSettings(data_dir=data_dir, api_key="k"))
    db_file = data_dir / "backend.sqlite3"
    for d in (data_dir, data_dir / "files", data_dir / "tmp", data_dir / "logs"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert stat.S_IMODE(db_file.stat().st_mode) == 0o600
    # As an older version left it, plus what a kill -9 mid-upload leaves behind.
    os.chmod(data_dir, 0o755)
    os.chmod(db_file, 0o644)
    part = data_dir / "tmp" / "upload-0123456789abcdef.part"
    part.write_bytes(b"half an upload")
    orphan = data_dir / "files" / "file-renamed-but-never-recorded"
    orphan.write_bytes(b"{}\n")
    app = create_app(BackendSettings(data_dir=data_dir, api_key="k"))
    kept = data_dir / "files" / "file-recorded"
    kept.write_bytes(b"{}\n")
    app.state.backend.db.execute(
        "INSERT INTO files (id, owner, created_at, bytes, filename, purpose, status, path, sha256)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        ("file-recorded", "o", 0, 3, "x.jsonl", "fine-tune", "processed", str(kept), None),
    )
    assert not part.exists() and not orphan.exists()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700 and stat.S_IMODE(db_file.stat().st_mode) == 0o600
    create_app(BackendSettings(data_dir=data_dir, api_key="k"))
    assert kept.exists()  # a file the database knows is never touched
