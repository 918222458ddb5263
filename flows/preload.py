"""Import what the flow needs only after training while the job trains, on a thread of its own.

After training, the metrics stage builds frames (pandas), writes Parquet (pyarrow) and plots (matplotlib), and
the eval scores answers with ROUGE-L (rouge-score imports nltk): measured on the 2-core machine, 0.6 s + 0.8 s
+ 2.0 s of first-use imports, paid on the flow's thread while the last checkpoint's eval waited for the GIL.
While the job trains the flow only polls, so they are imported then. Nothing is skipped: the same modules load,
earlier; an import that fails here is left for its real use to report.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The modules first used after training (``tasks.metrics``, ``evaluation.frame``, ``evaluation.scoring``).
AFTER_TRAINING = (
    "pandas",
    "pyarrow.parquet",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "rouge_score.rouge_scorer",
    "tasks.metrics",
    "evaluation.frame",
)

# How long a run that stops early still waits for the imports in progress (a module half imported at exit is
# harmless to a daemon thread; the wait only keeps its log lines in order).
INTERRUPTED_JOIN_S = 0.5

_log = logging.getLogger(__name__)


class Preload:
    """Imports ``modules`` on a daemon thread once ``start`` is called; ``join`` waits for them."""

    def __init__(self, modules: tuple[str, ...] = AFTER_TRAINING) -> None:
        self.modules = modules
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin importing (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ftpipe-preload", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        for name in self.modules:
            try:
                importlib.import_module(name)
            except Exception:  # the import where the module is used raises it where it matters
                _log.debug("could not preload %s", name, exc_info=True)

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the imports (seconds at most), so none is left running when the process exits."""
        if self._thread is not None:
            self._thread.join(timeout_s)


@contextmanager
def preload(modules: tuple[str, ...] = AFTER_TRAINING) -> Iterator[Preload]:
    """A ``Preload`` joined when the block ends, however it ends."""
    loader = Preload(modules)
    try:
        yield loader
    except BaseException:
        # A failed or interrupted run (Ctrl-C) must not wait out the imports: the thread is a daemon.
        loader.join(INTERRUPTED_JOIN_S)
        raise
    loader.join()
