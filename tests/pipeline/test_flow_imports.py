"""What the flow process imports when: nothing only the after-training stages use before the flow starts, and
nothing heavy left to import after training once ``flows.preload`` ran while the job trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flows.preload import AFTER_TRAINING

REPO = Path(__file__).resolve().parents[2]
# The libraries only the metrics and eval stages use (seconds of imports on a 2-core machine).
AFTER_TRAINING_ONLY = ("pandas", "matplotlib", "pyarrow", "rouge_score", "nltk")


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True, timeout=300
    )
    return proc.stdout.strip()


def test_the_modules_ftpipe_run_imports_to_start_the_flow_leave_the_after_training_libraries_out() -> None:
    # Those cli/run.py imports before it calls the flow.
    code = (
        "import sys\n"
        "import cli.run, cli.preflight, cli.rerun, cli.interrupt, cli.progress_display, cli.services\n"
        "import flows.fine_tune, flows.experiment, tasks.errors, tasks.record, tasks.report\n"
        f"print(sorted(m for m in {AFTER_TRAINING_ONLY!r} if m in sys.modules))\n"
    )
    assert _python(code) == "[]"


def test_after_the_preload_the_after_training_work_imports_no_new_package(tmp_path: Path) -> None:
    # The metrics stage's frames, Parquet and plot, and the eval's scoring and frame, as after training.
    code = (
        "import sys\n"
        "import flows.fine_tune\n"
        "from flows.preload import Preload\n"
        "p = Preload(); p.start(); p.join()\n"
        "before = {m.partition('.')[0] for m in sys.modules}\n"
        "from tasks.metrics import checkpoints_frame, metrics_frame, events_frame, loss_curve_png\n"
        "from evaluation.scoring import rouge_l\n"
        "from evaluation.frame import eval_frame\n"
        "steps = metrics_frame([])\n"
        f"steps.to_parquet({str(tmp_path / 'm.parquet')!r})\n"
        "loss_curve_png(checkpoints_frame([]), steps, 'job')\n"
        "events_frame([]); eval_frame([]); rouge_l('a b', 'a c')\n"
        "print(sorted({m.partition('.')[0] for m in sys.modules} - before))\n"
    )
    assert _python(code) == "[]"
    assert {m.partition(".")[0] for m in AFTER_TRAINING} >= set(AFTER_TRAINING_ONLY) - {"nltk"}
