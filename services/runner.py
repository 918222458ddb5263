"""The warm runner's client side: ``ftpipe run`` served by a process that has Python, Prefect and ftpipe loaded.

The runner (``services/runner_host.py``) imported what ``ftpipe run`` needs once; for each command it forks a
child that takes this process's stdin/stdout/stderr (passed over its Unix socket), working directory,
environment and argv and runs ``cli.main.main`` exactly as this process would have. This process only waits:
it forwards the signals a terminal sends (the child is in its own process group) and exits with the child's
code. Nothing here imports more than the standard library: it runs before the CLI imports anything heavy.

A runner serves a command only when its key matches: the interpreter, the ftpipe code on disk, the
environment and the settings files read while it imported (``runner_key``). Otherwise, or when no runner
answers, the command runs in this process as it always did, and nothing of it ran in a runner.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType

RUNNER_DIR = "runner"  # the service's folder under the services root (``registry.RUNNER_SERVICE``)
SOCKET_FILE = "runner.sock"
RECORD_FILE = "record.json"  # ``registry.RECORD_FILE``
LOG_FILE = "server.log"  # ``registry.LOG_FILE``
PROTOCOL = 2
SWITCH_ENV = "FTPIPE_SERVICES_RUNNER"  # ``ServicesSettings.runner``
CONNECT_TIMEOUT_S = 2.0
# From the request to the child's "started": a fork of the runner takes milliseconds (tens on a loaded
# machine); a runner that takes this long is hung, and the command runs here instead (the child only starts
# once told to go). A new runner replaces one that does not answer a ping within as long (``answers``).
REPLY_TIMEOUT_S = 3.0
# An idle timeout shorter than this (0: stop at once) would have the runner idle out before the next command,
# and every command start one (seconds of CPU each) for nothing.
MIN_LIFETIME_S = 30.0
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130  # ``cli.common``'s codes (not imported: it imports logging, argparse)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The dispositions a child takes from its command's process rather than from the runner, whose own come from
# whoever started it (a non-interactive shell's `cmd &` ignores SIGINT in every child of `cmd`).
DISPOSED = {"INT": signal.SIGINT, "HUP": signal.SIGHUP, "QUIT": signal.SIGQUIT, "TERM": signal.SIGTERM}
_HEADER = struct.Struct("!I")
IN_RUNNER = False  # set in a runner's child: the command it runs is served already

# Environment that the runner's imports fixed (Prefect builds its settings from PREFECT_*; ftpipe's modules
# and Python's start-up read the rest): a client whose values differ is not served. Read at call time
# (MKA1_*, most FTPIPE_*) would be enough to pass in the request; they are part of the key all the same, so a
# runner never has to know which module reads what when. Terminal variables (TERM, COLUMNS, NO_COLOR ...)
# are not: the child rebuilds the consoles made at import against its own terminal.
KEY_ENV_PREFIXES = ("PREFECT_", "FTPIPE_", "MKA1_", "PYTHON", "LC_", "PYDANTIC_", "OTEL_", "SSL_CERT_")
KEY_ENV_NAMES = frozenset(
    ("LANG", "LANGUAGE", "HOME", "TZ", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "DO_NOT_TRACK", "CI")
)
# Prefect's settings also read these from the working directory, and its profiles file, at import.
CWD_SETTINGS_FILES = (".env", "prefect.toml", "pyproject.toml")
# Top-level folders of the checkout that are never imported by a command.
_NOT_CODE = frozenset(("tests", "bench", "scripts", "docs", "datasets", "deployments"))


def enabled(environ: Mapping[str, str]) -> bool:
    """False when the user turned the runner off (``FTPIPE_SERVICES_RUNNER=false``) or services are not kept."""
    # pydantic's false spellings: ServicesSettings reads the same variables (not imported here: pydantic).
    falses = ("0", "off", "f", "false", "n", "no")
    keep = environ.get("FTPIPE_SERVICES_KEEP", "true").strip().lower()
    return (
        sys.platform == "linux"
        and environ.get(SWITCH_ENV, "").strip().lower() not in falses
        and (keep not in falses)
    )


def services_root(environ: Mapping[str, str]) -> Path:
    """``ServicesSettings().root()`` without pydantic: FTPIPE_SERVICES_DIR or <state dir>/services."""
    configured = environ.get("FTPIPE_SERVICES_DIR")
    if configured:
        return Path(configured).expanduser()
    from tasks.state import default_state_dir

    return default_state_dir() / "services"


def code_root() -> Path:
    """The checkout or install that ``cli`` (and so every ftpipe package) is imported from."""
    import cli

    return Path(cli.__file__).resolve().parent.parent


def _stat(path: Path | str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def _packages(root: Path) -> list[str]:
    """ftpipe's top-level packages under ``root``: a checkout's package folders, or an install's own list
    (``top_level.txt``: the site-packages folder holds every other distribution's packages too)."""
    if not (root / "pyproject.toml").is_file():
        for listing in sorted(root.glob("ftpipe-*.dist-info/top_level.txt")):
            return sorted(n for n in listing.read_text(encoding="utf-8").split() if (root / n).is_dir())
        return ["cli"]
    with os.scandir(root) as tops:
        return sorted(
            top.name
            for top in tops
            if top.name not in _NOT_CODE
            and top.is_dir()
            and os.path.isfile(os.path.join(top.path, "__init__.py"))
        )


def _code_files(root: Path) -> list[tuple[str, int, int]]:
    # Every file of every package (data files too: some are read at import); a few hundred stats, ~1 ms.
    found: list[tuple[str, int, int]] = []

    def walk(path: str) -> None:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        walk(entry.path)
                elif not entry.name.endswith((".pyc", ".pyo")):
                    st = entry.stat()
                    found.append((os.path.relpath(entry.path, root), st.st_mtime_ns, st.st_size))

    for top in _packages(root):
        walk(str(root / top))
    return sorted(found)


def key_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that are part of the key, with the Prefect defaults every command applies
    (``cli.common.PREFECT_ENV_DEFAULTS``) filled in: a variable set to its default (``scripts/run.sh`` exports
    one) is the same run as one left unset."""
    from cli.common import PREFECT_ENV_DEFAULTS  # stdlib-only module

    merged = {**PREFECT_ENV_DEFAULTS, **environ}
    return {k: v for k, v in merged.items() if k.startswith(KEY_ENV_PREFIXES) or k in KEY_ENV_NAMES}


def runner_key(environ: Mapping[str, str], cwd: str, root: Path) -> str:
    """What a runner must share with a command to serve it, as a digest.

    Secret values (PREFECT_API_KEY) go into the digest too: the record holding it is the user's own (0600),
    and the same user can read the runner's whole environment from /proc anyway.
    """
    home = environ.get("PREFECT_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".prefect")
    profiles = environ.get("PREFECT_PROFILES_PATH") or os.path.join(home, "profiles.toml")
    material = {
        "protocol": PROTOCOL,
        "python": [sys.executable, sys.version],
        "site": {p: _stat(p) for p in sys.path if p.endswith("-packages")},  # an install changes its mtime
        "code": [str(root), _code_files(root)],
        "env": key_env(environ),
        "files": {name: _stat(os.path.join(cwd, name)) for name in CWD_SETTINGS_FILES},
        "profiles": [profiles, _stat(os.path.expanduser(profiles))],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def socket_address(path: Path) -> str:
    """A path ``connect``/``bind`` accept: a Unix socket path is limited to 107 bytes, a temp dir's can be longer."""
    text = str(path)
    if len(text.encode()) < 100:
        return text
    # Through the folder's fd (Linux): /proc/self/fd/N/runner.sock. The fd is left open for the process's life.
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{path.name}"


def send_message(sock: socket.socket, message: dict[str, object], fds: list[int] | None = None) -> None:
    """One length-prefixed JSON message (with ``fds`` attached to its first bytes)."""
    data = json.dumps(message).encode()
    payload = _HEADER.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [payload], fds)
        payload = payload[sent:]
    if payload:  # (an empty send to a peer that has read it all and closed would fail)
        sock.sendall(payload)


def read_message(sock: socket.socket, *, max_fds: int = 0) -> tuple[dict[str, object] | None, list[int]]:
    """One message (and the fds that came with it); None at end of stream."""
    buf = b""
    fds: list[int] = []
    got: list[int]
    need = _HEADER.size
    length: int | None = None
    while len(buf) < need:
        if max_fds and not fds:
            chunk, got, _, _ = socket.recv_fds(sock, 65536, max_fds)
            fds.extend(got)
        else:
            chunk = sock.recv(min(65536, need - len(buf)))
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None, []
        buf += chunk
        if length is None and len(buf) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buf)
            need = _HEADER.size + length
    data = json.loads(buf[_HEADER.size : need])
    return (data if isinstance(data, dict) else None), fds


def signal_state() -> dict[str, list[str] | list[int]]:
    """This process's ignored signals (of ``DISPOSED``) and blocked-signal mask, for its runner's child."""
    ignored = [name for name, sig in DISPOSED.items() if signal.getsignal(sig) == signal.SIG_IGN]
    blocked = sorted(int(sig) for sig in signal.pthread_sigmask(signal.SIG_BLOCK, ()))
    return {"ignored": ignored, "blocked": blocked}


def apply_signal_state(state: Mapping[str, object]) -> None:
    """Take a command's ``signal_state``: what it ignores is ignored, the rest as Python starts (SIGINT raises
    KeyboardInterrupt, the others their default), and its mask."""
    ignored = state.get("ignored")
    ignored = ignored if isinstance(ignored, list) else []
    for name, sig in DISPOSED.items():
        if name in ignored:
            signal.signal(sig, signal.SIG_IGN)
        else:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    blocked = state.get("blocked")
    signal.pthread_sigmask(signal.SIG_SETMASK, [int(s) for s in blocked] if isinstance(blocked, list) else [])


def answers(folder: Path, timeout_s: float = REPLY_TIMEOUT_S) -> bool:
    """True when a runner listens on ``folder``'s socket and answers a ping (an alive but stopped or hung
    runner does not)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(socket_address(folder / SOCKET_FILE))
        send_message(sock, {"ping": True})
        reply, fds = read_message(sock)
        for fd in fds:
            os.close(fd)
        return reply is not None
    except (OSError, ValueError):
        return False
    finally:
        sock.close()


def note(folder: Path, text: str) -> None:
    """A line in the runner's log (best effort): what went wrong with a runner is said there, not to a command."""
    with contextlib.suppress(OSError):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(folder / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {text}\n")


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in (b"Z", b"X")


def _plain_interpreter() -> bool:
    """False under interpreter options a runner (started without them) does not have: ``-X importtime``,
    ``-W``, ``-O``, ``-I``, ``-E``, ``-S``, ``-i``, ``-v``, ``-X dev``; such a command runs in its own process."""
    f = sys.flags
    return not (
        sys._xoptions
        or sys.warnoptions
        or f.optimize
        or f.isolated
        or f.ignore_environment
        or f.no_site
        or f.inspect
        or f.verbose
        or f.dev_mode
    )


class RunnerClient:
    """One command's attempt to be served by the warm runner."""

    def __init__(self, argv: list[str], environ: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.env = dict(environ)  # as the command started: before any default is applied
        self.cwd = os.getcwd()
        self.root = services_root(self.env)
        self.dir = self.root / RUNNER_DIR
        self.key = runner_key(self.env, self.cwd, code_root())
        # Why it was not served: "absent", "mismatch", "dead" (start one) or "busy" (the runner is fine).
        self.missed = ""
        self._child = 0
        self._fatal: int | None = None

    @classmethod
    def for_command(cls, argv: list[str]) -> RunnerClient | None:
        """A client when ``argv`` (``sys.argv``) is ``ftpipe run ...`` and the runner is enabled."""
        words = argv[1:]
        while words and words[0] == "--debug":
            words = words[1:]
        if IN_RUNNER or not words or words[0] != "run" or not enabled(os.environ) or not _plain_interpreter():
            return None
        try:
            return cls(argv, os.environ)
        except OSError:  # an unreadable checkout or state dir: the command reports it in-process
            return None

    def serve(self) -> int | None:
        """The command's exit code once the runner ran it; None when this process must run it (nothing ran)."""
        record = _read_json(self.dir / RECORD_FILE)
        if record is None:
            self.missed = "absent"
            return None
        if record.get("config_hash") != self.key:
            self.missed = "mismatch"
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            return self._serve(sock)
        finally:
            sock.close()

    def _serve(self, sock: socket.socket) -> int | None:
        try:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(socket_address(self.dir / SOCKET_FILE))
            with _stdio() as fds:
                umask = os.umask(0o077)
                os.umask(umask)
                request = {
                    "protocol": PROTOCOL,
                    "key": self.key,
                    "argv": self.argv,
                    "cwd": self.cwd,
                    "env": self.env,
                    "path": sys.path,
                    "umask": umask,
                    "nice": os.getpriority(os.PRIO_PROCESS, 0),
                    "signals": signal_state(),
                }
                send_message(sock, request, fds)
            sock.settimeout(REPLY_TIMEOUT_S)
            reply, _ = read_message(sock)
        except (OSError, ValueError):  # refused (a stale socket), reset, timed out, garbled
            self.missed = "dead"
            return None
        if reply is None or not isinstance(reply.get("pid"), int):
            self.missed = str(reply.get("refused", "dead")) if reply else "dead"
            return None
        self._child = int(reply["pid"])  # type: ignore[call-overload]
        # A signal this process ignores (`nohup`, a background job's SIGINT) is ignored by the child too
        # (``apply_signal_state``): it is not caught here to be forwarded.
        previous = {
            sig: signal.signal(sig, self._forward)
            for sig in FORWARDED
            if signal.getsignal(sig) != signal.SIG_IGN
        }
        if signal.getsignal(signal.SIGTSTP) != signal.SIG_IGN:
            previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._suspend)
        try:
            sock.sendall(b"g")  # from here on the command runs there, never here
        except OSError:
            _restore(previous)
            self.missed = "dead"
            return None
        try:
            return self._wait(sock)
        finally:
            _restore(previous)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        # A terminal signals this process's group; the child, in a group of its own, gets the same signal.
        if signum != signal.SIGINT:
            self._fatal = signum
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._child, signum)

    def _suspend(self, signum: int, frame: FrameType | None) -> None:
        # Ctrl-Z: the child stops with this process (it is in no terminal's foreground group to be stopped
        # by it), and goes on when this process is continued (fg, bg).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._child, signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
        signal.signal(signal.SIGTSTP, self._suspend)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._child, signal.SIGCONT)

    def _wait(self, sock: socket.socket) -> int:
        code: int | None = None
        sock.settimeout(None)
        try:
            message, _ = read_message(sock)
            if message is not None and isinstance(message.get("exit"), int):
                code = int(message["exit"])  # type: ignore[call-overload]
                # The child still runs its exit handlers (Prefect sends its last logs and events, and may
                # print): wait for its end, seen as the connection closing, or the process gone (a forked
                # grandchild may hold the connection).
                sock.settimeout(0.1)
                while not _gone(self._child):
                    try:
                        if not sock.recv(64):
                            break
                    except TimeoutError:
                        continue
        except OSError:
            pass
        if code is not None:
            return code
        if self._fatal is not None:  # it died of the signal forwarded to it: so does this process
            signal.signal(self._fatal, signal.SIG_DFL)
            os.kill(os.getpid(), self._fatal)
        print(
            f"ftpipe: the run (pid {self._child}, started by ftpipe's warm runner) ended without an exit code; "
            f"its runner's log: {self.dir / LOG_FILE}",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _restore(previous: Mapping[signal.Signals, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


@contextlib.contextmanager
def _stdio() -> Iterator[list[int]]:
    """This process's fds 0, 1 and 2 to pass on (a closed one as /dev/null, as it reads and writes nothing)."""
    opened: list[int] = []
    fds: list[int] = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            opened.append(null)
            fds.append(null)
    try:
        yield fds
    finally:
        for fd in opened:
            os.close(fd)


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
