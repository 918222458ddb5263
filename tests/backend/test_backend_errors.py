"""Contract errors: auth, routing, uploads, request bodies, unknown ids, illegal transitions, failed validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_testkit import SMALL_UPLOAD_LIMIT, TERMINAL, Api, write_chat_jsonl

from backend.launcher import RunningBackend

pytestmark = pytest.mark.integration


def assert_error(
    r: httpx.Response, status: int, param: str | None = "<any>", code: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param != "<any>":
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def test_auth_required(backend: RunningBackend) -> None:
    with httpx.Client(base_url=backend.base_url) as c:
        assert_error(c.get("/files"), 401, code="missing_api_key")
        assert_error(c.get("/files", headers={"Authorization": "Bearer nope"}), 401, code="invalid_api_key")
        assert_error(c.get("/files", headers={"Authorization": "Basic abc"}), 401)
        assert c.get("/health").status_code == 200  # the only open route


def test_unknown_route_and_method(api: Api) -> None:
    with api.client() as c:
        assert_error(c.get("/nope"), 404, code="not_found")
        assert_error(c.put("/files"), 405)
        assert_error(c.get("/files/../../etc/passwd"), 404)
        assert_error(c.get("/files/file-%00%ff"), 404, code="file_not_found")
        assert_error(c.get("/fine_tuning/jobs/" + "x" * 5000), 404)
        assert_error(c.get("/fine_tuning/jobs/ftjob_unknown/events"), 404)
        assert_error(c.get("/files", params={"limit": 0}), 400, param="limit")
        assert_error(c.get("/files", params={"order": "sideways"}), 400, param="order")
        assert_error(c.get("/files", params={"after": "file-doesnotexist"}), 400, param="after")


def test_openai_prefix_alias(backend: RunningBackend) -> None:
    root = backend.base_url.removesuffix("/api/v1/llm")
    with httpx.Client(
        base_url=root + "/v1", headers={"Authorization": f"Bearer {backend.api_key.get_secret_value()}"}
    ) as c:
        assert c.get("/files").json()["object"] == "list"


def test_upload_errors(api: Api, backend: RunningBackend, tmp_path: Path) -> None:
    good = write_chat_jsonl(tmp_path / "ok.jsonl").read_bytes()
    with api.client() as c:
        assert_error(
            c.post("/files", files={"file": ("a.jsonl", good)}, data={"purpose": "nonsense"}),
            400,
            param="purpose",
        )
        assert_error(c.post("/files", files={"file": ("a.jsonl", good)}), 400, param="purpose")
        assert_error(
            c.post("/files", data={"purpose": "fine-tune"}, files={"other": ("x", b"1")}), 400, param="file"
        )
        assert_error(c.post("/files", json={"purpose": "fine-tune"}), 400, param="file")
        err = assert_error(
            c.post(
                "/files", files={"file": ("a.jsonl", good + b"{not json}\n")}, data={"purpose": "fine-tune"}
            ),
            400,
            param="file",
        )
        assert "line 17" in err["message"]
        err = assert_error(
            c.post(
                "/files", files={"file": ("a.jsonl", b'{"a": 1}\n[1, 2]\n')}, data={"purpose": "fine-tune"}
            ),
            400,
            param="file",
        )
        assert "line 2" in err["message"]
        assert_error(
            c.post(
                "/files", files={"file": ("a.jsonl", b'{"a": "\xff\xfe"}\n')}, data={"purpose": "fine-tune"}
            ),
            400,
            param="file",
        )
        # truncated multipart body
        body = b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc'
        assert_error(
            c.post("/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=XYZ"}), 400
        )
        # non-JSONL content is fine for other purposes; the filename is sanitised
        raw = (
            b'--XYZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
            b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="../../evil\x01name.bin"\r\n\r\n'
            b"\x00\x01binary\r\n--XYZ--\r\n"
        )
        r = c.post("/files", content=raw, headers={"Content-Type": "multipart/form-data; boundary=XYZ"})
        assert r.status_code == 200, r.text
        assert r.json()["filename"] == "evilname.bin"
    assert not list((backend.data_dir / "tmp").iterdir())


def test_oversize_upload_413_leaves_nothing(api: Api, backend: RunningBackend) -> None:
    files_dir = backend.data_dir / "files"
    before = set(files_dir.iterdir())
    with api.client() as c:
        n_before = len(c.get("/files").json()["data"])
        line = (
            json.dumps(
                {"messages": [{"role": "user", "content": "x" * 200}, {"role": "assistant", "content": "y"}]}
            )
            + "\n"
        )
        big = (line * (SMALL_UPLOAD_LIMIT // len(line) + 10)).encode()
        assert_error(
            c.post("/files", files={"file": ("big.jsonl", big)}, data={"purpose": "fine-tune"}),
            413,
            code="file_too_large",
        )
        assert len(c.get("/files").json()["data"]) == n_before
    assert not list((backend.data_dir / "tmp").iterdir())
    assert set(files_dir.iterdir()) == before


def test_json_body_errors(api: Api, train_file: Path) -> None:
    file_id = api.upload(train_file)["id"]
    ok: dict[str, Any] = {"model": "local:micro-chat", "training_file": file_id}
    with api.client() as c:
        post = lambda body: c.post("/fine_tuning/jobs", json=body)  # noqa: E731
        assert_error(
            c.post("/fine_tuning/jobs", content=b"{nope", headers={"Content-Type": "application/json"}), 400
        )
        assert_error(c.post("/fine_tuning/jobs", json=[1, 2]), 400)
        assert_error(post({"training_file": file_id}), 400, param="model")
        assert_error(post({**ok, "suffix": "s" * 65}), 400, param="suffix")
        assert_error(post({**ok, "metadata": {f"k{i}": "v" for i in range(17)}}), 400, param="metadata")
        assert_error(post({**ok, "metadata": {"k": "v" * 513}}), 400, param="metadata")
        assert_error(post({**ok, "unknown_field": 1}), 400, param="unknown_field")
        bad_hp = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "lots"}}}
        assert_error(post({**ok, "method": bad_hp}), 400, param="method.supervised.hyperparameters.n_epochs")
        assert_error(post({**ok, "method": {"type": "rlhf"}}), 400, param="method.type")
        assert_error(
            post({**ok, "hyperparameters": {"batch_size": 0}}), 400, param="hyperparameters.batch_size"
        )
        beta_hp = {"hyperparameters": {"beta": 0.5}}
        assert_error(
            post({**ok, "method": {"type": "supervised", "supervised": beta_hp}}),
            400,
            param="method.supervised.hyperparameters.beta",
        )
        # The deprecated top-level form is named as such, not as the method form it was not sent in.
        assert_error(post({**ok, **beta_hp}), 400, param="hyperparameters.beta")
        assert_error(post({**ok, "model": "gpt-17"}), 404, param="model", code="model_not_found")
        # No local model roots are configured on this server: every local:/path is refused, saying how.
        err = assert_error(
            post({**ok, "model": "local:/definitely/not/here"}),
            400,
            param="model",
            code="model_path_not_allowed",
        )
        assert "FTPIPE_BACKEND_LOCAL_MODEL_ROOTS" in err["message"]
        assert_error(post({**ok, "training_file": "file-000"}), 404, param="training_file")
        assert_error(post({**ok, "validation_file": "file-000"}), 404, param="validation_file")
        other = c.post("/files", files={"file": ("n.txt", b"hello")}, data={"purpose": "user_data"}).json()[
            "id"
        ]
        assert_error(post({**ok, "training_file": other}), 400, param="training_file")
        assert_error(c.post("/fine_tuning/jobs", json={**ok, "suffix": "x" * 40_000}), 413)
        assert_error(c.post("/responses", json={"model": "ft:nope", "input": "hi"}), 404, param="model")
        assert_error(
            c.post("/responses", json={"model": "local:micro-chat", "input": "hi", "temperature": 5}),
            400,
            param="temperature",
        )
        assert_error(
            c.post(
                "/responses",
                json={"model": "local:micro-chat", "input": "hi", "previous_response_id": "resp_x"},
            ),
            404,
            param="previous_response_id",
        )


def test_illegal_transitions_409(api: Api, train_file: Path, trained_job: dict[str, Any]) -> None:
    with api.client() as c:
        for action in ("pause", "resume", "cancel"):
            assert_error(c.post(f"/fine_tuning/jobs/{trained_job['id']}/{action}"), 409, code="invalid_state")
        assert_error(c.post("/fine_tuning/jobs/ftjob_missing/cancel"), 404)
    job = api.create_job(api.upload(train_file)["id"], n_epochs=40, batch_size=1)
    with api.client() as c:
        # validating_files / queued: pause and resume are illegal, cancel is fine
        if api.job(job["id"])["status"] in {"validating_files", "queued"}:
            assert_error(c.post(f"/fine_tuning/jobs/{job['id']}/resume"), 409)
        r = c.post(f"/fine_tuning/jobs/{job['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert_error(c.post(f"/fine_tuning/jobs/{job['id']}/resume"), 409)


def test_invalid_training_data_fails_job(api: Api, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = [{"messages": [{"role": "user", "content": "hi"}]}] * 12  # no assistant message anywhere
    bad.write_text("".join(json.dumps(x) + "\n" for x in lines))
    job = api.create_job(api.upload(bad)["id"])
    done = api.wait_status(job["id"], TERMINAL)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "invalid_training_file" and done["error"]["param"] == "training_file"
    assert "line 1" in done["error"]["message"]
    few = write_chat_jsonl(tmp_path / "few.jsonl", n=3)
    done = api.wait_status(api.create_job(api.upload(few)["id"])["id"], TERMINAL)
    assert done["status"] == "failed" and done["error"]["code"] == "invalid_training_file"


def test_failed_validation_counts_every_error(api: Api, tmp_path: Path) -> None:
    # 60 bad lines: the validator keeps 50 issues but the job error must count all 60.
    bad = tmp_path / "many-bad.jsonl"
    bad.write_text((json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n") * 60)
    done = api.wait_status(api.create_job(api.upload(bad)["id"])["id"], TERMINAL)
    assert done["status"] == "failed" and done["error"]["code"] == "invalid_training_file"
    assert "has 60 error(s)" in done["error"]["message"]
    assert done["error"]["message"].endswith("; ... and 55 more")


def test_files_list_order_and_cursor(api: Api, tmp_path: Path) -> None:
    owner_api = Api(api.rb, owner="lister")
    ids = [owner_api.upload(write_chat_jsonl(tmp_path / f"f{i}.jsonl", n=10 + i))["id"] for i in range(3)]
    with owner_api.client() as c:
        asc = c.get("/files", params={"order": "asc"}).json()
        assert (
            [f["id"] for f in asc["data"]] == ids and asc["first_id"] == ids[0] and asc["last_id"] == ids[-1]
        )
        desc = c.get("/files", params={"limit": 2}).json()
        assert [f["id"] for f in desc["data"]] == ids[::-1][:2] and desc["has_more"]
        rest = c.get("/files", params={"limit": 2, "after": desc["last_id"]}).json()
        assert [f["id"] for f in rest["data"]] == [ids[0]] and not rest["has_more"]
        assert c.get("/files", params={"purpose": "batch"}).json()["data"] == []
        deleted = c.delete(f"/files/{ids[0]}").json()
        assert deleted == {"id": ids[0], "object": "file", "deleted": True}
        assert_error(c.get(f"/files/{ids[0]}"), 404)
        assert_error(c.get(f"/files/{ids[0]}/content"), 404)
        assert_error(c.delete(f"/files/{ids[0]}"), 404)
