"""Helpers for the backend tests: datasets, polling and a small per-owner HTTP client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.launcher import RunningBackend

TERMINAL = {"succeeded", "failed", "cancelled"}
SMALL_UPLOAD_LIMIT = 64 * 1024
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]


def write_chat_jsonl(path: Path, n: int = 16) -> Path:
    """A tiny, very learnable supervised dataset."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            color = COLORS[i % len(COLORS)]
            msgs = [
                {"role": "user", "content": f"Say the color {color}."},
                {"role": "assistant", "content": f"The color is {color}."},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return path


def wait_for(fn: Callable[[], Any], timeout: float = 180.0, interval: float = 0.2) -> Any:
    """Poll ``fn`` until it returns a truthy value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")


@dataclass
class Api:
    """An httpx client bound to a running backend, acting for one owner."""

    rb: RunningBackend
    owner: str | None = None

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.rb.api_key.get_secret_value()}"}
        if self.owner:
            headers["X-On-Behalf-Of"] = self.owner
        return httpx.Client(base_url=self.rb.base_url, headers=headers, timeout=120)

    def upload(self, path: Path, purpose: str = "fine-tune") -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/files", files={"file": (path.name, path.read_bytes())}, data={"purpose": purpose})
        assert r.status_code == 200, r.text
        return r.json()

    def create_job(
        self, file_id: str, n_epochs: int = 2, batch_size: int = 4, **extra: Any
    ) -> dict[str, Any]:
        body = {
            "model": "local:micro-chat",
            "training_file": file_id,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": n_epochs, "batch_size": batch_size}},
            },
            **extra,
        }
        with self.client() as c:
            r = c.post("/fine_tuning/jobs", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/fine_tuning/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 180.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            j = self.job(job_id)
            return j if j["status"] in statuses else None

        return wait_for(check, timeout)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """All events, oldest first."""
        with self.client() as c:
            r = c.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 10000})
        assert r.status_code == 200, r.text
        return list(reversed(r.json()["data"]))
