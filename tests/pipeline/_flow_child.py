"""Run the fine-tune flow in a child process (e2e tests kill or interrupt it mid-poll)."""

from __future__ import annotations

import sys
from pathlib import Path

from flows.fine_tune import fine_tune
from flows.params import FineTuneParams

if __name__ == "__main__":
    fine_tune(FineTuneParams.model_validate_json(Path(sys.argv[1]).read_text()))
