"""Capacity: idle private connections long-polling one public node process.

The public home gets N Active public-private connections written with the
store's own serializer (N handshakes would only time the handshake). One
`exalate-tui node` process serves it on 127.0.0.1. The load side is a lean
asyncio client in this process — raw sockets, signed HTTP/1.1 long-polls
(`wait=30`), re-polling at once like the real poller — so that the load
generator, not httpx, is what stays cheap. Measured while the N polls are
held: the node's resident memory per poll (RSS with them minus RSS after a
warm-up without them), `GET /api/v1/info` on a fresh connection (reference:
the same node once settled, before the polls), and the fan-out time of one message to each
connection, enqueued in one transaction from another process, until the last
poll has it. Every socket is on 127.0.0.1; the run is bounded in time.
"""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
from pydantic import SecretStr

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home, _dump
from exalate_tui.protocol.signing import sign
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.storage import key_path, make_key, open_pg_connections

from .harness import Check, Figure, percentile, summarize
from .nodes import HOST, free_port, node, rss_kb

COUNT = int(os.environ.get("BENCH_CAPACITY", "10000"))
INFO_RUNS = 50
CONNECTING = 200  # connects in flight at once: under the node's listen backlog
SETTLE_TIMEOUT = 180.0
FANOUT_TIMEOUT = 120.0


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} needed")


def _home(
    path: Path, port: int, count: int, *, database: str | None = None, workers: int = 1
) -> tuple[list[Home], dict[str, str]]:
    """`workers` homes (path, path-2, ...) with the same instance.toml and N connections:
    files, or on `database` rows (one move of them all) and the same database.key, as
    several node workers of one instance need."""
    names = [path.name] + [f"{path.name}-{k + 1}" for k in range(1, workers)]
    homes = [Home(path.with_name(name)) for name in names]
    instance = Instance(short_name="pub", public_url=f"http://{HOST}:{port}", database=database)
    for home in homes:
        home.save_instance(instance)
        home.ensure()
    if database is not None:
        make_key(homes[0])
        for home in homes[1:]:
            shutil.copy2(key_path(homes[0]), key_path(home))
    rows: list[Connection] = []
    secrets_by_cid = {}
    for n in range(count):
        secret = secrets.token_urlsafe(32)
        connection = Connection(
            name=f"pub_to_priv{n:05d}",
            mode=Mode.BASIC,
            topology=Topology.PUBLIC_PRIVATE,
            role=Role.INITIATOR,
            local_name="pub",
            remote_name=f"priv{n:05d}",
            status=Status.ACTIVE,
            secret=SecretStr(secret),
        )
        secrets_by_cid[connection.id] = secret
        if database is not None:
            rows.append(connection)
            continue
        text = tomli_w.dumps(_dump(connection))
        for home in homes:
            file = home.connection_path(connection.id)
            file.write_text(text)
            file.chmod(0o600)
    if database is not None:
        store = open_pg_connections(homes[0], database)
        try:
            store.import_all(rows, [])
        finally:
            store.close()
    return homes, secrets_by_cid


def _info_ms(port: int) -> float:
    start = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/info HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if b" 200 " not in data.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"/info answered {data[:60]!r}")
    return (time.perf_counter() - start) * 1000


class _Poller:
    """One lean long-poller: signed GETs on one keep-alive connection, forever."""

    def __init__(self, port: int, cid: str, secret: str) -> None:
        self.port = port
        self.cid = cid
        self.secret = secret
        self.after = 0
        self.sent = asyncio.Event()
        self.got: float | None = None  # when the first message arrived

    def _request(self) -> bytes:
        path = f"/api/v1/connections/{self.cid}/messages"
        query = f"after={self.after}&wait=30&limit=500&n={secrets.token_hex(8)}"
        auth = sign(self.secret, "GET", path, query, b"")
        return (
            f"GET {path}?{query} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {auth}\r\n\r\n"
        ).encode()

    async def run(self, connecting: asyncio.Semaphore) -> None:
        async with connecting:
            reader, writer = await asyncio.open_connection(HOST, self.port)
        try:
            while True:
                writer.write(self._request())
                self.sent.set()
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                if status != b"200":
                    raise RuntimeError(f"poll answered {status!r}: {body[:200]!r}")
                if b'"seq"' in body and self.got is None:
                    self.got = time.perf_counter()
                marker = body.rfind(b'"last_seq":')
                self.after = int(body[marker + 11 : body.rfind(b"}")])
        finally:
            writer.close()


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def _settle(pid: int, timeout: float) -> None:
    """Wait until the node has been idle for half a second: every poll is parked."""
    deadline = time.monotonic() + timeout
    last = _cpu_ticks(pid)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = _cpu_ticks(pid)
        if now - last > 1:  # more than 10 ms of CPU in 100 ms: still busy
            quiet_since = time.monotonic()
        last = now
        if time.monotonic() - quiet_since >= 0.5:
            return
    raise RuntimeError("the node never went idle")


@dataclass
class Held:
    """What one node process (a worker) showed: before the polls and while holding its share."""

    port: int
    pid: int
    polls: int = 0
    baseline_kb: int = 0
    held_kb: int = 0
    baseline_info: list[float] = field(default_factory=list)
    info: list[float] = field(default_factory=list)

    @property
    def per_poll_kb(self) -> float:
        return (self.held_kb - self.baseline_kb) / self.polls


async def _info_round(targets: list[Held], into: str) -> None:
    """INFO_RUNS `/info`s on each target, taking turns."""
    for _ in range(INFO_RUNS):
        for target in targets:
            getattr(target, into).append(await asyncio.to_thread(_info_ms, target.port))


async def _settle_all(targets: list[Held]) -> None:
    await asyncio.gather(*(_settle(t.pid, SETTLE_TIMEOUT) for t in targets))


async def hold(
    targets: list[Held], credentials: dict[str, str], fanout: Home | None = None
) -> dict[str, object]:
    """The N long-polls spread over `targets` in turn (poll i on target i mod k), held
    until every target is idle; each target's memory and `/info` before and while held;
    with `fanout`, one message to every connection enqueued in that home's state."""
    # The reference is timed as the held figure is: once the node has settled (its
    # first scan of every connection file done), from a thread of this process.
    await _settle_all(targets)
    for target in targets:
        target.baseline_kb = rss_kb(target.pid)
    await _info_round(targets, "baseline_info")
    await _settle_all(targets)
    connecting = asyncio.Semaphore(CONNECTING)
    pollers = []
    for n, (cid, secret) in enumerate(credentials.items()):
        target = targets[n % len(targets)]
        target.polls += 1
        pollers.append(_Poller(target.port, cid, secret))
    start = time.perf_counter()
    tasks = [asyncio.create_task(p.run(connecting)) for p in pollers]
    arrivals: list[float] = []
    try:
        await asyncio.wait_for(asyncio.gather(*(p.sent.wait() for p in pollers)), SETTLE_TIMEOUT)
        await _settle_all(targets)
        held_in = time.perf_counter() - start
        for task in tasks:
            if task.done():
                task.result()  # a poller that stopped: show why
        for target in targets:
            target.held_kb = rss_kb(target.pid)
        await _info_round(targets, "info")
        if fanout is not None:
            arrivals = await _fan_out(fanout, credentials, pollers, tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"held_in": held_in, "arrivals": arrivals}


async def _fan_out(
    home: Home, credentials: dict[str, str], pollers: list[_Poller], tasks: list[asyncio.Task[None]]
) -> list[float]:
    state = SqliteStreams(home.state_path)
    try:
        fanout_start = time.perf_counter()
        await asyncio.to_thread(state.broadcast, list(credentials), "ping", {"all": True})
        deadline = fanout_start + FANOUT_TIMEOUT
        while any(p.got is None for p in pollers):
            if time.perf_counter() > deadline:
                raise RuntimeError("the fan-out did not reach every poll in time")
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.005)
    finally:
        state.close()
    return sorted(p.got - fanout_start for p in pollers if p.got is not None)


def measure() -> list[Figure]:
    _raise_nofile(COUNT + 1000)
    port = free_port()
    homes, credentials = _home(Path(tempfile.mkdtemp(prefix="bench-capacity-")) / "public", port,
                               COUNT)  # fmt: skip
    with node(homes[0].path, port) as process:
        target = Held(port, process.pid)
        result = asyncio.run(hold([target], credentials, fanout=homes[0]))
    info_ms = target.info
    baseline = target.baseline_info
    arrivals: list[float] = result["arrivals"]  # type: ignore[assignment]
    per_poll = target.per_poll_kb
    info_value, info_spread = summarize(info_ms)
    info_ref, info_ref_spread = summarize(baseline)
    info_p99 = percentile(info_ms, 0.99)
    ref_p99 = percentile(baseline, 0.99)
    held = f"{COUNT:,} long-polls held by one node process"
    return [
        Figure(
            name=f"capacity: memory per idle long-poll ({COUNT:,})",
            unit="KB",
            value=per_poll,
            checks=[
                Check("each", per_poll, "≤", 20, "KB"),
                Check("held", COUNT, "≥", 10_000),
            ],
            method=(
                f"{held}: node RSS with them minus RSS after a warm-up without them "
                f"({target.baseline_kb / 1024:.1f} → {target.held_kb / 1024:.1f} MB); lean asyncio "
                f"raw-socket pollers in the benchmark process; all parked in "
                f"{result['held_in']:.1f} s"
            ),
            runs=1,
            spread="one load",
        ),
        Figure(
            name="capacity: GET /info while held",
            unit="ms",
            value=info_value,
            reference=info_ref,
            reference_name="/info with no polls",
            checks=[
                Check("median", info_value, "<", 10, "ms"),
                Check("p99", info_p99, "<", 10, "ms"),
            ],
            method=(
                f"{held}: fresh connection, GET, read to close; p99 {info_p99:.3g} ms. "
                "Reference: the same node, settled, before the polls"
            ),
            runs=len(info_ms),
            spread=info_spread,
            notes=[f"reference spread {info_ref_spread} ms, p99 {ref_p99:.3g} ms"],
        ),
        Figure(
            name="capacity: GET /info while held, p99",
            unit="ms",
            value=info_p99,
            reference=ref_p99,
            reference_name="/info p99 with no polls",
            checks=[Check("p99", info_p99, "<", 10, "ms")],
            method="the same runs as the median",
            runs=len(info_ms),
            spread=info_spread,
        ),
        Figure(
            name=f"capacity: fan-out of one message to {COUNT:,}",
            unit="s",
            value=arrivals[-1],
            method=(
                f"{held}: one message per connection enqueued in one transaction from another "
                "process; clock until the last poll has it (median arrival "
                f"{summarize(arrivals)[0]:.3g} s)"
            ),
            runs=1,
            spread=summarize(arrivals)[1],
        ),
    ]
