"""Ticket sync: an edit's latency to the partner's tracker, a bulk exalate, the Basic mapping.

Two real `exalate-tui node` processes on 127.0.0.1 (`benchmarks.nodes.pair`,
public–private, Basic), each with its embedded tracker and its sync engine.

- **Latency**: 20 incidents synced under the trigger `type=incident`; then
  this process edits one at a time through the tracker API on one side's
  `tracker.sqlite3` (as `exalate-tui tickets edit` would: another process
  than the node), alternating sides, and stops the clock when the partner's
  committed tracker holds the new summary (inotify on its WAL, then a read).
  The public → private half rides the private node's long-poll, the other
  half its push. References: the polling intervals of Exalate's private side
  (20 s), Backbone (5 s), Getint (60 s or more); the table sets ours beside
  Backbone's, the shortest: 2.5 s on average, 5 s at worst.
- **Bulk**: 10,000 incidents with 3 public comments each in the public
  tracker (written straight into its file: setup, not timed), then the
  admin's `triggers add` and `sync bulk` through the CLI; the clock runs from
  `sync bulk` until every ticket and comment exists on the private side.
  Node memory: each node's peak RSS (`VmHWM` in /proc) at the end.
- **The Basic mapping**: outgoing + incoming rules on one ticket with 3
  comments, in this process. Reference: the replica's JSON round trip.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path

from exalate_tui.sync.rules import Basic
from exalate_tui.trackers.adapter import Comment, Ticket
from exalate_tui.trackers.embedded import EmbeddedTracker

from .harness import Check, Figure, percentile, summarize
from .nodes import WalWatch, cli, pair, rss_kb

EDITS = int(os.environ.get("BENCH_SYNC_EDITS", "400"))
BULK = int(os.environ.get("BENCH_BULK", "10000"))
COMMENTS = 3
LINKED = 20
SPACING = 0.02  # between edits, so each travels alone
TIMEOUT = 30.0
BULK_TIMEOUT = 300.0
# After a WAL write its commit is visible once the fsync ends: look finely for this long.
SETTLE = 0.005


def _tracker(home: Path) -> EmbeddedTracker:
    return EmbeddedTracker(home / "tracker.sqlite3", home / "attachments", user="bench")


def _ro(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{home / 'tracker.sqlite3'}?mode=ro", uri=True, timeout=30)


def _wait_until(check: object, watch: WalWatch, timeout: float, what: str) -> None:
    """Until `check()` holds, waking on the watched WAL's writes."""
    assert callable(check)
    deadline = time.perf_counter() + timeout
    written = -1.0
    while not check():
        now = time.perf_counter()
        if now > deadline:
            raise RuntimeError(f"not within {timeout} s: {what}")
        if now - written < SETTLE:
            time.sleep(0.0002)
        elif watch.wait(0.002):
            written = time.perf_counter()


def _latency() -> tuple[list[float], list[float]]:
    """(public → private, private → public) samples in ms."""
    out: list[float] = []
    back: list[float] = []
    with pair("sync-latency") as nodes:
        cli(nodes.public, "triggers", "add", "--connection", nodes.cid, "type=incident")
        for home in (nodes.public, nodes.private):
            _wait_for_file(home / "tracker.sqlite3-wal")
        public, private = _tracker(nodes.public), _tracker(nodes.private)
        see_public, see_private = _ro(nodes.public), _ro(nodes.private)
        watch_public = WalWatch(nodes.public, "tracker.sqlite3")
        watch_private = WalWatch(nodes.private, "tracker.sqlite3")
        loop = asyncio.new_event_loop()
        try:
            keys = [
                loop.run_until_complete(
                    public.create({"summary": f"Latency {n}", "description": "d" * 200})
                ).key
                for n in range(LINKED)
            ]

            def copies() -> int:
                (count,) = see_private.execute("SELECT COUNT(*) FROM tickets").fetchone()
                return int(count)

            _wait_until(lambda: copies() == LINKED, watch_private, TIMEOUT, "the linked copies")
            theirs = {
                correlation.rsplit("/", 1)[1]: key
                for key, correlation in see_private.execute("SELECT key, correlation FROM tickets")
            }
            for n in range(EDITS):
                time.sleep(SPACING)
                mine = keys[n % LINKED]
                summary = f"Edit {n}"
                if n % 2 == 0:  # found on the private side by its correlation
                    tracker, key, see, watch, samples = (
                        public,
                        mine,
                        see_private,
                        watch_private,
                        out,
                    )
                    where, arg = "correlation = ?", f"{nodes.cid}/{mine}"
                else:
                    tracker, key, see, watch, samples = (
                        private,
                        theirs[mine],
                        see_public,
                        watch_public,
                        back,
                    )
                    where, arg = "key = ?", mine
                loop.run_until_complete(tracker.update(key, {"summary": summary}))
                start = time.perf_counter()  # the edit is committed in the tracker

                def arrived(
                    see: sqlite3.Connection = see,
                    where: str = where,
                    arg: str = arg,
                    summary: str = summary,
                ) -> bool:
                    found = see.execute(
                        f"SELECT summary FROM tickets WHERE {where}", (arg,)
                    ).fetchone()
                    return found is not None and found[0] == summary

                _wait_until(arrived, watch, TIMEOUT, f"edit {n} on the partner")
                samples.append((time.perf_counter() - start) * 1000)
        finally:
            for tracker in (public, private):
                loop.run_until_complete(tracker.close())
            loop.close()
            for closing in (watch_public, watch_private):
                closing.close()
            see_public.close()
            see_private.close()
    return out, back


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.02)


def fill(home: Path, count: int, comments: int) -> None:
    """`count` incidents with `comments` public comments each in `home`'s tracker, written
    into its file in one transaction (setup: 40,000 commits through the API take minutes).
    The tracker exists already (its node's engine opened it)."""
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    db = sqlite3.connect(home / "tracker.sqlite3", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        (prefix,) = db.execute("SELECT value FROM meta WHERE name = 'prefix'").fetchone()
        (rev,) = db.execute("SELECT value FROM meta WHERE name = 'rev'").fetchone()
        (first,) = db.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM tickets").fetchone()
        rev = int(rev)
        tickets, notes = [], []
        for n in range(first, first + count):
            rev += 1
            tickets.append(
                (n, f"{prefix}-{n}", "incident", f"Bulk incident {n}", "d" * 300, "new",
                 1 + n % 5, "", "bench", "[]", now, now, None, rev)
            )  # fmt: skip
            notes += [
                (n, "bench", f"Comment {c} on {n}: " + "c" * 80, 0, now) for c in range(comments)
            ]
        db.executemany(f"INSERT INTO tickets VALUES ({', '.join('?' * 14)})", tickets)
        db.executemany(
            "INSERT INTO comments (ticket, author, body, internal, created) VALUES (?, ?, ?, ?, ?)",
            notes,
        )
        db.execute("UPDATE meta SET value = ? WHERE name = 'rev'", (rev,))
        db.execute("COMMIT")
    finally:
        db.close()


def _watermark_reached(home: Path) -> bool:
    """Whether `home`'s engine has looked at every change of its tracker."""
    tracker_db = _ro(home)
    state = sqlite3.connect(f"file:{home / 'state.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        meta = dict(tracker_db.execute("SELECT name, value FROM meta").fetchall())
        row = state.execute(
            "SELECT value FROM sync_meta WHERE name = 'tracker.watermark'"
        ).fetchone()
        return row is not None and row[0] == f"{meta['id']}:{meta['rev']}"
    except sqlite3.OperationalError:  # no sync tables yet
        return False
    finally:
        tracker_db.close()
        state.close()


def _bulk() -> tuple[float, int, int, list[str]]:
    """(seconds, public node peak RSS KB, private node peak RSS KB, notes)."""
    notes = []
    with pair("sync-bulk") as nodes:
        for home in (nodes.public, nodes.private):
            _wait_for_file(home / "tracker.sqlite3-wal")
        fill(nodes.public, BULK, COMMENTS)
        # The public engine reads past the new tickets first (no trigger yet: none sends).
        start = time.perf_counter()
        while not _watermark_reached(nodes.public):
            if time.perf_counter() - start > BULK_TIMEOUT:
                raise RuntimeError("the public engine never caught up with the new tickets")
            time.sleep(0.05)
        notes.append(f"the public engine read past {BULK:,} untriggered tickets in "
                     f"{time.perf_counter() - start:.2f} s (before the clock)")  # fmt: skip
        cli(nodes.public, "triggers", "add", "--connection", nodes.cid, "type=incident")
        see = _ro(nodes.private)
        watch = WalWatch(nodes.private, "tracker.sqlite3")
        try:
            start = time.perf_counter()
            cli(nodes.public, "sync", "bulk", "--connection", nodes.cid)
            notes.append(f"`sync bulk` returned after {time.perf_counter() - start:.2f} s")
            halfway = None

            def done() -> bool:
                nonlocal halfway
                (tickets,) = see.execute("SELECT COUNT(*) FROM tickets").fetchone()
                if halfway is None and tickets >= BULK // 2:
                    halfway = time.perf_counter() - start
                if tickets < BULK:
                    return False
                (comments,) = see.execute("SELECT COUNT(*) FROM comments").fetchone()
                return bool(comments >= BULK * COMMENTS)

            deadline = start + BULK_TIMEOUT
            while not done():
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"bulk exalate not done within {BULK_TIMEOUT} s")
                watch.wait(0.05)
            elapsed = time.perf_counter() - start
            notes.append(f"half the tickets there after {halfway or 0:.2f} s")
            public_kb = rss_kb(nodes.public_node.pid, "VmHWM")
            private_kb = rss_kb(nodes.private_node.pid, "VmHWM")
        finally:
            watch.close()
            see.close()
    return elapsed, public_kb, private_kb, notes


def _mapping() -> tuple[float, float]:
    """µs per ticket: (Basic outgoing + incoming, the replica's JSON round trip)."""
    now = datetime.now(UTC)
    ticket = Ticket(
        key="SNOW-1", type="incident", summary="Printer on fire", description="d" * 300,
        status="in_progress", priority=2, assignee="ann", reporter="bob", labels=(),
        created=now, updated=now,
        comments=tuple(
            Comment(str(n), "ann", f"Comment {n}: " + "c" * 80, False, now) for n in range(COMMENTS)
        ),
    )  # fmt: skip
    rules = Basic("0b7c6c1e-3c55-4d6e-9a57-0d1f0e2a9c11")

    def ours() -> None:
        rules.incoming(rules.outgoing(ticket), first_sync=False)

    doc = rules.outgoing(ticket).doc()

    def reference() -> None:
        json.loads(json.dumps(doc))

    number = 20_000
    ours_us = min(timeit.repeat(ours, number=number, repeat=5)) / number * 1e6
    ref_us = min(timeit.repeat(reference, number=number, repeat=5)) / number * 1e6
    return ours_us, ref_us


def measure() -> list[Figure]:
    out, back = _latency()
    both = out + back
    median, spread = summarize(both)
    p99 = percentile(both, 0.99)
    elapsed, public_kb, private_kb, bulk_notes = _bulk()
    mapping_us, json_us = _mapping()
    method = (
        "an edit through the tracker API in this process on one side's tracker.sqlite3, "
        "alternating sides, clock from its commit until the partner's committed tracker "
        "holds it (inotify on its WAL); two exalate-tui node processes, public–private"
    )
    directions = [
        f"public → private (long-poll) median {summarize(out)[0]:.3g} ms, "
        f"p99 {percentile(out, 0.99):.3g} ms",
        f"private → public (push) median {summarize(back)[0]:.3g} ms, "
        f"p99 {percentile(back, 0.99):.3g} ms",
    ]
    peak_mb = max(public_kb, private_kb) / 1024
    return [
        Figure(
            name="sync latency, edit → partner's tracker, median",
            unit="ms",
            value=median,
            # A poller's edit waits half its interval on average: Backbone's 5 s is the
            # shortest of the references (Exalate's private side 20 s, Getint ≥ 60 s).
            reference=2_500,
            reference_name="Backbone's 5 s poll, on average",
            checks=[Check("median", median, "≤", 50, "ms")],
            method=method,
            runs=len(both),
            spread=spread,
            notes=directions,
        ),
        Figure(
            name="sync latency, p99",
            unit="ms",
            value=p99,
            reference=5_000,
            reference_name="Backbone's 5 s poll, at worst",
            checks=[Check("p99", p99, "≤", 250, "ms")],
            method="the same runs as the median",
            runs=len(both),
            spread=spread,
        ),
        Figure(
            name=f"bulk exalate, {BULK:,} tickets × {COMMENTS} comments",
            unit="s",
            value=elapsed,
            checks=[Check("", elapsed, "≤", 30, "s")],
            method=(
                "`sync bulk` through the CLI on the public side until every ticket and comment "
                "is committed in the private tracker; two exalate-tui node processes"
            ),
            runs=1,
            spread="-",
            notes=bulk_notes,
        ),
        Figure(
            name="bulk exalate: node peak memory",
            unit="MB",
            value=peak_mb,
            checks=[Check("each node", peak_mb, "≤", 200, "MB")],
            method="VmHWM of each node process from /proc at the end of the bulk run; the larger",
            runs=1,
            spread=f"public {public_kb / 1024:.1f} MB, private {private_kb / 1024:.1f} MB",
        ),
        Figure(
            name="Basic mapping, outgoing + incoming per ticket",
            unit="µs",
            value=mapping_us,
            reference=json_us,
            reference_name="the replica's JSON round trip",
            method=f"timeit, best of 5 × 20,000, one incident with {COMMENTS} comments",
            runs=5,
            spread="-",
        ),
    ]
