"""A command run from the process's own command line skips the interpreter's last collection at exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support" / "validation.jsonl"
CODE = """
import contextlib, gc, io, sys
from cli.main import main
sys.argv = ["ftpipe", "validate", {sample!r}]
with contextlib.redirect_stdout(io.StringIO()):
    given = main(["validate", {sample!r}])
    after_given = gc.get_freeze_count()
    own = main()
print(given, after_given, own, gc.get_freeze_count() > 0)
"""


def test_only_the_process_own_command_freezes_the_heap_before_exit() -> None:
    code = CODE.format(sample=str(SAMPLE))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    # A caller passing argv (tests, scripts) goes on collecting; the command line's own run is about to exit.
    assert proc.stdout.split() == ["0", "0", "0", "True"]
