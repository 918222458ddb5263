"""Recognise files that are not JSONL at all (gzip, zip, CSV, a JSON array ...) from their first bytes,
so the user gets one plain-words error instead of one "invalid JSON" per line."""

from __future__ import annotations

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "this looks like a gzip file; upload the uncompressed JSONL"),
    (b"PK\x03\x04", "this looks like a zip archive (or .xlsx); upload the plain JSONL file inside it"),
    (b"BZh", "this looks like a bzip2 file; upload the uncompressed JSONL"),
    (b"\xfd7zXZ\x00", "this looks like an xz file; upload the uncompressed JSONL"),
    (b"(\xb5/\xfd", "this looks like a zstd file; upload the uncompressed JSONL"),
    (b"PAR1", "this looks like a Parquet file; convert it to JSONL (one JSON object per line)"),
    (b"\x7fELF", "this is a program (an ELF binary), not a dataset; give the JSONL file"),
    (b"MZ", "this is a Windows program, not a dataset; give the JSONL file"),
    (b"%PDF", "this looks like a PDF document; convert it to JSONL (one JSON object per line)"),
    (b"\xff\xfe", "this file is UTF-16 encoded; save it as UTF-8"),
    (b"\xfe\xff", "this file is UTF-16 encoded; save it as UTF-8"),
)
_BOM = b"\xef\xbb\xbf"
ARRAY_HINT = "this looks like one JSON array; write one JSON object per line (JSONL) instead"


def sniff(head: bytes) -> str | None:
    """A plain-words reason why ``head`` (the first KiB of a file) is not JSONL, or None if it may be."""
    for magic, message in _MAGIC:
        if head.startswith(magic):
            return message
    if b"\x00" in head:
        # NUL bytes never occur in UTF-8 text: some binary format, whatever its commas suggest.
        return "this is a binary file, not text; give the JSONL file (UTF-8, one JSON object per line)"
    text = head.removeprefix(_BOM)
    first = text.split(b"\n", 1)[0].strip()
    if not first:
        return None
    if first == b"[":
        return ARRAY_HINT
    if first == b"{":
        return "this looks like pretty-printed JSON; each example must be a single line (JSONL)"
    if first[:1] not in (b"{", b"[", b'"') and (b"," in first or b"\t" in first):
        shown = first[:40].decode("utf-8", "replace")
        return (
            f"this looks like a CSV/TSV file (first line {shown!r}); "
            "convert each row to a JSON object on its own line"
        )
    return None
