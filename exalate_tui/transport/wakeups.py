"""How this process learns that an outbox grew: at once from its own enqueues and
the doorbell, within a tick from any other process's commit (`data_version`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from exalate_tui.transport.streams import Streams

log = logging.getLogger(__name__)

# How often another process's enqueue is looked for while anyone long-polls.
WATCH = 0.05


class DataVersionWatch:
    """Notices commits by other processes: `PRAGMA data_version` moves when one commits.

    `start` takes the first reading, each `moved` compares a fresh one with
    the last; both read in a thread, since a batch being applied holds the
    state for tens of milliseconds.
    """

    def __init__(self, state: Streams) -> None:
        self.state = state
        self._version: int | None = None

    async def start(self) -> None:
        self._version = await asyncio.to_thread(self.state.data_version)

    async def moved(self) -> bool:
        current = await asyncio.to_thread(self.state.data_version)
        moved, self._version = current != self._version, current
        return moved


@dataclass(eq=False, slots=True)
class Waiter:
    """One parked long-poll: a bare future and a timer, no task of its own.

    Thousands are held at once, so each costs as little as it can
    (`asyncio.wait_for` would add a task and a coroutine per poll).
    """

    after: int
    woken: asyncio.Future[None]

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)


class Wakeups:
    """Long-polls wait here for their connection's outbox to grow.

    An enqueue through the node's own state wakes that connection's polls at
    once (`on_enqueue` → `notify`, from any thread). Another process's
    enqueue is seen within `watch` seconds: while anyone waits, one task
    watches `data_version` and, when it moves, wakes the polls whose
    connection's last seq passed what they have.
    """

    def __init__(self, state: Streams, watch: float = WATCH) -> None:
        self.state = state
        self.watch = watch
        self._waiters: dict[str, list[Waiter]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def notify(self, cid: str) -> None:
        """Wake `cid`'s long-polls; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # nobody has waited yet
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake, cid)

    def ring_here(self, address: str | None) -> Callable[[], None]:
        """Hear enqueues of other processes at once on `address` (`doorbell.doorbell_address`).

        Each datagram names a cid whose outbox grew. Without it (no address,
        or another process bound it) the `data_version` watch still catches
        every enqueue, within `watch` seconds instead of a millisecond.
        Call from the serving loop; returns what stops listening.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        if address is None:
            return lambda: None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
        except OSError as error:
            log.warning("other processes' enqueues are seen within %g s: %s", self.watch, error)
            sock.close()
            return lambda: None
        sock.setblocking(False)

        def rung() -> None:
            while True:
                try:
                    cid = sock.recv(128)
                except OSError:  # drained
                    return
                self._wake(cid.decode("ascii", "replace"))

        loop.add_reader(sock.fileno(), rung)

        def stop() -> None:
            loop.remove_reader(sock.fileno())
            sock.close()

        return stop

    def close(self) -> None:
        """Answer every long-poll now, and every later one without waiting (shutdown)."""
        self._closed = True
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.wake()

    async def aclose(self) -> None:
        """`close`, then stop the `data_version` watch, so the state can close after."""
        self.close()
        watcher = self._watcher
        if watcher is not None:
            # It sees `closed` within one `watch`: let a look already in a thread end
            # there, rather than cancel the await and leave the thread on the state.
            await asyncio.wait({watcher}, timeout=1.0)
            watcher.cancel()

    def _wake(self, cid: str) -> None:
        for waiter in self._waiters.get(cid, ()):
            waiter.wake()

    def register(self, cid: str, after: int) -> Waiter:
        """A waiter woken once `cid` may have a message after `after`.

        Register first, then look at the outbox: an enqueue in between wakes
        the waiter, so it is never missed. `unregister` it in every case.
        """
        loop = self._loop = asyncio.get_running_loop()
        waiter = Waiter(after, loop.create_future())
        if self._closed:
            waiter.wake()
        # A list, not a set: nearly always one poll per connection, and 10,000 are held.
        self._waiters.setdefault(cid, []).append(waiter)
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="node:data_version")
        return waiter

    def parked(self, cid: str) -> int:
        """How many long-polls of `cid` wait here now."""
        return len(self._waiters.get(cid, ()))

    def unregister(self, cid: str, waiter: Waiter) -> None:
        waiters = self._waiters.get(cid)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[cid]

    async def _watch(self) -> None:
        try:
            others = DataVersionWatch(self.state)
            await others.start()
            # The first pass catches commits made before that first reading.
            changed = True
            while self._waiters and not self._closed:
                if changed:
                    cids = list(self._waiters)
                    seqs = await asyncio.to_thread(self.state.last_seqs, cids)
                    for cid, seq in seqs.items():
                        for waiter in self._waiters.get(cid, ()):
                            if seq > waiter.after:
                                waiter.wake()
                await asyncio.sleep(self.watch)
                if not self._waiters or self._closed:
                    break  # everyone left while we slept: the state may be closing
                changed = await others.moved()
        finally:
            self._watcher = None
