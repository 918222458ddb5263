"""How many intra-op threads the trainer and the server's generation take: one home, free of torch, so the flow
can read it too."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection

THREADS_ENV = "FTPIPE_TRAINER_THREADS"


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity, capped by a cgroup CPU quota (``docker --cpus``, a
    Kubernetes CPU limit), which the affinity does not show: threads beyond it are throttled, not run."""
    affinity = _affinity()
    cores = len(affinity) if affinity is not None else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs this process's cgroup may use (quota / period), or None without a quota (or off Linux)."""
    try:
        with open(f"{root}/cpu.max") as f:  # cgroup v2: "max 100000" or "200000 100000"
            quota, period = f.read().split()[:2]
        return int(quota) / int(period) if quota != "max" and int(period) > 0 else None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open(f"{root}/cpu/cpu.cfs_quota_us") as fq, open(f"{root}/cpu/cpu.cfs_period_us") as fp:
            q, per = int(fq.read()), int(fp.read())
        return q / per if q > 0 and per > 0 else None
    except (OSError, ValueError):
        return None


def trainer_threads(cores: int | None = None) -> int:
    """$FTPIPE_TRAINER_THREADS, else half the usable cores (at least 1).

    Half, because the server and other jobs share the machine and an oversubscribed OpenMP pool is far
    slower (measured ~10x on 2 busy cores) than one thread fewer; a tiny model gains little from more.
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (usable_cores() if cores is None else cores) // 2)


def generation_threads(training_workers: int, cores: int | None = None, others: float = 0.0) -> int:
    """Intra-op threads for the server's generation: the cores neither the training workers nor other
    processes (``others``: cores they kept busy lately) hold, at least 1.

    Other processes' busy time of 0.4 of a core or more counts as a core taken: an OpenMP thread that has to
    share a core makes every other thread wait at each of the step's many barriers (measured on 2 cores at load ~3.5: a
    decoding step 21 ms on 1 thread, 196 ms on 2), so a thread fewer is always the safer side.
    """
    return _cores_left(training_workers, cores, math.floor(max(0.0, others) + 0.6))


def generation_lanes(training_workers: int, cores: int | None = None, others: float = 0.0) -> int:
    """How many batches the server may decode at once (busy lanes split the free cores): the cores the
    training workers leave, less every whole core other processes (``others``) keep busy, at least 1.

    Unlike ``generation_threads`` a core that a neighbour uses part of the time still counts: lanes share
    nothing at each step (no OpenMP barrier), so a lane on a part-busy core just runs at the share it gets.
    """
    return _cores_left(training_workers, cores, math.floor(max(0.0, others)))


def _cores_left(training_workers: int, cores: int | None, others_taken: int) -> int:
    """The usable cores (or ``cores``) less the training workers' share and ``others_taken``, at least 1."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores - max(0, training_workers) * trainer_threads(cores) - others_taken)


def busy_cpu_seconds(cpus: Collection[int] | None = None) -> float | None:
    """CPU seconds ``cpus`` (default: those this process may run on) spent busy since boot, from /proc/stat;
    None where it cannot be read (not Linux)."""
    wanted = set(cpus) if cpus is not None else _affinity()
    try:
        with open("/proc/stat", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return None
    ticks = 0
    found = False
    for line in lines:
        if not line.startswith(b"cpu") or line[3:4] in (b" ", b""):
            continue
        name, *fields = line.split()
        if wanted is not None and int(name[3:]) not in wanted:
            continue
        values = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
        ticks += sum(values) - values[3] - values[4]
        found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used; None when it cannot be read (gone, not ours)."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _affinity() -> set[int] | None:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


class OtherLoad:
    """Cores other processes kept busy between two calls: the busy CPU time of this process's cores minus its
    own CPU time and the known workers' expected share; called on the thread that decides, a few times a second.
    """

    MIN_WINDOW_S = 0.1  # shorter windows hold too few clock ticks (100 per second per core)
    STALE_S = 2.0  # an older sample says little about now

    def __init__(self, stale_s: float | None = None, also_own: Callable[[], float] | None = None) -> None:
        """``stale_s``: the longest window still measured (default STALE_S; a caller measuring one given span,
        e.g. from a flow's start to a decision, passes ``math.inf``); ``also_own``: CPU seconds (cumulative)
        of other processes to count as this one's (never as a load)."""
        self.stale_s = self.STALE_S if stale_s is None else stale_s
        self.also_own = also_own
        self._last: tuple[float, float, float] | None = None  # monotonic, busy CPU s, own CPU s
        self._estimate: float | None = None

    def sample(self, workers_cores: float) -> float | None:
        """Cores others used since the previous call (``workers_cores`` of it are known workers', not counted);
        None when unknown: the first call, one after a long gap, or no /proc/stat."""
        now, own = time.monotonic(), time.process_time()
        if self.also_own is not None:
            own += self.also_own()
        busy = busy_cpu_seconds()
        if busy is None:
            self._last = self._estimate = None
            return None
        last = self._last
        if last is not None and now - last[0] < self.MIN_WINDOW_S:
            return self._estimate
        self._last = (now, busy, own)
        if last is None or now - last[0] > self.stale_s:
            self._estimate = None
            return None
        wall = now - last[0]
        self._estimate = max(0.0, (busy - last[1]) - (own - last[2])) / wall - workers_cores
        return max(0.0, self._estimate)
