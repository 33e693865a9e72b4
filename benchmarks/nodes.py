"""Real `exalate-tui node` processes on 127.0.0.1, and a connection between two of them.

`pair()` sets up a public and a private home with the CLI, exactly as an
admin would: `init` on both, `initiate --no-url` on the public side, `accept`
on the private side (the handshake against the running public node), then
starts the private node, whose supervisor long-polls the public one. Every
process stops when the context ends; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 30.0


def env() -> dict[str, str]:
    """The environment for our child processes: bytecode is written and reused."""
    child = dict(os.environ)
    # Without cached bytecode every start recompiles exalate_tui (~20 ms): not what users see.
    child.pop("PYTHONDONTWRITEBYTECODE", None)
    return child


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cli(home: Path, *args: str) -> str:
    """Run `exalate-tui --home HOME ARGS...`; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"exalate-tui {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def wait_listening(port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


@contextlib.contextmanager
def node(home: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`exalate-tui node` for `home` on 127.0.0.1:`port`, stopped with SIGTERM at the end."""
    log = open(home.parent / f"{home.name}-node.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "exalate_tui.cli", "--home", str(home), "node"]
        + ["--host", HOST, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env(),
    )
    try:
        wait_listening(port)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def last_applied(db: sqlite3.Connection, cid: str) -> int:
    row = db.execute("SELECT last_applied FROM streams WHERE cid = ?", (cid,)).fetchone()
    return int(row[0]) if row else 0


def reader(home: Path) -> sqlite3.Connection:
    """A read-only look at a home's state.sqlite3 (what is committed, nothing else)."""
    return sqlite3.connect(f"file:{home / 'state.sqlite3'}?mode=ro", uri=True, timeout=30)


@dataclass
class Pair:
    public: Path
    private: Path
    public_port: int
    private_port: int
    cid: str
    public_node: subprocess.Popen[bytes]
    private_node: subprocess.Popen[bytes]


def init_public(
    home: Path, port: int, short_name: str = "pub", database: str | None = None
) -> None:
    """`database`: the public side's streams in that PostgreSQL database (`init --database`)."""
    extra = ["--database", database] if database else []
    cli(home, "init", "--short-name", short_name, "--public-url", f"http://{HOST}:{port}", *extra)


def initiate(public: Path, remote_name: str) -> tuple[str, str]:
    """A public-private invitation from `public`; (cid, code)."""
    out = json.loads(
        cli(public, "initiate", "--no-url", "--mode", "basic", "--local-name", "pub",
            "--remote-name", remote_name, "--json")
    )  # fmt: skip
    return out["connection"]["id"], out["code"]


@contextlib.contextmanager
def pair(prefix: str, database: str | None = None) -> Iterator[Pair]:
    """Two nodes with one Active public-private connection, the private side polling;
    `database`: the public side's streams in PostgreSQL."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    public, private = root / "public", root / "private"
    public_port, private_port = free_port(), free_port()
    init_public(public, public_port, database=database)
    cli(private, "init", "--short-name", "priv")
    with node(public, public_port) as public_node:
        cid, code = initiate(public, "priv")
        cli(private, "accept", code, "--json")
        with node(private, private_port) as private_node:
            # Ready once the private side's poller has applied the public side's hello.
            db = reader(private)
            deadline = time.monotonic() + START_TIMEOUT
            try:
                while last_applied(db, cid) < 1:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the private node never fetched the hello")
                    time.sleep(0.01)
            finally:
                db.close()
            yield Pair(public, private, public_port, private_port, cid, public_node, private_node)


class WalWatch:
    """Sleeps until a home's state.sqlite3 (or another of its databases, e.g.
    tracker.sqlite3) may have a new commit (inotify on its WAL).

    A commit writes the WAL, so waking on IN_MODIFY and then reading the
    cursor sees each commit without spinning a core the nodes need. The last
    write of a commit comes before its fsync, and the commit is visible only
    after: callers re-read finely for a few ms after a write, or the next
    reading would wait for the next write (or the timeout). Where inotify is
    missing it falls back to 1 ms polls.
    """

    IN_MODIFY = 0x2

    def __init__(self, home: Path, database: str = "state.sqlite3") -> None:
        import ctypes
        import ctypes.util

        self._fd = -1
        wal = home / f"{database}-wal"
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(wal), self.IN_MODIFY) >= 0:
                self._fd = fd
        except (OSError, AttributeError):
            self._fd = -1

    @property
    def method(self) -> str:
        return "inotify on the WAL" if self._fd >= 0 else "1 ms polls"

    def wait(self, timeout: float) -> bool:
        """Whether the WAL was written (a commit may be on its way) within `timeout` s."""
        if self._fd < 0:
            time.sleep(0.001)
            return False
        import select

        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fd, 65536):
                pass
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory from /proc (`VmHWM`: its peak so far), in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0
