"""A TCP proxy on 127.0.0.1 that breaks connections on demand (promise 6).

It runs its own asyncio loop in a thread, so a synchronous test can start
node processes, kill them, and flip `mode` while traffic flows. The mode is
looked at for every new connection and every chunk in flight:

- `pass`: bytes go through untouched;
- `drop`: new connections are closed at once, open ones closed at the next chunk;
- `reset`: like drop, but with a TCP reset (SO_LINGER 0) on both sides;
- `stall`: every chunk waits `stall` seconds before it goes on;
- `cut`: a response chunk is forwarded in part, then both sides are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter

MODES = ("pass", "drop", "reset", "stall", "cut")


class FaultyProxy:
    def __init__(self, target_port: int, *, stall: float = 2.0) -> None:
        self.target_port = target_port
        self.stall = stall
        self.mode = "pass"
        self.faults: Counter[str] = Counter()
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faulty-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> int:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self.port

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    @staticmethod
    def _kill(*writers: asyncio.StreamWriter, reset: bool) -> None:
        for writer in writers:
            sock = writer.get_extra_info("socket")
            if reset and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        mode = self.mode
        if mode in ("drop", "reset"):
            self.faults[mode] += 1
            self._kill(client_w, reset=mode == "reset")
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self._kill(client_w, reset=False)  # the node is down: so is the proxy's answer
            return
        ends = (client_w, upstream_w)
        await asyncio.gather(
            self._pump(client_r, upstream_w, ends, response=False),
            self._pump(upstream_r, client_w, ends, response=True),
            return_exceptions=True,
        )
        for writer in ends:
            writer.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ends: tuple[asyncio.StreamWriter, ...],
        *,
        response: bool,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                mode = self.mode
                if mode in ("drop", "reset"):
                    self.faults[mode] += 1
                    self._kill(*ends, reset=mode == "reset")
                    return
                if mode == "stall":
                    self.faults["stall"] += 1
                    await asyncio.sleep(self.stall)
                if mode == "cut" and response:
                    self.faults["cut"] += 1
                    writer.write(chunk[: max(1, len(chunk) // 2)])
                    with contextlib.suppress(Exception):
                        await writer.drain()
                    self._kill(*ends, reset=False)
                    return
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, asyncio.IncompleteReadError):
            self._kill(*ends, reset=False)
