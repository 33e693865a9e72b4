"""Delivery latency: public outbox → applied and committed on the private side.

Two real `exalate-tui node` processes on 127.0.0.1 with a connection set up
by the CLI (`benchmarks.nodes.pair`). This process enqueues one message at a
time in the public home's `state.sqlite3` (as the console or the CLI would:
another process than the node) and stops the clock when the private home's
committed cursor reaches it. Reference: a raw-socket echo, same spacing.
"""

from __future__ import annotations

import time

from exalate_tui.transport.sqlite_streams import SqliteStreams

from . import echo
from .harness import Check, Figure, percentile, summarize
from .nodes import WalWatch, last_applied, pair, reader

RUNS = int(__import__("os").environ.get("BENCH_RUNS", "1000"))
# Apart enough that each message travels alone (the poller is back in its long-poll).
SPACING = 0.012
TIMEOUT = 10.0
# After the private WAL is written, its commit becomes visible once the fsync ends:
# look every 0.2 ms for this long, rather than wait for the next write.
SETTLE = 0.005


def measure() -> list[Figure]:
    reference = echo.round_trips(RUNS, SPACING)
    samples = []
    with pair("delivery") as nodes:
        outbox = SqliteStreams(nodes.public / "state.sqlite3")
        db = reader(nodes.private)
        watch = WalWatch(nodes.private)
        try:
            seq = last_applied(db, nodes.cid)
            for n in range(RUNS):
                time.sleep(SPACING)
                seq = outbox.enqueue(nodes.cid, "ping", {"n": n, "issue": f"SNOW-{n}"})
                start = time.perf_counter()  # the message is committed in the outbox
                deadline = start + TIMEOUT
                written = -1.0  # when the private WAL was last written
                while last_applied(db, nodes.cid) < seq:
                    now = time.perf_counter()
                    if now > deadline:
                        raise RuntimeError(f"message {seq} not applied within {TIMEOUT} s")
                    if now - written < SETTLE:
                        time.sleep(0.0002)  # a commit's fsync is under way: look again soon
                    elif watch.wait(0.002):
                        written = time.perf_counter()
                samples.append(time.perf_counter() - start)
        finally:
            method = watch.method
            watch.close()
            db.close()
            outbox.close()
    ms = [s * 1000 for s in samples]
    ref_ms = [s * 1000 for s in reference]
    value, spread = summarize(ms)
    ref, ref_spread = summarize(ref_ms)
    p99 = percentile(ms, 0.99)
    return [
        Figure(
            name="delivery latency, median",
            unit="ms",
            value=value,
            reference=ref,
            reference_name="raw-socket echo",
            checks=[Check("median", value, "≤", 8, "ms")],
            method=(
                "enqueue in the public state.sqlite3 from another process, clock from commit "
                f"until the private side's committed cursor reaches it ({method}); "
                f"{SPACING * 1000:g} ms apart; two exalate-tui node processes"
            ),
            runs=RUNS,
            spread=spread,
            notes=[f"reference spread {ref_spread} ms"],
        ),
        Figure(
            name="delivery latency, p99",
            unit="ms",
            value=p99,
            reference=percentile(ref_ms, 0.99),
            reference_name="raw-socket echo p99",
            checks=[Check("p99", p99, "≤", 25, "ms")],
            method="the same runs as the median",
            runs=RUNS,
            spread=spread,
        ),
    ]
