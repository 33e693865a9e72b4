"""Two (or more) real instances on 127.0.0.1: a home each, `exalate-tui node` processes,
and the headless CLI as an admin runs it.

The `instances` fixture makes instances; whatever a test does, every node
process it started is killed at the end, and the nodes' logs are printed
(pytest shows them when the test failed).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from exalate_tui.domain.models import Connection
from exalate_tui.home.store import Home
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.streams import Streams

# Every wait in these tests has a deadline: a stuck node fails the test, never hangs it.
DEADLINE = 30.0
START_DEADLINE = 20.0
CLI_TIMEOUT = 60.0
TRACEBACK = "Traceback (most recent call last)"


def free_port() -> int:
    """A port nobody listens on now (the node binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.02)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`exalate-tui ARGS` in its own process, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "EXALATE_TUI_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=env,
    )


@dataclass
class Instance:
    """One instance: its home, its node's port, and the node process when it runs."""

    short_name: str
    home: Path
    port: int
    public: bool
    log: Path
    process: subprocess.Popen[bytes] | None = None
    database: str | None = None  # a PostgreSQL URL: `init --database`
    _state: Streams | None = field(default=None, repr=False)
    _home: Home | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli("--home", str(self.home), *args, stdin=stdin)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Run a command that must succeed; its stdout."""
        done = self.cli(*args, stdin=stdin)
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr}"
        return done.stdout

    def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", stdin=stdin))

    def show(self, cid: str) -> dict[str, Any]:
        connection: dict[str, Any] = self.json("connections", "show", cid)["connection"]
        return connection

    def stored(self, cid: str) -> Connection:
        """The connection as stored now (its file, or its row in the database): cheap
        enough to poll (`show` spawns a process)."""
        if self._home is None:
            from exalate_tui.transport.storage import open_home

            self._home = open_home(self.home)
        return self._home.get_connection(cid)

    # -- the node --------------------------------------------------------------

    def start(self) -> None:
        """Start `exalate-tui node`; `serving()` waits for it."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "exalate_tui.cli", "--home", str(self.home), "node"]
                + ["--host", "127.0.0.1", "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def serving(self) -> None:
        """Wait until the node answers `/api/v1/info` for this home."""
        assert self.process is not None
        deadline = time.monotonic() + START_DEADLINE
        while True:
            assert self.process.poll() is None, f"the node exited:\n{self.log.read_text()}"
            try:
                info = httpx.get(f"{self.url}/api/v1/info", timeout=1)
            except httpx.TransportError:
                pass
            else:
                assert info.status_code == 200 and info.json()["short_name"] == self.short_name
                return
            assert time.monotonic() < deadline, f"the node did not start:\n{self.log.read_text()}"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when the machine loses power."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM, as `systemctl stop` does; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)

    # -- its message store, opened beside the node as another process would -------

    @property
    def state(self) -> Streams:
        if self._state is None:
            if self.database is None:
                self._state = SqliteStreams(self.home / "state.sqlite3")
            else:
                from exalate_tui.transport.pg_streams import PgStreams

                self._state = PgStreams(self.database)
        return self._state

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
        if self._state is not None:
            self._state.close()
            self._state = None
        if self._home is not None:
            self._home.close()
            self._home = None


MakeInstance = Callable[..., Instance]


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[MakeInstance]:
    """`make(short_name, public=bool, database=URL|None, name=None)`: an instance
    initialised with `exalate-tui init` (`--database URL`: its streams in PostgreSQL)."""
    made: list[Instance] = []

    def make(
        short_name: str, *, public: bool, database: str | None = None, name: str | None = None
    ) -> Instance:
        # `name`: the home's folder and log, when two homes share a short name (workers).
        instance = Instance(
            short_name=short_name,
            home=tmp_path / (name or short_name),
            port=free_port(),
            public=public,
            log=tmp_path / f"{name or short_name}.log",
            database=database,
        )
        made.append(instance)
        url = ["--public-url", instance.url] if public else []
        if database is not None:
            url += ["--database", database]
        instance.ok("init", "--short-name", short_name, *url)
        return instance

    try:
        yield make
    finally:
        for instance in made:
            instance.close()
        for instance in made:
            if instance.log.exists():
                print(f"--- {instance.log.name} ---\n{instance.log.read_text()}")
    # The nodes are other processes, so the root conftest's check cannot see their logs.
    crashed = [i.log.name for i in made if i.log.exists() and TRACEBACK in i.log.read_text()]
    assert not crashed, f"a node logged a traceback: see {', '.join(crashed)} above"
