"""The local JSON index: a failed write leaves the old index and no temp files behind."""

import json
from pathlib import Path

import pytest

from tasks.state import JsonIndex


def test_a_failed_write_keeps_the_index_and_leaves_no_temp_file(tmp_path: Path) -> None:
    index = JsonIndex(tmp_path / "uploads.json")
    index.put("a", {"file_id": "file-1"})
    with pytest.raises(TypeError):
        index.put("b", {"not json": object()})  # json.dump fails half-way through the temp file
    assert json.loads((tmp_path / "uploads.json").read_text()) == {"a": {"file_id": "file-1"}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uploads.json", "uploads.json.lock"]
