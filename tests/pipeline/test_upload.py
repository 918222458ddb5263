"""upload_file_task: content-addressed reuse via the local index, the server's list, or a fresh upload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.errors import UploadIntegrityError
from tasks.state import UPLOADS_FILE
from tasks.upload import sha256_file, upload_file_task, upload_name
from tests.pipeline.fake_api import SERVER_ID, FakeMKA1


def _upload(fake: FakeMKA1, path: Path, state: Path):
    with fake.client() as c:
        return upload_file_task.fn(c, path, state_dir=state, server_id=SERVER_ID)


def test_second_run_reuses_file_by_hash(fake: FakeMKA1, dataset_dir: Path, tmp_path: Path) -> None:
    train = dataset_dir / "train.jsonl"
    first = _upload(fake, train, tmp_path / "state")
    second = _upload(fake, train, tmp_path / "state")
    assert fake.count("POST", "/files") == 1
    assert (first.reused, second.reused, second.how) == (False, True, "index")
    assert second.file_id == first.file_id
    sha = sha256_file(train)
    assert first.filename == f"train-{sha[:12]}.jsonl" == upload_name(train, sha)
    assert fake.files[first.file_id]["filename"] == first.filename
    assert fake.files[first.file_id]["bytes"] == train.stat().st_size
    index = json.loads((tmp_path / "state" / UPLOADS_FILE).read_text())
    assert [v["file_id"] for v in index.values()] == [first.file_id]


def test_changed_content_uploads_again(fake: FakeMKA1, dataset_dir: Path, tmp_path: Path) -> None:
    train = dataset_dir / "train.jsonl"
    first = _upload(fake, train, tmp_path / "state")
    train.write_text(train.read_text() + train.read_text().splitlines()[0] + "\n")
    second = _upload(fake, train, tmp_path / "state")
    assert fake.count("POST", "/files") == 2
    assert second.file_id != first.file_id and not second.reused


def test_missing_index_falls_back_to_name_and_bytes(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path
) -> None:
    train = dataset_dir / "train.jsonl"
    size = train.stat().st_size
    name = upload_name(train, sha256_file(train))
    fake.add_file(name, size + 1)  # same name, wrong size: not a match
    fake.add_file("other.jsonl", size)  # right size, wrong name: not a match
    existing = fake.add_file(name, size)  # e.g. an upload whose response was lost
    got = _upload(fake, train, tmp_path / "empty-state")
    assert fake.count("POST", "/files") == 0
    assert (got.file_id, got.how, got.reused) == (existing, "server-list", True)


def test_stale_index_entry_uploads_again(fake: FakeMKA1, dataset_dir: Path, tmp_path: Path) -> None:
    train = dataset_dir / "train.jsonl"
    first = _upload(fake, train, tmp_path / "state")
    del fake.files[first.file_id]  # server expired/deleted it
    second = _upload(fake, train, tmp_path / "state")
    assert fake.count("POST", "/files") == 2
    assert second.file_id != first.file_id and second.how == "uploaded"


def test_index_is_scoped_by_end_user(fake: FakeMKA1, dataset_dir: Path, tmp_path: Path) -> None:
    train = dataset_dir / "train.jsonl"
    state = tmp_path / "state"
    with fake.client(on_behalf_of="alice") as c:
        upload_file_task.fn(c, train, state_dir=state, server_id=SERVER_ID)
    # The fake does not scope by user, so bob's run matches by name+bytes rather than alice's index entry.
    with fake.client(on_behalf_of="bob") as c:
        got = upload_file_task.fn(c, train, state_dir=state, server_id=SERVER_ID)
    assert got.how == "server-list"
    assert len(json.loads((state / UPLOADS_FILE).read_text())) == 2


def test_reuse_checks_the_server_sha256(fake: FakeMKA1, dataset_dir: Path, tmp_path: Path) -> None:
    train = dataset_dir / "train.jsonl"
    first = _upload(fake, train, tmp_path / "state")
    assert fake.files[first.file_id]["sha256"] == first.sha256 == sha256_file(train)
    second = _upload(fake, train, tmp_path / "state")
    assert (second.how, second.sha256_verified) == ("index", True)
    # Same name and size but other bytes on the server: neither the index entry nor the listing is reused.
    fake.files[first.file_id]["sha256"] = "0" * 64
    third = _upload(fake, train, tmp_path / "state")
    assert (third.how, third.sha256_verified) == ("uploaded", True) and third.file_id != first.file_id
    assert fake.count("POST", "/files") == 2


def test_server_without_sha256_is_matched_by_name_and_size(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path
) -> None:
    train = dataset_dir / "train.jsonl"
    existing = fake.add_file(upload_name(train, sha256_file(train)), train.stat().st_size)
    got = _upload(fake, train, tmp_path / "state")
    assert (got.file_id, got.how, got.sha256_verified) == (existing, "server-list", None)


def test_a_fresh_upload_stored_with_another_hash_fails(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_add = fake.add_file
    monkeypatch.setattr(fake, "add_file", lambda *a, **kw: real_add(*a, **{**kw, "sha256": "f" * 64}))
    with pytest.raises(UploadIntegrityError, match="train.jsonl: the server stored sha256 ffffffffffff"):
        _upload(fake, dataset_dir / "train.jsonl", tmp_path / "state")
    assert not (tmp_path / "state" / UPLOADS_FILE).exists()  # nothing indexed
