"""Throughput: 50,000 messages of ~1 KB from the public side to the private side, durable on both.

The same two real nodes as the latency benchmark. This process enqueues the
messages in the public home's `state.sqlite3` in transactions of 1,000 (each
committed with synchronous=FULL, so durable on that end before it is sent)
while the private node's poller fetches and applies them (durable there:
the cursor is read from its committed state). The clock runs from the first
enqueue to the last message applied. Reference: the raw-socket loopback
floor, 50,000 `sendall`s of 1 KB to a reader in another process.
"""

from __future__ import annotations

import json
import os
import threading
import time

from exalate_tui.transport.sqlite_streams import SqliteStreams

from . import echo
from .harness import Check, Figure
from .nodes import WalWatch, last_applied, pair, reader

COUNT = int(os.environ.get("BENCH_THROUGHPUT", "50000"))
CHUNK = 1000
SIZE = 1024
RUNS = 3
TIMEOUT = 120.0


def _body(n: int) -> dict[str, object]:
    """A ticket change of about 1 KB once encoded."""
    return {
        "issue": f"SNOW-{n}",
        "fields": {"summary": f"Incident {n}", "priority": "P3", "state": "In Progress"},
        "description": "x" * 880,
    }


def measure() -> list[Figure]:
    size = len(json.dumps(_body(0), separators=(",", ":")))
    reference = [echo.loopback_rate(COUNT, SIZE) for _ in range(RUNS)]
    rates = []
    with pair("throughput") as nodes:
        outbox = SqliteStreams(nodes.public / "state.sqlite3")
        db = reader(nodes.private)
        watch = WalWatch(nodes.private)
        try:
            for _ in range(RUNS):
                first = last_applied(db, nodes.cid)
                target = first + COUNT
                bodies = [("ticket.changed", _body(n)) for n in range(COUNT)]
                errors: list[BaseException] = []

                def produce(
                    bodies: list[tuple[str, dict[str, object]]] = bodies,
                    errors: list[BaseException] = errors,
                ) -> None:
                    try:
                        for at in range(0, len(bodies), CHUNK):
                            outbox.enqueue_many(nodes.cid, bodies[at : at + CHUNK])
                    except BaseException as error:  # noqa: BLE001 - reported below
                        errors.append(error)

                producer = threading.Thread(target=produce)
                start = time.perf_counter()
                producer.start()
                deadline = start + TIMEOUT
                while last_applied(db, nodes.cid) < target:
                    if errors or time.perf_counter() > deadline:
                        raise RuntimeError(f"throughput run stopped: {errors or 'timeout'}")
                    watch.wait(0.01)
                elapsed = time.perf_counter() - start
                producer.join()
                rates.append(COUNT / elapsed)
        finally:
            watch.close()
            db.close()
            outbox.close()
    rates.sort()
    refs = sorted(reference)
    value = rates[len(rates) // 2]
    ref = refs[len(refs) // 2]
    return [
        Figure(
            name=f"throughput, {COUNT:,} × ~1 KB",
            unit="msg/s",
            value=value,
            reference=ref,
            reference_name="raw-socket loopback",
            checks=[Check("", value, "≥", 30_000, "msg/s")],
            method=(
                f"enqueue in the public state.sqlite3 ({CHUNK} per transaction) while the private "
                "node long-polls; clock from the first enqueue to the last applied and committed "
                f"on the private side; body {size} characters as JSON"
            ),
            runs=RUNS,
            spread=f"{rates[0]:.4g}–{rates[-1]:.4g}",
            notes=[f"reference spread {refs[0]:.4g}–{refs[-1]:.4g} msg/s"],
        )
    ]
