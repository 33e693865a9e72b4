"""Raw-socket references on 127.0.0.1: the floor any protocol on this machine stands on.

`python -m benchmarks.echo echo PORT` answers each chunk it reads with the
same bytes; `python -m benchmarks.echo sink PORT TOTAL` reads TOTAL bytes and
answers `ok`. Each serves one client, then exits.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from .nodes import HOST, env, free_port


def _serve(port: int) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((HOST, port))
    server.listen(1)
    client, _ = server.accept()
    server.close()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def echo(port: int) -> None:
    with _serve(port) as client:
        while data := client.recv(65536):
            client.sendall(data)


def sink(port: int, total: int) -> None:
    with _serve(port) as client:
        received = 0
        while received < total:
            data = client.recv(1 << 20)
            if not data:
                return
            received += len(data)
        client.sendall(b"ok")


@contextlib.contextmanager
def server(*args: str) -> Iterator[socket.socket]:
    """Start `echo` or `sink` in its own process; a connected client socket."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.echo", args[0], str(port), *args[1:]], env=env()
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                sock = socket.create_connection((HOST, port), timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock:
            yield sock
    finally:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def round_trips(count: int, spacing: float, size: int = 200) -> list[float]:
    """Seconds for each of `count` echoes of `size` bytes, `spacing` s apart."""
    payload = b"x" * size
    samples = []
    with server("echo") as sock:
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(payload)
            got = 0
            while got < size:
                got += len(sock.recv(65536))
            samples.append(time.perf_counter() - start)
            time.sleep(spacing)
    return samples


def loopback_rate(count: int, size: int) -> float:
    """Messages per second when `count` messages of `size` bytes go one by one to a sink."""
    message = b"x" * size
    with server("sink", str(count * size)) as sock:
        start = time.perf_counter()
        for _ in range(count):
            sock.sendall(message)
        if sock.recv(2) != b"ok":
            raise RuntimeError("the sink did not receive everything")
        return count / (time.perf_counter() - start)


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(int(sys.argv[2]))
    else:
        sink(int(sys.argv[2]), int(sys.argv[3]))
