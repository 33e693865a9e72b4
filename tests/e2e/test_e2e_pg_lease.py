"""One poller per private connection across workers: the lease with a fencing epoch.

jira (private) runs as two workers on one PostgreSQL (two homes with the same
files, until connections live in the database); snow (public) on its own file.
Both jira workers want to poll snow for the same connection: exactly one does
(the lease's holder; the other's lock file stays free). The holder is killed
with SIGKILL: the other takes the lease within seconds and delivery goes on,
each message applied once, in order.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from exalate_tui.home.store import Home
from exalate_tui.transport.pg_streams import LEASE_TTL, PgStreams
from exalate_tui.transport.supervisor import ConnectionLock

from .conftest import Instance, MakeInstance, wait_for
from .test_e2e_pg_workers import second_worker

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
