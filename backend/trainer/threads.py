"""How many intra-op threads the trainer takes: one home, free of torch, so the flow can read it too."""

from __future__ import annotations

import os

THREADS_ENV = "FTPIPE_TRAINER_THREADS"


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def trainer_threads(cores: int | None = None) -> int:
    """$FTPIPE_TRAINER_THREADS, else half the usable cores (at least 1).

    Half, because the server and other jobs share the machine and an oversubscribed OpenMP pool is far
    slower (measured ~10x on 2 busy cores) than one thread fewer; a tiny model gains little from more.
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (usable_cores() if cores is None else cores) // 2)


def generation_threads(training_workers: int, cores: int | None = None) -> int:
    """Intra-op threads for the server's generation: the cores the training workers leave free (at least 1).

    All usable cores when no worker trains; never more than are free, since an oversubscribed pool costs far
    more than a thread fewer.
    """
    cores = usable_cores() if cores is None else cores
    return max(1, cores - max(0, training_workers) * trainer_threads(cores))
