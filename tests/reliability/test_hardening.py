"""Backend hardening: path-escaping upload names, size limits, tenancy gaps, odd ids never give a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings

pytestmark = pytest.mark.integration
UPLOAD_LIMIT = 16 * 1024
BODY_LIMIT = 8 * 1024
LINE = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
ODD_IDS = [
    "x" * 5000,
    "ünïcødé-☃-🙂",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..",
    "...",
    "%00",
    "file-abc%00def",
    "' OR '1'='1",
    "ftjob_" + "0" * 32,
    " ",
    "%20",
    "a%2Fb",
    "%ff%fe",
    "{id}",
    "-1",
]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """A backend with small upload and JSON body limits."""
    settings = BackendSettings(
        data_dir=tmp_path_factory.mktemp("hardening-backend"),
        max_upload_bytes=UPLOAD_LIMIT,
        max_request_body_bytes=BODY_LIMIT,
    )
    with start_backend(settings, port=0) as rb:
        yield rb


def _http(rb: RunningBackend, owner: str = "alice") -> httpx.Client:
    headers = {"Authorization": f"Bearer {rb.api_key.get_secret_value()}", "X-On-Behalf-Of": owner}
    return httpx.Client(base_url=rb.base_url, headers=headers, timeout=60)


def _raw_upload(c: httpx.Client, filename: bytes, content: bytes) -> httpx.Response:
    """A hand-built multipart body, so the filename bytes reach the server unmodified."""
    boundary = b"ftpipeBOUNDARY"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\n"
    )
    return c.post(
        "/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=ftpipeBOUNDARY"}
    )


@pytest.mark.parametrize(
    "filename",
    [
        b"../../etc/passwd",
        b"/etc/passwd",
        b"..\\..\\windows\\win.ini",
        b"evil\x00.jsonl",
        b"..",
        b"a/../../b",
    ],
)
def test_upload_names_cannot_escape_data_dir(backend: RunningBackend, filename: bytes) -> None:
    before = {p for p in backend.data_dir.parent.rglob("*")}
    with _http(backend) as c:
        r = _raw_upload(c, filename, (LINE + "\n").encode())
        assert r.status_code == 200, r.text
        obj = r.json()
        assert "/" not in obj["filename"] and "\\" not in obj["filename"] and "\x00" not in obj["filename"]
        assert obj["filename"] not in ("", ".", "..")
        assert c.get(f"/files/{obj['id']}/content").content == (LINE + "\n").encode()
    created = {p for p in backend.data_dir.parent.rglob("*")} - before
    assert all(p.is_relative_to(backend.data_dir) for p in created), created
    assert [p for p in created if p.is_file() and p.parent == backend.data_dir / "files"] != []


def test_size_limits(backend: RunningBackend) -> None:
    with _http(backend) as c:
        big = ((LINE + "\n") * (UPLOAD_LIMIT // len(LINE) + 2)).encode()
        r = _raw_upload(c, b"big.jsonl", big)
        assert r.status_code == 413 and r.json()["error"]["param"] == "file", r.text
        r = c.post(
            "/fine_tuning/jobs",
            json={"model": "local:micro-chat", "training_file": "f", "x": "y" * BODY_LIMIT},
        )
        assert r.status_code == 413, r.text
        r = c.post("/responses", json={"model": "local:micro-chat", "input": "z" * (2 * BODY_LIMIT)})
        assert r.status_code == 413, r.text
        assert list((backend.data_dir / "tmp").iterdir()) == []  # no half-written upload left behind


def test_tenancy_gaps(backend: RunningBackend) -> None:
    """Cursors, previous_response_id and deletes across owners (read/list/pause/cancel are in tests/backend)."""
    with _http(backend, "alice") as a, _http(backend, "bob") as b:
        a_file = _raw_upload(a, b"a.jsonl", ((LINE + "\n") * 12).encode()).json()
        resp = a.post("/responses", json={"model": "local:micro-chat", "input": "hi", "max_output_tokens": 4})
        assert resp.status_code == 200, resp.text
        r = b.post(
            "/responses",
            json={"model": "local:micro-chat", "input": "hi", "previous_response_id": resp.json()["id"]},
        )
        assert r.status_code == 404 and r.json()["error"]["param"] == "previous_response_id"
        r = b.get("/files", params={"after": a_file["id"]})
        assert r.status_code == 400 and a_file["id"] not in r.text.replace(f"'{a_file['id']}'", "")
        assert b.delete(f"/files/{a_file['id']}").status_code == 404
        assert a.get(f"/files/{a_file['id']}").status_code == 200
        job = a.post(
            "/fine_tuning/jobs",
            json={"model": "local:micro-chat", "training_file": a_file["id"], "metadata": {"k": "v"}},
        ).json()
        assert b.get("/fine_tuning/jobs", params={"metadata[k]": "v"}).json()["data"] == []
        assert b.get("/fine_tuning/jobs", params={"after": job["id"]}).status_code == 400
        for action in ("pause", "resume", "cancel"):
            assert b.post(f"/fine_tuning/jobs/{job['id']}/{action}").status_code == 404
        assert a.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] != "cancelled"
        a.post(f"/fine_tuning/jobs/{job['id']}/cancel")


def _routes(odd: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", f"/files/{odd}", {}),
        ("DELETE", f"/files/{odd}", {}),
        ("GET", f"/files/{odd}/content", {}),
        ("GET", "/files", {"params": {"after": odd}}),
        ("GET", "/files", {"params": {"purpose": odd, "order": odd}}),
        ("GET", f"/fine_tuning/jobs/{odd}", {}),
        ("GET", f"/fine_tuning/jobs/{odd}/events", {"params": {"after": odd}}),
        ("GET", f"/fine_tuning/jobs/{odd}/checkpoints", {"params": {"after": odd}}),
        ("POST", f"/fine_tuning/jobs/{odd}/pause", {}),
        ("POST", f"/fine_tuning/jobs/{odd}/resume", {}),
        ("POST", f"/fine_tuning/jobs/{odd}/cancel", {}),
        ("GET", "/fine_tuning/jobs", {"params": {"after": odd, f"metadata[{odd}]": odd}}),
        ("POST", "/fine_tuning/jobs", {"json": {"model": "local:micro-chat", "training_file": odd}}),
        ("POST", "/fine_tuning/jobs", {"json": {"model": odd, "training_file": odd, "validation_file": odd}}),
        ("POST", "/responses", {"json": {"model": odd, "input": "hi"}}),
        (
            "POST",
            "/responses",
            {"json": {"model": "local:micro-chat", "input": "hi", "previous_response_id": odd}},
        ),
    ]


def test_odd_ids_never_500(backend: RunningBackend) -> None:
    """Every route with every odd id: a contract error (400/404/405/413/414), never a 500 or a hang."""
    seen: dict[int, int] = {}
    with _http(backend) as c:
        for odd in ODD_IDS:
            for method, path, kw in _routes(odd):
                r = c.request(method, path, **kw)
                seen[r.status_code] = seen.get(r.status_code, 0) + 1
                assert r.status_code in {400, 404, 405, 413, 414, 422}, (
                    method,
                    path[:80],
                    r.status_code,
                    r.text[:300],
                )
                if r.headers.get("content-type", "").startswith("application/json"):
                    assert set(r.json()["error"]) >= {"message", "type", "param", "code"}
    assert sum(seen.values()) == len(ODD_IDS) * len(_routes("x"))
