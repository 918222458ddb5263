"""Files: upload (streamed, size-capped, atomically stored), list, retrieve, delete, content."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from backend.context import RequestContext, require_auth
from backend.db import new_file_id, now
from backend.errors import BackendHTTPError, not_found
from backend.idempotency import create_once
from backend.multipart_upload import ParsedUpload, parse_upload
from backend.objects import file_object, paginate

router = APIRouter()

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_JSONL_ERROR_LEN = 200
# Content types the MKA1 SDK accepts for file content; mimetypes does not know .jsonl.
_CONTENT_TYPES = {".jsonl": "application/jsonl", ".csv": "text/csv", ".json": "application/json"}


def check_jsonl(path: Path) -> None:
    """Raise a 400 naming the first line that is not UTF-8 or not a JSON object (blank lines allowed)."""
    examples = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BackendHTTPError(
                    400,
                    f"line {lineno}: not valid UTF-8 ({exc.reason})",
                    code="invalid_file_format",
                    param="file",
                ) from exc
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BackendHTTPError(
                    400,
                    f"line {lineno}: not valid JSON: {exc.msg}"[:MAX_JSONL_ERROR_LEN],
                    code="invalid_file_format",
                    param="file",
                ) from exc
            if not isinstance(value, dict):
                raise BackendHTTPError(
                    400,
                    f"line {lineno}: expected a JSON object, got {type(value).__name__}",
                    code="invalid_file_format",
                    param="file",
                )
            examples += 1
    if examples == 0:
        raise BackendHTTPError(
            400, "The file has no JSONL examples.", code="invalid_file_format", param="file"
        )


@router.post("/files")
async def upload_file(
    request: Request, ctx: Annotated[RequestContext, Depends(require_auth)]
) -> dict[str, Any]:
    """Upload a file (multipart ``file`` + ``purpose``); fine-tune files must be JSONL."""
    layout = ctx.state.layout
    limit = ctx.state.settings.max_upload_bytes
    parsed = await parse_upload(request.headers.get("content-type", ""), request.stream(), layout.tmp, limit)
    try:
        purpose = parsed.fields.get("purpose")
        if purpose is None:
            raise BackendHTTPError(
                400,
                "Missing required parameter: 'purpose'.",
                code="missing_required_parameter",
                param="purpose",
            )
        if purpose not in UPLOAD_PURPOSES:
            raise BackendHTTPError(
                400,
                f"Invalid purpose '{purpose}': expected one of {', '.join(UPLOAD_PURPOSES)}.",
                code="invalid_purpose",
                param="purpose",
            )
        if parsed.tmp_path is None:
            raise BackendHTTPError(
                400, "Missing required parameter: 'file'.", code="missing_required_parameter", param="file"
            )
        if purpose == "fine-tune":
            await asyncio.to_thread(check_jsonl, parsed.tmp_path)
        return await create_once(
            ctx.db,
            ctx.owner,
            request,
            "files",
            {"purpose": purpose, "filename": parsed.filename, "sha256": parsed.sha256, "bytes": parsed.size},
            table="files",
            create=lambda: asyncio.to_thread(_store, ctx, parsed, purpose),
            fetch=lambda file_id: _get(ctx, file_id),
        )
    finally:
        if parsed.tmp_path is not None:
            parsed.tmp_path.unlink(missing_ok=True)


def _store(ctx: RequestContext, parsed: ParsedUpload, purpose: str) -> dict[str, Any]:
    """Move the spooled file part into files/ and record it."""
    assert parsed.tmp_path is not None
    file_id = new_file_id()
    final = ctx.state.layout.files / file_id
    os.replace(parsed.tmp_path, final)
    parsed.tmp_path = None
    try:
        ctx.db.execute(
            "INSERT INTO files (id, owner, created_at, bytes, filename, purpose, status, path, sha256)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (
                file_id,
                ctx.owner,
                now(),
                parsed.size,
                parsed.filename or "upload",
                purpose,
                "processed",
                str(final),
                parsed.sha256,
            ),
        )
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return _get(ctx, file_id)


def _get(ctx: RequestContext, file_id: str) -> dict[str, Any]:
    row = ctx.db.one("SELECT * FROM files WHERE id = ? AND owner = ?", (file_id, ctx.owner))
    if row is None:
        raise not_found("file", file_id)
    return file_object(row)


@router.get("/files")
def list_files(
    ctx: Annotated[RequestContext, Depends(require_auth)],
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """This owner's files, newest first by default; ``purpose`` and ``sha256`` filter."""
    where, params = "owner = ?", [ctx.owner]
    if purpose is not None:
        where += " AND purpose = ?"
        params.append(purpose)
    if sha256 is not None:
        where += " AND sha256 = ?"
        params.append(sha256.lower())
    return paginate(
        ctx.db, "files", where, params, after=after, limit=limit, order=order, to_object=file_object
    )


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """One file's metadata."""
    return _get(ctx, file_id)


@router.delete("/files/{file_id}")
def delete_file(file_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """Delete the row first (so nobody sees a file without bytes), then the bytes."""
    with ctx.db.tx() as conn:
        row = conn.execute(
            "SELECT path FROM files WHERE id = ? AND owner = ?", (file_id, ctx.owner)
        ).fetchone()
        if row is None:
            raise not_found("file", file_id)
        conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
    Path(row["path"]).unlink(missing_ok=True)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/files/{file_id}/content")
def file_content(file_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]) -> FileResponse:
    """The raw bytes, streamed from disk."""
    row = ctx.db.one("SELECT path, filename FROM files WHERE id = ? AND owner = ?", (file_id, ctx.owner))
    if row is None or not Path(row["path"]).is_file():
        raise not_found("file", file_id)
    return FileResponse(row["path"], media_type=content_type(row["filename"]), filename=row["filename"])


def content_type(filename: str) -> str:
    """The media type of a stored file, from its name (``application/octet-stream`` when unknown)."""
    suffix = Path(filename).suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"
