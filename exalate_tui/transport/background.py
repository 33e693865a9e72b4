"""The node of a home as a process: is one running, where, since when; start, stop, probe.

Any node of a home (the foreground `exalate-tui node`, the detached one
`exalate-tui node start` runs, a systemd service) holds an exclusive `flock`
on `<home>/locks/node.lock` for as long as it lives (`claim`) and, once its
socket is bound, records itself in `node.pid` (`Home.save_node_record`:
pid, host, port, start time, version; 0600, written atomically), which it
removes when it stops cleanly.

The lock, not the pid, says whether a node runs: the kernel drops it with
the process, so a node killed with SIGKILL leaves its `node.pid` but not its
lock. A `node.pid` whose lock is free is stale, whichever process has that
pid by now, and is removed (under the lock) with a message. Before a signal
is sent, `/proc/PID/cmdline` (where there is one) must also name exalate-tui.

Standard library only: the console checks the node every few seconds and
must not load the node's FastAPI and uvicorn, nor httpx, for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from exalate_tui import __version__
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home, NodeRecord, StoreError
from exalate_tui.protocol.api import PREFIX, PRODUCT

# A status check holds the lock for microseconds; a node starting waits that long.
CLAIM_PATIENCE = 1.0
PROBE_TIMEOUT = 1.0
START_TIMEOUT = 30.0
# The node's own graceful stop takes up to 5 s (transport/server.py): wait longer.
STOP_TIMEOUT = 15.0
LOG_TAIL = 10


class NodeRunning(ExalateError):
    """Another node already serves this home."""

    def __init__(self, home: Home, record: NodeRecord | None) -> None:
        self.record = record
        where = f" (pid {record.pid}, {record.url})" if record else ""
        super().__init__(
            f"a node already serves {home.path}{where}: stop it with "
            f"`exalate-tui --home {home.path} node stop`, or use it"
        )


class NodeError(ExalateError):
    """The node could not be started or stopped; str() says what happened and where to look
    (with the end of its log, a line each)."""

    lines = True


# -- the node's side: hold the lock, record where it listens ----------------------------


class Claim:
    """This process is the home's node: the lock is held until `release`."""

    def __init__(self, home: Home, handle: IO[str]) -> None:
        self.home = home
        self._handle: IO[str] | None = handle

    def record(self, host: str, port: int) -> NodeRecord:
        record = NodeRecord(
            pid=os.getpid(),
            host=host,
            port=port,
            started=datetime.now(UTC),
            version=__version__,
        )
        self.home.save_node_record(record)
        return record

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(StoreError, OSError):
            record = self.home.load_node_record()
            if record is not None and record.pid == os.getpid():
                self.home.drop_node_record()
        handle, self._handle = self._handle, None
        handle.close()  # closing the file drops the lock


def claim(home: Home, patience: float = CLAIM_PATIENCE) -> Claim:
    """Become the home's node, or raise NodeRunning naming the one that is."""
    home.ensure()
    home.node_lock_path.parent.mkdir(mode=0o700, exist_ok=True)
    handle = open(home.node_lock_path, "a")  # noqa: SIM115 - held for the node's life
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return Claim(home, handle)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise NodeRunning(home, _record_or_none(home)) from None
            time.sleep(0.02)
        except BaseException:
            handle.close()
            raise


# -- everyone else's side: is a node running? -------------------------------------------


def _record_or_none(home: Home) -> NodeRecord | None:
    try:
        return home.load_node_record()
    except (StoreError, OSError):
        return None


def lock_held(home: Home) -> bool:
    """Whether a process holds the home's node lock now (never creates a file)."""
    try:
        fd = os.open(home.node_lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock, if it was taken
    return False


def is_node_process(pid: int) -> bool:
    """Whether `pid` runs exalate-tui: by `/proc/PID/cmdline` where there is one."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if not Path("/proc/self/cmdline").exists():
            return _alive(pid)  # no /proc here: the lock alone vouches for it
        return False
    except OSError:
        return False
    return b"exalate_tui" in cmdline or b"exalate-tui" in cmdline


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Stale:
    """A `node.pid` no node held, removed: the pid it named (None when unreadable)."""

    pid: int | None

    def __str__(self) -> str:
        named = f"pid {self.pid}" if self.pid is not None else "unreadable"
        return f"removed a stale node.pid ({named}; that node is gone)"


@dataclass(frozen=True)
class Running:
    """What the files say: the node's record when one runs; a stale record removed."""

    record: NodeRecord | None
    running: bool
    stale: Stale | None = None


def running(home: Home, *, clean: bool = False) -> Running:
    """Whether a node serves `home` (its lock is held), and its record.

    With `clean`, a stale `node.pid` (no node holds the lock) is removed and
    returned as `stale`, so the caller can say so.
    """
    if lock_held(home):
        return Running(_record_or_none(home), True)
    if not home.node_pid_path.exists():
        return Running(None, False)
    stale = _record_or_none(home)
    if clean and _drop_stale(home):
        return Running(None, False, Stale(stale.pid if stale else None))
    return Running(None, False)


def _drop_stale(home: Home) -> bool:
    """Remove `node.pid` under the node lock, so a node starting now is never robbed of it."""
    try:
        fd = os.open(home.node_lock_path, os.O_RDONLY | os.O_CREAT, 0o600)
    except FileNotFoundError:  # no locks/ folder: no node ever ran with this version
        home.drop_node_record()
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False  # a node took it meanwhile: its record is fresh
    try:
        home.drop_node_record()
    finally:
        os.close(fd)
    return True


def probe(record: NodeRecord, timeout: float = PROBE_TIMEOUT) -> dict[str, Any] | None:
    """`GET /api/v1/info` at the record's address: the answer, or None when it gives none."""
    # Here, not at the top: the console's first frame asks `glance` (node.pid only), and the
    # probe runs in a worker after it (benchmarks/README.md, start-up).
    import http.client

    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(record.host, record.host)
    connection = http.client.HTTPConnection(host, record.port, timeout=timeout)
    try:
        connection.request("GET", f"{PREFIX}/info", headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(65536)
        if response.status != 200:
            return None
        info = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError, RecursionError):
        return None
    finally:
        connection.close()
    if not isinstance(info, dict) or info.get("product") != PRODUCT:
        return None
    return info


@dataclass(frozen=True)
class Status:
    """`node status`: running or not, where, since when, and whether `/info` answers."""

    running: bool
    record: NodeRecord | None = None
    info: dict[str, Any] | None = None
    stale: Stale | None = None
    # False when only the files were read (`glance`): whether it answers is not known yet.
    probed: bool = True

    @property
    def answers(self) -> bool:
        return self.info is not None

    def uptime(self, now: float) -> float | None:
        if self.record is None:
            return None
        return max(0.0, now - self.record.started.timestamp())

    def as_json(self, now: float) -> dict[str, Any]:
        record = self.record
        return {
            "running": self.running,
            "pid": record.pid if record else None,
            "url": record.url if record else None,
            "started": record.started.isoformat() if record else None,
            "uptime": round(self.uptime(now) or 0.0, 1) if record else None,
            "version": (self.info or {}).get("version") or (record.version if record else None),
            "answers": self.answers,
            "short_name": (self.info or {}).get("short_name"),
            "stale_pid_removed": self.stale is not None,
        }


def status(home: Home, *, clean: bool = True, timeout: float = PROBE_TIMEOUT) -> Status:
    found = running(home, clean=clean)
    info = probe(found.record, timeout) if found.running and found.record else None
    return Status(found.running, found.record, info, found.stale)


def glance(home: Home) -> Status:
    """The files alone (the lock and node.pid), no request: cheap enough for a first frame."""
    found = running(home)
    return Status(found.running, found.record, probed=False)


# -- starting and stopping ----------------------------------------------------------


@dataclass(frozen=True)
class Started:
    status: Status
    already: bool = False


def node_command(home: Home) -> list[str]:
    """How to run this home's node: this Python, this package (works from any venv)."""
    return [sys.executable, "-m", "exalate_tui.cli", "--home", str(home.path.resolve()), "node"]


def start(
    home: Home,
    host: str | None = None,
    port: int | None = None,
    *,
    timeout: float = START_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> Started:
    """Start the home's node detached, its output appended to `node.log`; wait until it
    answers `/info` on its address. A node already running is left alone (`already`)."""
    found = status(home)
    if found.running:
        return Started(found, already=True)
    home.ensure()
    args = node_command(home)
    if host is not None:
        args += ["--host", host]
    if port is not None:
        args += ["--port", str(port)]
    log = os.open(home.node_log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(log, 0o600)
        offset = os.lseek(log, 0, os.SEEK_END)
        # A session of its own: the terminal's hang-up (SSH closed, console quit) is not its.
        child = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            cwd=home.path,
        )
    finally:
        os.close(log)
    deadline = clock() + timeout
    while True:
        code = child.poll()
        if code is not None:
            raise NodeError(
                f"the node exited at once (status {code}); the end of {home.node_log_path}:\n"
                + log_tail(home, offset)
            )
        record = _record_or_none(home)
        if record is not None and record.pid == child.pid:
            info = probe(record)
            if info is not None:
                return Started(Status(True, record, info))
        if clock() >= deadline:
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
            raise NodeError(
                f"the node did not answer within {timeout:g} s and was stopped; the end of "
                f"{home.node_log_path}:\n" + log_tail(home, offset)
            )
        time.sleep(0.05)


def log_tail(home: Home, offset: int = 0, lines: int = LOG_TAIL) -> str:
    """The last lines the node wrote to `node.log` after `offset`, indented."""
    try:
        with open(home.node_log_path, "rb") as file:
            file.seek(offset)
            text = file.read().decode("utf-8", "replace")
    except OSError as error:
        return f"  ({error})"
    tail = text.strip().splitlines()[-lines:] or ["(nothing)"]
    return "\n".join(f"  {line}" for line in tail)


@dataclass(frozen=True)
class Stopped:
    """`node stop`: the node that stopped, or nothing ran (with a stale record cleaned)."""

    record: NodeRecord | None
    stale: Stale | None = None


def stop(
    home: Home, *, timeout: float = STOP_TIMEOUT, clock: Callable[[], float] = time.monotonic
) -> Stopped:
    """SIGTERM to the home's node, then wait until its lock is free."""
    found = running(home, clean=True)
    if not found.running:
        return Stopped(None, found.stale)
    record = found.record
    if record is None:
        raise NodeError(
            f"a node holds {home.node_lock_path} but {home.node_pid_path} does not say "
            "which: find it with `fuser -v` and stop it yourself"
        )
    if not is_node_process(record.pid):
        raise NodeError(
            f"{home.node_pid_path} names pid {record.pid}, which is not exalate-tui: "
            "not signalled; find the node with `fuser -v "
            f"{home.node_lock_path}` and stop it yourself"
        )
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError as error:
        raise NodeError(
            f"pid {record.pid} belongs to another user ({error.strerror}): run `node stop` as "
            "that user"
        ) from None
    deadline = clock() + timeout
    # The lock goes a moment before the process: wait for both, so "stopped" is true.
    while lock_held(home) or not _exited(record.pid):
        if clock() >= deadline:
            raise NodeError(
                f"the node (pid {record.pid}) did not stop within {timeout:g} s of SIGTERM; "
                f"it may be finishing requests: see {home.node_log_path}, or `kill -9 "
                f"{record.pid}`"
            )
        time.sleep(0.05)
    return Stopped(record)


def _exited(pid: int) -> bool:
    """Whether `pid` is gone, or a zombie (dead, waiting for a parent to read its status)."""
    with contextlib.suppress(ChildProcessError):
        # Reaps it when this process started it (the console): no zombie left behind.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    if not _alive(pid):
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc here: alive as far as we can tell
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
