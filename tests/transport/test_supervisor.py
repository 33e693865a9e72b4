"""The supervisor: backoff, the cross-process lock, and polling the real node.

Backoff is checked with an injected jitter and sleep, so no test waits for
it; the lock with a second real process; delivery against the real node app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CountingHome, fill_disk, scans_pass, small_disk
from pydantic import SecretStr

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.live import POLL_SILENCE, Live, live_state
from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.flows.initiate import InitiateWizard
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import actions, runtime
from exalate_tui.lifecycle.accept import accept
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.lifecycle.runtime import Supervisor
from exalate_tui.transport.client import ACK_HEADER, Remote
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.streams import Message
from exalate_tui.transport.supervisor import Backoff, ConnectionLock, Plan, plan_for


def upper(low: float, high: float) -> float:
    """The jitter's worst case, so the delays are exactly the bounds."""
    return high


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def private_connection(**changes: object) -> Connection:
    values: dict[str, object] = {
        "name": "jira_from_snow",
        "mode": Mode.SCRIPT,
        "topology": Topology.PUBLIC_PRIVATE,
        "role": Role.ACCEPTOR,
        "local_name": "jira",
        "remote_name": "snow",
        "remote_url": "http://127.0.0.1:9",
        "status": Status.ACTIVE,
        "secret": SecretStr("s" * 43),
    }
    values.update(changes)
    return Connection.model_validate(values)


# -- backoff -------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    seen: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        seen.append((low, high))
        return high

    backoff = Backoff(jitter=jitter)
    assert [backoff.failure() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert all(low == 0 for low, _ in seen)
    backoff.reset()
    assert backoff.failure() == 1
    for _ in range(5000):  # a very long outage never overflows
        backoff.failure()
    assert backoff.failure() == 60


def test_full_jitter_draws_below_the_bound() -> None:
    backoff = Backoff(jitter=lambda low, high: (low + high) / 2)
    assert [backoff.failure() for _ in range(3)] == [0.5, 1, 2]


# -- what runs for which connection -------------------------------------------


def test_plan_per_topology_and_state() -> None:
    assert plan_for(private_connection()) is Plan.POLL
    assert plan_for(private_connection(status=Status.DEACTIVATED)) is None
    assert plan_for(private_connection(status=Status.PENDING, secret=None)) is None
    public_public = private_connection(topology=Topology.PUBLIC_PUBLIC)
    assert plan_for(public_public) is Plan.PUSH
    # The public side of a private partner makes no requests at all.
    assert plan_for(private_connection(role=Role.INITIATOR, remote_url=None)) is None
    pending_initiator = private_connection(
        topology=Topology.PRIVATE_PUBLIC,
        role=Role.INITIATOR,
        status=Status.PENDING,
        secret=None,
        token=SecretStr("t" * 43),
    )
    assert plan_for(pending_initiator) is Plan.HANDSHAKE


# -- one poller per connection across processes --------------------------------

_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def hold_lock(path: Path) -> subprocess.Popen[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_lock_is_exclusive_across_processes_and_freed_by_a_kill(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    lock = ConnectionLock(home, "cid")
    holder = hold_lock(lock.path)
    try:
        assert not lock.acquire()
    finally:
        holder.kill()
        holder.wait()
    assert lock.acquire()
    other = ConnectionLock(home, "cid")
    assert not other.acquire()  # a second holder in the same process is refused too
    lock.release()
    assert other.acquire()
    other.release()


def run_supervisor(supervisor: Supervisor, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(supervisor.run())
        try:
            await body()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())


def test_supervisor_skips_a_connection_another_process_runs(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    connection = private_connection()
    home.save_connection(connection)
    state = SqliteStreams(home.state_path)
    holder = hold_lock(ConnectionLock(home, connection.id).path)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0.01)

    scans = CountingHome(home.path)
    supervisor = Supervisor(scans, state, rescan=0.05, sleep=sleep, jitter=upper)

    async def body() -> None:
        await scans_pass(scans)
        assert supervisor.running == frozenset()
        assert state.contact(connection.id).last_error is None  # it never tried
        holder.kill()
        holder.wait()
        await until(lambda: connection.id in supervisor.running)
        # Now it runs: port 9 is closed, so it records the failure and backs off.
        await until(lambda: state.contact(connection.id).last_error is not None)
        assert "connection refused" in (state.contact(connection.id).last_error or "")
        await until(lambda: len(delays) >= 3)

    try:
        run_supervisor(supervisor, body)
    finally:
        holder.kill()
        holder.wait()
    assert delays[:3] == [1, 2, 4]  # the poller backs off; the empty outbox never failed
    assert ConnectionLock(home, connection.id).acquire()  # released on cancel


# -- against the real node (in-process) -------------------------------------------


@dataclass
class Side:
    home: Home
    state: SqliteStreams
    instance: Instance
    transport: httpx.ASGITransport


def make_side(root: Path, short_name: str, public_url: str | None) -> Side:
    home = Home(root / short_name)
    instance = Instance(short_name=short_name, public_url=public_url)
    home.save_instance(instance)
    state = SqliteStreams(home.state_path)
    return Side(home, state, instance, httpx.ASGITransport(app=runtime.node_app(home, state)))


def connect(tmp_path: Path, private_root: Path | None = None) -> tuple[Side, Side, str]:
    """snow (public, the real node) and jira (private, accepted): an Active connection.

    jira's home is under `private_root` when given (a small disk)."""
    public = make_side(tmp_path, "snow", "http://127.0.0.1:7001")
    private = make_side(private_root or tmp_path, "jira", None)
    public.home.save_instance(public.instance)
    wizard = InitiateWizard(public.instance, public.home.load_connections().connections)
    wizard.choose_no_url()
    wizard.set_mode(Mode.BASIC)
    wizard.next()
    wizard.next()
    wizard.set_remote_name("jira")
    assert wizard.next() and wizard.issued
    assert save_issued(public.home, wizard.issued.connection, wizard.new_instance)
    invite = wizard.issued.invitation
    asyncio.run(accept(private.home, private.state, invite, "jira", transport=public.transport))
    return public, private, invite.cid


def set_status(home: Home, cid: str, status: Status) -> None:
    def change(connection: Connection) -> Connection:
        connection.status = status
        return connection

    home.update_connection(cid, change)


def test_poller_resumes_from_its_cursor_after_being_stopped(tmp_path: Path) -> None:
    public, private, cid = connect(tmp_path)
    public.state.enqueue_many(cid, [("ping", {"n": n}) for n in range(300)])

    async def main() -> None:
        first = Supervisor(private.home, private.state, transport=public.transport, limit=20)
        task = asyncio.create_task(first.run())
        await until(lambda: private.state.last_applied(cid) >= 100)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stopped_at = private.state.last_applied(cid)
        assert stopped_at < 301  # stopped mid-stream
        again = Supervisor(private.home, private.state, transport=public.transport, limit=20)
        task = asyncio.create_task(again.run())
        await until(lambda: private.state.last_applied(cid) == 301)
        # The next long-poll acknowledges the last batch: the public outbox drains.
        await until(lambda: public.state.pending(cid) == [])
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    inbox = private.state.inbox(cid, limit=1000)
    assert [m.seq for m in inbox] == list(range(1, 302))
    assert inbox[0].kind == "hello"
    assert [m.body["n"] for m in inbox[1:]] == list(range(300))


def test_the_polled_side_sees_each_poll_and_the_silence_once_polling_stops(
    tmp_path: Path,
) -> None:
    """The public node records contact as each (idle) long-poll begins: Active while the
    partner polls; once it stops, nothing more is recorded, and one poll's wait and a
    margin later the public side reads Unreachable, not "last contact N s ago"."""
    public, private, cid = connect(tmp_path)
    connection = public.home.get_connection(cid)
    seen: list[float] = []

    async def main() -> None:
        supervisor = Supervisor(private.home, private.state, transport=public.transport, wait=0.3)
        task = asyncio.create_task(supervisor.run())
        deadline = time.monotonic() + 10
        while len(seen) < 3:  # contact is written once a second at most
            assert time.monotonic() < deadline, seen
            last_ok = public.state.contact(cid).last_ok
            if last_ok is not None and (not seen or last_ok > seen[-1]):
                seen.append(last_ok)
                state = live_state(connection, public.state.contact(cid), time.time())
                assert state.live is Live.ACTIVE, state
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    stopped = public.state.contact(cid)
    time.sleep(1.5)  # past the contact throttle: a poll still coming would be recorded
    assert public.state.contact(cid) == stopped
    assert stopped.last_ok is not None
    quiet = live_state(connection, stopped, stopped.last_ok + POLL_SILENCE - 1)
    assert quiet.live is Live.ACTIVE
    gone = live_state(connection, stopped, stopped.last_ok + POLL_SILENCE + 1)
    assert (gone.live, gone.detail) == (Live.UNREACHABLE, "no poll for 36 s")


class Recording(httpx.AsyncBaseTransport):
    """The network to the public node: notes each fetch's `after` and `ack` as it leaves,
    with what the private side had durably applied then; can hide `Exalate-Acked`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, private: SqliteStreams, cid: str) -> None:
        self.inner = inner
        self.private = private
        self.cid = cid
        self.hide_acked = False
        self.fetches: list[tuple[int, int | None, int]] = []  # after, ack, applied

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            params = request.url.params
            ack = params.get("ack")
            self.fetches.append(
                (
                    int(params["after"]),
                    None if ack is None else int(ack),
                    self.private.last_applied(self.cid),
                )
            )
        response = await self.inner.handle_async_request(request)
        if self.hide_acked:
            del response.headers[ACK_HEADER]
        return response


def test_the_poller_fetches_ahead_but_acknowledges_only_what_is_applied(tmp_path: Path) -> None:
    public, private, cid = connect(tmp_path)
    network = Recording(public.transport, private.state, cid)
    public.state.enqueue_many(cid, [("ping", {"n": n}) for n in range(300)])
    supervisor = Supervisor(private.home, private.state, transport=network, limit=20)

    async def body() -> None:
        await until(lambda: private.state.last_applied(cid) == 301)
        await until(lambda: public.state.pending(cid) == [])  # the last ack went out too

    run_supervisor(supervisor, body)
    ahead = [(after, ack) for after, ack, _ in network.fetches if ack is not None]
    assert ahead and all(ack < after for after, ack in ahead)
    # Whatever a fetch acknowledged was durably applied before it left.
    assert all(
        (after if ack is None else ack) <= applied for after, ack, applied in network.fetches
    )
    inbox = private.state.inbox(cid, limit=1000)
    assert [m.seq for m in inbox] == list(range(1, 302))
    assert [m.body["n"] for m in inbox[1:]] == list(range(300))


def test_a_node_that_does_not_honour_ack_is_never_fetched_ahead_of(tmp_path: Path) -> None:
    public, private, cid = connect(tmp_path)
    network = Recording(public.transport, private.state, cid)
    network.hide_acked = True  # an older node: it would prune up to `after`
    public.state.enqueue_many(cid, [("ping", {"n": n}) for n in range(100)])
    supervisor = Supervisor(private.home, private.state, transport=network, limit=20)

    async def body() -> None:
        await until(lambda: private.state.last_applied(cid) == 101)

    run_supervisor(supervisor, body)
    assert network.fetches and all(ack is None for _, ack, _ in network.fetches)
    assert all(after <= applied for after, _, applied in network.fetches)


def test_deactivated_connection_is_not_polled(tmp_path: Path) -> None:
    public, private, cid = connect(tmp_path)
    set_status(private.home, cid, Status.DEACTIVATED)
    public.state.enqueue(cid, "ping")
    scans = CountingHome(private.home.path)
    supervisor = Supervisor(scans, private.state, transport=public.transport, rescan=0.05)

    async def body() -> None:
        await scans_pass(scans)
        assert supervisor.running == frozenset()
        assert private.state.last_applied(cid) == 0
        set_status(private.home, cid, Status.ACTIVE)
        await until(lambda: private.state.last_applied(cid) == 2)

    run_supervisor(supervisor, body)


def test_a_file_changed_by_another_process_is_seen_at_once(tmp_path: Path) -> None:
    """No enqueue, no periodic rescan (60 s): the write to connections/ is enough."""
    public, private, cid = connect(tmp_path)
    supervisor = Supervisor(private.home, private.state, transport=public.transport, rescan=60)

    async def body() -> None:
        await until(lambda: cid in supervisor.running, timeout=2)
        set_status(private.home, cid, Status.DEACTIVATED)
        await until(lambda: cid not in supervisor.running, timeout=2)
        public.state.enqueue(cid, "ping")
        set_status(private.home, cid, Status.ACTIVE)
        await until(lambda: private.state.last_applied(cid) == 2, timeout=2)

    run_supervisor(supervisor, body)


class SlowAck(httpx.AsyncBaseTransport):
    """The network to the public node, where `wait=0` fetches (the acknowledgement of a
    deletion) take `delay` s to arrive: longer than the supervisor takes to rescan."""

    def __init__(self, inner: httpx.AsyncBaseTransport, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.params.get("wait") == "0":
            await asyncio.sleep(self.delay)
        return await self.inner.handle_async_request(request)


def test_a_deletion_is_acknowledged_before_the_link_stops(tmp_path: Path) -> None:
    """Applying `connection.deleted` rewrites the file, which makes the supervisor rescan;
    the rescan must not cancel the acknowledgement, or the partner's tombstone stays."""
    public, private, cid = connect(tmp_path)
    network = SlowAck(public.transport, delay=0.5)
    supervisor = Supervisor(private.home, private.state, transport=network, watch=0.01)

    async def body() -> None:
        await until(lambda: cid in supervisor.running, timeout=2)
        outcome = await actions.delete(public.home, public.state, cid)
        assert outcome.told is actions.Told.QUEUED
        await until(lambda: public.home.get_tombstone(cid) is None, timeout=5)
        await until(lambda: cid not in supervisor.running, timeout=2)

    run_supervisor(supervisor, body)
    assert private.home.get_connection(cid).peer_state == "deleted"


def test_backoff_grows_while_refused_and_resets_on_success(tmp_path: Path) -> None:
    public, private, cid = connect(tmp_path)
    ok_before = private.state.contact(cid).last_ok
    set_status(public.home, cid, Status.DEACTIVATED)  # the node now answers 409
    delays: list[float] = []
    clock = iter(range(1_000, 2_000))

    async def main() -> None:
        gate = asyncio.Semaphore(0)

        async def sleep(delay: float) -> None:
            delays.append(delay)
            await gate.acquire()

        supervisor = Supervisor(
            private.home,
            private.state,
            transport=public.transport,
            wait=0.2,
            sleep=sleep,
            jitter=upper,
            clock=lambda: float(next(clock)),
        )
        task = asyncio.create_task(supervisor.run())
        for count in (1, 2, 3):
            await until(lambda: len(delays) == count)  # noqa: B023 - awaited at once
            if count < 3:
                gate.release()
        assert delays == [1, 2, 4]
        contact = private.state.contact(cid)
        assert "deactivated" in (contact.last_error or "")
        first_error = contact.error_since
        assert first_error is not None and contact.last_ok == ok_before

        set_status(public.home, cid, Status.ACTIVE)
        gate.release()
        await until(lambda: private.state.contact(cid).last_error is None)
        assert private.state.contact(cid).last_ok is not None

        set_status(public.home, cid, Status.DEACTIVATED)
        await until(lambda: len(delays) == 4)
        assert delays == [1, 2, 4, 1]  # reset by the success
        assert (private.state.contact(cid).error_since or 0) > first_error
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


# -- real node processes on 127.0.0.1 ---------------------------------------------

_SERVE = """
import asyncio, logging, sys
from exalate_tui.lifecycle.runtime import serve
from exalate_tui.home.store import Home
logging.basicConfig(level=logging.INFO)
asyncio.run(serve(Home.resolve(sys.argv[1]), "127.0.0.1", int(sys.argv[2])))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeProcess:
    """`runtime.serve` for one home in its own process: the API and the supervisor."""

    def __init__(self, home: Home, port: int) -> None:
        self.home = home
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.home.path.parent / f"{self.home.path.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(self.home.path), str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, "the node exited; see its log"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/api/v1/info", timeout=1).status_code == 200:
                    return
            assert time.monotonic() < deadline, "the node did not start in time"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no cleanup at all
        self.process.wait()


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    # Killed, not stopped: a graceful stop is the node's own tests' business.
    for process in started:
        if process.process is not None and process.process.poll() is None:
            process.kill()


def connect_over_http(tmp_path: Path, nodes: list[NodeProcess]) -> tuple[NodeProcess, Home, str]:
    """A public node process, and a private home accepted over real HTTP (no node yet)."""
    port = free_port()
    public_home = Home(tmp_path / "snow")
    instance = Instance(short_name="snow", public_url=f"http://127.0.0.1:{port}")
    public_home.save_instance(instance)
    public = NodeProcess(public_home, port)
    nodes.append(public)
    public.start()
    wizard = InitiateWizard(instance, public_home.load_connections().connections)
    wizard.choose_no_url()
    wizard.set_mode(Mode.BASIC)
    wizard.next()
    wizard.next()
    wizard.set_remote_name("jira")
    assert wizard.next() and wizard.issued
    assert save_issued(public_home, wizard.issued.connection, wizard.new_instance)
    private_home = Home(tmp_path / "jira")
    private_home.save_instance(Instance(short_name="jira"))
    state = SqliteStreams(private_home.state_path)
    try:
        asyncio.run(accept(private_home, state, wizard.issued.invitation, None))
    finally:
        state.close()
    return public, private_home, wizard.issued.invitation.cid


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.e2e
def test_private_node_killed_mid_stream_resumes_and_applies_each_message_once(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    public, private_home, cid = connect_over_http(tmp_path, nodes)
    private = NodeProcess(private_home, free_port())
    nodes.append(private)
    private.start()
    public_state = SqliteStreams(public.home.state_path)
    private_state = SqliteStreams(private_home.state_path)

    def stream() -> None:
        for start in range(0, 1000, 10):
            public_state.enqueue_many(cid, [("ping", {"n": n}) for n in range(start, start + 10)])
            time.sleep(0.004)

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        wait_for(lambda: private_state.last_applied(cid) >= 200)
        private.kill()
        killed_at = private_state.last_applied(cid)
    finally:
        streamer.join()
    assert killed_at < 1001  # killed mid-stream
    private.start()
    wait_for(lambda: private_state.last_applied(cid) == 1001)
    # Its next long-poll acknowledges the rest: the public outbox drains.
    wait_for(lambda: public_state.pending(cid) == [])
    inbox = private_state.inbox(cid, limit=2000)
    assert [m.seq for m in inbox] == list(range(1, 1002))
    assert [m.body["n"] for m in inbox[1:]] == list(range(1000))


@pytest.mark.e2e
def test_poller_rides_out_a_public_node_restart(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    public, private_home, cid = connect_over_http(tmp_path, nodes)
    private = NodeProcess(private_home, free_port())
    nodes.append(private)
    private.start()
    public_state = SqliteStreams(public.home.state_path)
    private_state = SqliteStreams(private_home.state_path)
    public_state.enqueue(cid, "ping", {"n": 1})
    wait_for(lambda: private_state.last_applied(cid) == 2)

    public.kill()
    wait_for(lambda: "Cannot reach" in (private_state.contact(cid).last_error or ""))
    # While it is down, both sides have something to say.
    public_state.enqueue(cid, "ping", {"n": 2})
    private_state.enqueue(cid, "ping", {"from": "jira"})
    public.start()

    wait_for(lambda: private_state.last_applied(cid) == 3, timeout=60)
    wait_for(lambda: public_state.last_applied(cid) == 2, timeout=60)
    assert [m.body for m in public_state.inbox(cid)][-1] == {"from": "jira"}
    wait_for(lambda: private_state.contact(cid).last_error is None)
    wait_for(lambda: private_state.pending(cid) == [] and public_state.pending(cid) == [])


@pytest.mark.e2e
def test_long_poll_outlives_the_clients_read_timeout(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    public, private_home, cid = connect_over_http(tmp_path, nodes)
    secret = private_home.get_connection(cid).secret
    assert secret is not None

    async def main() -> None:
        # Reads time out after 0.5 s, but a long-poll gets its wait on top.
        remote = Remote(public.url, timeout=httpx.Timeout(0.5))
        async with remote:
            started = time.monotonic()
            batch = await remote.fetch(cid, secret, after=1, wait=1.5)
            assert batch.messages == [] and time.monotonic() - started >= 1.4

    asyncio.run(main())


def test_an_action_here_reaches_the_supervisor_at_once(tmp_path: Path) -> None:
    """Deactivate stops the link without waiting for a periodic rescan; activate resumes."""
    public, private, cid = connect(tmp_path)
    scans = CountingHome(private.home.path)
    supervisor = Supervisor(scans, private.state, transport=public.transport, rescan=60)

    async def body() -> None:
        await until(lambda: cid in supervisor.running)
        outcome = await actions.deactivate(
            private.home, private.state, cid, transport=public.transport
        )
        assert outcome.told is actions.Told.DELIVERED
        await until(lambda: cid not in supervisor.running, timeout=2)
        public.state.enqueue(cid, "ping", {"n": 1})
        # Rescans (woken, as an action wakes them) see it deactivated: nothing is fetched.
        for _ in range(2):
            supervisor.wake()
            await scans_pass(scans, 1)
        assert cid not in supervisor.running
        assert private.state.last_applied(cid) == 1  # the hello only
        await actions.activate(private.home, private.state, cid, transport=public.transport)
        await until(lambda: private.state.last_applied(cid) == 2, timeout=2)
        assert [m.kind for m in public.state.inbox(cid)] == [
            "hello",
            "connection.deactivated",
            "connection.activated",
        ]

    run_supervisor(supervisor, body)


@pytest.mark.e2e
def test_console_supervisor_takes_over_only_when_the_node_is_gone(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    """The node process polls; a second supervisor on the same home (the console's) waits."""
    public, private_home, cid = connect_over_http(tmp_path, nodes)
    private = NodeProcess(private_home, free_port())
    nodes.append(private)
    private.start()
    public_state = SqliteStreams(public.home.state_path)
    state = SqliteStreams(private_home.state_path)
    public_state.enqueue(cid, "ping", {"n": 1})
    scans = CountingHome(private_home.path)  # the console's own handle on the same home
    console = Supervisor(scans, state, rescan=0.05)

    async def body() -> None:
        await until(lambda: state.last_applied(cid) == 2)  # delivered by the node process
        await scans_pass(scans)
        assert console.running == frozenset()
        private.kill()
        await until(lambda: cid in console.running)
        public_state.enqueue(cid, "ping", {"n": 2})
        await until(lambda: state.last_applied(cid) == 3)

    run_supervisor(console, body)
    assert [m.body for m in state.inbox(cid)][1:] == [{"n": 1}, {"n": 2}]


def private_initiator(
    tmp_path: Path, private_root: Path | None = None
) -> tuple[Side, Side, codes.Invitation]:
    """snow (private) invited jira (public, the real node); jira has not accepted yet.

    snow's home is under `private_root` when given (a small disk)."""
    private = make_side(private_root or tmp_path, "snow", None)
    public = make_side(tmp_path, "jira", "http://127.0.0.1:7002")
    wizard = InitiateWizard(private.instance, private.home.load_connections().connections)
    wizard.set_dest_url("http://127.0.0.1:7002")
    wizard.next()
    wizard.set_mode(Mode.SCRIPT)
    wizard.next()
    wizard.set_remote_name("jira")
    assert wizard.next() and wizard.issued
    assert save_issued(private.home, wizard.issued.connection, wizard.new_instance)
    return private, public, wizard.issued.invitation


def test_private_initiator_retries_the_handshake_until_accepted(tmp_path: Path) -> None:
    private, public, invite = private_initiator(tmp_path)
    delays: list[float] = []

    async def main() -> None:
        gate = asyncio.Semaphore(0)

        async def sleep(delay: float) -> None:
            delays.append(delay)
            await gate.acquire()

        supervisor = Supervisor(
            private.home, private.state, transport=public.transport, sleep=sleep, jitter=upper
        )
        task = asyncio.create_task(supervisor.run())
        for count in range(1, 7):
            await until(lambda: len(delays) == count)  # noqa: B023 - awaited at once
            if count < 6:
                gate.release()
        # Not accepted yet: the partner's node does not know the invitation.
        assert delays == [1, 2, 4, 8, 10, 10]
        error = private.state.contact(invite.cid).last_error or ""
        assert "403 invalid_invitation" in error
        await accept(public.home, public.state, invite, "jira")
        gate.release()
        await until(lambda: private.home.get_connection(invite.cid).status is Status.ACTIVE)
        await until(lambda: public.state.last_applied(invite.cid) == 1)  # snow's hello
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    mine = private.home.get_connection(invite.cid)
    assert mine.token is None and mine.secret is not None and mine.remote_name == "jira"
    assert private.state.contact(invite.cid).last_error is None


def test_an_expired_invitation_ends_the_handshake_with_the_reason(tmp_path: Path) -> None:
    private, public, invite = private_initiator(tmp_path)
    supervisor = Supervisor(
        private.home,
        private.state,
        transport=public.transport,
        clock=lambda: float(invite.exp),
    )

    async def body() -> None:
        await until(lambda: private.state.contact(invite.cid).last_error is not None)

    run_supervisor(supervisor, body)
    assert private.state.contact(invite.cid).last_error == (
        "The invitation expired before the other side accepted it: "
        "regenerate the code and send it again."
    )
    assert private.home.get_connection(invite.cid).status is Status.PENDING


def test_the_console_s_supervisor_loads_no_node(tmp_path: Path) -> None:
    """The console runs `runtime.Supervisor`; FastAPI and uvicorn are for `exalate-tui node`."""
    script = """
import sys
from pathlib import Path
from exalate_tui.home.store import Home
from exalate_tui.lifecycle.runtime import Supervisor
from exalate_tui.transport.sqlite_streams import SqliteStreams
home = Home(Path(sys.argv[1])); home.ensure()
Supervisor(home, SqliteStreams(home.state_path))
print(sorted(m for m in ("fastapi", "starlette", "uvicorn", "httpx") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "home")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"


# -- no job dies silently (issue 10, item 3) ------------------------------------------


def test_a_poller_survives_a_full_disk_and_resumes_when_writes_work_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public, private, cid = connect(tmp_path)
    set_status(public.home, cid, Status.DEACTIVATED)  # every poll now fails (409)
    full = threading.Event()
    full.set()
    refused: list[str] = []
    record_error = private.state.record_error

    def no_space(cid: str, error: str, when: float | None = None) -> None:
        if full.is_set():
            refused.append(error)
            raise OSError(28, "No space left on device")
        record_error(cid, error, when)

    monkeypatch.setattr(private.state, "record_error", no_space)

    async def no_wait(delay: float) -> None:
        await asyncio.sleep(0)

    supervisor = Supervisor(
        private.home, private.state, transport=public.transport, wait=0.2, sleep=no_wait
    )

    async def body() -> None:
        # Recording the failure fails, again and again: the poller is still there to retry.
        await until(lambda: len(refused) >= 3)
        full.clear()
        await until(lambda: "deactivated" in (private.state.contact(cid).last_error or ""))
        set_status(public.home, cid, Status.ACTIVE)
        public.state.enqueue_many(cid, [("ping", {"n": n}) for n in range(5)])
        await until(lambda: private.state.last_applied(cid) == 6)
        await until(lambda: private.state.contact(cid).last_error is None)

    run_supervisor(supervisor, body)
    assert supervisor.crashes == {}  # survived, not restarted
    assert [m.seq for m in private.state.inbox(cid)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.traceback_expected("the bug is logged with its traceback, as it must be")
def test_a_job_ended_by_a_bug_is_recorded_and_restarted_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public, private, cid = connect(tmp_path)
    private.state.enqueue(cid, "ping", {"n": 1})
    bugs = iter([RuntimeError("a bug"), RuntimeError("another")])
    pending = private.state.pending

    def buggy(cid: str, after: int = 0, limit: int = 500) -> list[Message]:
        bug = next(bugs, None)
        if bug is not None:
            raise bug  # outside the pusher's retry loop: it ends the job
        return pending(cid, after, limit)

    monkeypatch.setattr(private.state, "pending", buggy)
    delays: list[float] = []
    seen_errors: list[str | None] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        seen_errors.append(private.state.contact(cid).last_error)
        await asyncio.sleep(0)

    supervisor = Supervisor(
        private.home, private.state, transport=public.transport, sleep=sleep, jitter=upper
    )

    async def body() -> None:
        await until(lambda: [m.seq for m in public.state.inbox(cid)] == [1, 2])

    run_supervisor(supervisor, body)
    assert supervisor.crashes == {cid: 2}
    assert delays[:2] == [1, 2]  # restarted with backoff
    assert "The pusher stopped on an internal error (RuntimeError)" in (seen_errors[0] or "")


def test_a_handshake_answer_that_cannot_be_stored_is_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public, invite = private_initiator(tmp_path)
    asyncio.run(accept(public.home, public.state, invite, "jira"))  # waits for our call
    failures = [OSError(28, "No space left on device")]
    answered = runtime.Lifecycle.handshake_answered

    def disk_full_once(
        self: runtime.Lifecycle, connection: Connection, secret: SecretStr, remote_name: str
    ) -> None:
        if failures:
            raise failures.pop()
        answered(self, connection, secret, remote_name)

    monkeypatch.setattr(runtime.Lifecycle, "handshake_answered", disk_full_once)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    supervisor = Supervisor(
        private.home, private.state, transport=public.transport, sleep=sleep, jitter=upper
    )

    async def body() -> None:
        await until(lambda: private.home.get_connection(invite.cid).status is Status.ACTIVE)
        await until(lambda: public.state.last_applied(invite.cid) == 1)  # snow's hello

    run_supervisor(supervisor, body)
    assert delays[:1] == [1] and supervisor.crashes == {}
    mine, theirs = private.home.get_connection(invite.cid), public.home.get_connection(invite.cid)
    assert mine.secret is not None and theirs.secret is not None
    assert mine.secret.get_secret_value() == theirs.secret.get_secret_value()


def test_a_handshake_answer_whose_file_fails_after_hello_sends_one_hello(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hello is enqueued before the file says Active (so it is seq 1); when the file then
    fails (a full disk), the next attempt must not enqueue a second hello."""
    private, public, invite = private_initiator(tmp_path)
    asyncio.run(accept(public.home, public.state, invite, "jira"))  # waits for our call
    failures = [OSError(28, "No space left on device")]
    update = Home.update_connection

    def disk_full_once(self: Home, cid: str, change: Callable[[Connection], Connection]) -> Any:
        if failures and self.path == private.home.path:
            raise failures.pop()
        return update(self, cid, change)

    monkeypatch.setattr(Home, "update_connection", disk_full_once)

    async def no_wait(delay: float) -> None:
        await asyncio.sleep(0)

    supervisor = Supervisor(private.home, private.state, transport=public.transport, sleep=no_wait)

    async def body() -> None:
        await until(lambda: private.home.get_connection(invite.cid).status is Status.ACTIVE)
        private.state.enqueue(invite.cid, "ping", {"n": 1})
        await until(lambda: public.state.last_applied(invite.cid) >= 2)

    run_supervisor(supervisor, body)
    assert not failures
    assert [(m.seq, m.kind) for m in public.state.inbox(invite.cid)] == [(1, "hello"), (2, "ping")]


# -- a real full disk: a small tmpfs (root only, as CI runs) -------------------------


class Refusals(logging.Handler):
    """Counts the supervisor's "cannot record" warnings: each is a write the disk refused."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "cannot record" in record.getMessage()


@contextlib.contextmanager
def refusals() -> Iterator[Refusals]:
    handler = Refusals()
    logger = logging.getLogger("exalate_tui.transport.supervisor")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_a_poller_on_a_full_disk_loses_nothing_and_resumes_when_space_returns(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        public, private, cid = connect(tmp_path, disk)
        filler = fill_disk(disk)
        public.state.enqueue_many(cid, [("ping", {"n": n, "pad": "x" * 4096}) for n in range(50)])

        async def no_wait(delay: float) -> None:
            await asyncio.sleep(0.01)

        supervisor = Supervisor(
            private.home, private.state, transport=public.transport, wait=0.2, sleep=no_wait
        )

        async def body() -> None:
            with refusals() as refused:
                # Fetched, but this side cannot apply them, nor record why: it keeps at it.
                await until(lambda: refused.count >= 3)
            assert private.state.last_applied(cid) <= 1  # hello at most: nothing half-applied
            assert len(public.state.pending(cid)) == 51  # hello and the 50: none pruned unapplied
            filler.unlink()  # space again: everything, once, in order
            await until(lambda: private.state.last_applied(cid) == 51)
            await until(lambda: public.state.pending(cid) == [])

        run_supervisor(supervisor, body)
        assert supervisor.crashes == {}
        inbox = private.state.inbox(cid)
        assert [m.seq for m in inbox] == list(range(1, 52))
        assert [m.body["n"] for m in inbox[1:]] == list(range(50))
        private.state.close()


def test_a_pusher_on_a_full_disk_loses_nothing_and_resumes_when_space_returns(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        public, private, cid = connect(tmp_path, disk)
        private.state.enqueue_many(cid, [("ping", {"n": n}) for n in range(20)])
        filler = fill_disk(disk)

        async def no_wait(delay: float) -> None:
            await asyncio.sleep(0.01)

        supervisor = Supervisor(
            private.home, private.state, transport=public.transport, wait=0.2, sleep=no_wait
        )

        async def body() -> None:
            with refusals() as refused:
                # Delivered (the partner's disk has room), though this side cannot prune,
                # record contact, or record why: the pusher keeps at it.
                await until(lambda: public.state.last_applied(cid) == 21)
                await until(lambda: refused.count >= 3)
            with pytest.raises(Exception, match="full"):  # noqa: PT011 - sqlite3's or the OS's
                private.state.enqueue(cid, "ping", {"big": "x" * 2**20})
            filler.unlink()  # space again: it prunes, and new messages go at once
            private.state.enqueue(cid, "ping", {"n": 20})
            await until(lambda: public.state.last_applied(cid) == 22)
            await until(lambda: private.state.pending(cid) == [])
            await until(lambda: private.state.contact(cid).last_error is None)

        run_supervisor(supervisor, body)
        assert supervisor.crashes == {}
        inbox = public.state.inbox(cid)
        assert [m.seq for m in inbox] == list(range(1, 23))  # hello, then each ping once
        assert [m.body["n"] for m in inbox[1:]] == list(range(21))
        private.state.close()


@pytest.mark.parametrize("store_has_room", [False, True], ids=["all-full", "store-has-room"])
def test_a_handshake_on_a_full_disk_burns_nothing_lost_and_finishes_when_space_returns(
    tmp_path: Path, store_has_room: bool
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        private, public, invite = private_initiator(tmp_path, disk)
        asyncio.run(accept(public.home, public.state, invite, "jira"))  # waits for our call
        if store_has_room:
            # Room in state.sqlite3's log from an earlier large write: hello can be enqueued
            # while the connection file cannot be written.
            private.state.enqueue("earlier", "ping", {"big": "x" * 2**20})
            private.state.forget("earlier")
        filler = fill_disk(disk)

        async def no_wait(delay: float) -> None:
            await asyncio.sleep(0.01)

        supervisor = Supervisor(
            private.home, private.state, transport=public.transport, sleep=no_wait
        )

        async def body() -> None:
            with refusals() as refused:
                # jira answered (its token is burnt), snow cannot store the answer, again
                # and again: still Pending with its token, so it can try again.
                await until(lambda: public.home.get_connection(invite.cid).status is Status.ACTIVE)
                await until(lambda: refused.count >= 3)
            mine = private.home.get_connection(invite.cid)
            assert mine.status is Status.PENDING and mine.token is not None
            filler.unlink()  # space again: the same offer gets the same secret
            await until(lambda: private.home.get_connection(invite.cid).status is Status.ACTIVE)
            await until(lambda: public.state.last_applied(invite.cid) == 1)  # snow's hello
            private.state.enqueue(invite.cid, "ping", {"n": 1})
            public.state.enqueue(invite.cid, "ping", {"n": 2})
            await until(lambda: public.state.last_applied(invite.cid) == 2)
            await until(lambda: private.state.last_applied(invite.cid) == 2)  # hello, ping

        run_supervisor(supervisor, body)
        assert supervisor.crashes == {}
        mine = private.home.get_connection(invite.cid)
        theirs = public.home.get_connection(invite.cid)
        assert mine.secret is not None and theirs.secret is not None
        assert mine.secret.get_secret_value() == theirs.secret.get_secret_value()
        # One hello, seq 1, whatever the failed attempts enqueued before the file failed.
        assert [(m.seq, m.kind) for m in public.state.inbox(invite.cid)] == [
            (1, "hello"),
            (2, "ping"),
        ]
        private.state.close()
