"""The node's sockets outside a request: the header deadline, the caps, the descriptor log."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from exalate_tui.transport import gate


class FakeLoop:
    def __init__(self) -> None:
        self.passed: list[dict[str, Any]] = []

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.passed.append(context)


def test_out_of_descriptors_is_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    handler = gate.AcceptErrors(limit=1024, every=10, clock=lambda: now[0])
    loop = FakeLoop()
    emfile = OSError(errno.EMFILE, "Too many open files")
    context = {"message": "socket.accept() out of system resource", "exception": emfile}
    with caplog.at_level(logging.ERROR, logger=gate.__name__):
        for _ in range(10_000):
            handler(loop, context)  # type: ignore[arg-type]
            now[0] += 0.0005  # 10,000 attempts in 5 s
        assert len(caplog.records) == 1
        now[0] += 10
        handler(loop, context)  # type: ignore[arg-type]
    assert len(caplog.records) == 2
    assert "out of descriptors: 10000 new connection(s)" in caplog.records[1].getMessage()
    assert "open files limit 1024" in caplog.records[1].getMessage()
    assert not caplog.records[0].exc_info and loop.passed == []
    # Anything else goes to the loop's own handler, as before.
    other = {"message": "boom", "exception": ValueError("x")}
    handler(loop, other)  # type: ignore[arg-type]
    assert loop.passed == [other]


@contextlib.asynccontextmanager
async def serving(app: FastAPI, keeper: gate.Gate) -> AsyncIterator[int]:
    """uvicorn serving `app` on 127.0.0.1 under `keeper`; its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_config=None, http=gate.guarded(keeper))
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


@pytest.mark.anyio
async def test_slow_sockets_are_dropped_the_oldest_first_and_the_total_is_capped() -> None:
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/refuse")
    async def refuse() -> JSONResponse:  # answers without reading the body
        return JSONResponse({"error": "unauthorized"}, status_code=401)

    keeper = gate.Gate(max_open=6, timeout=60, max_waiting=3, min_age=0)
    async with serving(app, keeper) as port:
        streams = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
            streams.append((reader, writer))
        while len(keeper.waiting) < 3:
            await asyncio.sleep(0.01)
        # A fourth slow one closes the oldest.
        streams.append(await asyncio.open_connection("127.0.0.1", port))
        assert await asyncio.wait_for(streams[0][0].read(), 5) == b""
        # An honest request gets in and is answered while three slow ones wait.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        # Answered before its body is in: closed, not read to the end to be dropped.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n")
        writer.write(b"x" * 65536)
        answer = await asyncio.wait_for(reader.read(), 5)  # to EOF
        assert answer.startswith(b"HTTP/1.1 401")
        writer.close()
        # Read no more, it is closed `CLOSE_AFTER` s later.
        while keeper.answered:
            await asyncio.sleep(0.01)
        # Slow ones are dropped at the header deadline.
        for _, writer in streams:
            writer.close()
        keeper.timeout = 0.3
        late = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        late[0][1].write(b"GET / HTTP/1.1\r\n")
        for slow_reader, _ in late:
            assert await asyncio.wait_for(slow_reader.read(), 5) == b""
        while keeper.waiting:
            await asyncio.sleep(0.01)
        # Past max_open a new socket is closed at once.
        keeper.timeout, keeper.max_waiting = 60, 100
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
        while len(keeper.waiting) < 6:
            await asyncio.sleep(0.01)
        over, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(over.read(), 5) == b""
        assert len(keeper.waiting) == 6
        for _, writer in held:
            writer.close()


@pytest.mark.anyio
async def test_an_early_answer_arrives_whole_and_the_rest_of_the_body_is_not_read() -> None:
    """A refused body is read no further: the answer goes out with an end of file, and the
    socket is closed `CLOSE_AFTER` s later (a close with unread bytes resets it, which
    would destroy an answer not read yet), by one timer for all such sockets."""
    app = FastAPI()

    @app.post("/refuse")
    async def refuse() -> JSONResponse:  # answers without reading the body
        return JSONResponse({"error": "unauthorized"}, status_code=401)

    keeper = gate.Gate(max_open=64)
    async with serving(app, keeper) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 90000000\r\n\r\n")
        writer.write(b"x" * 128 * 1024)
        answer = await asyncio.wait_for(reader.read(), 5)  # to the end of file
        assert answer.startswith(b"HTTP/1.1 401") and answer.endswith(b'{"error":"unauthorized"}')
        assert len(keeper.answered) == 1 and not keeper.waiting and keeper.sweep is not None
        # Sending on, as an attacker would: nothing more is read, and the socket is reset
        # once its time is up.
        started = asyncio.get_running_loop().time()
        chunk = b"x" * 2**20
        sent = 0
        with pytest.raises(ConnectionError):
            while sent < 80 * 2**20:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 5)
                sent += len(chunk)
        took = asyncio.get_running_loop().time() - started
        writer.transport.abort()
        assert gate.CLOSE_AFTER - 0.5 < took < gate.CLOSE_AFTER + 2, took
        assert sent < 80 * 2**20 and not keeper.answered and keeper.sweep is None


@pytest.mark.anyio
async def test_a_socket_whose_request_waits_unread_is_not_taken_for_a_slow_one() -> None:
    """A node too busy to read thousands of reconnecting pollers within `MIN_AGE` must not
    close them as slow: the oldest waiting socket with nothing unread goes instead."""
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"ok": "yes"}

    keeper = gate.Gate(max_open=64, timeout=60, max_waiting=2, min_age=0)
    async with serving(app, keeper) as port:
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        while len(keeper.waiting) < 1:
            await asyncio.sleep(0.01)
        (busy,) = keeper.waiting
        assert isinstance(busy, gate.GuardedH11)
        busy.transport.pause_reading()  # as a starved loop would: its request stays unread
        busy_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await busy_writer.drain()
        while not busy.unread():
            await asyncio.sleep(0.01)
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"GET / HTTP/1.1\r\n")  # never finished
        while len(keeper.waiting) < 2:
            await asyncio.sleep(0.01)
        third = await asyncio.open_connection("127.0.0.1", port)  # one too many waiting
        assert await asyncio.wait_for(slow_reader.read(), 5) == b""  # the slow one went
        busy.transport.resume_reading()
        answer = await asyncio.wait_for(busy_reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200")
        for writer in (busy_writer, slow_writer, third[1]):
            writer.close()
