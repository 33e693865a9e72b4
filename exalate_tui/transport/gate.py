"""The node's sockets before a request is in: a deadline, caps, and a log that keeps calm.

uvicorn drops a keep-alive socket idle for `KEEP_ALIVE` s, but nothing drops
one that sends its headers slowly (or a byte of the next request, which
stops the keep-alive clock): thousands of those once filled the node's
descriptors. Here (docs/reliability.md, slow sockets):

- a socket not in a request (headers not all in, or idle between requests)
  is closed after `HEADER_TIMEOUT` s;
- at most `MAX_WAITING` such sockets at once: a new one closes the oldest
  that has waited `MIN_AGE` s with nothing unread, so a flood of slow
  sockets cannot keep an honest partner, whose headers come at once, from
  getting in, while a burst of honest partners (thousands of pollers
  reconnecting after a restart, benchmarks/README.md capacity) is not cut
  short meanwhile, even when the node is too busy to read their requests
  within `MIN_AGE`;
- at most `max_open` sockets in all (the open-files limit less room for the
  node's own files and calls): past it a new socket is closed at once,
  rather than `accept()` failing for want of a descriptor;
- a request answered before its body is in has its socket closed, instead
  of the rest of the body being read to be dropped: the answer goes out with
  an end of file, the socket is read no more, and it is closed `CLOSE_AFTER`
  s later (`Gate.close_later`, one timer for them all), since closing a
  socket with unread bytes resets it, and a reset can destroy an answer the
  caller has not read yet. Reading the rest to drop it (at most 256 KiB
  once) was, under a flood of refused bodies, most of what the node read;
- every socket is read `READ_SIZE` bytes at a time (asyncio reads 256 KiB):
  the loop serves every ready socket once per turn, so a turn with
  hundreds of bodies streaming in stays short and `/info` or a poll waits
  for one turn of small reads, not of large ones;
- "out of descriptors" is logged once per `LOG_EVERY` s with a count, not
  once per failed `accept()` (`AcceptErrors`).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fcntl
import itertools
import logging
import struct
import termios
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0
KEEP_ALIVE = 5
MAX_WAITING = 2048
# Headers sent at once arrive within milliseconds: only a socket older than this is slow.
MIN_AGE = 1.0
# How many of the oldest waiting sockets a new one looks at for a slow one to close.
LOOK_AT = 8
# Descriptors kept for the state, the logs, the threads and the supervisor's own calls.
RESERVED_FILES = 512
LOG_EVERY = 10.0
# docs/reliability.md, promise 13 (`/info` under a flood of bodies): what one socket may
# hand the loop per turn. An honest batch is well under a megabyte, a few dozen reads.
READ_SIZE = 16 * 1024
# docs/reliability.md, promise 13: how long an early answer's socket stays open, unread,
# for its caller to read the answer (which comes at once) before the reset of the close.
CLOSE_AFTER = 1.0


class Gate:
    """The sockets of one server that are not in a request, oldest first."""

    def __init__(
        self,
        max_open: int,
        *,
        timeout: float = HEADER_TIMEOUT,
        max_waiting: int = MAX_WAITING,
        min_age: float = MIN_AGE,
    ) -> None:
        self.max_open = max_open
        self.timeout = timeout
        self.max_waiting = max_waiting
        self.min_age = min_age
        # Each waiting socket's deadline, and when it began to wait (loop time).
        self.waiting: dict[asyncio.BaseProtocol, tuple[asyncio.TimerHandle, float]] = {}
        # One receive buffer for all the server's sockets: its loop reads one at a time, and
        # each read is handed on before the next (a buffer per socket would cost 10,000
        # idle long-polls 160 MiB).
        self.buffer = memoryview(bytearray(READ_SIZE))
        # Sockets answered before their body was in, with when to close them, oldest first.
        self.answered: collections.deque[tuple[float, asyncio.Transport]] = collections.deque()
        self.sweep: asyncio.TimerHandle | None = None

    def wait(self, protocol: GuardedH11) -> None:
        """(Re)start the protocol's clock: it has this long to bring a whole request."""
        self.done(protocol)
        now = protocol.loop.time()
        while len(self.waiting) >= self.max_waiting:
            slow = self._slow(now)
            if slow is None:
                break  # a burst, not slow sockets: the deadline and `max_open` still hold
            self.drop(slow)
        timer = protocol.loop.call_later(self.timeout, self.drop, protocol)
        self.waiting[protocol] = (timer, now)

    def _slow(self, now: float) -> GuardedH11 | None:
        """The oldest of the first `LOOK_AT` waiting sockets that has waited `min_age` with
        nothing unread. One whose bytes the kernel holds is not slow, the loop is: a node
        starved of CPU while thousands of pollers reconnect reads their requests late."""
        for protocol, (_, since) in itertools.islice(self.waiting.items(), LOOK_AT):
            if now - since < self.min_age:
                return None
            assert isinstance(protocol, GuardedH11)
            if not protocol.unread():
                return protocol
        return None

    def done(self, protocol: asyncio.BaseProtocol) -> None:
        waiting = self.waiting.pop(protocol, None)
        if waiting is not None:
            waiting[0].cancel()

    def drop(self, protocol: GuardedH11) -> None:
        self.done(protocol)
        if not protocol.in_request():
            protocol.transport.close()

    def close_later(self, protocol: GuardedH11) -> None:
        """Close an early answer's socket `CLOSE_AFTER` s from now; read it no more."""
        self.done(protocol)
        protocol.flow.pause_reading()
        loop = protocol.loop
        self.answered.append((loop.time() + CLOSE_AFTER, protocol.transport))
        if self.sweep is None:
            self.sweep = loop.call_at(self.answered[0][0], self._close_answered, loop)

    def _close_answered(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        while self.answered and self.answered[0][0] <= now:
            self.answered.popleft()[1].close()
        self.sweep = None
        if self.answered:
            self.sweep = loop.call_at(self.answered[0][0], self._close_answered, loop)


class GuardedH11(H11Protocol, asyncio.BufferedProtocol):
    """uvicorn's h11 protocol under a `Gate` (`guarded(gate)` binds one).

    A `BufferedProtocol` too, so that asyncio reads into `gate.buffer`: at most
    `READ_SIZE` bytes per socket per turn of the loop.
    """

    gate: Gate

    def in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.gate.max_open:
            transport.abort()
            return
        self.gate.wait(self)

    def unread(self) -> int:
        """Bytes the kernel holds for this socket that the loop has not read yet."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return 0
        try:
            answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4)
        except OSError:
            return 0
        (count,) = struct.unpack("i", answer)
        return int(count)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.gate.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self.gate.buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_request():
            self.gate.done(self)

    def on_response_complete(self) -> None:
        early = self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing()
        if early:
            # Answered before its body was read (401, 413, 503): uvicorn would go on
            # reading the rest only to drop it, up to 8 MiB of CPU per refused request.
            self.transport.write_eof()
        super().on_response_complete()
        if early:
            self.gate.close_later(self)
        elif not self.in_request() and not self.transport.is_closing():
            self.gate.wait(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.gate.done(self)


def guarded(gate: Gate) -> type[GuardedH11]:
    """A protocol class for uvicorn's `Config(http=...)` whose sockets `gate` keeps."""
    return type("GuardedH11", (GuardedH11,), {"gate": gate})


_OUT_OF = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class AcceptErrors:
    """An event-loop exception handler: `accept()` out of descriptors, once per interval.

    Everything else goes to the loop's default handler, as before.
    """

    def __init__(
        self, limit: int, every: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.every, self.clock = limit, every, clock
        self.failed = 0
        self.logged_at: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if not (isinstance(error, OSError) and error.errno in _OUT_OF):
            loop.default_exception_handler(context)
            return
        self.failed += 1
        now = self.clock()
        if self.logged_at is None or now - self.logged_at >= self.every:
            log.error(
                "out of descriptors: %d new connection(s) could not be accepted in the last "
                "%g s (%s; open files limit %d); they wait in the backlog",
                self.failed,
                self.every,
                error.strerror or error,
                self.limit,
            )
            self.failed = 0
            self.logged_at = now
