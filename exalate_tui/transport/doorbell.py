"""A doorbell per SQLite file: one datagram tells another process that the file changed.

A writer rings after each commit (`Bell.ring`, never blocks); one process may
listen (`listen`) and then hears every ring at once. Without a listener, or
off Linux, rings go nowhere: a reader watches `PRAGMA data_version` instead,
which catches the same commits a tick later. Used by the durable streams
(`state.sqlite3`) and the embedded tracker (`tracker.sqlite3`).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path


def doorbell_address(path: Path) -> str | None:
    """Where the process watching the SQLite file at `path` hears of commits; None off Linux.

    A Linux abstract socket: no file to clean up, no path-length limit. Any
    local user may ring it, which only makes the watcher look at the file
    again; when it cannot be bound the watcher polls `data_version` instead.
    """
    if not sys.platform.startswith("linux"):
        return None
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return f"\0exalate-tui-{digest}"


class Bell:
    """Rings one address; safe from any thread."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def ring(self, payload: bytes) -> None:
        if self.address is None:
            return
        try:
            with self._lock:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._socket.setblocking(False)
                self._socket.sendto(payload, self.address)
        except OSError:
            pass  # nobody listens, or its queue is full: it has rings to read already

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def listen(address: str | None, heard: Callable[[bytes], None]) -> Callable[[], None] | None:
    """Call `heard(payload)` on the running loop for each ring at `address`.

    Returns what stops listening, or None when it cannot listen (no address,
    or another process listens already).
    """
    if address is None:
        return None
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)

    def rung() -> None:
        while True:
            try:
                payload = sock.recv(128)
            except OSError:  # drained
                return
            heard(payload)

    loop.add_reader(sock.fileno(), rung)

    def stop() -> None:
        loop.remove_reader(sock.fileno())
        sock.close()

    return stop
