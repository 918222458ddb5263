"""The warm runner's process: imports what ``ftpipe run`` needs once, then forks a child per command.

Started in the background by an ``ftpipe run`` that found none for its key (``start_runner``), in a session of
its own like the other services. It listens on ``<services>/runner/runner.sock`` (0600, in a 0700 folder; a
peer of another uid is refused); each request carries the command's argv, working directory, environment,
``sys.path`` and its stdin/stdout/stderr. The child puts those in place, rebuilds what was bound to the
runner's own stdio at import (``sys.std*``, Prefect's console handler and its rich console, which decided on
colours and terminal from the runner's log file), and runs ``cli.main.main`` as the command's own process
would have. Children write a lease each, so ``ftpipe services status`` lists them, and the runner idles out
(``host.Watchdog``) after ``FTPIPE_SERVICES_IDLE_TIMEOUT_S`` without one. Stopping the runner stops serving;
runs it already started go on to their end (each belongs to its command's process, which waits for it).

It starts no thread before a fork (a fork copies only the forking thread: another one's locks would stay
held in the child); a request finding more than one refuses, and the command runs in its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from services import runner
from services.host import PRIVATE_UMASK, Watchdog
from services.registry import (
    PRIVATE_FILE_MODE,
    RUNNER_SERVICE,
    ServiceDir,
    ServiceRecord,
    now_iso,
    process_alive,
    process_start_time,
    read_json,
    write_private_json,
)
from services.runner import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    PROTOCOL,
    SOCKET_FILE,
    code_root,
    read_message,
    runner_key,
    send_message,
    socket_address,
)

STARTING_FILE = "starting.json"
FAILED_FILE = "failed.json"  # the key of a runner that could not start: not retried until the key changes
LOCK_WAIT_S = 90.0
# A command starting a runner does not wait for another process's start or stop of one: it tries next time.
START_LOCK_WAIT_S = 0.2
# The child's wait for its client's "go" (the client waits REPLY_TIMEOUT_S for the child's pid, then gives up).
GO_WAIT_S = 30.0
# A client that died leaves its run as a Ctrl-C would; a run that is still going this long after is ended.
CLIENT_GONE_GRACE_S = 60.0
# Python's own start: ``-P`` keeps the working directory off sys.path; the command's sys.path is put in place
# before anything of ftpipe is imported, so the runner imports the code the command would have.
BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv.pop(1)); "
    "from services.runner_host import main; raise SystemExit(main(sys.argv[1:]))"
)

log = logging.getLogger("ftpipe.services.runner")


@dataclass(frozen=True)
class Request:
    """One command to run, as its client sent it, with its stdin/stdout/stderr (fds of this process)."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    path: list[str]
    umask: int
    nice: int
    signals: dict[str, object]
    fds: list[int]
    conn: socket.socket


def start_runner(
    env: Mapping[str, str], cwd: str, key: str, command: str, idle_timeout_s: float
) -> int | None:
    """Start a runner in the background for a command's ``env`` and ``cwd``; its pid (None: one is starting)."""
    from services.runner import services_root

    sd = ServiceDir(services_root(env), RUNNER_SERVICE)
    sd.ensure()
    with sd.locked(START_LOCK_WAIT_S, "started"):
        if (read_json(sd.path / FAILED_FILE) or {}).get("key") == key:
            return None  # it failed for this code and these settings (see its log): not again at every run
        starting = read_json(sd.path / STARTING_FILE) or {}
        pid = starting.get("pid")
        if (
            starting.get("key") == key
            and isinstance(pid, int)
            and process_alive(pid, starting.get("pid_started"))
        ):
            return None  # another command started it a moment ago
        argv = [sys.executable, "-P", "-c", BOOT, json.dumps(sys.path), "--dir", str(sd.path)]
        argv += [
            "--idle-timeout",
            str(idle_timeout_s),
            "--owner-pid",
            str(os.getpid()),
            "--owner-command",
            command,
        ]
        proc = sd.spawn(argv, env, command, cwd=cwd)
        write_private_json(
            sd.path / STARTING_FILE,
            {"pid": proc.pid, "pid_started": process_start_time(proc.pid), "key": key},
        )
    proc.returncode = 0  # it outlives this command: nobody waits for it, and Popen must not warn about that
    return proc.pid


def starting_pid(root: Path) -> int | None:
    """The pid of a runner that was started and is still importing (it serves nothing yet), if one is."""
    starting = read_json(ServiceDir(root, RUNNER_SERVICE).path / STARTING_FILE) or {}
    pid = starting.get("pid")
    alive = isinstance(pid, int) and process_alive(pid, starting.get("pid_started"))
    return pid if alive else None


def stop_starting(root: Path, timeout_s: float) -> tuple[int, bool] | None:
    """Stop a runner still importing (started, see ``STARTING_FILE``, not serving yet): its pid and whether it
    stopped on the SIGTERM; None when none is starting. Without it, ``services stop`` right after a run
    started one would find nothing, and the runner would then serve until its idle timeout."""
    sd = ServiceDir(root, RUNNER_SERVICE)
    if not (sd.path / STARTING_FILE).exists():
        return None
    from services.manager import _terminate

    with sd.locked(LOCK_WAIT_S, "stopped"):
        starting = read_json(sd.path / STARTING_FILE) or {}
        with contextlib.suppress(FileNotFoundError):
            (sd.path / STARTING_FILE).unlink()
        pid = starting.get("pid")
        if not isinstance(pid, int) or not process_alive(pid, starting.get("pid_started")):
            return None
        return pid, _terminate(pid, timeout_s)  # (until its imports are done, SIGTERM ends it at once)


def wait_ready(root: Path, pid: int, timeout_s: float) -> ServiceRecord | None:
    """The runner's record once runner ``pid`` serves (None: it exited or took longer)."""
    sd = ServiceDir(root, RUNNER_SERVICE)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = sd.read_record()
        if record is not None and record.pid == pid:
            return record
        if not process_alive(pid):
            return None
        time.sleep(0.05)
    return None


class _Stop(Exception):
    """SIGTERM to the runner: stop serving."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


class Runner:
    """The listening socket, the idle clock and the fork per request."""

    def __init__(self, sd: ServiceDir, key: str, idle_timeout_s: float) -> None:
        self.sd = sd
        self.key = key
        self.pid = os.getpid()
        self.watchdog = Watchdog(sd, idle_timeout_s)
        self.listener: socket.socket | None = None
        self._inode: int | None = None

    def listen(self) -> None:
        """Bind the socket (0600: the folder is 0700 too) in place of a stale one."""
        path = self.sd.path / SOCKET_FILE
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(socket_address(path))
        finally:
            os.umask(old)
        os.chmod(path, PRIVATE_FILE_MODE)
        listener.listen(16)
        listener.settimeout(self.watchdog.poll_s)
        self.listener = listener
        self._inode = os.stat(path).st_ino

    def close(self) -> None:
        """Stop listening; the socket file goes only if it is still this runner's."""
        if self.listener is None:
            return
        self.listener.close()
        self.listener = None
        path = self.sd.path / SOCKET_FILE
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == self._inode:
                path.unlink()

    def serve(self) -> Request | None:
        """Serve until idle or stopped (None); in a forked child, its request."""
        assert self.listener is not None
        while True:
            self._reap()
            if not self._still_mine() or self.watchdog.idle_out():
                return None
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            request = self._handle(conn)
            if request is not None:
                return request

    def _still_mine(self) -> bool:
        # Its folder removed (a test's temp dir, a cleaned state dir) or its socket replaced: nobody can reach
        # it any more, so it stops now rather than at the idle timeout.
        try:
            return os.stat(self.sd.path / SOCKET_FILE).st_ino == self._inode
        except OSError:
            log.warning("%s is gone: stopping", self.sd.path / SOCKET_FILE)
            return False

    def _reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass

    def _handle(self, conn: socket.socket) -> Request | None:
        fds: list[int] = []
        try:
            conn.settimeout(5.0)
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            if uid != os.getuid():
                log.warning("refused a client of uid %d", uid)
                self._refuse(conn, "uid", fds)
                return None
            message, fds = read_message(conn, max_fds=3)
            if message is not None and message.get("ping"):  # a new runner asking whether this one answers
                self._refuse(conn, "pong", fds)
                return None
            if message is None or len(fds) != 3:
                self._refuse(conn, "dead", fds)
                return None
            if message.get("protocol") != PROTOCOL or message.get("key") != self.key:
                self._refuse(conn, "mismatch", fds)
                return None
            if threading.active_count() != 1:
                log.error("%d threads running: not forking", threading.active_count())
                self._refuse(conn, "busy", fds)
                return None
            request = Request(
                argv=[str(a) for a in message["argv"]],  # type: ignore[attr-defined]
                cwd=str(message["cwd"]),
                env={str(k): str(v) for k, v in message["env"].items()},  # type: ignore[attr-defined]
                path=[str(p) for p in message["path"]],  # type: ignore[attr-defined]
                umask=int(message["umask"]),  # type: ignore[call-overload]
                nice=int(message["nice"]),  # type: ignore[call-overload]
                signals=dict(message["signals"]),  # type: ignore[call-overload]
                fds=fds,
                conn=conn,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("a request failed: %s", exc)
            self._refuse(conn, "dead", fds)
            return None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would write what this process had buffered
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self.listener.close() if self.listener is not None else None
            self.listener = None
            return request
        command = "ftpipe run"  # only `run` is served; its options are not logged (they may carry a secret)
        log.info("pid %d: %s (in %s)", pid, command, request.cwd)
        with contextlib.suppress(ProcessLookupError):
            self.sd.add_lease(command, pid=pid)
        conn.close()
        for fd in fds:
            os.close(fd)
        return None

    def _refuse(self, conn: socket.socket, why: str, fds: list[int]) -> None:
        with contextlib.suppress(OSError):
            send_message(conn, {"refused": why})
        conn.close()
        for fd in fds:
            os.close(fd)


def _reopen_stdio() -> tuple[object, object]:
    """``sys.stdin/stdout/stderr`` made again on fds 0, 1 and 2, as Python makes them at start-up; the old
    stdout and stderr objects."""
    old_out, old_err = sys.stdout, sys.stderr
    unbuffered = bool(getattr(old_out, "write_through", False))
    encoding = getattr(old_out, "encoding", None) or "utf-8"

    def writer(fd: int, errors: str, line: bool) -> io.TextIOWrapper:
        raw = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)  # noqa: SIM115 - it is sys.stdout
        return io.TextIOWrapper(
            raw,  # type: ignore[arg-type]
            encoding=encoding,
            errors=errors,
            line_buffering=line and not unbuffered,
            write_through=unbuffered,
        )

    raw_in = open(0, "rb", closefd=False)  # noqa: SIM115 - it is sys.stdin
    stdin = io.TextIOWrapper(raw_in, encoding=getattr(sys.stdin, "encoding", None) or encoding)
    stdout = writer(1, getattr(old_out, "errors", None) or "strict", os.isatty(1))
    stderr = writer(2, "backslashreplace", True)  # stderr is line-buffered, even when not a terminal
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = stdin, stdout, stderr  # type: ignore[misc]
    return old_out, old_err


def _rebind_console_handlers(old_out: object, old_err: object) -> None:
    """Log handlers made at import on the runner's stdio write to the command's; Prefect's console handler is
    made anew, so its rich console decides on colours, terminal and width from the command's stderr."""
    from prefect.logging.configuration import PROCESS_LOGGING_CONFIG
    from prefect.logging.handlers import PrefectConsoleHandler

    replaced = {id(old_out): sys.stdout, id(old_err): sys.stderr}
    styles = PROCESS_LOGGING_CONFIG.get("handlers", {}).get("console", {}).get("styles")
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    made: dict[int, logging.Handler] = {}
    for logger in loggers:
        for i, handler in enumerate(logger.handlers):
            if not isinstance(handler, logging.StreamHandler) or id(handler.stream) not in replaced:
                continue
            stream = replaced[id(handler.stream)]
            if not isinstance(handler, PrefectConsoleHandler):
                handler.setStream(stream)
                continue
            new = made.get(id(handler))
            if new is None:
                new = PrefectConsoleHandler(
                    stream=stream,
                    highlighter=type(handler.console.highlighter),  # type: ignore[arg-type]
                    styles=styles,
                    level=handler.level,
                )
                new.setFormatter(handler.formatter)
                new.filters = list(handler.filters)
                new.name = handler.name
                made[id(handler)] = new
            logger.handlers[i] = new


def _watch_client(conn: socket.socket, done: threading.Event) -> None:
    """The client's end closing while the command runs (it was killed) is a Ctrl-C here: the run cancels its
    job and ends Cancelled, with no one left to show it anything."""
    while True:
        try:
            if not conn.recv(64):
                break
        except OSError:
            break
    if done.is_set():
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(CLIENT_GONE_GRACE_S)
    os._exit(EXIT_INTERRUPTED)


def run_request(request: Request) -> int:
    """In the forked child: become the command's process, run it, report its exit code."""
    runner.IN_RUNNER = True  # the command's ``main`` must not look for a runner again
    conn = request.conn
    # Until "go", nothing of the client's is touched (a failure here is this process's end, said in the
    # runner's log, which fd 2 still is; the client then runs the command itself), and signals forwarded
    # meanwhile wait for the command's own dispositions, taken here.
    try:
        runner.apply_signal_state({"ignored": request.signals.get("ignored"), "blocked": None})
        signal.pthread_sigmask(signal.SIG_BLOCK, runner.DISPOSED.values())  # before the client knows the pid
        os.setpgid(0, 0)  # the client forwards a terminal's signals to this group (grandchildren included)
        send_message(conn, {"pid": os.getpid()})
        conn.settimeout(GO_WAIT_S)
        go = conn.recv(1)
    except BaseException:  # noqa: BLE001 - whatever it is, the command must not see it
        with contextlib.suppress(BaseException):
            log_failure()
        os._exit(EXIT_FAILED)
    if go != b"g":  # the client gave up waiting and runs the command itself
        os._exit(0)
    conn.settimeout(None)
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
    for fd in request.fds:
        if fd > 2:
            os.close(fd)
    os.chdir(request.cwd)
    os.umask(request.umask)  # files the run writes get the command's permissions, not the runner's 0077
    with contextlib.suppress(OSError):  # `nice ftpipe run`: lowering the priority needs no privilege
        if request.nice > os.getpriority(os.PRIO_PROCESS, 0):
            os.setpriority(os.PRIO_PROCESS, 0, request.nice)
    os.environ.clear()
    os.environ.update(request.env)
    sys.argv[:] = request.argv
    sys.path[:] = request.path
    old_out, old_err = _reopen_stdio()
    _rebind_console_handlers(old_out, old_err)
    done = threading.Event()
    threading.Thread(target=_watch_client, args=(conn, done), name="runner-client", daemon=True).start()
    from cli.main import main as cli_main

    try:
        runner.apply_signal_state(request.signals)  # its mask: signals held since the fork come now
        code = cli_main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
        _report_exit(conn, done, code)
        raise
    except KeyboardInterrupt:
        _report_exit(conn, done, EXIT_INTERRUPTED)
        raise
    except BaseException:
        _report_exit(conn, done, EXIT_FAILED)
        raise
    _report_exit(conn, done, code)
    return code


def log_failure() -> None:
    """The exception being handled, with its traceback, in the runner's log (fd 2 before the command's)."""
    import traceback

    os.write(2, f"runner child pid {os.getpid()}: {traceback.format_exc()}".encode(errors="replace"))


def _report_exit(conn: socket.socket, done: threading.Event, code: int) -> None:
    done.set()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    with contextlib.suppress(OSError):
        send_message(conn, {"exit": code})
    # The connection closes when this process ends (after its exit handlers): the client waits for that.


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (through ``BOOT``): import, listen, serve; in a child, the command's exit code."""
    ap = argparse.ArgumentParser(prog="ftpipe runner", description=__doc__)
    ap.add_argument("--dir", type=Path, required=True, help="the service's registry folder")
    ap.add_argument("--idle-timeout", type=float, required=True, help="seconds without a run, then stop")
    ap.add_argument("--owner-pid", type=int, default=0)
    ap.add_argument("--owner-command", default="")
    args = ap.parse_args(argv)
    os.umask(PRIVATE_UMASK)
    handler = logging.StreamHandler(os.fdopen(os.dup(2), "w", buffering=1))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    services_log = logging.getLogger("ftpipe.services")  # this module's and the watchdog's lines
    services_log.addHandler(handler)
    services_log.setLevel(logging.INFO)
    services_log.propagate = False
    sd = ServiceDir(args.dir.parent, args.dir.name)
    # The key is taken before the imports: code edited while they run makes the next command's key differ.
    key = runner_key(os.environ, os.getcwd(), code_root())
    started = time.monotonic()
    try:
        from cli.run import preload

        preload()
    except Exception:
        log.exception("the imports failed")
        write_private_json(sd.path / FAILED_FILE, {"key": key, "at": now_iso()})
        return EXIT_FAILED
    gc.collect()
    gc.freeze()  # what the imports made is never collected: children do not copy its pages to scan them
    took = time.monotonic() - started
    if threading.active_count() != 1:
        log.error("the imports started threads (%s): a fork would be unsafe", threading.enumerate())
        write_private_json(sd.path / FAILED_FILE, {"key": key, "at": now_iso()})
        return EXIT_FAILED
    os.chdir("/")  # a runner holds no folder of the command that started it
    server = Runner(sd, key, args.idle_timeout)
    signal.signal(signal.SIGTERM, _on_sigterm)
    request: Request | None = None
    try:
        with sd.locked(LOCK_WAIT_S, "started"):
            current = sd.live_record()
            hung = False
            if current is not None and current.config_hash == key:
                if runner.answers(sd.path):
                    log.info("runner pid %d already serves this key: exiting", current.pid)
                    return 0
                log.warning("runner pid %d does not answer (stopped or hung): replacing it", current.pid)
                hung = True
            if current is not None:
                from services.manager import STOP_TIMEOUT_S, stop_locked

                # A runner for other code or settings, or a hung one: the newest command's replaces it.
                stop_locked(sd, 2.0 if hung else STOP_TIMEOUT_S)
            server.listen()
            sd.write_record(
                ServiceRecord(
                    name=sd.name,
                    kind="runner",
                    pid=server.pid,
                    pid_started=process_start_time(server.pid) or time.time(),
                    url=str(sd.path / SOCKET_FILE),
                    port=0,
                    started_at=now_iso(),
                    owner_pid=args.owner_pid,
                    owner_command=args.owner_command,
                    idle_timeout_s=args.idle_timeout,
                    log_path=str(sd.log_path),
                    config_hash=key,
                )
            )
            with contextlib.suppress(FileNotFoundError):
                (sd.path / STARTING_FILE).unlink()
        log.info(
            "runner pid %d serving after %.1fs of imports, idle timeout %.0fs",
            server.pid,
            took,
            args.idle_timeout,
        )
        request = server.serve()
    except _Stop:
        log.info("runner pid %d stopping", server.pid)
    finally:
        if os.getpid() == server.pid:
            server.close()
            sd.remove_record(server.pid)
    if request is None:
        return 0
    # In the child from here on: the runner's log handler is no part of the command.
    services_log.removeHandler(handler)
    services_log.setLevel(logging.NOTSET)
    services_log.propagate = True
    handler.stream.close()
    return run_request(request)
