"""Constant-size-per-example record of example hashes, for duplicate and train/validation overlap checks."""

from __future__ import annotations

from array import array

import numpy as np


class HashLog:
    """Stores a 64-bit hash and the line number of each example (16 bytes each, never the text)."""

    __slots__ = ("hashes", "lines")

    def __init__(self) -> None:
        self.hashes = array("q")
        self.lines = array("q")

    def add(self, digest: int, line: int) -> None:
        """Record one example."""
        self.hashes.append(digest)
        self.lines.append(line)

    def __len__(self) -> int:
        return len(self.hashes)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.frombuffer(self.hashes, dtype=np.int64), np.frombuffer(self.lines, dtype=np.int64)

    def duplicates(self) -> list[tuple[int, int]]:
        """(line, line of first occurrence) for every repeated example, in line order."""
        if len(self.hashes) < 2:
            return []
        h, lines = self._arrays()
        sh = np.sort(h)  # an unstable sort is ~10x cheaper than the argsort below; most files have no repeats
        if not (sh[1:] == sh[:-1]).any():
            return []
        order = np.argsort(h, kind="stable")  # stable: the first occurrence leads each group
        sh = h[order]
        same = np.flatnonzero(sh[1:] == sh[:-1]) + 1
        if same.size == 0:
            return []
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
