"""Benchmark: peak RSS growth while uploading a large file with the MKA1 client.

Creates a sparse file (default 1 GiB) in a temp dir, uploads it through ``MKA1Client`` (and
``AsyncMKA1Client``) to an in-process HTTP sink that reads and discards the body in chunks, and samples this
process's RSS in a background thread. A streamed upload keeps RSS flat; reading the file whole would grow it
by the file size.

    python bench/upload_memory.py [--size-mb 1024] [--client sync|async|both] [--control] [--json PATH]

``--control`` adds a row that uploads the file read whole (slow: use e.g. ``--size-mb 256``), proving the
probe does see a buffered upload.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
from common import Row, RssSampler, add_common_args, row, write_rows
from pydantic import SecretStr

from client import AsyncMKA1Client, ClientSettings, MKA1Client

TARGET_MB = 50.0
_SINK_CHUNK = 1 << 20


class SinkHandler(BaseHTTPRequestHandler):
    """Reads the request body in 1 MiB chunks, discards it, answers with a file object."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        length = int(self.headers.get("Content-Length", "-1"))
        if length < 0:
            self.send_error(411, "Content-Length required")
            return
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(_SINK_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
        body = json.dumps(
            {
                "id": "file-bench",
                "object": "file",
                "bytes": length - remaining,
                "created_at": int(time.time()),
                "filename": "bench.bin",
                "purpose": "fine-tune",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@dataclass
class Result:
    """One measured upload."""

    client: str
    size_mb: float
    seconds: float
    peak_growth_mb: float
    maxrss_growth_mb: float
    bytes_received: int


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def measure(name: str, upload: Callable[[], int], size_bytes: int) -> Result:
    """Run ``upload`` once and report its peak RSS growth over the pre-upload baseline."""
    gc.collect()
    baseline = psutil.Process().memory_info().rss
    maxrss_before = _maxrss_mb()  # lifetime max: only growth beyond the earlier max shows up here
    start = time.perf_counter()
    with RssSampler(0.005) as sampler:
        received = upload()
    seconds = time.perf_counter() - start
    return Result(
        client=name,
        size_mb=size_bytes / 2**20,
        seconds=seconds,
        peak_growth_mb=(sampler.peak - baseline) / 2**20,
        maxrss_growth_mb=_maxrss_mb() - maxrss_before,
        bytes_received=received,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table; exit status 1 if any run misses the target."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="upload size in MiB (default 1024)")
    parser.add_argument("--client", choices=["sync", "async", "both"], default="both")
    parser.add_argument(
        "--control",
        action="store_true",
        help="also upload a body read whole into memory (not the client's path), to show the probe sees it",
    )
    # The target is defined on 1 GiB and the upload is fast, so there is no smaller --quick variant.
    add_common_args(parser, quick=False)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # same run; accepted
    args = parser.parse_args(argv)

    server = ThreadingHTTPServer(("127.0.0.1", 0), SinkHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = ClientSettings(
        base_url=f"http://127.0.0.1:{server.server_address[1]}/api/v1/llm",
        api_key=SecretStr("sk-bench"),
        upload_timeout_s=600,
    )
    size = args.size_mb * 2**20
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-") as tmp:
        big = Path(tmp) / "big.bin"
        with big.open("wb") as fh:
            fh.truncate(size)  # sparse: no disk space used, reads return zeros
        small = Path(tmp) / "small.jsonl"
        small.write_bytes(b"{}\n" * 1000)

        if args.client in ("sync", "both"):
            with MKA1Client(settings) as c:
                c.files.upload(small)  # warm-up: imports, connection pool, buffers
                results.append(measure("sync", lambda: c.files.upload(big).bytes or 0, size))

        if args.client in ("async", "both"):
            asyncio.run(_upload_async(settings, small))  # warm-up
            results.append(measure("async", lambda: asyncio.run(_upload_async(settings, big)), size))
        if args.control:
            results.append(measure("control", lambda: _upload_buffered(settings, big), size))
    server.shutdown()
    server.server_close()

    print(
        f"{'client':<7} {'size MB':>8} {'time s':>7} {'MB/s':>8} {'peak RSS +MB':>13} {'maxrss +MB':>11} "
        f"{'target':>7}  result"
    )
    ok = True
    rows: list[Row] = []
    for r in results:
        passed = r.peak_growth_mb < TARGET_MB and r.bytes_received >= size
        if r.client != "control":  # the control is expected to fail; it only validates the measurement
            ok &= passed
        print(
            f"{r.client:<7} {r.size_mb:>8.0f} {r.seconds:>7.2f} {r.size_mb / r.seconds:>8.1f} "
            f"{r.peak_growth_mb:>13.1f} {r.maxrss_growth_mb:>11.1f} {'<' + str(int(TARGET_MB)):>7}  "
            f"{'PASS' if passed else 'FAIL'}"
        )
        check = r.client != "control" and r.bytes_received >= size
        rows.append(
            row(
                "upload",
                f"peak RSS growth MiB, {r.size_mb:.0f} MiB file, {r.client} client",
                r.peak_growth_mb,
                direction="<=" if check else "info",
                limit=TARGET_MB,
                unit="MiB",
                note=f"{r.size_mb / r.seconds:.0f} MiB/s"
                + ("" if r.bytes_received >= size else f"; server got only {r.bytes_received} bytes"),
            )
        )
        if r.client != "control" and r.bytes_received < size:
            rows.append(
                row("upload", f"bytes received ({r.client})", r.bytes_received, size, direction=">=", limit=1)
            )
    write_rows(args.json, rows)
    return 0 if ok else 1


async def _upload_async(settings: ClientSettings, path: Path) -> int:
    async with AsyncMKA1Client(settings) as c:
        return (await c.files.upload(path)).bytes or 0


def _upload_buffered(settings: ClientSettings, path: Path) -> int:
    """Negative control: the whole file as bytes in a multipart body (what streaming avoids)."""
    data = path.read_bytes()
    with httpx.Client(base_url=settings.base_url + "/", timeout=settings.upload_timeout_s) as c:
        resp = c.post("files", data={"purpose": "fine-tune"}, files={"file": (path.name, data)})
        resp.raise_for_status()
    size = len(data)
    del data
    return size if resp.json().get("bytes", 0) >= size else 0


if __name__ == "__main__":
    sys.exit(main())
