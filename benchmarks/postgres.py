"""The public side's streams in PostgreSQL beside state.sqlite3, in one run (issue 15).

The same two real `exalate-tui node` processes as `delivery` and `throughput`,
once with the public home on state.sqlite3 and once on a database of a
throwaway PostgreSQL (tests/postgres/pgcluster.py: initdb in a temp dir, a Unix
socket, fsync off, so the server's disk is not what is measured; the private
side's SQLite commits with synchronous=FULL in both). This process enqueues
from another handle on the public store (as the console or the CLI would) and
stops the clock when the private side's committed cursor reaches the message.

Figures: delivery median and p99 (one message at a time), and throughput of
~1 KB messages (1,000 per enqueue), each with SQLite's as the reference.

Then what more workers give. Throughput with 1, 2 and 3 public workers (node
processes with the same instance.toml and connection files, one database):
PARTNERS private nodes of their own (state.sqlite3, synchronous=FULL), each
with one connection to the public instance, partner i polling worker i mod W
directly (what a balancer keeping a partner's keep-alive connection on one
worker does, without a balancer process of ours on the same two cores); the
same SPREAD messages spread evenly over the partners' streams, enqueued from
this process while the workers are stopped (SIGSTOP, the partners' polls parked
on them), the clock running from SIGCONT until every private side has applied
and committed its last: what the workers deliver, not what one producer thread
enqueues; each side's CPU in the notes. Reference: one SQLite node with the
same partners, measured the same way. A single partner gains nothing from more
workers (its one long-poll is served by one of them). And capacity:
BENCH_CAPACITY idle long-polls spread over two workers with the lean
raw-socket client of `capacity`, each worker's memory per poll and `/info` on
both meanwhile; reference: the same number held by one SQLite node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.storage import key_path, make_key, open_home
from exalate_tui.transport.streams import Streams

from . import capacity
from .harness import Check, Figure, percentile, summarize
from .nodes import HOST, WalWatch, free_port, last_applied, node, pair, reader
from .throughput import _body

RUNS = int(os.environ.get("BENCH_PG_RUNS", "300"))
COUNT = int(os.environ.get("BENCH_PG_THROUGHPUT", "20000"))
CHUNK = 1000
SPACING = 0.012
TIMEOUT = 60.0
PARTNERS = int(os.environ.get("BENCH_PG_PARTNERS", "6"))
WORKERS = (1, 2, 3)
SPREAD = int(os.environ.get("BENCH_PG_SPREAD", "60000"))  # messages per run, over the partners
SPREAD_RUNS = int(os.environ.get("BENCH_PG_SPREAD_RUNS", "5"))
MOVE_TIMEOUT = 30.0


def _cluster() -> object:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "postgres"))
    from pgcluster import Cluster

    return Cluster().start()


def _run(database: str | None) -> tuple[list[float], float]:
    """Delivery samples (s) and one throughput figure (msg/s) for a public store."""
    with pair("pg" if database else "sqlite", database) as nodes:
        outbox: Streams
        if database:
            from exalate_tui.transport.pg_streams import PgStreams

            outbox = PgStreams(database, hints=False)
        else:
            outbox = SqliteStreams(nodes.public / "state.sqlite3")
        db = reader(nodes.private)
        watch = WalWatch(nodes.private)
        try:
            samples = []
            for n in range(RUNS):
                time.sleep(SPACING)
                seq = outbox.enqueue(nodes.cid, "ping", {"n": n, "issue": f"SNOW-{n}"})
                start = time.perf_counter()
                _until(lambda s=seq: last_applied(db, nodes.cid) >= s, watch, start)  # type: ignore[misc]
                samples.append(time.perf_counter() - start)
            bodies = [("ticket.changed", _body(n)) for n in range(COUNT)]
            target = last_applied(db, nodes.cid) + COUNT

            def produce() -> None:
                for at in range(0, COUNT, CHUNK):
                    outbox.enqueue_many(nodes.cid, bodies[at : at + CHUNK])

            producer = threading.Thread(target=produce)
            start = time.perf_counter()
            producer.start()
            _until(lambda: last_applied(db, nodes.cid) >= target, watch, start, TIMEOUT * 4)
            rate = COUNT / (time.perf_counter() - start)
            producer.join()
        finally:
            watch.close()
            db.close()
            outbox.close()
    return samples, rate


def _until(done: Callable[[], bool], watch: WalWatch, start: float, limit: float = TIMEOUT) -> None:
    written = -1.0
    while not done():
        now = time.perf_counter()
        if now - start > limit:
            raise RuntimeError(f"not applied within {limit} s")
        if now - written < 0.005:
            time.sleep(0.0002)  # a commit's fsync is under way: look again soon
        elif watch.wait(0.002):
            written = time.perf_counter()


# -- several workers -----------------------------------------------------------------


@dataclass
class Fleet:
    """A public instance's worker homes and ports, and its partners' private homes."""

    workers: list[tuple[Path, int]]
    partners: list[Path]
    cids: list[str]
    stack: contextlib.ExitStack
    pids: list[int] = field(default_factory=list)  # the workers started so far, in order
    partner_pids: list[int] = field(default_factory=list)

    def url(self, worker: int) -> str:
        return f"http://{HOST}:{self.workers[worker][1]}"

    def start_workers(self, count: int) -> None:
        while len(self.pids) < count:
            path, port = self.workers[len(self.pids)]
            self.pids.append(self.stack.enter_context(node(path, port)).pid)


@contextlib.contextmanager
def fleet(prefix: str, database: str | None, workers: int) -> Iterator[Fleet]:
    """`workers` public homes (one when on state.sqlite3) and PARTNERS private homes with
    one Active connection each, written with the store's serializer (not handshakes), every
    partner polling the first worker; the first worker and every partner node started."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    ports = [free_port() for _ in range(workers)]
    homes = [Home(root / f"public{k}") for k in range(workers)]
    instance = Instance(short_name="pub", public_url=f"http://{HOST}:{ports[0]}", database=database)
    for home in homes:
        home.save_instance(instance)
        home.ensure()
    if database is not None:
        # The connections are rows, saved once; each worker has the first one's key.
        make_key(homes[0])
        for home in homes[1:]:
            shutil.copy2(key_path(homes[0]), key_path(home))
        homes = [open_home(homes[0].path)]
    privates, cids = [], []
    for n in range(PARTNERS):
        cid, secret = str(uuid.uuid4()), SecretStr(secrets.token_urlsafe(32))
        for home in homes:
            home.save_connection(
                Connection(id=cid, name=f"pub_to_priv{n}", mode=Mode.BASIC,
                           topology=Topology.PUBLIC_PRIVATE, role=Role.INITIATOR,
                           local_name="pub", remote_name=f"priv{n}", status=Status.ACTIVE,
                           secret=secret)
            )  # fmt: skip
        private = Home(root / f"private{n}")
        private.save_instance(Instance(short_name=f"priv{n}"))
        private.ensure()
        private.save_connection(
            Connection(id=cid, name=f"priv{n}_to_pub", mode=Mode.BASIC,
                       topology=Topology.PUBLIC_PRIVATE, role=Role.ACCEPTOR,
                       local_name=f"priv{n}", remote_name="pub", remote_url=instance.public_url,
                       status=Status.ACTIVE, secret=secret)
        )  # fmt: skip
        privates.append(private.path)
        cids.append(cid)
    for home in homes:
        home.close()
    publics = [root / f"public{k}" for k in range(workers)]
    with contextlib.ExitStack() as stack:
        built = Fleet(list(zip(publics, ports, strict=True)), privates, cids, stack)
        built.start_workers(1)
        for path in privates:
            built.partner_pids.append(stack.enter_context(node(path, free_port())).pid)
        yield built
    shutil.rmtree(root, ignore_errors=True)  # kept after a failure: the nodes' logs are there


def _established(port: int) -> int:
    """Sockets established to 127.0.0.1:`port` (its accepted side), from /proc/net/tcp."""
    local = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        count += fields[1] == local and fields[3] == "01"
    return count


def _spread(nodes: Fleet, workers: int, outbox: Streams, dbs: list[sqlite3.Connection]) -> str:
    """Partner i polls worker i mod `workers`: its connection file's remote_url rewritten
    (the supervisor restarts the link at once); back once each has applied a ping."""
    nodes.start_workers(workers)
    for n, private in enumerate(nodes.partners):
        Home(private).update_connection(nodes.cids[n], _pointing(nodes.url(n % workers)))
    want = [sum(1 for n in range(PARTNERS) if n % workers == k) for k in range(workers)]
    deadline = time.monotonic() + MOVE_TIMEOUT
    while any(_established(nodes.workers[k][1]) < want[k] for k in range(workers)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the partners did not move to {workers} workers in time")
        time.sleep(0.05)
    for cid, db in zip(nodes.cids, dbs, strict=True):
        seq = outbox.enqueue(cid, "ping", {"workers": workers})
        _wait_all([db], [cid], [seq], time.perf_counter())
    return "/".join(str(_established(nodes.workers[k][1])) for k in range(workers))


def _pointing(url: str) -> Callable[[Connection], Connection]:
    def change(connection: Connection) -> Connection:
        return connection.model_copy(update={"remote_url": url})

    return change


def _wait_all(
    dbs: list[sqlite3.Connection], cids: list[str], targets: list[int], start: float
) -> None:
    pending = list(zip(dbs, cids, targets, strict=True))
    while pending:
        pending = [(db, cid, t) for db, cid, t in pending if last_applied(db, cid) < t]
        if time.perf_counter() - start > TIMEOUT * 4:
            raise RuntimeError("not applied in time")
        if pending:
            time.sleep(0.002)


@dataclass
class Run:
    """One flood: its rate, how long the enqueues took, and the CPU each side spent."""

    rate: float  # msg/s until the last is applied on every private side
    enqueued: float  # s the enqueues took beforehand (one thread, the workers stopped)
    workers_cpu: list[float]  # s of CPU per public worker
    partners_cpu: float  # s of CPU of every private node together
    own_cpu: float  # this process (the clock)
    server_cpu: float  # PostgreSQL's processes (0 on state.sqlite3)
    busy: float  # the machine's CPUs busy, 0-1 (other processes included)


def _machine() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return sum(ticks) - idle, sum(ticks)


def _quiet(pids: list[int], timeout: float = 30.0) -> None:
    """Until each of `pids` used at most one tick (10 ms) of CPU in 0.2 s: done with its
    last batch, so none is stopped holding a write (timers of their own still tick)."""
    deadline = time.monotonic() + timeout
    last = [capacity._cpu_ticks(pid) for pid in pids]
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = [capacity._cpu_ticks(pid) for pid in pids]
        if all(b - a <= 1 for a, b in zip(last, now, strict=True)):
            return
        last = now
    raise RuntimeError("the nodes never went quiet")


def _server_ticks(database: str | None) -> int:
    """CPU ticks of the PostgreSQL server holding `database` (its postmaster and every
    backend now running: one that ended meanwhile is missed), 0 without one."""
    if database is None:
        return 0
    data = Path(parse_qs(urlsplit(database).query)["host"][0]) / "data"
    try:
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    except (OSError, ValueError):
        return 0
    total = 0
    for pid in [postmaster, *map(int, children)]:
        with contextlib.suppress(OSError):
            total += capacity._cpu_ticks(pid)
    return total


def _flood(
    nodes: Fleet, outbox: Streams, dbs: list[sqlite3.Connection], database: str | None
) -> Run:
    """SPREAD messages spread evenly over the partners' streams, 1,000 per enqueue, enqueued
    while the public workers are stopped (SIGSTOP; the partners' polls stay parked on them);
    the clock runs from SIGCONT until the last is applied and committed on every private
    side: the workers' delivery, not the one producer thread's rate."""
    per = SPREAD // PARTNERS
    bodies = [("ticket.changed", _body(n)) for n in range(per)]
    targets = [last_applied(db, cid) + per for db, cid in zip(dbs, nodes.cids, strict=True)]
    _quiet(nodes.pids + nodes.partner_pids)  # none stopped halfway through a transaction
    for pid in nodes.pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        began = time.perf_counter()
        for at in range(0, per, CHUNK):
            for cid in nodes.cids:
                outbox.enqueue_many(cid, bodies[at : at + CHUNK])
        enqueued = time.perf_counter() - began
        tick = os.sysconf("SC_CLK_TCK")
        workers_before = [capacity._cpu_ticks(pid) for pid in nodes.pids]
        partners_before = sum(capacity._cpu_ticks(pid) for pid in nodes.partner_pids)
        own_before, machine_before = time.process_time(), _machine()
        server_before = _server_ticks(database)
        start = time.perf_counter()
    finally:
        for pid in nodes.pids:
            os.kill(pid, signal.SIGCONT)
    _wait_all(dbs, nodes.cids, targets, start)
    elapsed = time.perf_counter() - start
    machine = _machine()
    return Run(
        rate=per * PARTNERS / elapsed,
        enqueued=enqueued,
        workers_cpu=[
            (capacity._cpu_ticks(pid) - before) / tick
            for pid, before in zip(nodes.pids, workers_before, strict=True)
        ],
        partners_cpu=(sum(capacity._cpu_ticks(p) for p in nodes.partner_pids) - partners_before)
        / tick,
        own_cpu=time.process_time() - own_before,
        server_cpu=(_server_ticks(database) - server_before) / tick,
        busy=(machine[0] - machine_before[0]) / max(1, machine[1] - machine_before[1]),
    )


def _spread_rates(database: str | None) -> dict[int, tuple[list[Run], str]]:
    """Per worker count: its runs, and the sockets each worker held."""
    counts = WORKERS if database else (1,)
    results = {}
    with fleet("pg-workers" if database else "sqlite-workers", database, max(counts)) as nodes:
        outbox: Streams
        if database:
            from exalate_tui.transport.pg_streams import PgStreams

            outbox = PgStreams(database, hints=False)
        else:
            outbox = SqliteStreams(nodes.workers[0][0] / "state.sqlite3")
        dbs = []
        try:
            for private in nodes.partners:
                dbs.append(_reader_when_ready(private))
            for workers in counts:
                sockets = _spread(nodes, workers, outbox, dbs)
                runs = [_flood(nodes, outbox, dbs, database) for _ in range(SPREAD_RUNS)]
                results[workers] = (runs, sockets)
        finally:
            for db in dbs:
                db.close()
            outbox.close()
    return results


def _reader_when_ready(home: Path) -> sqlite3.Connection:
    deadline = time.monotonic() + TIMEOUT
    while not (home / "state.sqlite3").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{home} never made its state.sqlite3")
        time.sleep(0.05)
    return reader(home)


def _capacity(database: str | None) -> tuple[list[capacity.Held], float]:
    """BENCH_CAPACITY idle long-polls over two workers (one node on state.sqlite3)."""
    workers = 2 if database else 1
    capacity._raise_nofile(capacity.COUNT + 1000)
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="bench-pg-capacity-"))
    homes, credentials = capacity._home(
        root / "public", port, capacity.COUNT, database=database, workers=workers
    )
    ports = [port] + [free_port() for _ in homes[1:]]
    with contextlib.ExitStack() as stack:
        targets = []
        for home, at in zip(homes, ports, strict=True):
            process = stack.enter_context(node(home.path, at))
            targets.append(capacity.Held(at, process.pid))
        result = asyncio.run(capacity.hold(targets, credentials))
    shutil.rmtree(root, ignore_errors=True)  # kept after a failure: the nodes' logs are there
    return targets, float(result["held_in"])  # type: ignore[arg-type]


def measure() -> list[Figure]:
    cluster = _cluster()
    try:
        url = cluster.database()  # type: ignore[attr-defined]
        sqlite_samples, sqlite_rate = _run(None)
        pg_samples, pg_rate = _run(url)
        sqlite_spread = _spread_rates(None)[1]
        pg_spread = _spread_rates(cluster.database())  # type: ignore[attr-defined]
        sqlite_held, _ = _capacity(None)
        pg_held, pg_held_in = _capacity(cluster.database())  # type: ignore[attr-defined]
    finally:
        cluster.stop()  # type: ignore[attr-defined]
    ms = [s * 1000 for s in pg_samples]
    ref = [s * 1000 for s in sqlite_samples]
    value, spread = summarize(ms)
    ref_value, ref_spread = summarize(ref)
    method = (
        "public side's streams in PostgreSQL (a throwaway cluster, Unix socket, fsync off), "
        "enqueued from another handle; clock from commit until the private side's committed "
        f"cursor reaches it; {SPACING * 1000:g} ms apart; reference: the same on state.sqlite3"
    )
    return [
        Figure(
            name="delivery via PostgreSQL, median",
            unit="ms",
            value=value,
            reference=ref_value,
            reference_name="the same via state.sqlite3",
            method=method,
            runs=RUNS,
            spread=spread,
            notes=[f"reference spread {ref_spread} ms"],
        ),
        Figure(
            name="delivery via PostgreSQL, p99",
            unit="ms",
            value=percentile(ms, 0.99),
            reference=percentile(ref, 0.99),
            reference_name="the same via state.sqlite3",
            method="the same runs as the median",
            runs=RUNS,
            spread=spread,
        ),
        Figure(
            name=f"throughput via PostgreSQL, {COUNT:,} × ~1 KB, one worker",
            unit="msg/s",
            value=pg_rate,
            reference=sqlite_rate,
            reference_name="the same via state.sqlite3",
            method=f"enqueue {CHUNK} per statement while the private node long-polls; clock from "
            "the first enqueue to the last applied and committed on the private side",
            runs=1,
            spread="one run",
        ),
        *_spread_figures(sqlite_spread, pg_spread),
        *_capacity_figures(sqlite_held[0], pg_held, pg_held_in),
    ]


def _cpu(runs: list[Run]) -> str:
    """What the run of the median rate spent: each side's CPU, and the machine's."""
    run = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    workers = " + ".join(f"{s:.2f}" for s in run.workers_cpu)
    return (
        f"CPU of that run: public worker{'s' if len(run.workers_cpu) > 1 else ''} {workers} s, "
        f"the {PARTNERS} private nodes {run.partners_cpu:.2f} s, "
        + (f"PostgreSQL {run.server_cpu:.2f} s, " if run.server_cpu else "")
        + f"this process {run.own_cpu:.2f} s, the machine's {os.cpu_count()} CPUs "
        f"{run.busy:.0%} busy (other processes included)"
    )


def _spread_figures(
    sqlite: tuple[list[Run], str], pg: dict[int, tuple[list[Run], str]]
) -> list[Figure]:
    ref_runs, _ = sqlite
    reference, ref_spread = summarize([r.rate for r in ref_runs])
    per = SPREAD // PARTNERS
    figures = []
    for workers, (runs, sockets) in pg.items():
        value, spread = summarize([r.rate for r in runs])
        figures.append(
            Figure(
                name=f"throughput via PostgreSQL, {PARTNERS} partners, {workers} worker"
                + ("s" if workers > 1 else ""),
                unit="msg/s",
                value=value,
                reference=reference,
                reference_name=f"one state.sqlite3 node, {PARTNERS} partners",
                method=(
                    f"{per * PARTNERS:,} × ~1 KB over {PARTNERS} private nodes' streams "
                    f"({per:,} each), {CHUNK} per enqueue from this process while the "
                    f"workers are stopped (SIGSTOP; {summarize([r.enqueued for r in runs])[0]:.3g}"
                    f" s, median), partner i polling worker i mod {workers} directly (sockets "
                    f"per worker {sockets}); clock from SIGCONT until every private side has "
                    "applied and committed its last"
                ),
                runs=len(runs),
                spread=spread,
                notes=[_cpu(runs), f"reference runs {ref_spread} msg/s; {_cpu(ref_runs)}"],
            )
        )
    return figures


def _capacity_figures(
    sqlite: capacity.Held, pg: list[capacity.Held], held_in: float
) -> list[Figure]:
    count = sum(t.polls for t in pg)
    per_poll = [t.per_poll_kb for t in pg]
    shares = "; ".join(
        f"worker {k + 1}: {t.polls:,} polls, {t.baseline_kb / 1024:.1f} → "
        f"{t.held_kb / 1024:.1f} MB, {t.per_poll_kb:.3g} KB each"
        for k, t in enumerate(pg)
    )
    info = [ms for t in pg for ms in t.info]
    baseline = [ms for t in pg for ms in t.baseline_info]
    value, spread = summarize(info)
    p99 = percentile(info, 0.99)
    ref, ref_p99 = summarize(sqlite.info)[0], percentile(sqlite.info, 0.99)
    held = f"{count:,} long-polls held by {len(pg)} workers on one PostgreSQL"
    return [
        Figure(
            name=f"capacity via PostgreSQL: memory per idle long-poll ({count:,} over "
            f"{len(pg)} workers)",
            unit="KB",
            value=max(per_poll),
            reference=sqlite.per_poll_kb,
            reference_name=f"{sqlite.polls:,} on one state.sqlite3 node",
            checks=[
                Check("each worker", max(per_poll), "≤", 20, "KB"),
                Check("held", count, "≥", 10_000),
            ],
            method=(
                f"{held}, spread in turn (capacity's lean raw-socket pollers in this process, "
                f"the same connection files in each worker's home); the larger worker's "
                f"RSS with them minus after a warm-up, per poll it holds ({shares}); all "
                f"parked in {held_in:.1f} s"
            ),
            runs=1,
            spread="one load; " + ", ".join(f"{kb:.3g}" for kb in per_poll) + " KB",
        ),
        Figure(
            name="capacity via PostgreSQL: GET /info while held",
            unit="ms",
            value=value,
            reference=ref,
            reference_name="the same on one state.sqlite3 node",
            checks=[Check("median", value, "<", 10, "ms"), Check("p99", p99, "<", 10, "ms")],
            method=(
                f"{held}: fresh connection to each worker in turn, GET, read to close; "
                f"p99 {p99:.3g} ms; the workers before the polls: median "
                f"{summarize(baseline)[0]:.3g} ms, p99 {percentile(baseline, 0.99):.3g} ms"
            ),
            runs=len(info),
            spread=spread,
            notes=[f"reference spread {summarize(sqlite.info)[1]} ms"],
        ),
        Figure(
            name="capacity via PostgreSQL: GET /info while held, p99",
            unit="ms",
            value=p99,
            reference=ref_p99,
            reference_name="the same on one state.sqlite3 node",
            checks=[Check("p99", p99, "<", 10, "ms")],
            method="the same runs as the median",
            runs=len(info),
            spread=spread,
        ),
    ]
