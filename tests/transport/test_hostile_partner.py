"""A hostile partner: every client call against a server on 127.0.0.1 that answers
with deeply nested JSON, an endless body or bytes trickling in (issue 10, item 5).

Each call must end in a clean `RemoteError` naming the partner, within its
deadline, with memory bounded by the call's byte cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from pydantic import SecretStr

from exalate_tui.transport import client
from exalate_tui.transport.client import Remote, RemoteError, verify_url
from exalate_tui.transport.streams import Message

DEADLINE = 1.0
DEEP = b'{"error":' + b"[" * 50_000  # well within every cap: it must be parsed
CHUNK = b"x" * 65536


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _answer(mode: str, writer: asyncio.StreamWriter) -> None:
    status = "500 Oops" if mode.endswith("_error") else "200 OK"
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
    if mode.startswith("deep"):
        writer.write(f"{head}Content-Length: {len(DEEP)}\r\n\r\n".encode() + DEEP)
    elif mode.startswith("endless"):
        # No length and never a close: a body with no end, until the client stops reading.
        writer.write(f"{head}Connection: close\r\n\r\n".encode())
        for _ in range(20_000):  # ~1.3 GB at most, so a broken client cannot hang the run
            writer.write(CHUNK)
            await writer.drain()
    else:  # trickle: one byte at a time, each well within any read timeout
        writer.write(f"{head}Content-Length: 1000\r\n\r\n".encode())
        for _ in range(1000):
            writer.write(b"[")
            await writer.drain()
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def hostile(mode: str) -> AsyncIterator[str]:
    handlers: list[asyncio.Task[None]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while (await reader.readline()) not in (b"\r\n", b""):
                pass  # the request's headers; its body, if any, is left unread
            await _answer(mode, writer)
        writer.close()

    def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.create_task(answer(reader, writer)))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


SECRET = SecretStr("s" * 43)
CALLS: dict[str, Callable[[Remote], Awaitable[object]]] = {
    "info": lambda remote: remote.info(),
    "handshake": lambda remote: remote.handshake("c" * 36, SecretStr("t" * 43), "jira", None),
    "fetch": lambda remote: remote.fetch("c" * 36, SECRET, after=0, wait=0, limit=1),
    "push": lambda remote: remote.push("c" * 36, SECRET, [Message(1, "ping", "{}")]),
}
MODES = ["deep", "deep_error", "endless", "endless_error", "trickle"]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("call", sorted(CALLS))
async def test_every_call_ends_in_a_clean_error_on_time_with_bounded_memory(
    mode: str, call: str
) -> None:
    cap = client.batch_cap(1) if call == "fetch" else client.SMALL_ANSWER_BYTES
    async with hostile(mode) as host:
        tracemalloc.start()
        started = time.monotonic()
        try:
            async with Remote(
                f"http://{host}", timeout=httpx.Timeout(DEADLINE), deadline=DEADLINE
            ) as remote:
                with pytest.raises(RemoteError) as raised:
                    # A broken client hangs or balloons; this bounds the test, not the client.
                    await asyncio.wait_for(CALLS[call](remote), DEADLINE + 10)
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    message = str(raised.value)
    print(f"{call} against {mode}: {raised.value.code} after {elapsed:.2f} s, peak {peak:,} B")
    assert host in message and "\n" not in message and len(message) < 300
    assert "Traceback" not in message and "[[[" not in message
    assert elapsed < DEADLINE + 1.5, f"{call} against {mode} took {elapsed:.1f} s"
    assert peak < 3 * cap + 2**20, f"{call} against {mode} held {peak:,} bytes"
    if mode == "trickle":
        assert raised.value.code == "timeout"
    elif mode.startswith("endless"):
        assert raised.value.code == "too_large"
    else:
        assert raised.value.code in ("not_a_node", "protocol")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_verify_url_keeps_to_its_timeout_and_never_raises(mode: str) -> None:
    async with hostile(mode) as host:
        started = time.monotonic()
        check = await asyncio.wait_for(verify_url(f"http://{host}", timeout=DEADLINE), 15)
        elapsed = time.monotonic() - started
    assert not check.ok and host in check.reason
    assert elapsed < DEADLINE + 1.0, f"verifying against {mode} took {elapsed:.1f} s"
