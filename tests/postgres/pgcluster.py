"""A throwaway PostgreSQL for the tests: a cluster in a temp directory, on a Unix socket.

`Cluster.start()` runs Debian's `initdb` and `pg_ctl` as the `postgres` user (initdb
refuses root, and the tests run as root in CI), in a directory of its own under
/tmp that holds the data and the socket; the server listens on no TCP address at
all. `database()` makes a fresh database and gives its URL; `restart()` stops
and starts the server on the same data (the fault tests); `stop()` stops it
and removes the directory, which the session fixture does at the end whatever
happened (and `atexit`, should the fixture's teardown never run).

Settings are for speed, not durability against a power cut: `fsync=off` (the
directory is deleted at the end anyway). Commits still reach the WAL before they
return (`synchronous_commit` stays on), so a server killed and restarted keeps
every commit, as the fault tests need.

Binaries are looked for on PATH and then in /usr/lib/postgresql/<version>/bin,
where Debian puts them; `.ci/run` installs the package when they are missing.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

# Where Debian's postgresql-NN puts its programs (not on PATH).
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
PORT = 5432  # only names the socket file: no TCP listener
SERVER_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}


class Unavailable(Exception):
    """PostgreSQL's programs are not on this machine, or cannot run: str() says why."""


def binaries() -> Path:
    """The folder holding initdb, pg_ctl and postgres; `Unavailable` when there is none."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        (p for p in DEBIAN_BINARIES.glob("*/bin") if (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise Unavailable(
            "PostgreSQL is not installed (no pg_ctl on PATH or under /usr/lib/postgresql): "
            "apt-get install postgresql (.ci/run does it in CI)"
        )
    return versions[-1]


class Cluster:
    """One server of our own: data and socket in `directory`, owned by `postgres`."""

    def __init__(self) -> None:
        self.bin = binaries()
        try:
            self.owner = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("there is no `postgres` user to run initdb as") from None
        # /tmp itself, whatever TMPDIR says: the `postgres` user must reach the folder
        # (a root-only TMPDIR would stop it), and a socket's path must stay short.
        self.directory = Path(tempfile.mkdtemp(prefix="exalate-pg-", dir="/tmp"))
        os.chown(self.directory, self.owner.pw_uid, self.owner.pw_gid)
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self.running = False
        atexit.register(self.stop)

    # -- as the postgres user ------------------------------------------------------

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise Unavailable(
                f"{argv[0]} failed (exit {done.returncode}): {done.stderr.strip()}\n{log[-2000:]}"
            )

    def start(self) -> Cluster:
        if not self.data.exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )  # fmt: skip
        options = " ".join(f"-c {k}={v}" for k, v in SERVER_SETTINGS.items())
        options += f" -k {self.directory} -p {PORT}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self.running = True
        return self

    def restart(self) -> None:
        """Stop the server at once (as a crash would: `immediate`) and start it again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.running = False
        self.start()

    def stop(self) -> None:
        """Stop the server and remove its directory; harmless when already done."""
        if self.running:
            with contextlib.suppress(Unavailable, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- what tests use --------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for `database` through this cluster's socket."""
        return f"postgresql://postgres@/{database}?host={self.directory}&port={PORT}"

    def database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        with self._lock:
            name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            # FILE_COPY: with fsync off, a copy of the files beats writing them all to the WAL.
            db.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return self.url(name)
