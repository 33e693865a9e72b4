"""A round-robin TCP load balancer on 127.0.0.1, in a thread: the one public URL in front
of several node workers.

Each new connection goes to the next worker in turn; a worker that refuses the
connection (killed) is skipped for that one. Bytes are copied as they come, both
ways; when either side closes, so does the other (a killed worker cuts its
partners' requests, as a real balancer would).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter


class Balancer:
    def __init__(self) -> None:
        self.targets: list[int] = []
        self.sent: Counter[int] = Counter()  # connections per worker port
        self.open: Counter[int] = Counter()  # connections open now, per worker port
        self.port = 0
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="balancer", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Balancer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the balancer did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream = None
        for _ in range(max(1, len(self.targets))):
            if not self.targets:
                break
            port = self.targets[next(self._turn) % len(self.targets)]
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.sent[port] += 1
            break
        if upstream is None:
            client_w.close()
            return
        server_r, server_w = upstream
        self.open[port] += 1
        try:
            await asyncio.gather(
                self._pump(client_r, server_w),
                self._pump(server_r, client_w),
                return_exceptions=True,
            )
        finally:
            self.open[port] -= 1

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
