"""What one node lets requests hold before they are authenticated (docs/reliability.md).

A push body is up to 8 MiB and the signature over it can only be checked
once it is all in, so the bytes of bodies still arriving are a resource
anyone can spend. `BodyBudget` bounds the body bytes every request
together holds at once; `BODY_DEADLINE` bounds how long one body may take
to arrive. What can be refused from the headers alone is refused before
either is spent (`Node.admit`).

Reading bodies is also the node's CPU: hundreds streaming in at once keep
its one event loop so busy that `/info` and honest polls wait behind them.
So at most `BODY_READERS` bodies are read at a time; a body that did not
come whole with its headers waits for its turn (`BodyBudget.turn`) with its
socket paused (uvicorn stops reading a socket once 64 KiB of its body wait
unread), for at most `BODY_WAIT` s, then 503 `busy`. While a body waits,
one that holds a turn must keep coming at `MIN_RATE` at least (`Turn`), so a
few sockets trickling bodies cannot keep every push out: holding all the
turns costs what holding the whole budget does. And while a body waits, the
turns together are read at most `CONTENDED_RATE` bytes a second (`pace`):
read as fast as they come, 16 hostile bodies kept the loop busy every moment
of a flood, so a poll's thread hop waited for the GIL at every step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from exalate_tui.transport.errors import ApiError

# Room for eight full pushes at once; honest batches are far smaller (500 messages).
BODY_BUDGET = 64 * 1024 * 1024
# A full 8 MiB push at 2 Mbit/s, with room to spare; a trickle is cut off here.
BODY_DEADLINE = 60.0
RETRY_AFTER = 1
# docs/reliability.md, promise 13: `/info` and polls within 50 ms at p99 under a flood of
# bodies. Twice the full pushes the budget holds, so honest pushes rarely wait at all.
BODY_READERS = 16
BODY_WAIT = 10.0
# A turn held while others wait: the budget over the deadline, shared by the turns
# (64 MiB / 60 s / 16, ~68 KiB/s; a full push in time needs 140 KiB/s), after a second.
MIN_RATE = BODY_BUDGET / BODY_DEADLINE / BODY_READERS
GRACE = 1.0
# docs/reliability.md, promise 13: what the turns may read together while a body waits
# (16 bodies read as fast as they came were 1 GB in 8 s and the loop never idle); each
# turn still gets 2 MiB/s, thirty times `MIN_RATE`.
CONTENDED_RATE = 32 * 1024 * 1024
# How often a turn's holder, waiting for its next bytes, looks whether it falls behind.
TICK = 1.0

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def busy(detail: str) -> ApiError:
    return ApiError(503, "busy", detail, headers={"Retry-After": str(RETRY_AFTER)})


class BodyBudget:
    """Body bytes held by all requests of one node at once, at most `capacity`.

    A request takes its chunks as they arrive and gives them back when it is
    answered; one that would go over is refused 503 `busy` (Retry-After).
    """

    def __init__(
        self,
        capacity: int = BODY_BUDGET,
        readers: int = BODY_READERS,
        wait: float = BODY_WAIT,
        rate: float = CONTENDED_RATE,
    ) -> None:
        self.capacity = capacity
        self.held = 0
        self.wait = wait
        self.readers = asyncio.Semaphore(readers)
        # Bodies waiting for a turn now.
        self.waiting = 0
        self.rate = rate
        # Loop time until which the bytes already read under contention are paid for.
        self.paid_until = 0.0

    def take(self, size: int) -> None:
        if self.held + size > self.capacity:
            raise busy("this node holds too many request bodies at once; retry shortly")
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size

    async def pace(self, size: int) -> None:
        """While a body waits for a turn, sleep until `size` more bytes fit `rate`; the
        socket's reading pauses meanwhile (uvicorn stops at 64 KiB unread)."""
        if not self.waiting:
            return
        now = asyncio.get_running_loop().time()
        self.paid_until = max(self.paid_until, now) + size / self.rate
        if self.paid_until > now:
            await asyncio.sleep(self.paid_until - now)

    async def turn(self) -> Turn:
        """Wait for a turn to read the rest of a body (`Turn.end` when done); 503 `busy`
        once the wait passes `wait` s."""
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait):
                await self.readers.acquire()
        except TimeoutError:
            raise busy("this node reads too many request bodies at once; retry shortly") from None
        finally:
            self.waiting -= 1
        return Turn(self)


class Turn:
    """One body's turn to be read (`BodyBudget.turn`)."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.started = asyncio.get_running_loop().time()
        self.got = 0

    async def receive(self, receive: Receive) -> MutableMapping[str, Any]:
        """`receive()`; 408 once this body falls behind `MIN_RATE` while another waits."""
        while True:
            try:
                async with asyncio.timeout(TICK):
                    message = await receive()
            except TimeoutError:
                self._keep_up()
                continue
            size = len(message.get("body", b""))
            self.got += size
            self._keep_up()
            await self.budget.pace(size)
            return message

    def _keep_up(self) -> None:
        late = asyncio.get_running_loop().time() - self.started - GRACE
        if self.budget.waiting and self.got < MIN_RATE * late:
            raise ApiError(
                408,
                "timeout",
                "the request body came too slowly while other bodies waited; send it again",
            )

    def end(self) -> None:
        self.budget.readers.release()
