"""Streaming multipart parser for uploads: the file part goes straight to disk under a size cap."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from backend.errors import BackendHTTPError

MAX_FIELD_BYTES = 4096
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


class UploadTooLarge(BackendHTTPError):
    """The file part exceeded max_upload_bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"File is larger than the {limit}-byte upload limit.", code="file_too_large", param="file"
        )


@dataclass
class ParsedUpload:
    """Form fields plus the file part, spooled to ``tmp_path`` (the caller moves or deletes it)."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    tmp_path: Path | None = None
    size: int = 0
    sha256: str | None = None  # hex digest of the file part, computed while it streams to disk


@dataclass
class _PartState:
    name: str = ""
    is_file: bool = False
    buf: bytearray = field(default_factory=bytearray)
    header_field: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)


def sanitize_filename(raw: str) -> str:
    """Keep only the last path component, no control characters, at most 255 characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("", name).strip()
    if name in {"", ".", ".."}:
        name = "upload"
    return name[:255]


async def parse_upload(
    content_type: str, body: AsyncIterator[bytes], tmp_dir: Path, max_bytes: int
) -> ParsedUpload:
    """Parse a multipart/form-data body; the ``file`` part is written to tmp_dir while counting bytes.

    On any error the temp file is removed before the exception propagates.
    """
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BackendHTTPError(
            400,
            "Uploads must be multipart/form-data with 'file' and 'purpose' parts.",
            code="invalid_multipart",
            param="file",
        )

    out = ParsedUpload()
    part = _PartState()
    sink: list[IO[bytes]] = []
    digest = hashlib.sha256()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = part.header_field.lower()
        part.headers[key] = part.headers.get(key, b"") + data[start:end]

    def on_header_end() -> None:
        part.header_field = b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = disp.get(b"name", b"").decode("utf-8", "replace")
        part.buf = bytearray()
        part.is_file = part.name == "file" and out.tmp_path is None
        if part.is_file:
            out.filename = sanitize_filename(disp.get(b"filename", b"upload").decode("utf-8", "replace"))
            out.tmp_path = tmp_dir / f"upload-{secrets.token_hex(8)}.part"
            fd = os.open(out.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            sink.append(os.fdopen(fd, "wb"))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.is_file:
            out.size += end - start
            if out.size > max_bytes:
                raise UploadTooLarge(max_bytes)
            sink[-1].write(data[start:end])
            digest.update(data[start:end])
        else:
            if len(part.buf) + end - start > MAX_FIELD_BYTES:
                raise BackendHTTPError(
                    400, f"Form field '{part.name}' is too long.", code="invalid_multipart", param=part.name
                )
            part.buf.extend(data[start:end])

    def on_part_end() -> None:
        if part.is_file:
            sink[-1].close()
            out.sha256 = digest.hexdigest()
        elif part.name:
            out.fields[part.name] = bytes(part.buf).decode("utf-8", "replace")
        part.headers = {}
        part.is_file = False

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
        if any(not fh.closed for fh in sink):
            raise MultipartParseError("the body ended inside the file part")
    except BaseException as exc:
        for fh in sink:
            fh.close()
        if out.tmp_path is not None:
            out.tmp_path.unlink(missing_ok=True)
        if isinstance(exc, MultipartParseError):
            raise BackendHTTPError(
                400, f"Malformed multipart body: {exc}", code="invalid_multipart", param="file"
            ) from exc
        raise
    return out
