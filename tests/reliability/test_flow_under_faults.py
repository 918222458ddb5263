"""The fine-tune flow against a backend failing 20% of all requests (mixed kinds, fixed seed).

Proves: the run succeeds, the server ends with exactly one file per dataset file and one job, and the
checkpoint frame the flow wrote equals a fault-free listing of what the server stored.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow

from backend.faults import AFTER_KINDS
from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from client import ClientSettings, MKA1Client
from flows.fine_tune import fine_tune
from tasks.upload import sha256_file, upload_file_task, upload_name
from tests.reliability.reliability_kit import (
    fault_stats,
    flow_params,
    injected,
    server_view,
    small_dataset,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness", "remote_env")]


def test_flow_succeeds_under_faults_without_duplicates(
    faulty_backend: RunningBackend, tmp_path: Path
) -> None:
    data = small_dataset(tmp_path / "ds")
    before = fault_stats(faulty_backend)
    result = fine_tune(**flow_params(data, tmp_path, faulty_backend, "faults-flow").flow_arguments())
    after = fault_stats(faulty_backend)

    assert result.status == "succeeded" and result.fine_tuned_model
    assert injected(before, after) >= 3, after  # the run really went through faults
    view = server_view(faulty_backend, "faults-flow")
    expected = sorted(
        upload_name(data / n, sha256_file(data / n)) for n in ("train.jsonl", "validation.jsonl")
    )
    assert sorted(f.filename for f in view.training_files) == expected  # one per dataset file
    assert [j.id for j in view.jobs] == [result.job_id]
    assert view.checkpoints is not None and len(view.checkpoints) >= 2
    written = pd.read_parquet(tmp_path / "out" / "checkpoints.parquet")
    pd.testing.assert_frame_equal(written, view.checkpoints.reset_index(drop=True), check_dtype=False)


@flow(name="upload-many", persist_result=False)
def _upload_many(paths: list[Path], state_dir: Path, settings: ClientSettings) -> list[str]:
    with MKA1Client(settings) as client:
        return [
            upload_file_task(client, p, state_dir=state_dir, server_id=settings.base_url, role=p.stem).file_id
            for p in paths
        ]


def test_upload_retried_after_dropped_connection_leaves_no_duplicate(tmp_path: Path) -> None:
    """Uploads whose answer is lost after the server stored them (drop_after, 500_after) are reused."""
    paths = []
    for i in range(6):
        p = tmp_path / "files" / f"part{i}.jsonl"
        p.parent.mkdir(exist_ok=True)
        p.write_text("".join(json.dumps(chat_line(i, k)) + "\n" for k in range(10)), encoding="utf-8")
        paths.append(p)
    settings = BackendSettings(
        data_dir=tmp_path / "backend", fault_rates="files.drop_after=0.3,files.500_after=0.2", fault_seed=5
    )
    with start_backend(settings, port=0) as rb:
        cs = ClientSettings(base_url=rb.base_url, api_key=rb.api_key, on_behalf_of="uploader")
        ids = _upload_many(paths, tmp_path / "state", cs)
        stats = fault_stats(rb)
        view = server_view(rb, "uploader")
    lost_answers = [r for r in stats["recent"] if r.endswith(("POST /api/v1/llm/files",))]
    assert any(r.startswith(AFTER_KINDS) for r in lost_answers), stats  # stored, then the answer was lost
    names = Counter(f.filename for f in view.training_files)
    assert len(names) == len(paths) and set(names.values()) == {1}, names
    assert sorted(ids) == sorted(f.id for f in view.training_files)


def chat_line(i: int, k: int) -> dict[str, object]:
    """One valid chat example, unique per (file, line)."""
    return {
        "messages": [
            {"role": "user", "content": f"File {i}, question {k}?"},
            {"role": "assistant", "content": f"Answer {k} of file {i}."},
        ]
    }
