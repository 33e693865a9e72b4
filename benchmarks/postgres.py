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
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.streams import Streams

from .harness import Figure, percentile, summarize
from .nodes import WalWatch, last_applied, pair, reader
from .throughput import _body

RUNS = int(os.environ.get("BENCH_PG_RUNS", "300"))
COUNT = int(os.environ.get("BENCH_PG_THROUGHPUT", "20000"))
CHUNK = 1000
SPACING = 0.012
TIMEOUT = 60.0


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


def measure() -> list[Figure]:
    cluster = _cluster()
    try:
        url = cluster.database()  # type: ignore[attr-defined]
        sqlite_samples, sqlite_rate = _run(None)
        pg_samples, pg_rate = _run(url)
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
    ]
