"""Constant-size-per-example record of example hashes, for duplicate and train/validation overlap checks."""

from __future__ import annotations

from array import array

import numpy as np


class HashLog:
    """Stores a 64-bit hash per example (8 bytes each, never the text) and recovers their line numbers.

    The validator's hot loop only appends hashes: line numbers are implied. Every line that leaves that
    loop's fast lane is noted in ``slow`` (its line number; repeats are fine), and of those, the ones that
    still got a hash are noted in ``slow_hashed``. The hashed lines are then: all lines up to ``total_lines``
    except the slow ones, plus the slow ones that were hashed, in order.
    """

    __slots__ = ("hashes", "slow", "slow_hashed", "total_lines")

    def __init__(self) -> None:
        self.hashes = array("q")
        self.slow = array("q")
        self.slow_hashed = array("q")
        self.total_lines = 0

    def __len__(self) -> int:
        return len(self.hashes)

    def line_numbers(self) -> np.ndarray:
        """The line number of each recorded hash, in recording order."""
        skipped = np.unique(np.frombuffer(self.slow, dtype=np.int64))
        fast = np.setdiff1d(np.arange(1, self.total_lines + 1, dtype=np.int64), skipped, assume_unique=True)
        lines = np.union1d(fast, np.frombuffer(self.slow_hashed, dtype=np.int64))
        if lines.size != len(self.hashes):  # a bookkeeping bug: never report wrong line numbers silently
            raise AssertionError(f"hash log: {len(self.hashes)} hashes but {lines.size} hashed lines")
        return lines

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.frombuffer(self.hashes, dtype=np.int64), self.line_numbers()

    def duplicates(self) -> list[tuple[int, int]]:
        """(line, line of first occurrence) for every repeated example, in line order."""
        if len(self.hashes) < 2:
            return []
        h = np.frombuffer(self.hashes, dtype=np.int64)
        sh = np.sort(h)  # an unstable sort is ~10x cheaper than the argsort below; most files have no repeats
        if not (sh[1:] == sh[:-1]).any():
            return []
        lines = self.line_numbers()
        order = np.argsort(h, kind="stable")  # stable: the first occurrence leads each group
        sh = h[order]
        same = np.flatnonzero(sh[1:] == sh[:-1]) + 1
        # Index of each group's first element: the last position (at or before i) that starts a group.
        starts = np.ones(sh.size, dtype=bool)
        starts[same] = False
        group_first = np.maximum.accumulate(np.where(starts, np.arange(sh.size), 0))
        pairs = sorted((int(lines[order[i]]), int(lines[order[group_first[i]]])) for i in same)
        return pairs

    def overlap(self, other: HashLog) -> list[tuple[int, int]]:
        """(line here, line in ``other``) for examples present in both logs (first occurrences)."""
        if not self.hashes or not other.hashes:
            return []
        h1, l1 = self._arrays()
        h2, l2 = other._arrays()
        _, i1, i2 = np.intersect1d(h1, h2, assume_unique=False, return_indices=True)
        return sorted(zip((int(x) for x in l1[i1]), (int(x) for x in l2[i2]), strict=True))
