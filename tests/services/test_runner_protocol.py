"""The warm runner's client side without a runner: its key, its messages with fds, when it falls back."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import runner
from services.runner import RunnerClient, read_message, runner_key, send_message

REPO = Path(__file__).resolve().parents[2]


def _code(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    (root / "pkg" / "sub" / "mod.py").write_text("X = 1\n", encoding="utf-8")
    (root / "tests").mkdir()
    (root / "tests" / "__init__.py").write_text("", encoding="utf-8")
    (root / "pyproject.toml").write_text("[project]\nname = 'ftpipe'\n", encoding="utf-8")  # a checkout
    return root


def test_the_key_follows_code_settings_and_import_time_environment(tmp_path: Path) -> None:
    root, cwd = _code(tmp_path), tmp_path / "work"
    cwd.mkdir()
    env = {"HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "ph"), "TERM": "xterm", "PATH": "/bin"}
    base = runner_key(env, str(cwd), root)
    assert runner_key(dict(env), str(cwd), root) == base
    # What the runner's imports fixed: a Prefect setting, an ftpipe one, Python's, an API variable.
    for name in (
        "PREFECT_API_URL",
        "FTPIPE_SERVICES_IDLE_TIMEOUT_S",
        "PYTHONPATH",
        "MKA1_BASE_URL",
        "LC_ALL",
    ):
        assert runner_key({**env, name: "x"}, str(cwd), root) != base, name
    # What the child reads afresh (its terminal) or never at import: served by the same runner.
    for name in ("TERM", "COLUMNS", "NO_COLOR", "PATH", "OLDPWD"):
        assert runner_key({**env, name: "other"}, str(cwd), root) == base, name
    # A Prefect variable set to the value every command gives it anyway (scripts/run.sh exports one).
    from cli.common import PREFECT_ENV_DEFAULTS

    for name, value in PREFECT_ENV_DEFAULTS.items():
        assert runner_key({**env, name: value}, str(cwd), root) == base, name
        assert runner_key({**env, name: value + "0"}, str(cwd), root) != base, name

    # An edited module (size or mtime) or a new one: a checkout never runs stale code.
    mod = root / "pkg" / "sub" / "mod.py"
    mod.write_text("X = 22\n", encoding="utf-8")
    edited = runner_key(env, str(cwd), root)
    assert edited != base
    os.utime(mod, ns=(mod.stat().st_atime_ns, mod.stat().st_mtime_ns + 1_000_000))
    assert runner_key(env, str(cwd), root) != edited
    touched = runner_key(env, str(cwd), root)
    (root / "pkg" / "new.py").write_text("", encoding="utf-8")
    assert runner_key(env, str(cwd), root) != touched
    added = runner_key(env, str(cwd), root)
    (root / "tests" / "test_x.py").write_text("", encoding="utf-8")  # tests are never imported by a command
    assert runner_key(env, str(cwd), root) == added

    # Prefect's settings files in the working directory, and its profiles file.
    (cwd / "prefect.toml").write_text("[logging]\nlevel = 'DEBUG'\n", encoding="utf-8")
    with_toml = runner_key(env, str(cwd), root)
    assert with_toml != added
    (tmp_path / "ph").mkdir()
    (tmp_path / "ph" / "profiles.toml").write_text("active = 'x'\n", encoding="utf-8")
    assert runner_key(env, str(cwd), root) != with_toml


def test_an_installed_ftpipe_is_keyed_by_its_own_packages_only(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    for pkg in ("cli", "services", "requests"):
        (site / pkg).mkdir(parents=True)
        (site / pkg / "__init__.py").write_text("", encoding="utf-8")
    (site / "ftpipe-0.1.0.dist-info").mkdir()
    (site / "ftpipe-0.1.0.dist-info" / "top_level.txt").write_text("cli\nservices\n", encoding="utf-8")
    env, cwd = {"HOME": str(tmp_path)}, str(tmp_path)
    base = runner_key(env, cwd, site)
    (site / "requests" / "api.py").write_text("", encoding="utf-8")  # another distribution: not walked
    assert runner_key(env, cwd, site) == base
    (site / "services" / "x.py").write_text("", encoding="utf-8")
    assert runner_key(env, cwd, site) != base


def test_a_message_carries_its_fds() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    try:
        big = {"env": {f"V{i}": "x" * 100 for i in range(2000)}}  # over one socket buffer: sent in parts
        sender = threading.Thread(
            target=send_message, args=(a, {"argv": ["ftpipe", "run"], **big}, [w, w, w])
        )
        sender.start()
        message, fds = read_message(b, max_fds=3)
        sender.join(10)
        assert message is not None and message["argv"] == ["ftpipe", "run"] and message["env"] == big["env"]
        assert len(fds) == 3 and all(fd not in (r, w) for fd in fds)
        os.write(fds[1], b"through the passed fd")
        assert os.read(r, 100) == b"through the passed fd"
        for fd in fds:
            os.close(fd)
        a.close()
        assert read_message(b) == (None, [])  # the peer's end closed: end of stream, not an error
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("argv", "env", "served"),
    [
        (["ftpipe", "run", "DIR"], {}, True),
        (["ftpipe", "--debug", "run", "DIR"], {}, True),
        (["ftpipe", "sweep", "x.yaml"], {}, False),
        (["ftpipe", "--help"], {}, False),
        (["ftpipe", "run", "DIR"], {"FTPIPE_SERVICES_RUNNER": "false"}, False),
        (["ftpipe", "run", "DIR"], {"FTPIPE_SERVICES_RUNNER": "off"}, False),
        (["ftpipe", "run", "DIR"], {"FTPIPE_SERVICES_KEEP": "0"}, False),
    ],
)
def test_only_ftpipe_run_asks_a_runner_and_only_when_enabled(
    argv: list[str], env: dict[str, str], served: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FTPIPE_SERVICES_DIR", str(tmp_path))
    monkeypatch.setenv("FTPIPE_SERVICES_KEEP", "true")
    monkeypatch.delenv("FTPIPE_SERVICES_RUNNER", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (RunnerClient.for_command(argv) is not None) is served


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RunnerClient:
    monkeypatch.setenv("FTPIPE_SERVICES_DIR", str(tmp_path / "services"))
    monkeypatch.setenv("FTPIPE_SERVICES_KEEP", "true")
    monkeypatch.setenv("FTPIPE_SERVICES_RUNNER", "true")
    found = RunnerClient.for_command(["ftpipe", "run", "DIR"])
    assert found is not None
    return found


def _record(client: RunnerClient, key: str) -> None:
    client.dir.mkdir(parents=True, exist_ok=True)
    (client.dir / "record.json").write_text(f'{{"config_hash": "{key}"}}', encoding="utf-8")


def test_no_runner_means_in_process(client: RunnerClient) -> None:
    assert client.serve() is None and client.missed == "absent"


def test_a_runner_for_other_code_or_settings_is_not_used(client: RunnerClient) -> None:
    _record(client, "0" * 32)
    assert client.serve() is None and client.missed == "mismatch"


def test_a_dead_runner_means_in_process(client: RunnerClient) -> None:
    _record(client, client.key)  # its record says it serves this key, but nothing listens
    assert client.serve() is None and client.missed == "dead"
    # A socket file left by a killed runner: connection refused.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(client.dir / runner.SOCKET_FILE))
    stale.close()
    assert client.serve() is None and client.missed == "dead"


def test_a_runner_refusing_or_dying_before_the_start_means_in_process(client: RunnerClient) -> None:
    _record(client, client.key)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(client.dir / runner.SOCKET_FILE))
    listener.listen(2)
    try:
        for answer, missed in (({"refused": "busy"}, "busy"), (None, "dead")):
            result: list[int | None] = []
            t = threading.Thread(target=lambda out=result: out.append(client.serve()))
            t.start()
            conn, _ = listener.accept()
            message, fds = read_message(conn, max_fds=3)
            for fd in fds:
                os.close(fd)
            assert message is not None and message["key"] == client.key and message["cwd"] == os.getcwd()
            if answer is not None:
                send_message(conn, answer)
            conn.close()
            t.join(10)
            assert result == [None] and client.missed == missed
    finally:
        listener.close()


# Prefect's console handler made at import, on a pipe: after `_reopen_stdio` + `_rebind_console_handlers` on a
# terminal its lines are coloured, on a pipe they are not (as if Prefect had been imported by the command).
REBIND = """
import logging, os, sys
from prefect import flow  # noqa: F401 - Prefect sets its logging up here
from services.runner_host import _rebind_console_handlers, _reopen_stdio
fd = int(sys.argv[1])
os.dup2(fd, 1)
os.dup2(fd, 2)
old = _reopen_stdio()
_rebind_console_handlers(*old)
logging.getLogger("prefect.test").warning("a warning https://example.com")
print("width", __import__("rich.console").console.Console(file=sys.stderr).size.width, flush=True)
"""


@pytest.mark.parametrize("terminal", [True, False])
def test_the_console_handler_follows_the_commands_terminal(terminal: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": ""}
    env.pop("NO_COLOR", None)
    env.pop("FORCE_COLOR", None)
    if terminal:
        leader, follower = pty.openpty()
        import fcntl
        import struct
        import termios

        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 97, 0, 0))
    else:
        leader, follower = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", REBIND, str(follower)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(follower,),
    )
    os.close(follower)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    text = out.decode(errors="replace")
    assert "a warning" in text
    assert ("\x1b[" in text) is terminal, text
    if terminal:
        assert "width 97" in text, text


def test_a_runner_whose_socket_is_removed_stops(tmp_path: Path) -> None:
    from services.registry import ServiceDir
    from services.runner_host import Runner

    sd = ServiceDir(tmp_path / "services", "runner")
    sd.ensure()
    server = Runner(sd, "k" * 32, idle_timeout_s=3600)
    server.listen()
    done: list[object] = []
    t = threading.Thread(target=lambda: done.append(server.serve()), daemon=True)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # serving
    (sd.path / runner.SOCKET_FILE).unlink()  # e.g. its temp dir or state dir was removed
    t.join(10)
    assert done == [None]
    server.close()


def test_a_runner_that_failed_to_start_is_not_started_again_for_the_same_key(tmp_path: Path) -> None:
    from services.runner_host import FAILED_FILE, start_runner

    env = {"FTPIPE_SERVICES_DIR": str(tmp_path / "services"), "HOME": str(tmp_path)}
    folder = tmp_path / "services" / "runner"
    folder.mkdir(parents=True)
    (folder / FAILED_FILE).write_text('{"key": "failed-key"}', encoding="utf-8")
    assert start_runner(env, str(tmp_path), "failed-key", "pytest", 60.0) is None
    assert not (folder / "starting.json").exists()  # nothing was started


@pytest.fixture
def dispositions() -> Iterator[None]:
    """This process's dispositions and mask, put back after the test."""
    saved = {sig: signal.getsignal(sig) for sig in (*runner.DISPOSED.values(), signal.SIGTSTP)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@pytest.mark.usefixtures("dispositions")
def test_the_child_takes_the_commands_ignored_signals_and_mask_not_the_runners() -> None:
    # The command: `nohup ftpipe run ...` (SIGHUP ignored), SIGUSR1 blocked.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    state = json.loads(json.dumps(runner.signal_state()))  # as it travels
    assert "HUP" in state["ignored"] and "INT" not in state["ignored"]
    assert int(signal.SIGUSR1) in state["blocked"]
    # The runner's child: started from a non-interactive shell's `cmd &` (SIGINT ignored), SIGHUP default.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    runner.apply_signal_state(state)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C stops the run
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # a hangup does not
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, ())


@pytest.mark.usefixtures("dispositions")
def test_the_client_forwards_no_signal_its_process_ignores(client: RunnerClient) -> None:
    """``nohup ftpipe run ... &``: no forwarding handler over the inherited SIG_IGN while the child runs."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _record(client, client.key)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(client.dir / runner.SOCKET_FILE))
    listener.listen(1)
    seen: dict[str, object] = {}

    def serve_one() -> None:  # the runner's side; the client waits in this test's (main) thread
        conn, _ = listener.accept()
        message, fds = read_message(conn, max_fds=3)
        for fd in fds:
            os.close(fd)
        assert message is not None
        seen["signals"] = message["signals"]
        send_message(conn, {"pid": 2**22 + 1})  # above pid_max: a child already gone, never signalled
        seen["go"] = conn.recv(1)
        seen["hup"] = signal.getsignal(signal.SIGHUP)
        seen["int"] = signal.getsignal(signal.SIGINT)
        send_message(conn, {"exit": 3})
        conn.close()

    t = threading.Thread(target=serve_one, daemon=True)
    t.start()
    try:
        assert client.serve() == 3
    finally:
        listener.close()
    t.join(10)
    assert seen["go"] == b"g"
    assert "HUP" in seen["signals"]["ignored"]  # type: ignore[index]
    assert seen["hup"] == signal.SIG_IGN  # not caught to be forwarded
    assert seen["int"] not in (signal.default_int_handler, signal.SIG_IGN)  # Ctrl-C is forwarded
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # and put back after


def test_a_runner_that_does_not_answer_is_seen_as_such(tmp_path: Path) -> None:
    from services.registry import ServiceDir
    from services.runner_host import Runner

    sd = ServiceDir(tmp_path / "services", "runner")
    sd.ensure()
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # alive, listening, never accepting (stopped)
    silent.bind(str(sd.path / runner.SOCKET_FILE))
    silent.listen(4)
    started = time.monotonic()
    assert not runner.answers(sd.path, timeout_s=0.5)
    assert time.monotonic() - started < 5
    silent.close()
    assert not runner.answers(sd.path, timeout_s=0.5)  # a socket file nobody listens on
    server = Runner(sd, "k" * 32, idle_timeout_s=3600)
    server.listen()
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    try:
        assert runner.answers(sd.path)  # a serving runner answers a ping (and forks nothing for it)
    finally:
        (sd.path / runner.SOCKET_FILE).unlink()  # it stops at once
        t.join(10)
        server.close()


def test_status_and_stop_see_a_runner_that_is_still_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main
    from services.manager import stop_services
    from services.registry import process_alive, process_start_time, write_private_json
    from services.runner_host import STARTING_FILE

    folder = tmp_path / "services" / "runner"
    folder.mkdir(parents=True)
    importing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_private_json(
            folder / STARTING_FILE,
            {"pid": importing.pid, "pid_started": process_start_time(importing.pid), "key": "k"},
        )
        monkeypatch.setenv("FTPIPE_SERVICES_DIR", str(tmp_path / "services"))
        assert main(["services", "status"]) == 0
        assert f"warm runner starting (pid {importing.pid}" in capsys.readouterr().out
        stopped = stop_services(tmp_path / "services", {"runner"}, timeout_s=10)
        assert [(s.kind, s.pid, s.graceful) for s in stopped] == [("runner", importing.pid, True)]
        importing.wait(10)  # (reaped by the stop already: its code is lost)
        assert not process_alive(importing.pid)
        assert not (folder / STARTING_FILE).exists()
        assert stop_services(tmp_path / "services", {"runner"}, timeout_s=10) == []
    finally:
        importing.kill()
        importing.wait()


@pytest.mark.parametrize(
    ("name", "value"),
    [("FTPIPE_SERVICES_IDLE_TIMEOUT_S", "abc"), ("FTPIPE_SERVICES_IDLE_TIMEOUT_S", "0")],
)
def test_a_runner_is_not_started_with_bad_settings_or_no_lifetime(
    client: RunnerClient, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    from cli.main import start_runner

    monkeypatch.setenv(name, value)
    start_runner(client)  # no exception, nothing printed by it, nothing started
    assert not (client.dir / "starting.json").exists()
    if value == "abc":
        assert "could not start a runner" in (client.dir / runner.LOG_FILE).read_text(encoding="utf-8")


def test_a_bad_services_setting_is_one_line_as_without_a_runner(tmp_path: Path) -> None:
    def run(switch: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "FTPIPE_SERVICES_DIR": str(tmp_path / "services"),
            "FTPIPE_STATE_DIR": str(tmp_path / "state"),
            "FTPIPE_SERVICES_RUNNER": switch,
            "FTPIPE_SERVICES_IDLE_TIMEOUT_S": "abc",
        }
        return subprocess.run(
            [sys.executable, "-m", "cli", "run", str(tmp_path / "none")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    off, on = run("false"), run("true")
    assert off.returncode == 2 and "Traceback" not in off.stderr
    assert (on.returncode, on.stdout, on.stderr) == (off.returncode, off.stdout, off.stderr)
    assert not (tmp_path / "services" / "runner" / "starting.json").exists()


def test_a_child_whose_client_gave_up_ends_quietly_without_touching_the_commands_stdio(
    tmp_path: Path,
) -> None:
    from services.runner_host import Request, run_request

    conn, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client_end.close()  # the client gave up before the child's pid came
    log_r, log_w = os.pipe()  # the runner's log (the child's fd 2 until "go")
    out_r, out_w = os.pipe()  # the command's stdin/stdout/stderr
    request = Request(
        argv=["ftpipe", "run", "DIR"],
        cwd=str(tmp_path),
        env={},
        path=list(sys.path),
        umask=0o022,
        nice=0,
        signals={"ignored": [], "blocked": []},
        fds=[out_w, out_w, out_w],
        conn=conn,
    )
    pid = os.fork()
    if pid == 0:  # the runner's child
        try:
            os.dup2(log_w, 2)
            run_request(request)
        finally:
            os._exit(99)
    for fd in (log_w, out_w):
        os.close(fd)
    conn.close()
    _, status = os.waitpid(pid, 0)
    with os.fdopen(log_r, "rb") as log, os.fdopen(out_r, "rb") as out:
        logged, shown = log.read(), out.read()
    assert os.waitstatus_to_exitcode(status) == runner.EXIT_FAILED
    assert shown == b""  # nothing on the user's terminal: the command runs in its own process instead
    assert f"runner child pid {pid}".encode() in logged and b"Traceback" in logged
