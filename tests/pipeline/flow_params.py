"""The fine-tune parameters the flow tests start from: micro-chat, fast polling, the test's own folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.params import FineTuneParams


def micro_chat_params(dataset_dir: Path, tmp_path: Path, **kw: Any) -> FineTuneParams:
    """``kw`` overrides or adds any field (e.g. ``suffix``, ``evaluate=False``, ``wait_timeout_s``)."""
    fields: dict[str, Any] = {
        "dataset_dir": dataset_dir,
        "model": "local:micro-chat",
        "output_dir": tmp_path / "out",
        "state_dir": tmp_path / "state",
        "poll_interval_s": 0.01,
        "poll_max_interval_s": 0.02,
        "wait_timeout_s": 60,
    }
    return FineTuneParams(**(fields | kw))
