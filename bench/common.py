"""Shared result rows of the bench scripts: each script's ``--json PATH`` writes a list of them."""

from __future__ import annotations

import argparse
import json
import math
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import psutil

Direction = Literal[">=", "<=", "info"]


@dataclass(frozen=True)
class Row:
    """One headline figure: ours next to its baseline, the ratio ours/baseline and the target it must meet.

    ``target`` reads like ">= 0.50" or "<= 1.10" (applied to ``ratio``, or to ``ours`` when there is no
    baseline); ``passed`` is None for figures reported for information only.
    """

    benchmark: str
    metric: str
    ours: float | None
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None
    unit: str = ""
    note: str = ""

    def to_json(self) -> dict[str, object]:
        """The row as written to ``--json`` (the key ``pass`` is a keyword in Python, hence ``passed``)."""
        d = asdict(self)
        d["pass"] = d.pop("passed")
        return d


def row(
    benchmark: str,
    metric: str,
    ours: float | None,
    baseline: float | None = None,
    *,
    direction: Direction = "info",
    limit: float | None = None,
    unit: str = "",
    note: str = "",
) -> Row:
    """Build a row; with a ``direction`` and ``limit`` the target is checked on the ratio (or on ``ours``)."""
    ratio = ours / baseline if ours is not None and baseline else None
    value = ratio if baseline is not None else ours
    passed: bool | None = None
    target = ""
    if direction != "info" and limit is not None:
        target = f"{direction} {limit:g}"
        if value is None or math.isnan(value):
            passed = False
        else:
            passed = value >= limit if direction == ">=" else value <= limit
    return Row(benchmark, metric, ours, baseline, ratio, target, passed, unit, note)


def failed_row(benchmark: str, reason: str) -> Row:
    """A row standing for a benchmark that did not produce results."""
    return Row(benchmark, "run", None, target="completes", passed=False, note=reason[-300:])


def add_common_args(parser: argparse.ArgumentParser, *, quick: bool = True) -> None:
    """``--json PATH`` (and ``--quick`` where the script has a smaller variant)."""
    parser.add_argument("--json", type=Path, default=None, help="write the headline rows as JSON here")
    if quick:
        parser.add_argument("--quick", action="store_true", help="a smaller, faster run")


def write_rows(path: Path | None, rows: list[Row]) -> None:
    """Write ``rows`` to ``path`` (no-op when None)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")


def read_rows(path: Path) -> list[Row]:
    """Rows written by ``write_rows``."""
    out = []
    for d in json.loads(path.read_text()):
        d = dict(d)
        d["passed"] = d.pop("pass", None)
        out.append(Row(**d))
    return out


class RssSampler:
    """Background sampler of peak RSS (bytes): this process, and optionally a process tree (a server).

    ``peak`` includes the RSS at construction and at exit, so a short run still has a true peak.
    """

    def __init__(self, interval_s: float = 0.1, tree_root: int | None = None) -> None:
        self._me = psutil.Process()
        self._root = psutil.Process(tree_root) if tree_root else None
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = self._me.memory_info().rss
        self.tree_peak = self.tree_procs_peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> tuple[int, int]:
        if self._root is None:
            return 0, 0
        total, n = 0, 0
        for p in [self._root, *self._root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
                n += 1
            except psutil.Error:
                continue  # exited between listing and reading
        return total, n

    def _sample(self) -> None:
        self.peak = max(self.peak, self._me.memory_info().rss)
        rss, n = self._tree_rss()
        self.tree_peak = max(self.tree_peak, rss)
        self.tree_procs_peak = max(self.tree_procs_peak, n)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
