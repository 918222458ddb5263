"""Run the fine-tune flow in a child process (e2e tests kill or interrupt it mid-poll)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flows.fine_tune import fine_tune

if __name__ == "__main__":
    # The file holds FineTuneParams.flow_arguments(json=True): the flow's own top-level parameters.
    fine_tune(**json.loads(Path(sys.argv[1]).read_text()))
