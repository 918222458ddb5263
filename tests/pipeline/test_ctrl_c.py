"""A terminal Ctrl-C on ``ftpipe run`` (issue 15 item 7, issue 16 item 3): SIGINT to the whole process group.

The command runs in its own session, as a terminal's foreground job, against a real embedded backend and a
Prefect API that both outlive it, so the test reads back what they recorded. Two set-ups: both given to the
command (a backend already serving, ``PREFECT_API_URL`` set), and the default, where ``ftpipe run`` starts them
itself as ftpipe's local services (they must be out of the process group the Ctrl-C signals).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from pydantic import SecretStr

from backend.launcher import RunningBackend, free_port, start_backend
from backend.settings import BackendSettings
from client import ClientSettings, MKA1Client
from contract.wire import API_PREFIX
from services.manager import stop_services
from services.registry import PREFECT_SERVICE, RUNNER_SERVICE, ServiceDir
from services.runner import code_root, runner_key
from services.runner_host import start_runner, wait_ready
from tasks.state import JOBS_FILE
from tests.backend_workers import frozen_when
from tests.services.conftest import wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"
USER = "ctrl-c"
SWEEP_USER = "ctrl-c-sweep"
EXIT_WITHIN_S = 10.0
START_WITHIN_S = 300.0  # generous: Prefect, validation, upload and a worker's first step on a loaded machine


@dataclass(frozen=True)
class Served:
    """The backend the run uses: what `frozen_when` needs (server pid, data dir) and how to call it."""

    pid: int | None
    data_dir: Path
    base_url: str
    api_key: SecretStr


@dataclass
class Setup:
    """How the command is run, and where (once they answer) its backend and Prefect API are."""

    env: dict[str, str]
    backend: Callable[[], Served | None]
    prefect_url: Callable[[], str | None]


@pytest.fixture(scope="module")
def given_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    with start_backend(BackendSettings(data_dir=tmp_path_factory.mktemp("ctrl-c-data"), port=0)) as rb:
        yield rb


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MKA1_", "FTPIPE_", "PREFECT_API_URL"))}
    env.update(
        FTPIPE_STATE_DIR=str(tmp_path / "state"),
        FTPIPE_TRACKING_ENABLED="false",
        FTPIPE_SERVICES_RUNNER="false",  # the "runner" set-up turns the warm runner on
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    return env


def _given(rb: RunningBackend, tmp_path: Path) -> Setup:
    env = _base_env(tmp_path)
    env.update(
        PREFECT_API_URL=str(get_current_settings().api.url),
        FTPIPE_BACKEND_DATA_DIR=str(rb.data_dir),  # the running backend is reused (its key is in that dir)
        FTPIPE_BACKEND_PORT=str(rb.port),
    )
    served = Served(rb.pid, rb.data_dir, rb.base_url, rb.api_key)
    return Setup(env, lambda: served, lambda: env["PREFECT_API_URL"])


def _services(tmp_path: Path) -> Setup:
    data_dir, port, root = tmp_path / "backend-data", free_port(), tmp_path / "services"
    env = _base_env(tmp_path)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        FTPIPE_SERVICES_DIR=str(root),
        FTPIPE_BACKEND_DATA_DIR=str(data_dir),
        FTPIPE_BACKEND_PORT=str(port),
    )
    base_url = f"http://127.0.0.1:{port}{API_PREFIX}"

    def backend() -> Served | None:
        try:
            health = httpx.get(base_url + "/health", timeout=2)
        except httpx.HTTPError:
            return None
        if health.status_code != 200:
            return None
        # The run created the key file before it started the backend; read, never create, it here.
        key = SecretStr((data_dir / "api_key").read_text(encoding="utf-8").strip())
        return Served(health.json()["pid"], data_dir, base_url, key)

    def prefect_url() -> str | None:
        record = ServiceDir(root, PREFECT_SERVICE).read_record()
        return record.url if record is not None else None

    return Setup(env, backend, prefect_url)


def _through_runner(tmp_path: Path) -> Setup:
    # ftpipe's services, and the command served by a warm runner started for it first (as a previous run would).
    setup = _services(tmp_path)
    setup.env["FTPIPE_SERVICES_RUNNER"] = "true"
    cwd, root = str(tmp_path), Path(setup.env["FTPIPE_SERVICES_DIR"])
    # Started with SIGINT ignored, as a non-interactive shell's `cmd &` leaves every child of `cmd`: the
    # command's child must take the command's own Ctrl-C, not the runner's disposition.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pid = start_runner(setup.env, cwd, runner_key(setup.env, cwd, code_root()), "pytest", 600.0)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert pid is not None and wait_ready(root, pid, START_WITHIN_S) is not None
    with open(f"/proc/{pid}/status", encoding="ascii") as status:  # (the set-up this test means)
        ignored = int(next(ln for ln in status if ln.startswith("SigIgn:")).split()[1], 16)
    assert ignored & (1 << (signal.SIGINT - 1))
    return setup


@pytest.fixture(params=["given", "ftpipe-services", "runner"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if request.param == "given":
        yield _given(request.getfixturevalue("given_backend"), tmp_path)
        return
    try:
        yield _services(tmp_path) if request.param == "ftpipe-services" else _through_runner(tmp_path)
    finally:
        stop_services(tmp_path / "services", {"prefect", "backend", "runner"}, timeout_s=30)


def _dataset(d: Path) -> Path:
    d.mkdir()
    for name, n in (("train.jsonl", 40), ("validation.jsonl", 10)):
        lines = (SAMPLE / name).read_text(encoding="utf-8").splitlines()[:n]
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def _client(served: Served, user: str = USER) -> MKA1Client:
    return MKA1Client(ClientSettings(base_url=served.base_url, api_key=served.api_key, on_behalf_of=user))


def _start_long_run(setup: Setup, tmp_path: Path, out: Path) -> subprocess.Popen[bytes]:
    """``ftpipe run`` of a 30-epoch job (it cannot end first); see ``_launch``."""
    dataset = _dataset(tmp_path / "ds")
    argv = [sys.executable, "-m", "cli", "run", str(dataset), "--model", "local:micro-chat", "--epochs", "30"]
    argv += ["--no-eval", "--poll-interval", "0.3", "--progress", "plain", "--on-behalf-of", USER]
    return _launch(setup, tmp_path, argv, out)


def _launch(setup: Setup, tmp_path: Path, argv: list[str], out: Path) -> subprocess.Popen[bytes]:
    """``argv`` in its own process group, the one a terminal's Ctrl-C signals; its output goes to ``out``."""
    with out.open("wb") as sink:
        return subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=setup.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _served(setup: Setup, proc: subprocess.Popen[bytes], out: Path) -> Served:
    """The backend the command started or reused, once it serves."""
    _wait("the backend", setup.backend, proc, out)
    served = setup.backend()
    assert served is not None
    return served


def _running_job(served: Served, proc: subprocess.Popen[bytes], out: Path) -> Callable[[], str | None]:
    """The id of the newest job once it runs (None before); fails at once when the command exited."""

    def running_job() -> str | None:
        with _client(served) as c:
            jobs = list(c.jobs.list())
        if jobs and jobs[0].status == "running":
            return str(jobs[0].id)
        assert proc.poll() is None, out.read_text(errors="replace")[-3000:]
        return None

    return running_job


def _wait(what: str, fn: Callable[[], object], proc: subprocess.Popen[bytes], out: Path) -> None:
    deadline = time.monotonic() + START_WITHIN_S
    while not fn():
        assert proc.poll() is None, out.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"{what} not within {START_WITHIN_S}s:\n{out.read_text()[-3000:]}"
        time.sleep(0.3)


def test_ctrl_c_cancels_the_job_exits_130_and_prefect_records_cancelled(setup: Setup, tmp_path: Path) -> None:
    out = tmp_path / "terminal.txt"
    proc = _start_long_run(setup, tmp_path, out)
    try:
        served = _served(setup, proc, out)
        # The training worker is held still from its first step on, so the job cannot finish first.
        with frozen_when(served, _running_job(served, proc, out), timeout=START_WITHIN_S) as job_id:
            shown = len(out.read_text(errors="replace").splitlines())
            started = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            try:
                code = proc.wait(EXIT_WITHIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {EXIT_WITHIN_S}s after Ctrl-C:\n{out.read_text()[-3000:]}")
            took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    text = out.read_text(errors="replace")
    after = [line for line in text.splitlines()[shown:] if line.strip()]
    assert code == 130, text[-3000:]
    assert took < EXIT_WITHIN_S
    assert "Traceback" not in text, text[-3000:]
    assert after == [f"interrupted: cancelled job {job_id} (Prefect run marked Cancelled)"], after
    if setup.env.get("FTPIPE_SERVICES_RUNNER") == "true":  # it ran in a child of the runner, not the command
        log = ServiceDir(Path(setup.env["FTPIPE_SERVICES_DIR"]), RUNNER_SERVICE).log_path.read_text()
        assert ": ftpipe run (in " in log, log

    # The backend and the Prefect API outlived the Ctrl-C and say what happened.
    with _client(served) as c:
        assert c.jobs.retrieve(job_id).status == "cancelled"
        assert [j.id for j in c.jobs.list()] == [job_id]
    (entry,) = json.loads((tmp_path / "state" / JOBS_FILE).read_text()).values()
    assert entry["job_id"] == job_id and entry["status"] == "cancelled"
    prefect_url = setup.prefect_url()
    assert prefect_url is not None
    with temporary_settings(updates={PREFECT_API_URL: prefect_url}), get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(entry["flow_run_id"])
        tasks = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert run.state is not None and run.state.is_cancelled(), run.state
    assert run.state.message == f"interrupted: cancelled job {job_id}"
    # The task run the Ctrl-C interrupted ends Cancelled as well, not Crashed.
    (wait,) = [t for t in tasks if t.name.startswith("wait-for-job")]
    assert wait.state is not None and wait.state.is_cancelled(), wait.state


def test_a_killed_command_served_by_the_runner_cancels_its_run(tmp_path: Path) -> None:
    """``kill -9`` of the command's own process: its run, in a child of the warm runner, ends as on a Ctrl-C."""
    setup = _through_runner(tmp_path)
    runner_log = ServiceDir(Path(setup.env["FTPIPE_SERVICES_DIR"]), RUNNER_SERVICE).log_path
    out = tmp_path / "terminal.txt"
    try:
        proc = _start_long_run(setup, tmp_path, out)
        served = _served(setup, proc, out)
        with frozen_when(served, _running_job(served, proc, out), timeout=START_WITHIN_S) as job_id:
            (line,) = [ln for ln in runner_log.read_text().splitlines() if ": ftpipe run (in " in ln]
            child = int(line.split("pid ")[1].split(":")[0])
            assert child != proc.pid
            proc.kill()  # the command's process only: no signal reaches the child
            proc.wait(10)
            assert wait_gone(child, EXIT_WITHIN_S), out.read_text(errors="replace")[-3000:]
        with _client(served) as c:
            assert c.jobs.retrieve(job_id).status == "cancelled"
        (entry,) = json.loads((tmp_path / "state" / JOBS_FILE).read_text()).values()
        assert entry["job_id"] == job_id and entry["status"] == "cancelled"
    finally:
        stop_services(tmp_path / "services", {"prefect", "backend", "runner"}, timeout_s=30)


def test_ctrl_c_on_a_sweep_cancels_every_job_exits_130_and_prefect_records_cancelled(
    given_backend: RunningBackend, tmp_path: Path
) -> None:
    """Two configs, one training and one queued behind it: Ctrl-C cancels both, in one line, exit 130."""
    setup = _given(given_backend, tmp_path)
    base = {
        "dataset_dir": str(_dataset(tmp_path / "ds")),
        "model": "local:micro-chat",
        "n_epochs": 30,
        "poll_interval_s": 0.3,
        "evaluate": False,
        "on_behalf_of": SWEEP_USER,  # its own end user: the other tests' jobs on this backend are not listed
    }
    sweep_file = tmp_path / "sweep.json"
    configs = [{"name": "s1", "seed": 1}, {"name": "s2", "seed": 2}]
    sweep_file.write_text(json.dumps({"base": base, "configs": configs, "name": "ctrl-c"}), encoding="utf-8")
    out = tmp_path / "terminal.txt"
    argv = [sys.executable, "-m", "cli", "sweep", str(sweep_file), "--progress", "plain"]
    proc = _launch(setup, tmp_path, argv, out)
    served = setup.backend()
    assert served is not None
    try:

        def both_jobs_one_running() -> list[str] | None:
            with _client(served, SWEEP_USER) as c:
                jobs = list(c.jobs.list())
            if len(jobs) == 2 and any(j.status == "running" for j in jobs):
                return sorted(str(j.id) for j in jobs)
            assert proc.poll() is None, out.read_text(errors="replace")[-3000:]
            return None

        with frozen_when(served, both_jobs_one_running, timeout=START_WITHIN_S) as job_ids:
            shown = len(out.read_text(errors="replace").splitlines())
            started = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            try:
                code = proc.wait(EXIT_WITHIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {EXIT_WITHIN_S}s after Ctrl-C:\n{out.read_text()[-3000:]}")
            took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    text = out.read_text(errors="replace")
    after = [line for line in text.splitlines()[shown:] if line.strip()]
    assert code == 130, text[-3000:]
    assert took < EXIT_WITHIN_S
    assert "Traceback" not in text, text[-3000:]
    assert len(after) == 1, after
    assert after[0].startswith("interrupted: ") and after[0].endswith(" (Prefect run marked Cancelled)")
    with _client(served, SWEEP_USER) as c:
        assert {c.jobs.retrieve(j).status for j in job_ids} == {"cancelled"}
    for job_id in job_ids:
        assert f"cancelled job {job_id} (s" in after[0], after[0]

    # The sweep's flow run (its message is the line) and both configs' runs are Cancelled in Prefect.
    line = after[0].removesuffix(" (Prefect run marked Cancelled)")
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs()
    configs = {r.name: r.state for r in runs if r.name in ("sweep-s1", "sweep-s2")}
    assert len(configs) == 2 and all(st is not None and st.is_cancelled() for st in configs.values()), configs
    (sweep_run,) = [r for r in runs if r.state is not None and r.state.message == line]
    assert sweep_run.state is not None and sweep_run.state.is_cancelled()
