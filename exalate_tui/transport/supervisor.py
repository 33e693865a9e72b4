"""The supervisor: every HTTP request this side makes after setup (docs/protocol.md).

Per connection of the home, at most one *link* across all processes (a
non-blocking `flock` on `<home>/locks/<cid>.lock`):

- this side private and Active: a poller (long-poll the public side, apply
  each batch in one transaction) beside a pusher (deliver this side's outbox);
- public-public and Active: a pusher to the peer's URL;
- private initiator of a Pending private-public connection: the handshake,
  retried until it succeeds or the invitation expires; then the poller.

Every attempt records contact; failures back off with full jitter. Time,
sleep and jitter are injectable so tests need neither luck nor patience.

No job dies silently (docs/reliability.md, a full disk): a failure while
recording a failure (the disk is full) is logged and the job carries on; a
job that ends by a bug is logged, recorded as the connection's last error
when that can be written, and restarted with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from exalate_tui.domain.models import Connection, PeerState, Role, Status
from exalate_tui.domain.topology import side
from exalate_tui.home.store import Home
from exalate_tui.protocol import kinds
from exalate_tui.transport.contact import ContactThrottle
from exalate_tui.transport.delivery import deliver
from exalate_tui.transport.hooks import Hooks
from exalate_tui.transport.streams import LeaseLost, Message, StateError, Streams, within_budget
from exalate_tui.transport.wakeups import DataVersionWatch

if TYPE_CHECKING:
    import httpx

    from exalate_tui.transport.client import Batch, Remote

log = logging.getLogger(__name__)

WAIT = 25.0
# Messages per long-poll: each round trip costs two commits and a request, so
# bigger batches carry more (benchmarks/README.md, throughput).
BATCH = 2000
# Messages per push, at most: a push body must stay under the node's 8 MiB.
PUSH_BATCH = 500
RESCAN = 3.0
# How often another process's enqueue (seen through `data_version`) is noticed.
WATCH = 0.1
CAP = 60.0
BASE = 0.5
# Waiting on the partner's admin (to paste the code, or to activate the
# connection again) is no outage: retrying at least this often keeps "Active
# within seconds" true once they act, and costs one small request.
WAITING_CAP = 10.0

Sleep = Callable[[float], Awaitable[None]]
Jitter = Callable[[float, float], float]


class Backoff:
    """Full jitter: `jitter(0, min(cap, base * 2**failures))`, reset on success."""

    def __init__(self, *, cap: float = CAP, base: float = BASE, jitter: Jitter = random.uniform):
        self.cap = cap
        self.base = base
        self.jitter = jitter
        self.failures = 0

    def failure(self) -> float:
        """Count one more failure; returns how long to wait before the next attempt."""
        self.failures += 1
        # The exponent is capped so a long outage cannot overflow the float.
        return self.jitter(0.0, min(self.cap, self.base * 2 ** min(self.failures, 64)))

    def reset(self) -> None:
        self.failures = 0


class Plan(StrEnum):
    POLL = "poll"
    PUSH = "push"
    HANDSHAKE = "handshake"


def plan_for(connection: Connection) -> Plan | None:
    """What this side must do for a connection; None when the peer makes the requests."""
    if connection.remote_url is None:
        return None
    here = side(connection.topology, connection.role)
    if connection.status is Status.ACTIVE and connection.secret is not None:
        if here.polls:
            return Plan.POLL
        if here.pushes:
            return Plan.PUSH
        return None
    if (
        connection.status is Status.PENDING
        and connection.role is Role.INITIATOR
        and not here.receives_handshake
        and connection.token is not None
    ):
        # A private initiator presents its own token: its partner cannot call it.
        return Plan.HANDSHAKE
    return None


class FileLock:
    """An exclusive `flock` on one file of the home, taken without waiting.

    `flock` belongs to the open file, so a killed process lets go at once and
    two holders in one process exclude each other as two processes do.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when someone else holds it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        """Try to take it for a block; whether it was taken."""
        taken = self.acquire()
        try:
            yield taken
        finally:
            if taken:
                self.release()


class ConnectionLock(FileLock):
    """`<home>/locks/<cid>.lock`: held while this process makes a connection's requests."""

    def __init__(self, home: Home, cid: str) -> None:
        super().__init__(home.path / "locks" / f"{cid}.lock")


def _fingerprint(connection: Connection) -> tuple[object, ...]:
    """What, when it changes, means the running link no longer fits the connection."""
    secret = connection.secret.get_secret_value() if connection.secret else None
    # A regenerated invitation changes the token: the handshake must present the new one.
    token = connection.token.get_secret_value() if connection.token else None
    return (
        plan_for(connection),
        connection.remote_url,
        secret,
        token,
        connection.local_name,
        connection.peer_state,
    )


@dataclass
class _Link:
    connection: Connection
    lock: ConnectionLock
    fingerprint: tuple[object, ...]
    # The store's lease on the connection (`Streams.take_lease`): 0 where the home's flock
    # is all it takes (state.sqlite3); a fencing epoch on PostgreSQL, checked on apply.
    epoch: int = 0
    lost: bool = False  # another worker took the lease: the rescan stops this link
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Set while the poller acknowledges a partner's `connection.deleted`: applying it
    # rewrote the file, and a rescan must not cut the acknowledgement short.
    finishing: bool = False


class Supervisor:
    """Runs the links of one home until cancelled; see the module docstring.

    `hooks` are the layer above's: what a fetched message does, and what a
    private initiator does once its handshake is answered.
    """

    def __init__(
        self,
        home: Home,
        state: Streams,
        hooks: Hooks,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        wait: float = WAIT,
        limit: int = BATCH,
        rescan: float = RESCAN,
        watch: float = WATCH,
        cap: float = CAP,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Jitter = random.uniform,
    ) -> None:
        self.home = home
        self.state = state
        self.hooks = hooks
        self.wait = wait
        self.limit = limit
        self.rescan = rescan
        self.watch = watch
        self.cap = cap
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._links: dict[str, _Link] = {}
        self._remotes: dict[str, Remote] = {}
        self._contact = ContactThrottle()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rescan_now: asyncio.Event | None = None
        # How often each connection's jobs stopped on a bug (and were restarted).
        self.crashes: dict[str, int] = {}
        # This supervisor as a lease holder, unique across workers and restarts.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @property
    def running(self) -> frozenset[str]:
        """The ids of the connections this supervisor holds the lock of."""
        return frozenset(self._links)

    def wake(self, cid: str | None = None) -> None:
        """From any thread: deliver `cid`'s outbox now, or (None) rescan the home now."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake, cid)

    def _wake(self, cid: str | None) -> None:
        link = self._links.get(cid) if cid else None
        if link is not None:
            link.wake.set()
        if self._rescan_now is not None:
            # Actions change a connection, then enqueue the news: the connection may be
            # new, activated, deactivated or gone, so look again (coalesced per tick).
            self._rescan_now.set()

    def _hinted(self, cid: str) -> None:
        """From the hints' thread: wake `cid`'s pusher if this supervisor runs it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake_link, cid)

    def _wake_link(self, cid: str) -> None:
        link = self._links.get(cid)
        if link is not None:
            link.wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._rescan_now = asyncio.Event()
        remove = self.state.on_enqueue(self.wake)
        # Another worker's enqueue: that link's pusher only. No rescan: that worker's
        # admin changed that worker's files, not this home's.
        unhint = self.state.on_hint(self._hinted)
        others = DataVersionWatch(self.state)
        await others.start()
        files = await self._files_stamp()
        next_scan = 0.0
        try:
            while True:
                # Another process (the CLI, the console) changed a connection file: an
                # admin's deactivate must stop this side's requests now, not at the next
                # periodic rescan. Read before scanning, so a change during it is seen.
                current_files = await self._files_stamp()
                changed = current_files != files
                files = current_files
                if changed or self._rescan_now.is_set() or time.monotonic() >= next_scan:
                    self._rescan_now.clear()
                    try:
                        await self._scan()
                    except (OSError, StateError) as error:
                        # The home (or its database) is unreadable for now: keep the
                        # running links, retry.
                        log.error("cannot scan %s: %s", self.home.path, error)
                    next_scan = time.monotonic() + self.rescan
                if await others.moved():
                    # Another process wrote (an enqueue, most likely): wake every pusher.
                    for link in self._links.values():
                        link.wake.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._rescan_now.wait(), self.watch)
        finally:
            remove()
            unhint()
            for cid in list(self._links):
                await self._stop(cid)
            for remote in self._remotes.values():
                await remote.aclose()
            self._remotes.clear()
            self._loop = None

    async def _files_stamp(self) -> int | None:
        """Changes when a connection is written or removed (a file's rename or unlink, a
        database's change counter: read in a thread, it is a query there)."""
        try:
            return await asyncio.to_thread(self.home.connections.stamp)
        except (OSError, StateError):
            return None

    # -- links ----------------------------------------------------------------

    async def _scan(self) -> None:
        loaded = await asyncio.to_thread(self.home.load_connections)
        wanted = {c.id: c for c in loaded.connections if plan_for(c)}
        for cid, link in list(self._links.items()):
            connection = wanted.get(cid)
            if link.lost:
                await self._stop(cid)
            elif connection is None or _fingerprint(connection) != link.fingerprint:
                if link.finishing:
                    continue  # its poller stops by itself once the partner has heard
                await self._stop(cid)
            else:
                link.connection = connection
        for cid, connection in wanted.items():
            if cid in self._links:
                continue
            lock = ConnectionLock(self.home, cid)
            if not lock.acquire():
                continue  # another process runs it; try again on the next scan
            epoch = await self._lease(cid)
            if epoch is None:
                lock.release()  # another worker runs it; try again on the next scan
                continue
            self._start(_Link(connection, lock, _fingerprint(connection), epoch))
        used = {link.connection.remote_url for link in self._links.values()}
        for url in [url for url in self._remotes if url not in used]:
            await self._remotes.pop(url).aclose()

    def _start(self, link: _Link) -> None:
        cid = link.connection.id
        self._links[cid] = link
        jobs = {
            Plan.POLL: (self._poll, self._push),
            Plan.PUSH: (self._push,),
            Plan.HANDSHAKE: (self._handshake,),
        }
        plan = plan_for(link.connection)
        if link.epoch:
            jobs = {p: (*js, self._keep_lease) for p, js in jobs.items()}
        for job in jobs[plan] if plan else ():
            task = asyncio.create_task(self._guarded(job, link), name=f"{job.__name__}:{cid}")
            task.add_done_callback(_report_crash)
            link.tasks.append(task)

    async def _stop(self, cid: str) -> None:
        link = self._links.pop(cid)
        try:
            for task in link.tasks:
                task.cancel()
            if link.tasks:
                # `wait` never raises a task's own error (`_report_crash` logged it).
                await asyncio.wait(link.tasks)
        finally:
            if link.epoch and not link.lost:
                with contextlib.suppress(Exception):  # it runs out by itself anyway
                    await asyncio.to_thread(self.state.drop_lease, cid, self.holder, link.epoch)
            link.lock.release()

    async def _lease(self, cid: str) -> int | None:
        """The store's lease for this supervisor; None while another worker holds it (or
        the store cannot be asked now: the next scan tries again)."""
        try:
            return await asyncio.to_thread(self.state.take_lease, cid, self.holder)
        except Exception as error:  # noqa: BLE001 - an outage: nothing runs without a lease
            log.warning("connection %s: its lease cannot be taken now: %s", cid, error)
            return None

    async def _keep_lease(self, link: _Link) -> None:
        """Renew the lease every third of its run; once another worker has it, stop the
        link (its applies are refused already: `LeaseLost`)."""
        cid = link.connection.id
        every = self.state.lease_ttl / 3
        while True:
            await asyncio.sleep(every)
            try:
                kept = await asyncio.to_thread(self.state.renew_lease, cid, self.holder, link.epoch)
            except Exception as error:  # noqa: BLE001 - an outage: try again; a hung apply is fenced
                log.warning("connection %s: its lease cannot be renewed now: %s", cid, error)
                continue
            if not kept:
                log.warning("connection %s: another worker took its lease; stopping here", cid)
                link.lost = True
                self._wake(None)
                return

    def _remote(self, url: str) -> Remote:
        # One pooled client per peer URL, shared by every connection to that peer.
        remote = self._remotes.get(url)
        if remote is None:
            # httpx loads with the first link that calls out: the console of a home
            # whose partners all poll it never pays its ~7 MB.
            from exalate_tui.transport.client import Remote

            remote = self._remotes[url] = Remote(url, transport=self._transport)
        return remote

    # -- jobs -----------------------------------------------------------------

    async def _guarded(self, job: Callable[[_Link], Awaitable[None]], link: _Link) -> None:
        """Run `job` until it ends by itself; a bug ends one attempt only, then a restart."""
        cid = link.connection.id
        what = _JOBS.get(job.__name__, job.__name__)
        backoff = self._backoff()
        while True:
            try:
                await job(link)
                return
            except Exception as error:  # noqa: BLE001 - a bug: say so, then start again
                log.error("the %s of %s stopped on a bug; restarting it", what, cid, exc_info=True)
                self.crashes[cid] = self.crashes.get(cid, 0) + 1
                await self._record_error(
                    cid,
                    f"The {what} stopped on an internal error ({type(error).__name__}) and "
                    "restarts by itself; the log has the details.",
                )
                await self._sleep(backoff.failure())

    async def _record_error(self, cid: str, reason: str) -> None:
        """Record a failure; when even that fails (a full disk), log both and carry on."""
        try:
            await asyncio.to_thread(self.state.record_error, cid, reason, self._clock())
        except Exception as error:  # noqa: BLE001 - the job must outlive its bookkeeping
            log.warning("cannot record the last error of %s (%s): %s", cid, error, reason)

    async def _failed(self, cid: str, backoff: Backoff, error: Exception) -> None:
        self._contact.reset(cid)  # the next success clears this error at once
        reason = str(error) or type(error).__name__
        await self._record_error(cid, reason)
        delay = backoff.failure()
        from exalate_tui.transport.client import (
            RemoteError,  # loaded already: every job's first step is a Remote
        )

        if isinstance(error, RemoteError) and error.code == "deactivated":
            delay = min(delay, WAITING_CAP)
        await self._sleep(delay)

    async def _ok(self, cid: str, backoff: Backoff) -> None:
        # The first success after a failure is written at once: it clears the error shown.
        if self._contact.due(cid, anyway=bool(backoff.failures)):
            await asyncio.to_thread(self.state.record_ok, cid, self._clock())
        backoff.reset()

    def _backoff(self, cap: float | None = None) -> Backoff:
        return Backoff(cap=min(self.cap, cap or self.cap), jitter=self._jitter)

    async def _poll(self, link: _Link) -> None:
        """Long-poll the public side, applying each batch in order, once.

        `applied` is the durable cursor, and every fetch acknowledges it.
        While a batch is applied and the public outbox holds more (its
        `last_seq`), the next one is already asked for (`after` = the batch's
        last seq, `ack` = the cursor before it, `wait` 0), so the network and
        the public node work while this side's disk does.
        What was fetched ahead is used only once the batch before it is
        applied whole; after any failure it is dropped and the poller starts
        again from the cursor. A node that does not say it honours `ack` is
        never fetched ahead of: it would prune what is not applied yet.
        """
        connection = link.connection
        assert connection.remote_url and connection.secret  # plan_for checked both
        cid, secret = connection.id, connection.secret
        remote = self._remote(connection.remote_url)
        backoff = self._backoff()
        ahead: asyncio.Task[Batch] | None = None
        try:
            while True:
                try:
                    applied = await asyncio.to_thread(self.state.last_applied, cid)
                    while True:
                        if ahead is None:
                            batch = await remote.fetch(
                                cid, secret, applied, wait=self.wait, limit=self.limit
                            )
                        else:
                            batch, ahead = await ahead, None
                        if batch.messages:
                            last = batch.messages[-1].seq
                            deleted = any(m.kind == kinds.DELETED for m in batch.messages)
                            # Only while more waits (`last_seq`): fetching ahead of a drained
                            # outbox would cost one more request per message at low rates.
                            more = batch.last_seq > last
                            if more and not deleted and batch.acked is not None and last > applied:
                                ahead = asyncio.create_task(
                                    remote.fetch(
                                        cid, secret, last, wait=0, limit=self.limit, ack=applied
                                    ),
                                    name=f"fetch-ahead:{cid}",
                                )
                            link.finishing = deleted
                            try:
                                cursor = await asyncio.to_thread(
                                    functools.partial(
                                        self.state.apply,
                                        cid,
                                        batch.messages,
                                        self._effect(cid),
                                        epoch=link.epoch or None,
                                    )
                                )
                                if deleted:
                                    # The partner keeps a tombstone until we acknowledge; this
                                    # side is now deactivated, so acknowledge and stop.
                                    await remote.fetch(cid, secret, cursor, wait=0)
                                    await self._ok(cid, backoff)
                                    return
                            finally:
                                if deleted:
                                    link.finishing = False
                                    self.wake()  # rescan: the link is no longer wanted
                            if cursor != last:
                                _drop(ahead)  # it starts past the cursor
                                ahead = None
                            applied = cursor
                        await self._ok(cid, backoff)
                except LeaseLost as error:
                    _drop(ahead)
                    log.warning("%s; this worker stops polling it", error)
                    link.lost = True
                    self._wake(None)
                    return
                except Exception as error:  # noqa: BLE001 - any failure: record, back off, retry
                    _drop(ahead)
                    ahead = None
                    await self._failed(cid, backoff, error)
        finally:
            _drop(ahead)

    async def _push(self, link: _Link) -> None:
        """Deliver the outbox as soon as it has something; prune what the peer applied."""
        connection = link.connection
        assert connection.remote_url and connection.secret  # plan_for checked both
        remote = self._remote(connection.remote_url)
        backoff = self._backoff()
        while True:
            link.wake.clear()
            # A partner that paused the connection answers 409 until it sends
            # `connection.activated`; that clears `peer_state` and restarts this link.
            paused = link.connection.peer_state is PeerState.DEACTIVATED
            limit = min(self.limit, PUSH_BATCH)
            pending = (
                []
                if paused
                else await asyncio.to_thread(self.state.pending, connection.id, 0, limit)
            )
            pending = pending[: within_budget([len(m.body_json) for m in pending])]
            if not pending:
                # The periodic timeout is a safety net: wakes come from enqueues.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.wake.wait(), self.rescan)
                continue
            try:
                await deliver(remote, self.state, connection.id, connection.secret, pending)
                await self._ok(connection.id, backoff)
            except Exception as error:  # noqa: BLE001 - any failure: record, back off, retry
                await self._failed(connection.id, backoff, error)

    async def _handshake(self, link: _Link) -> None:
        """A private initiator presents its token to the public acceptor until it is taken."""
        connection = link.connection
        assert connection.remote_url and connection.token  # plan_for checked both
        remote = self._remote(connection.remote_url)
        from exalate_tui.transport.client import RemoteError

        backoff = self._backoff(WAITING_CAP)
        while True:
            expires = connection.token_expires
            if expires is not None and self._clock() >= expires.timestamp():
                await self._record_error(
                    connection.id,
                    "The invitation expired before the other side accepted it: "
                    "regenerate the code and send it again.",
                )
                return
            try:
                answer = await remote.handshake(
                    connection.id,
                    connection.token,
                    connection.local_name,
                    None,
                    digest=connection.code_digest,
                )
            except RemoteError as error:
                if error.code == "invitation_used":
                    # Burnt without our having the secret (an answer lost on the way):
                    # only a new code can fix it, so stop and say so.
                    await self._record_error(
                        connection.id,
                        "The other side says this invitation was already used: "
                        "regenerate the code and send it again.",
                    )
                    return
                # `invalid_invitation` is the usual answer until the partner pastes the code.
                await self._failed(connection.id, backoff, error)
                continue
            except Exception as error:  # noqa: BLE001 - any failure: record, back off, retry
                await self._failed(connection.id, backoff, error)
                continue
            try:
                await asyncio.to_thread(
                    self.hooks.handshake_answered, connection, answer.secret, answer.short_name
                )
            except Exception as error:  # noqa: BLE001 - the disk, most likely: try again
                # The partner answers the same handshake again with the same secret for a
                # while (docs/protocol.md, Handshake), so the next attempt can store it.
                await self._failed(connection.id, backoff, error)
                continue
            try:
                await asyncio.to_thread(self.state.record_ok, connection.id, self._clock())
            except Exception as error:  # noqa: BLE001 - Active already; only contact is lost
                log.warning("cannot record contact with %s: %s", connection.id, error)
            self.wake()  # rescan: the connection is Active, the poller takes over
            return

    def _effect(self, cid: str) -> Callable[[Message], None]:
        hooks = self.hooks
        return lambda message: hooks.apply(cid, message)


_JOBS = {"_poll": "poller", "_push": "pusher", "_handshake": "handshake", "_keep_lease": "lease"}


def _drop(task: asyncio.Task[Batch] | None) -> None:
    """Cancel a fetch whose answer is no longer wanted (and never report its error)."""
    if task is not None:
        task.cancel()
        task.add_done_callback(lambda done: done.cancelled() or done.exception())


def _report_crash(task: asyncio.Task[None]) -> None:
    """A job ends only by cancellation or by a bug: make the bug visible."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())
