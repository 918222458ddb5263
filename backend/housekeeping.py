"""Start-up clean-up of what a killed server leaves behind under data_dir."""

from __future__ import annotations

import logging
from pathlib import Path

from backend.db import Database
from backend.layout import Layout

log = logging.getLogger(__name__)


def remove_leftovers(layout: Layout, db: Database) -> list[Path]:
    """Delete in-flight temp files (e.g. an upload's ``.part`` after kill -9) and stored files no row
    refers to (a crash between the rename into files/ and the INSERT). Runs before any worker or request,
    so nothing under tmp/ can still be in use. Returns what was removed."""
    removed = [p for p in layout.tmp.iterdir() if p.is_file()]
    known = {Path(row["path"]).name for row in db.all("SELECT path FROM files")}
    removed += [p for p in layout.files.iterdir() if p.is_file() and p.name not in known]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info(
            "removed %d leftover file(s) from an interrupted run: %s", len(removed), [p.name for p in removed]
        )
    return removed
