"""One poller per private connection, and one sync engine, across workers: the leases.

jira (private) runs as two workers on one PostgreSQL (two homes with the same
files, until connections live in the database); snow (public) on its own file.
Both jira workers want to poll snow for the same connection: exactly one does
(the lease's holder; the other's lock file stays free). The holder is killed
with SIGKILL: the other takes the lease within seconds and delivery goes on,
each message applied once, in order.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from exalate_tui.home.store import Home
from exalate_tui.sync.service import ENGINE_LEASE
from exalate_tui.transport.pg_streams import LEASE_TTL, PgStreams
from exalate_tui.transport.supervisor import ConnectionLock

from .conftest import Instance, MakeInstance, wait_for
from .test_e2e_pg_workers import second_worker
from .test_e2e_sync import SYNCED_WITHIN, ticket, tickets

pytestmark = [pytest.mark.e2e]


def polling(worker: Instance, cid: str) -> bool:
    """Whether this worker's supervisor runs the connection's requests (holds its lock)."""
    lock = ConnectionLock(Home(worker.home), cid)
    free = lock.acquire()
    lock.release()
    return not free


def holder(url: str, cid: str) -> tuple[str, int] | None:
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT holder, epoch FROM exalate.leases WHERE cid = %s", (cid,)
        ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def test_two_workers_race_for_a_private_connection_and_exactly_one_polls(
    instances: MakeInstance, pg_url: str
) -> None:
    snow = instances("snow", public=True)
    jira = instances("jira", public=False, database=pg_url)
    snow.start()
    jira.start()
    snow.serving()
    jira.serving()
    code = snow.ok(
        "initiate", "--no-url", "--mode", "script", "--local-name", "snow", "--remote-name", "jira"
    ).strip()
    cid = jira.json("accept", "-", stdin=code)["connection"]["id"]
    wait_for(lambda: polling(jira, cid), "jira's worker polls")
    other = second_worker(jira, instances, pg_url, "jira-b")
    other.start()
    other.serving()
    first = holder(pg_url, cid)
    assert first is not None
    # The second worker's supervisor has looked several times (it rescans every 3 s).
    time.sleep(4)
    assert polling(jira, cid) and not polling(other, cid)
    assert holder(pg_url, cid) == first  # renewed, never taken

    mine = PgStreams(pg_url, hints=False)
    try:
        sent = snow.state.enqueue_many(cid, [("ping", {"n": n}) for n in range(50)])
        wait_for(lambda: mine.last_applied(cid) >= sent[-1], "the pings through worker one")
        jira.kill()
        killed = time.monotonic()
        sent += snow.state.enqueue_many(cid, [("ping", {"n": n}) for n in range(50, 100)])
        wait_for(lambda: mine.last_applied(cid) >= sent[-1], "the pings through worker two")
        took = time.monotonic() - killed
        print(f"the second worker took over {took:.1f} s after the first was killed")
        assert took < LEASE_TTL + 3 + 5  # the lease's run, a rescan, slack for a busy CPU
        after = holder(pg_url, cid)
        assert after is not None and after[0] != first[0] and after[1] > first[1]
        assert polling(other, cid)
        inbox = mine.inbox(cid, limit=200)
        assert [m.seq for m in inbox] == list(range(1, sent[-1] + 1))
        assert [m.body["n"] for m in inbox if m.kind == "ping"] == list(range(100))
    finally:
        mine.close()


def engine_holder(url: str) -> int | None:
    """The pid of the worker whose sync engine holds the store's lease now."""
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT holder FROM exalate.leases WHERE cid = %s AND expires > "
            "extract(epoch from clock_timestamp())",
            (ENGINE_LEASE,),
        ).fetchone()
    return None if row is None else int(str(row[0]).split(":")[1])


def by_remote(worker: Instance) -> dict[str, dict[str, Any]]:
    """The worker's tickets, each with its links (from the sync store), by the partner's key."""
    found: dict[str, dict[str, Any]] = {}
    for listed in tickets(worker):
        shown = ticket(worker, listed["key"])
        for link in shown["links"]:
            assert link["remote_key"] not in found, f"two copies of {link['remote_key']}"
            found[link["remote_key"]] = shown
    return found


def test_the_sync_engine_moves_to_another_worker_and_goes_on_from_the_database(
    instances: MakeInstance, pg_url: str
) -> None:
    """snow (private) runs as two workers on one PostgreSQL, each home with its own
    state.sqlite3 (their tracker is the same one: the first home's, shared by a link);
    jira (public) on its own file. Tickets created on jira sync to snow through the
    engine that holds the lease; that worker is killed with SIGKILL while a second lot
    syncs; the other worker's engine takes the lease over and goes on from the links and
    cursor in the database: every ticket once on each side, an edit on each side reaching
    the other's ticket, not a new one."""
    jira = instances("jira", public=True)
    snow = instances("snow", public=False, database=pg_url)
    jira.start()
    snow.start()
    jira.serving()
    snow.serving()
    code = jira.ok(
        "initiate", "--no-url", "--mode", "basic", "--local-name", "jira", "--remote-name", "snow"
    ).strip()
    cid = snow.json("accept", "-", stdin=code)["connection"]["id"]
    wait_for(lambda: jira.show(cid)["status"] == "active", "jira Active")
    jira.ok("triggers", "add", "--connection", cid, "priority<=2^type=incident")
    wait_for(lambda: (snow.home / "tracker.sqlite3").exists(), "snow's tracker")
    other = second_worker(snow, instances, pg_url, "snow-b")
    for shared in ("tracker.sqlite3", "attachments"):
        (other.home / shared).unlink(missing_ok=True)
        (other.home / shared).symlink_to(snow.home / shared)
    other.start()
    other.serving()
    workers = {snow.process.pid: snow, other.process.pid: other}  # type: ignore[union-attr]
    wait_for(lambda: engine_holder(pg_url) in workers, "one engine holds the lease")
    first = workers[engine_holder(pg_url) or 0]
    second = other if first is snow else snow

    lot = [
        jira.ok("tickets", "create", "--summary", f"first {n}", "--priority", "1").strip()
        for n in range(4)
    ]
    wait_for(lambda: set(by_remote(second)) == set(lot), "the first lot on snow", SYNCED_WITHIN)
    assert not (second.home / "state.sqlite3").exists() or "sync_links" not in sqlite_tables(
        second.home / "state.sqlite3"
    )
    # The second lot, and the holder killed while it syncs.
    lot += [
        jira.ok("tickets", "create", "--summary", f"second {n}", "--priority", "2").strip()
        for n in range(4)
    ]
    first.kill()
    killed = time.monotonic()
    jira.ok("tickets", "edit", lot[0], "--status", "in_progress")
    wait_for(lambda: engine_holder(pg_url) == second.process.pid, "the other engine", 20)  # type: ignore[union-attr]
    print(f"the other worker's engine took over {time.monotonic() - killed:.1f} s after the kill")

    def all_there() -> bool:
        copies = by_remote(second)
        return set(copies) == set(lot) and copies[lot[0]]["status"] == "in_progress"

    wait_for(all_there, "both lots and the edit on snow", SYNCED_WITHIN * 2)
    copies = by_remote(second)
    assert len(tickets(second)) == len(lot)  # nothing created twice
    # An edit on snow after the move reaches jira's own ticket, not a new one.
    copy = copies[lot[1]]["key"]
    second.ok("tickets", "comment", copy, "--body", "seen from snow")
    wait_for(
        lambda: [c["body"] for c in ticket(jira, lot[1])["comments"]] == ["seen from snow"],
        "snow's comment on jira",
        SYNCED_WITHIN,
    )
    assert len(tickets(jira)) == len(lot)
    history = second.json("tickets", "history", copies[lot[0]]["key"])["history"]
    assert history and history[-1]["fields"].get("status", [None, None])[1] == "in_progress"


def sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
