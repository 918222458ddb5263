"""Stage 2: upload a JSONL file (purpose fine-tune) once per content hash.

Reuse order: the local index (verified with ``files.retrieve``), then the server's file list matched by
the content-addressed upload name + byte size (covers a retry whose response was lost), then upload.
A reused file whose server-reported ``sha256`` differs from the local hash is not reused; servers that
report no hash are matched by name and size alone, and the upload artifact says which check applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from prefect import task

from client import MKA1Client
from client.errors import NotFoundError
from client.models import FileObject
from tasks import report, runtime
from tasks.errors import UploadIntegrityError
from tasks.progress import ProgressUpdate, publish
from tasks.retry_policy import api_task_options
from tasks.state import JsonIndex, key_lock, scoped_key, sha256_file, uploads_index

# The server's file list can be long; matching is a fallback, so bound the scan.
_MAX_LISTED = 10_000


@dataclass(frozen=True)
class UploadedFile:
    """Outcome of the upload stage for one file."""

    file_id: str
    filename: str
    sha256: str
    bytes: int
    reused: bool
    how: str  # "index" | "server-list" | "uploaded"
    # True: the server's sha256 equals the local one; None: the server reports no hash (name + size only).
    sha256_verified: bool | None = None


def upload_name(path: Path, sha256: str) -> str:
    """Content-addressed upload name: the same bytes always get the same server-side filename."""
    return f"{path.stem}-{sha256[:12]}.jsonl"


def _usable(obj: FileObject, sha256: str) -> bool:
    same_bytes = obj.sha256 is None or obj.sha256.lower() == sha256
    return obj.status != "error" and (obj.purpose in (None, "fine-tune")) and same_bytes


def _from_index(client: MKA1Client, file_id: str, size: int, sha256: str) -> FileObject | None:
    try:
        obj = client.files.retrieve(file_id)
    except NotFoundError:
        return None
    return obj if _usable(obj, sha256) and obj.bytes in (None, size) else None


def _from_server_list(client: MKA1Client, name: str, size: int, sha256: str) -> FileObject | None:
    # islice stops at the bound without fetching another page.
    listed = islice(client.files.list(purpose="fine-tune"), _MAX_LISTED)
    return next((o for o in listed if o.filename == name and o.bytes == size and _usable(o, sha256)), None)


def _find_or_upload(
    client: MKA1Client, path: Path, index: JsonIndex, key: str, name: str, size: int, sha: str
) -> tuple[FileObject, str]:
    """The identical file already on the server (from the local index, else the server's list), else a new
    upload keyed by the content hash, so a server that honours Idempotency-Key never stores it twice."""
    entry = index.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("file_id"), str):
        found = _from_index(client, entry["file_id"], size, sha)
        if found is not None:
            return found, "index"
        index.delete(key)
    found = _from_server_list(client, name, size, sha)
    if found is not None:
        return found, "server-list"
    uploaded = client.files.upload(
        path, purpose="fine-tune", filename=name, idempotency_key=f"ftpipe-upload-{sha}"
    )
    return uploaded, "uploaded"


@task(name="upload-file", task_run_name="upload-{role}", **api_task_options())
def upload_file_task(
    client: MKA1Client, path: Path, *, state_dir: Path, server_id: str, role: str = "training"
) -> UploadedFile:
    """Return a file id for ``path`` on the server, uploading only when no identical file is there."""
    log = runtime.run_logger()
    path = Path(path)
    sha = sha256_file(path)
    size = path.stat().st_size
    name = upload_name(path, sha)
    index = uploads_index(state_dir)
    key = scoped_key(server_id, client.settings.on_behalf_of, sha)
    publish(ProgressUpdate("upload", f"uploading {role} file {path.name}"))

    # Take turns with identical runs on this machine; the Idempotency-Key covers other machines.
    with key_lock(state_dir, key):
        found, how = _find_or_upload(client, path, index, key, name, size, sha)
        verified = None if found.sha256 is None else found.sha256.lower() == sha
        if found.sha256 is not None and not verified:
            # Only a fresh upload gets here (reuse already skipped mismatches): the server stored other bytes.
            raise UploadIntegrityError(str(path), sha, found.sha256)
        index.put(key, {"file_id": found.id, "filename": name, "bytes": size, "source": str(path)})

    uploaded = UploadedFile(
        file_id=found.id,
        filename=name,
        sha256=sha,
        bytes=size,
        reused=how != "uploaded",
        how=how,
        sha256_verified=verified,
    )
    log.info(
        "%s file %s (%d bytes, sha256 %s): %s %s",
        role,
        path.name,
        size,
        sha[:12],
        "reused" if uploaded.reused else "uploaded as",
        found.id,
    )
    runtime.markdown(
        report.upload_markdown(role, path, uploaded),
        key=runtime.artifact_key("upload", role),
        description=f"{role} file upload",
    )
    return uploaded
