"""A node against hostile clients: many large unauthenticated bodies, many slow sockets.

One real `exalate-tui node` on 127.0.0.1; the attackers run in this process,
`/info` is timed from a thread beside them and the node's memory read from
`/proc/<pid>/status`. docs/reliability.md holds the figures.

Issue 10's criterion, `/info` and an honest partner's poll within 50 ms at
the 99th percentile, is asserted when the node's loop had a CPU whenever it
needed one (`/proc/<pid>/schedstat`: it waited for one at most `STARVED` of
the attack): the attackers share the machine's two cores with it, and so do
whatever else runs there; a loop that waits for a CPU longer than it runs
measures the machine, not the node. The figures say which it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.protocol import signing
from exalate_tui.transport import gate, limits, routes

from .damage import SCALE
from .nodes import NodeProcess, free_port, held_connections

pytestmark = pytest.mark.e2e

BODIES = int(os.environ.get("RELIABILITY_BODIES", str(int(200 * SCALE))))
ATTACK_SECONDS = float(os.environ.get("RELIABILITY_ATTACK_SECONDS", "8"))
SECRET = "s" * 43
MESSAGES = "/api/v1/connections/{cid}/messages"
# The share of the attack the node's loop may spend waiting for a CPU with the 50 ms p99
# still judged (docs/reliability.md, promise 13).
STARVED = 0.2
P99 = 0.050


def _rss(pid: int) -> int:
    """The process's resident memory in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def _schedstat(pid: int) -> tuple[float, float]:
    """Seconds the process's main thread (the node's loop) has run on a CPU, and waited
    for one while runnable."""
    ran, waited, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(ran) / 1e9, int(waited) / 1e9


# Times /info, and an honest partner's poll (`wait=0`, signed), from a process of its own:
# in this one the attackers would hold the GIL.
_TIMER = """
import json, os, sys, time
from pathlib import Path
import httpx
from exalate_tui.protocol import signing
url, stop, path, secret = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
times, polls, failures = [], [], 0
with httpx.Client(timeout=10) as client:
    while not stop.exists():
        started = time.perf_counter()
        try:
            failures += client.get(url + "/api/v1/info").status_code != 200
        except httpx.HTTPError:
            failures += 1
        times.append(time.perf_counter() - started)
        time.sleep(0.01)
        query = f"after=0&wait=0&n={os.urandom(8).hex()}"
        sign = signing.sign(secret, "GET", path, query, b"")
        started = time.perf_counter()
        try:
            answer = client.get(f"{url}{path}?{query}", headers={"Authorization": sign})
            failures += answer.status_code != 200
        except httpx.HTTPError:
            failures += 1
        polls.append(time.perf_counter() - started)
        time.sleep(0.01)
print(json.dumps({"times": times, "polls": polls, "failures": failures}))
"""


class Watch(threading.Thread):
    """Samples the node's memory, and times `/info` and a poll from another process, until
    stopped."""

    def __init__(self, url: str, pid: int, tmp_path: Path, cid: str) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.times: list[float] = []
        self.polls: list[float] = []
        self.failures = 0
        self.peak = 0
        self.stopped = threading.Event()
        self.stop_file = tmp_path / "stop-timing"
        self.started = time.monotonic()
        self.sched = _schedstat(pid)
        self.took = self.ran = self.waited = 0.0
        self.timer = subprocess.Popen(
            [sys.executable, "-c", _TIMER, url, str(self.stop_file), MESSAGES.format(cid=cid)]
            + [SECRET],
            stdout=subprocess.PIPE,
        )

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, _rss(self.pid))
            except OSError:
                return  # the node is gone: the test has failed and stops it
            self.stopped.wait(0.02)

    def finish(self) -> None:
        ran, waited = _schedstat(self.pid)
        self.took = time.monotonic() - self.started
        self.ran, self.waited = ran - self.sched[0], waited - self.sched[1]
        self.stopped.set()
        self.join()
        self.stop_file.touch()
        out, _ = self.timer.communicate(timeout=60)
        timed = json.loads(out)
        self.times, self.polls, self.failures = timed["times"], timed["polls"], timed["failures"]

    def figures(self) -> str:
        return (
            f"/info and polls {len(self.times)} + {len(self.polls)} answers, {self.failures} "
            f"failed; /info median {_p(self.times, 0.5) * 1000:.1f} ms, "
            f"p99 {_p(self.times, 0.99) * 1000:.1f} ms, max {max(self.times) * 1000:.0f} ms; "
            f"poll median {_p(self.polls, 0.5) * 1000:.1f} ms, "
            f"p99 {_p(self.polls, 0.99) * 1000:.1f} ms, max {max(self.polls) * 1000:.0f} ms; "
            f"over {self.took:.1f} s the node's loop ran {self.ran:.1f} s and waited for a "
            f"CPU {self.waited:.1f} s ({self.starved():.0%})"
        )

    def starved(self) -> float:
        return self.waited / self.took

    def check_p99(self) -> None:
        """Issue 10's criterion, when the node had the CPU it needed (`STARVED`)."""
        if self.starved() > STARVED:
            print(f"p99 not judged: the loop waited for a CPU {self.starved():.0%} of the time")
            return
        assert _p(self.times, 0.99) <= P99 and _p(self.polls, 0.99) <= P99, self.figures()


def _node(tmp_path: Path) -> tuple[NodeProcess, Connection]:
    port = free_port()
    home = Home(tmp_path / "snow")
    home.save_instance(Instance(short_name="snow", public_url=f"http://127.0.0.1:{port}"))
    home.ensure()
    connection = Connection(
        name="snow_to_rain",
        mode=Mode.BASIC,
        topology=Topology.PUBLIC_PUBLIC,
        role=Role.INITIATOR,
        local_name="snow",
        remote_name="rain",
        status=Status.ACTIVE,
        secret=SecretStr(SECRET),
    )
    home.save_connection(connection)
    node = NodeProcess(home.path, port, tmp_path / "node.log")
    node.start()
    return node, connection


def _honest_push(node: NodeProcess, cid: str, seq: int) -> httpx.Response:
    path = MESSAGES.format(cid=cid)
    body = json.dumps({"messages": [{"seq": seq, "kind": "ping", "body": None}]}).encode()
    query = f"n={os.urandom(8).hex()}"
    return httpx.post(
        f"{node.url}{path}?{query}",
        content=body,
        headers={"Authorization": signing.sign(SECRET, "POST", path, query, body)},
        timeout=10,
    )


async def _big_body(port: int, head: bytes, size: int, until: float) -> int:
    """Send `head` then up to `size` body bytes, again on a new socket each time the
    node closes one, until `until`; how many bytes went out."""
    sent = 0
    chunk = b"x" * (1024 * 1024)
    while time.monotonic() < until:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        try:
            writer.write(head)
            body = 0
            while body < size:
                left = until - time.monotonic()
                if left <= 0:
                    break
                part = chunk[: size - body]
                writer.write(part)
                await asyncio.wait_for(writer.drain(), left)
                body += len(part)
                sent += len(part)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.transport.abort()
    return sent


def test_hundreds_of_unauthenticated_large_bodies_keep_the_node_bounded(tmp_path: Path) -> None:
    node, connection = _node(tmp_path)
    assert node.process is not None
    try:
        before = _rss(node.process.pid)
        watch = Watch(node.url, node.process.pid, tmp_path, connection.id)
        watch.start()
        path = MESSAGES.format(cid=connection.id).encode()
        size = routes.MAX_BATCH_BYTES
        unsigned = (
            b"POST " + path + b" HTTP/1.1\r\nHost: node\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size
        )

        def signed_wrongly() -> bytes:
            # Fresh, well-formed, for a real connection: only the signature is wrong, which
            # the node can tell only once the body is in. These spend the body budget.
            header = signing.sign("w" * 43, "POST", path.decode(), "", b"").encode()
            return unsigned.replace(b"\r\n\r\n", b"\r\nAuthorization: " + header + b"\r\n\r\n")

        async def attack() -> list[int]:
            until = time.monotonic() + ATTACK_SECONDS
            return await asyncio.gather(
                *(
                    _big_body(node.port, signed_wrongly() if i % 2 else unsigned, size, until)
                    for i in range(BODIES)
                )
            )

        started = time.monotonic()
        sent = asyncio.run(attack())
        attack_took = time.monotonic() - started
        watch.finish()
        grew = watch.peak - before
        pushed = _honest_push(node, connection.id, 1)
        # A partner whose clock is 20 minutes slow is told so, with the node's own time.
        stale = signing.sign(SECRET, "GET", path.decode(), "", b"", ts=int(time.time()) - 1200)
        slow_clock = httpx.get(f"{node.url}{path.decode()}", headers={"Authorization": stale})
        print(
            f"\n{BODIES} bodies of {size} bytes for {attack_took:.1f} s: "
            f"{sum(sent) / 2**20:.0f} MiB sent, node RSS {before / 2**20:.0f} MiB before, "
            f"peak +{grew / 2**20:.0f} MiB; {watch.figures()}"
        )
        assert watch.failures == 0
        # Generous on purpose: the 2-core machine is shared (docs/reliability.md has figures).
        assert max(watch.times + watch.polls) < 3.0
        watch.check_p99()
        # The budget, the sockets' own buffers, and room for a busy interpreter.
        assert grew < limits.BODY_BUDGET + 128 * 2**20, grew
        # It recovers: an honest partner's push goes through once they are gone.
        assert pushed.status_code == 200 and pushed.json() == {"applied": 1}
        assert slow_clock.status_code == 401 and len(slow_clock.headers.get_list("date")) == 1
        assert slow_clock.json()["detail"].startswith("your clock is 120")
    finally:
        node.stop()


SLOW = int(os.environ.get("RELIABILITY_SLOW_SOCKETS", str(int(3000 * SCALE))))


def test_thousands_of_slow_sockets_are_capped_dropped_and_info_answers(tmp_path: Path) -> None:
    node, connection = _node(tmp_path)
    assert node.process is not None
    pid = node.process.pid
    try:
        watch = Watch(node.url, pid, tmp_path, connection.id)

        async def attack() -> tuple[int, int, int, float]:
            # Each sends part of its headers, then nothing: a slowloris.
            opened = []
            for _ in range(SLOW):
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", node.port)
                except OSError:
                    continue
                writer.write(b"GET /api/v1/info HTTP/1.1\r\nHost: node\r\nX-Slow: ")
                opened.append(writer)
            await asyncio.sleep(0)  # let the writes go out
            most = 0
            # The cap holds while they are all open (counted from outside the node): once
            # the node has caught up with the surge (closes it decided are still queued on
            # a busy loop), what it holds stops changing; that count is what is judged.
            deadline = time.monotonic() + 5
            counts: list[int] = []
            while time.monotonic() < deadline:
                counts.append(held_connections(pid, node.port))
                most = max(most, counts[-1])
                if len(counts) >= 10 and len(set(counts[-10:])) == 1:
                    break
                await asyncio.sleep(0.05)
            settled = counts[-1]
            # Then they are dropped: none left past the header deadline (plus slack).
            started = time.monotonic()
            while held_connections(pid, node.port) > 2:
                assert time.monotonic() - started < gate.HEADER_TIMEOUT + 20
                await asyncio.sleep(0.1)
            dropped_after = time.monotonic() - started
            for writer in opened:
                writer.transport.abort()
            return len(opened), most, settled, dropped_after

        watch.start()
        opened, most, settled, dropped_after = asyncio.run(attack())
        watch.finish()
        pushed = _honest_push(node, connection.id, 1)
        log = node.log.read_text()
        print(
            f"\n{opened} slow sockets: the node held at most {most} at once ({settled} once "
            f"settled), none after "
            f"{dropped_after:.1f} s more; {watch.figures()}; log {len(log)} bytes"
        )
        assert opened == SLOW
        # The cap, plus the watch's own socket and a few in flight.
        assert settled <= gate.MAX_WAITING + 100, (most, settled)
        assert watch.failures == 0 and max(watch.times + watch.polls) < 3.0
        watch.check_p99()
        assert pushed.status_code == 200 and pushed.json() == {"applied": 1}
        assert "Traceback" not in log
    finally:
        node.stop()
