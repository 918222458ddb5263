"""An in-memory MKA1 fake behind ``httpx.MockTransport``: files, jobs (scripted timelines), events,
checkpoints and responses, with one-shot error injection. Enough to drive every stage without a server."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from client import ClientSettings, MKA1Client
from flows.backend_runtime import Connection

BASE_URL = "http://fake.test/api/v1/llm"
SERVER_ID = "fake"
SIX_METRICS = (
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def trained_reply(model: str, prompt: Any) -> str:
    """A base model knows nothing; fine-tuned and checkpoint models ("ft:...") answer like the test data."""
    text = prompt if isinstance(prompt, str) else str(prompt[-1]["content"])
    if not model.startswith("ft:"):
        return "I do not know."
    item = re.search(r"item number (\d+)", text)
    return f"Item {item.group(1)} is blue." if item else f"answer from {model}: {text}"


@dataclass
class Injected:
    """A canned failure for the next matching request(s)."""

    method: str
    path_re: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    count: int = 1
    exc: BaseException | None = None


@dataclass
class FakeMKA1:
    """State + request handler. ``timeline`` is the statuses a job walks through, one per retrieve."""

    timeline: list[str] = field(default_factory=lambda: ["queued", "running", "running", "succeeded"])
    metadata_filter: str = "honour"  # honour | ignore | empty (a server that mis-parses the filter)
    total_steps: int = 4
    error: dict[str, str] | None = None
    reply: Callable[[str, Any], str] = field(default=lambda model, prompt: trained_reply(model, prompt))
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    checkpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    # The Idempotency-Key of every POST, in order (None: sent without one). This fake ignores the header,
    # as a server that does not implement it would.
    post_keys: list[tuple[str, str | None]] = field(default_factory=list)
    injected: list[Injected] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1_700_000_000))
    _cursor: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ helpers for tests
    def inject(self, method: str, path_re: str, status: int = 503, **kw: Any) -> None:
        """Fail the next matching request(s) with ``status`` (or raise ``exc``)."""
        self.injected.append(Injected(method, path_re, status, **kw))

    def count(self, method: str, path_re: str) -> int:
        """How many requests matched."""
        return sum(1 for m, p in self.calls if m == method and re.fullmatch(path_re, p))

    def settings(self, **kw: Any) -> ClientSettings:
        """Client settings pointing at the fake."""
        return ClientSettings(base_url=BASE_URL, api_key="sk-fake-secret-key", **kw)

    def client(self, **kw: Any) -> MKA1Client:
        """A real client whose transport is this fake."""
        return MKA1Client(self.settings(**kw), transport=httpx.MockTransport(self.handle))

    def connection(self) -> Connection:
        """A flows.backend_runtime.Connection onto this fake."""
        return Connection(self.settings(), SERVER_ID, False, httpx.MockTransport(self.handle))

    def add_file(
        self, filename: str, size: int, purpose: str = "fine-tune", sha256: str | None = None
    ) -> str:
        """Pre-seed a file as if uploaded earlier (``sha256`` None: a server that reports no hash)."""
        fid = f"file-{next(self._ids)}"
        self.files[fid] = {
            "sha256": sha256,
            "id": fid,
            "object": "file",
            "bytes": size,
            "created_at": next(self._clock),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        return fid

    def add_job(self, status: str, metadata: dict[str, str], **extra: Any) -> str:
        """Pre-seed a job (no timeline progress: its status stays put unless non-terminal)."""
        jid = f"ftjob-{next(self._ids)}"
        self.jobs[jid] = (
            self._job_obj(jid, {"model": "m", "training_file": "f", "metadata": metadata})
            | {"status": status}
            | extra
        )
        self.events[jid] = []
        self._cursor[jid] = len(self.timeline)  # already played
        return jid

    # ------------------------------------------------------------------ HTTP
    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1/llm")
        method = request.method
        self.calls.append((method, path))
        if method == "POST":
            self.post_keys.append((path, request.headers.get("idempotency-key")))
        for inj in list(self.injected):
            if inj.method == method and re.fullmatch(inj.path_re, path):
                inj.count -= 1
                if inj.count <= 0:
                    self.injected.remove(inj)
                if inj.exc is not None:
                    raise inj.exc
                return _err(inj.status, "injected", inj.headers)
        if request.headers.get("authorization") != "Bearer sk-fake-secret-key":
            return _err(401, "bad key")
        for pattern, fn in self._routes():
            m = re.fullmatch(pattern[1], path)
            if m and pattern[0] == method:
                return fn(request, *m.groups())
        return _err(404, f"no route {method} {path}")

    def _routes(self) -> list[tuple[tuple[str, str], Callable[..., httpx.Response]]]:
        return [
            (("POST", "/files"), self._upload),
            (("GET", "/files"), self._list_files),
            (("GET", r"/files/([^/]+)"), self._get_file),
            (("POST", "/fine_tuning/jobs"), self._create_job),
            (("GET", "/fine_tuning/jobs"), self._list_jobs),
            (("GET", r"/fine_tuning/jobs/([^/]+)"), self._get_job),
            (("GET", r"/fine_tuning/jobs/([^/]+)/events"), self._list_events),
            (("GET", r"/fine_tuning/jobs/([^/]+)/checkpoints"), self._list_checkpoints),
            (("POST", r"/fine_tuning/jobs/([^/]+)/cancel"), self._cancel),
            (("POST", "/responses"), self._respond),
        ]

    def _upload(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        name = re.search(rb'name="file"; filename="([^"]+)"', body)
        part = re.search(
            rb'name="file"; filename="[^"]+"\r\nContent-Type: [^\r]+\r\n\r\n(.*?)\r\n--', body, re.S
        )
        assert name and part, "multipart upload not understood"
        content = part.group(1)
        fid = self.add_file(name.group(1).decode(), len(content), sha256=hashlib.sha256(content).hexdigest())
        return httpx.Response(200, json=self.files[fid])

    def _list_files(self, request: httpx.Request) -> httpx.Response:
        return _page(list(self.files.values()))

    def _get_file(self, request: httpx.Request, fid: str) -> httpx.Response:
        return httpx.Response(200, json=self.files[fid]) if fid in self.files else _err(404, "no such file")

    def _job_obj(self, jid: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": jid,
            "object": "fine_tuning.job",
            "created_at": next(self._clock),
            "finished_at": None,
            "model": body["model"],
            "fine_tuned_model": None,
            "status": "validating_files",
            "training_file": body["training_file"],
            "validation_file": body.get("validation_file"),
            "method": body.get("method"),
            "seed": body.get("seed"),
            "suffix": body.get("suffix"),
            "metadata": body.get("metadata"),
            "integrations": body.get("integrations"),
            "result_files": [],
            "trained_tokens": None,
            "error": None,
        }

    def _create_job(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        jid = f"ftjob-{next(self._ids)}"
        self.jobs[jid] = self._job_obj(jid, body)
        self.events[jid] = []
        self.checkpoints[jid] = []
        self._cursor[jid] = 0
        self._event(jid, "Validating training file")
        return httpx.Response(200, json=self.jobs[jid])

    def _list_jobs(self, request: httpx.Request) -> httpx.Response:
        jobs = list(self.jobs.values())[::-1]
        for k, v in request.url.params.multi_items():
            if k.startswith("metadata[") and self.metadata_filter == "honour":
                jobs = [j for j in jobs if (j.get("metadata") or {}).get(k[9:-1]) == v]
            elif k.startswith("metadata[") and self.metadata_filter == "empty":
                jobs = []
        return _page(jobs)

    def _advance(self, jid: str) -> None:
        job = self.jobs[jid]
        if job["status"] in ("succeeded", "failed", "cancelled") or self._cursor[jid] >= len(self.timeline):
            return
        status = self.timeline[self._cursor[jid]]
        self._cursor[jid] += 1
        if status != job["status"]:
            self._event(jid, f"status -> {status}")
        job["status"] = status
        if status == "running":
            step = sum(1 for e in self.events[jid] if e["type"] == "metrics") + 1
            metrics = {name: 1.0 / (step + i) for i, name in enumerate(SIX_METRICS)}
            self._event(
                jid,
                f"step {step}",
                type="metrics",
                data={"step": step, "total_steps": self.total_steps, **metrics},
            )
            self.checkpoints[jid].append(
                {
                    "id": f"ftckpt-{jid}-{step}",
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": next(self._clock),
                    "fine_tuning_job_id": jid,
                    "fine_tuned_model_checkpoint": f"ft:{jid}:ckpt-{step}",
                    "step_number": step,
                    "metrics": {"step": step, **metrics},
                }
            )
        if status == "succeeded":
            job.update(
                fine_tuned_model=f"ft:{job['model']}:{jid}",
                trained_tokens=1234,
                finished_at=next(self._clock),
            )
        if status == "failed":
            job.update(
                error=self.error or {"code": "training_error", "message": "boom"},
                finished_at=next(self._clock),
            )

    def _get_job(self, request: httpx.Request, jid: str) -> httpx.Response:
        if jid not in self.jobs:
            return _err(404, "no such job")
        self._advance(jid)
        return httpx.Response(200, json=self.jobs[jid])

    def _event(
        self, jid: str, message: str, type: str = "message", data: dict[str, Any] | None = None
    ) -> None:
        self.events[jid].append(
            {
                "id": f"ftevent-{next(self._ids)}",
                "object": "fine_tuning.job.event",
                "created_at": next(self._clock),
                "level": "info",
                "message": message,
                "type": type,
                "data": data or {},
            }
        )

    def _list_events(self, request: httpx.Request, jid: str) -> httpx.Response:
        newest_first = self.events.get(jid, [])[::-1]
        after = request.url.params.get("after")
        if after:
            idx = next(i for i, e in enumerate(newest_first) if e["id"] == after)
            newest_first = newest_first[idx + 1 :]
        limit = int(request.url.params.get("limit", 20))
        return _page(newest_first, limit)

    def _list_checkpoints(self, request: httpx.Request, jid: str) -> httpx.Response:
        return _page(self.checkpoints.get(jid, [])[::-1])

    def _cancel(self, request: httpx.Request, jid: str) -> httpx.Response:
        job = self.jobs[jid]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return _err(409, "job already finished")
        job["status"] = "cancelled"
        return httpx.Response(200, json=job)

    def _respond(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        text = self.reply(body["model"], body["input"])
        return httpx.Response(
            200,
            json={
                "id": f"resp_{next(self._ids)}",
                "object": "response",
                "status": "completed",
                "model": body["model"],
                "output_text": text,
                "output": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text}],
                    }
                ],
            },
        )


def _page(items: list[dict[str, Any]], limit: int = 10_000) -> httpx.Response:
    data = items[:limit]
    return httpx.Response(
        200,
        json={
            "object": "list",
            "data": data,
            "has_more": len(items) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        },
    )


def _err(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        headers=headers,
        json={"error": {"message": message, "type": "error", "param": None, "code": f"http_{status}"}},
    )
