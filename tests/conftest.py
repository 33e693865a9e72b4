"""Shared test setup: a still terminal for Textual, snapshot baselines in `snapshots/`,
and real servers on 127.0.0.1 (or a Unix socket) for the console's network flows.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import textual.constants
from pgcluster import Cluster, Unavailable  # tests/postgres (pytest's pythonpath)
from pytest_textual_snapshot import SVGImageExtension
from syrupy.assertion import SnapshotAssertion
from syrupy.location import PyTestLocation
from textual import events, on
from textual.widgets import Input, TextArea

from exalate_tui.console import app as app_module
from exalate_tui.console.app import ExalateApp
from exalate_tui.domain.models import Connection, Mode, Role, Topology
from exalate_tui.home.store import Home, Loaded
from exalate_tui.protocol.api import UrlCheck

# No animations, so screenshots are the same every run. The snapshot plugin imports
# Textual before this file runs, so the environment variable alone comes too late for
# this process (every App reads the constant when it is created); it still reaches
# subprocesses.
os.environ["TEXTUAL_ANIMATIONS"] = "none"
textual.constants.TEXTUAL_ANIMATIONS = "none"  # type: ignore[misc]

# SVG baselines live in <project>/snapshots/<test module>/ (the layout the README describes).
SNAPSHOTS = Path(__file__).resolve().parent.parent / "snapshots"


class ProjectSVGExtension(SVGImageExtension):
    """pytest-textual-snapshot's SVG extension, storing under `snapshots/`."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(SNAPSHOTS / test_location.basename)


class _ProjectSnapshotAssertion(SnapshotAssertion):
    # `snap_compare` asks for the plugin's extension by class; hand it ours instead.
    def use_extension(self, extension_class: Any = None) -> SnapshotAssertion:
        if extension_class is SVGImageExtension:
            extension_class = ProjectSVGExtension
        return super().use_extension(extension_class)


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """syrupy's `snapshot`, so that `snap_compare` reads and writes `snapshots/`."""
    return _ProjectSnapshotAssertion(
        session=snapshot.session,
        extension_class=snapshot.extension_class,
        test_location=snapshot.test_location,
        update_snapshots=snapshot.update_snapshots,
    )


class StillConsole(ExalateApp):
    """The console with cursors that do not blink, so a snapshot is the same at any moment."""

    # Textual reads CSS_PATH beside the module of the class that sets it: the console's.
    CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))

    @on(events.DescendantFocus)
    def _still(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, Input | TextArea):
            event.widget.cursor_blink = False


# -- deterministic connections -------------------------------------------------

# 2024-05-01 12:00:00 UTC: the clock handed to wizards and apps under test.
NOW = 1_714_564_800.0


def snow_home(tmp_path: Path) -> Home:
    """A home whose instance is snow, with a public URL, and no connection yet."""
    from exalate_tui.domain.models import Instance

    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow", public_url="https://snow.example.com"))
    return home


def pending_to_jira(home: Home) -> Any:
    """Save and return snow_to_jira: initiated here, Pending, its code good for 7 days."""
    from datetime import UTC, datetime, timedelta

    from exalate_tui.domain.models import Connection, Mode, Role, Status, Topology

    created = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)
    connection = Connection(
        name="snow_to_jira",
        mode=Mode.SCRIPT,
        topology=Topology.PUBLIC_PRIVATE,
        role=Role.INITIATOR,
        local_name="snow",
        remote_name="jira",
        status=Status.PENDING,
        created=created,
        token_hash="0" * 64,
        token_expires=created + timedelta(days=7),
    )
    home.save_connection(connection)
    return connection


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> float:
    """Connection ids ...0001, ...0002 in order, one fixed token; returns the fixed clock."""
    import itertools
    import uuid

    from exalate_tui.domain import invitation

    counter = itertools.count(1)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(counter)))
    monkeypatch.setattr(invitation, "new_token", lambda: "T" * 43)
    return NOW


# -- counting a supervisor's scans ---------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs at `path`, unmounted afterwards. Mounting takes root, as CI
    runs; elsewhere the test is skipped, saying so."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?): the full-disk test needs one")
    try:
        yield path
    finally:
        # Lazy: a file a failed test left open must not keep the mount behind.
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill_disk(disk: Path) -> Path:
    """Fill `disk` to ENOSPC with one file; unlinking it gives the space back."""
    filler = disk / "filler"
    fill = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    with contextlib.suppress(OSError):
        while True:
            os.write(fill, b"\0" * 4096)
    os.close(fill)
    return filler


@dataclass(frozen=True)
class CountingHome(Home):
    """A home that counts its listings: a supervisor lists it once per scan.

    A negative check ("it did not start the link") waits for a few scans, each a
    chance to do the wrong thing, instead of sleeping and hoping some happened.
    """

    listings: list[int] = field(default_factory=list)

    def load_connections(self) -> Loaded:
        loaded = super().load_connections()
        self.listings.append(1)
        return loaded

    def scans(self) -> int:
        return len(self.listings)


async def scans_pass(home: CountingHome, count: int = 3, timeout: float = 10.0) -> None:
    """Until `count` more scans have listed `home` (each a chance to act on what it saw)."""
    import asyncio

    target = home.scans() + count
    deadline = time.monotonic() + timeout
    while home.scans() < target:
        assert time.monotonic() < deadline, f"fewer than {count} scans in {timeout:g} s"
        await asyncio.sleep(0.01)


# -- real servers for the console's tests ----------------------------------------------


class _Html(http.server.BaseHTTPRequestHandler):
    """Some other web server: HTML at every path ("not an exalate-tui node")."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = b"<html><body>Welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "local"  # a Unix socket has no client address

    def log_message(self, *args: object) -> None:
        pass


class _UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class Servers:
    """Real servers in threads: the node app under uvicorn, or a plain HTTP server.

    Each listens on 127.0.0.1 at a free port, or on a Unix socket when `uds` is
    given: a snapshot then types a fixed URL and the verifier's transport takes
    the request to that socket, so no port number reaches the screen.
    """

    def __init__(self) -> None:
        self._stops: list[Callable[[], None]] = []

    def node(self, home: Home, *, uds: Path | None = None, port: int = 0) -> str:
        """`runtime.node_app` for `home` under uvicorn; returns its URL.

        Stopped as `runtime.serve` stops: the wake-ups close first (parked polls
        answer at once instead of being cancelled mid-request), then uvicorn,
        then the node's listener and watch, and only then the state.
        """
        import asyncio

        import uvicorn

        from exalate_tui.lifecycle import runtime
        from exalate_tui.transport.node import Node
        from exalate_tui.transport.sqlite_streams import SqliteStreams

        state = SqliteStreams(home.state_path)
        sock = _listening(uds, port)
        app = runtime.node_app(home, state)
        served: Node = app.state.node
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        loops: list[asyncio.AbstractEventLoop] = []

        async def serve() -> None:
            loops.append(asyncio.get_running_loop())
            try:
                await server.serve(sockets=[sock])
            finally:
                served.remove_listener()
                await served.wakeups.aclose()

        thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the node did not start"
            time.sleep(0.01)

        def stop() -> None:
            # What the node's own signal handler does, on the node's loop.
            loops[0].call_soon_threadsafe(served.wakeups.close)
            server.should_exit = True
            thread.join(10)
            assert not thread.is_alive(), "the node did not stop"
            sock.close()
            state.close()

        self._stops.append(stop)
        return _url(sock, uds)

    def html(self, *, uds: Path | None = None) -> str:
        """A plain `http.server` that is not a node; returns its URL."""
        if uds is not None:
            server: socketserver.BaseServer = _UnixHttpServer(str(uds), _Html)
        else:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()

        self._stops.append(stop)
        if uds is not None:
            return "http://127.0.0.1:7001"
        return f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[index]

    def stop_all(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(uds: Path | None, port: int) -> socket.socket:
    if uds is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(uds))
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def _url(sock: socket.socket, uds: Path | None) -> str:
    if uds is not None:
        return "http://127.0.0.1:7001"
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def servers() -> Iterator[Servers]:
    started = Servers()
    yield started
    started.stop_all()


def verifier_via(uds: Path) -> Callable[[str], Awaitable[UrlCheck]]:
    """The real `client.verify_url`, its requests sent to the Unix socket `uds`."""
    import httpx

    from exalate_tui.transport.client import verify_url

    async def verify(url: str) -> UrlCheck:
        return await verify_url(url, transport=httpx.AsyncHTTPTransport(uds=str(uds)))

    return verify


# -- no unexpected tracebacks ------------------------------------------------------

# Loggers whose tracebacks mean something went wrong in this process: a request that
# crashed (uvicorn), a task that died unseen (asyncio), or our own code.
WATCHED = ("asyncio", "uvicorn", "exalate_tui")


class _Tracebacks(logging.Handler):
    """Collects ERROR records with a traceback from the watched loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.exc_info or record.name.split(".")[0] not in WATCHED:
            return
        kind = record.exc_info[0]
        # Hypothesis ends each example by raising StopTest inside anyio's runner task,
        # which asyncio reports as never retrieved: the test framework's control flow.
        if kind is not None and kind.__module__.startswith("hypothesis."):
            return
        self.records.append(record)

    def traceback_of(self, record: logging.LogRecord) -> str:
        assert record.exc_info is not None
        return logging.Formatter().formatException(record.exc_info)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "traceback_expected(reason): the test makes the code log a traceback on purpose",
    )


@pytest.fixture(autouse=True)
def no_unexpected_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test during which a watched logger logged a traceback, unless it is marked
    `traceback_expected` (a test that crashes a request or a task on purpose).

    Autouse, so set up before the test's other fixtures and checked after their
    teardown: a server stopped by a fixture is checked too.
    """
    handler = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("traceback_expected") is None:
        first = handler.records[0]
        pytest.fail(
            f"{len(handler.records)} unexpected traceback(s) logged; the first, from "
            f"{first.name}: {first.getMessage()}\n{handler.traceback_of(first)}",
            pytrace=False,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist (`make test`), the tests that start real node processes (marked
    e2e) share one worker, one after another: beside each other they would starve
    each other's nodes on a 2-core machine. The rest spread out."""
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.xdist_group("nodes"))


# -- PostgreSQL ---------------------------------------------------------------------


# Why PostgreSQL could not be started in this process, for the run's last lines.
_NO_POSTGRES: list[str] = []


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One throwaway PostgreSQL per test process (each xdist worker starts its own),
    stopped and removed at the end. Missing PostgreSQL skips the tests that need it,
    loudly (each skip, and a banner at the end); under CI (CI set) it fails them
    instead: there it must run."""
    try:
        cluster = Cluster().start()
    except Unavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {error}", pytrace=False)
        _NO_POSTGRES.append(str(error))
        pytest.skip(f"POSTGRESQL UNAVAILABLE, its tests did not run: {error}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(postgres: Cluster) -> str:
    """The URL of a fresh database of the session's cluster, for this test alone."""
    return postgres.database()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _NO_POSTGRES:
        terminalreporter.write_sep(
            "!", "PostgreSQL could not be started: its tests were SKIPPED", red=True, bold=True
        )
        terminalreporter.write_line(_NO_POSTGRES[0])


# A private initiator's connection with both secrets, for the connection stores' tests
# (tests/home/test_connection_stores.py, tests/transport/test_pg_connections.py).
SECRET = "s3cret-connection-secret-value"
TOKEN = "t0ken-of-a-private-initiator"


def connection(name: str = "snow_to_jira", **fields: object) -> Connection:
    values: dict[str, object] = {
        "name": name,
        "mode": Mode.SCRIPT,
        "topology": Topology.PUBLIC_PRIVATE,
        "role": Role.INITIATOR,
        "local_name": "snow",
        "remote_name": "jira",
        "token_hash": "0" * 64,
        "secret": SECRET,
        "token": TOKEN,
    }
    values.update(fields)
    return Connection.model_validate(values)
