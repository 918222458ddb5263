"""Helpers for the reliability tests and bench/fault_campaign.py: faulty backends, datasets, flow params."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from backend.launcher import RunningBackend
from client import ClientSettings, MKA1Client
from flows.params import FineTuneParams
from tasks.metrics import checkpoints_frame

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"
# The client gives up on an ordinary call after CLIENT_TIMEOUT_S; "slow" faults answer after SLOW_S.
CLIENT_TIMEOUT_S = 2.0
SLOW_S = 3.0


def small_dataset(d: Path, n_train: int = 24, n_valid: int = 10) -> Path:
    """A slice of the sample dataset (train, validation, smoke prompts) in ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.jsonl", n_train), ("validation.jsonl", n_valid)):
        lines = (SAMPLE / name).read_text(encoding="utf-8").splitlines()[:n]
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (d / "smoke.jsonl").write_text((SAMPLE / "smoke.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    return d


def flow_params(
    dataset: Path, work: Path, rb: RunningBackend, user: str, epochs: int = 2, **kw: Any
) -> FineTuneParams:
    """Params for a micro-chat run against ``rb`` (remote mode: MKA1_API_KEY must be set by the caller)."""
    return FineTuneParams(
        dataset_dir=dataset,
        model="local:micro-chat",
        seed=7,
        n_epochs=epochs,
        batch_size=4,
        output_dir=work / "out",
        state_dir=work / "state",
        poll_interval_s=0.2,
        poll_max_interval_s=1.0,
        wait_timeout_s=600,
        base_url=rb.base_url,
        on_behalf_of=user,
        # These runs test the pipeline's reliability under 2 s client timeouts, not the tiny model's quality:
        # smoke checks only (asked one at a time, like the old smoke test), no score gate.
        **({"evaluate": False, "eval_concurrency": 1, "gate_min_improvement": None} | kw),
    )


def client_for(rb: RunningBackend, user: str | None, timeout_s: float = 30.0) -> MKA1Client:
    """A client acting for ``user`` against ``rb``."""
    return MKA1Client(
        ClientSettings(base_url=rb.base_url, api_key=rb.api_key, on_behalf_of=user, timeout_s=timeout_s)
    )


def _auth(rb: RunningBackend) -> dict[str, str]:
    return {"Authorization": f"Bearer {rb.api_key.get_secret_value()}"}


def fault_stats(rb: RunningBackend) -> dict[str, Any]:
    """The backend's fault counters (GET /_faults; never faulted itself)."""
    resp = httpx.get(f"{rb.base_url}/_faults", headers=_auth(rb), timeout=10)
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()
    return data


def set_faults(rb: RunningBackend, enabled: bool) -> None:
    """Pause or resume fault injection."""
    httpx.post(
        f"{rb.base_url}/_faults", json={"enabled": enabled}, headers=_auth(rb), timeout=10
    ).raise_for_status()


@dataclass(frozen=True)
class ServerView:
    """What the server holds for one end user, read with faults paused."""

    training_files: list[Any]
    jobs: list[Any]
    checkpoints: pd.DataFrame | None


def server_view(rb: RunningBackend, user: str | None) -> ServerView:
    """Fault-free listing of the user's fine-tune files, jobs and (single job's) checkpoint frame."""
    set_faults(rb, False)
    try:
        with client_for(rb, user) as c:
            files = [f for f in c.files.list() if f.purpose == "fine-tune"]
            jobs = list(c.jobs.list())
            frame = checkpoints_frame(list(c.jobs.list_checkpoints(jobs[0].id))) if len(jobs) == 1 else None
    finally:
        set_faults(rb, True)
    return ServerView(files, jobs, frame)


def injected(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Faults injected between two counter snapshots."""
    return int(after["total_injected"]) - int(before["total_injected"])
