"""Row -> wire object conversion and cursor pagination shared by the list endpoints."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Literal

from backend.db import Database
from backend.errors import BackendHTTPError
from backend.model_refs import ModelInfo

ORGANIZATION_ID = "org-local"


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def file_object(row: sqlite3.Row) -> dict[str, Any]:
    """The contract's File object (``sha256`` of the stored bytes, as MKA1's file object has)."""
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "expires_at": None,
        "status": row["status"],
        "status_details": row["status_details"],
        "sha256": row["sha256"],
    }


def job_object(row: sqlite3.Row) -> dict[str, Any]:
    """The contract's fine_tuning.job object (hyperparameters are the resolved ones once known)."""
    hp: dict[str, Any] = json.loads(row["hyperparameters"])
    method_type = row["method_type"]
    method_hp = dict(hp)
    if method_type != "dpo":
        method_hp.pop("beta", None)
    legacy_hp = {k: v for k, v in hp.items() if k != "beta"}
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "model": row["model"],
        "fine_tuned_model": row["fine_tuned_model"],
        "organization_id": ORGANIZATION_ID,
        "status": row["status"],
        "training_file": row["training_file"],
        "validation_file": row["validation_file"],
        "hyperparameters": legacy_hp,
        "method": {"type": method_type, method_type: {"hyperparameters": method_hp}},
        "seed": row["seed"],
        "suffix": row["suffix"],
        "metadata": _json(row["metadata"]),
        "result_files": json.loads(row["result_files"]),
        "trained_tokens": row["trained_tokens"],
        "estimated_finish": row["estimated_finish"],
        "integrations": json.loads(row["integrations"]),
        "error": _json(row["error"]),
        "user_provided_suffix": row["suffix"],
    }


def event_object(row: sqlite3.Row) -> dict[str, Any]:
    """The contract's fine_tuning.job.event object."""
    return {
        "id": row["id"],
        "object": "fine_tuning.job.event",
        "created_at": row["created_at"],
        "level": row["level"],
        "message": row["message"],
        "type": row["type"],
        "data": _json(row["data"]) or {},
    }


def checkpoint_object(row: sqlite3.Row) -> dict[str, Any]:
    """The contract's fine_tuning.job.checkpoint object."""
    return {
        "id": row["id"],
        "object": "fine_tuning.job.checkpoint",
        "created_at": row["created_at"],
        "fine_tuning_job_id": row["job_id"],
        "fine_tuned_model_checkpoint": row["model_id"],
        "step_number": row["step_number"],
        "metrics": json.loads(row["metrics"]),
    }


def model_object(info: ModelInfo) -> dict[str, Any]:
    """MKA1's model object: every field its schema requires, the ones that do not apply as null."""
    return {
        "id": info.id,
        "object": "model",
        "created": info.created,
        "owned_by": info.owned_by,
        "model_type": "llm",
        "input_modalities": ["text"],
        "output_modalities": ["text"],
        "context_window": info.context_window,
        "max_image_resolution": None,
        "min_image_resolution": None,
        "embedding_dimension_range": None,
        "parameter_count": None,
        "active_parameter_count": None,
        "release_date": None,
        "serving_locations": None,
        "developer": None,
        "base_model": info.base_model,
        "weights": "open",
        "license": None,
        "languages": None,
        "tts": None,
        "limitations": None,
        "lifecycle": {"status": "active", "deprecated_at": None, "retires_at": None, "successor": None},
        "capabilities": {
            "supports_temperature": True,
            "supports_top_p": True,
            "supports_reasoning": False,
            "supports_reasoning_effort": False,
            "supports_structured_outputs": False,
        },
    }


def paginate(
    db: Database,
    table: str,
    where: str,
    params: Sequence[Any],
    *,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
    to_object: Callable[[sqlite3.Row], dict[str, Any]],
) -> dict[str, Any]:
    """One page of a list envelope; ``after`` is the id of the last object of the previous page.

    ``where`` must already restrict to the caller's owner (and parent job), so a cursor taken from
    someone else's objects is simply not found.
    """
    clauses = [where]
    args = list(params)
    if after is not None:
        row = db.one(f"SELECT seq FROM {table} WHERE {where} AND id = ?", [*params, after])
        if row is None:
            raise BackendHTTPError(
                400,
                f"Invalid cursor: no object with id '{after}' in this list.",
                code="invalid_cursor",
                param="after",
            )
        clauses.append("seq > ?" if order == "asc" else "seq < ?")
        args.append(row["seq"])
    direction = "ASC" if order == "asc" else "DESC"
    rows = db.all(
        f"SELECT * FROM {table} WHERE {' AND '.join(clauses)} ORDER BY seq {direction} LIMIT ?",
        [*args, limit + 1],
    )
    has_more = len(rows) > limit
    data = [to_object(r) for r in rows[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
