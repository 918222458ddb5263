"""Shared fixtures: one real backend subprocess per test session, a dataset and one trained job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_testkit import SMALL_UPLOAD_LIMIT, TERMINAL, Api, write_chat_jsonl

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """One real server for the session: loopback, temp data_dir, small upload cap for the 413 test."""
    settings = BackendSettings(
        data_dir=tmp_path_factory.mktemp("backend-data"),
        max_upload_bytes=SMALL_UPLOAD_LIMIT,
        max_request_body_bytes=32 * 1024,
        metrics_every_n_steps=2,
        # The MKA1 guide's base model name, on the fast test model (the default alias is local:tiny-chat).
        model_aliases={"meetkai:functionary-medium": "local:micro-chat"},
    )
    with start_backend(settings, port=0) as rb:
        yield rb


@pytest.fixture(scope="session")
def api(backend: RunningBackend) -> Api:
    """Client for the default owner."""
    return Api(backend)


@pytest.fixture(scope="session")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 supervised examples."""
    return write_chat_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl")


@pytest.fixture(scope="session")
def trained_job(api: Api, train_file: Path) -> dict[str, Any]:
    """A short real micro-chat job that succeeded (shared by several modules)."""
    f = api.upload(train_file)
    job = api.create_job(f["id"], n_epochs=2, batch_size=4, suffix="shared")
    done = api.wait_status(job["id"], TERMINAL)
    assert done["status"] == "succeeded", done
    return done


@pytest.fixture(scope="session")
def fluent_job(api: Api, train_file: Path) -> dict[str, Any]:
    """A micro-chat job trained long enough (128 steps, fixed seed) that its model ends its replies itself."""
    f = api.upload(train_file)
    job = api.create_job(f["id"], n_epochs=8, batch_size=1, suffix="fluent", seed=7)
    done = api.wait_status(job["id"], TERMINAL)
    assert done["status"] == "succeeded", done
    return done
