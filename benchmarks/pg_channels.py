"""Would per-worker NOTIFY channels pay here? The one shared channel against one per worker.

`python -m benchmarks.pg_channels` (WORKERS, HINTS in the environment). A
throwaway PostgreSQL (tests/postgres/pgcluster.py: fsync off, a Unix socket);
WORKERS listener processes, each as `pg_wakeups.Hints` listens (one connection,
`notifies()`, the payload split and each cid looked up among its parked polls).
This process sends HINTS NOTIFYs of 4 cids, one statement each (a debounced
burst's worst case: one per `DEBOUNCE`), either all on the shared channel (every
worker hears each) or on one worker's own channel (only the worker with the
waiter hears it, the others nothing). Measured: the NOTIFY's round trip, each
listener's process CPU and its backend's CPU (/proc), and what a registry of
parked polls would cost per-worker channels (a park and an unpark written to
an UNLOGGED table, a lookup per hint): the price of knowing whom to tell.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "postgres"))
from pgcluster import Cluster  # noqa: E402

WORKERS = int(os.environ.get("WORKERS", "3"))
HINTS = int(os.environ.get("HINTS", "3000"))
PAYLOAD = "sender " + " ".join(f"{n:08x}-0000-4000-8000-000000000000" for n in range(4))


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _listen(url: str, channel: str, ready: Any, done: Any, out: Any) -> None:
    parked = {f"{n:08x}-0000-4000-8000-000000000000" for n in range(0, 400, 7)}
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"LISTEN {channel}")
        backend = db.info.backend_pid
        ready.set()
        heard, started, backend_before = 0, time.process_time(), _cpu(backend)
        while not done.is_set():
            for note in db.notifies(timeout=0.1):
                _, _, rest = note.payload.partition(" ")
                for cid in rest.split():
                    _ = cid in parked
                heard += 1
        out.put((channel, heard, time.process_time() - started, _cpu(backend) - backend_before))


def run(url: str, shared: bool) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    done, out = context.Event(), context.Queue()
    readies, listeners = [], []
    for n in range(WORKERS):
        ready = context.Event()
        channel = "shared" if shared else f"worker{n}"
        listener = context.Process(target=_listen, args=(url, channel, ready, done, out))
        listener.start()
        readies.append(ready)
        listeners.append(listener)
    for ready in readies:
        ready.wait(30)
    trips = []
    with psycopg.connect(url, autocommit=True) as sender:
        for _ in range(HINTS):
            started = time.perf_counter()
            sender.execute("SELECT pg_notify(%s, %s)", ("shared" if shared else "worker0", PAYLOAD))
            trips.append(time.perf_counter() - started)
    time.sleep(1.0)  # the last ones read
    done.set()
    results = sorted(out.get(timeout=30) for _ in listeners)
    for listener in listeners:
        listener.join(30)
    return {
        "channel": "shared" if shared else "per worker",
        "notify median µs": round(statistics.median(trips) * 1e6),
        "heard": [r[1] for r in results],
        "listener CPU ms": [round(r[2] * 1000) for r in results],
        "backend CPU ms": [round(r[3] * 1000) for r in results],
    }


def registry(url: str) -> dict[str, Any]:
    """What per-worker channels would add: a parked poll known to the others (a row in,
    a row out, per poll), and a look at it per hint."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "CREATE UNLOGGED TABLE waiters (cid text, worker text, PRIMARY KEY (cid, worker))"
        )
        parks, looks = [], []
        for n in range(HINTS):
            started = time.perf_counter()
            db.execute("INSERT INTO waiters VALUES (%s, 'w1') ON CONFLICT DO NOTHING", (str(n),))
            db.execute("DELETE FROM waiters WHERE cid = %s AND worker = 'w1'", (str(n),))
            parks.append(time.perf_counter() - started)
        for n in range(HINTS):
            started = time.perf_counter()
            db.execute("SELECT worker FROM waiters WHERE cid = ANY(%s)", ([str(n)],)).fetchall()
            looks.append(time.perf_counter() - started)
    return {
        "park and unpark median µs": round(statistics.median(parks) * 1e6),
        "lookup per hint median µs": round(statistics.median(looks) * 1e6),
    }


def main() -> None:
    cluster = Cluster().start()
    try:
        url = cluster.database()
        print(f"{WORKERS} workers, {HINTS} hints")
        for shared in (True, False, True, False):
            print(run(url, shared))
        print(registry(url))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
