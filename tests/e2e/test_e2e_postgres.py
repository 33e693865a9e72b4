"""The seed's flow with the public side's streams in PostgreSQL: two real `exalate-tui
node` processes on 127.0.0.1, the headless CLI as the admins run it.

snow (public) keeps its streams in a database of the tests' own PostgreSQL
(`init --database`); jira (private) in its state.sqlite3. init, initiate and
accept as the README says; both Active; messages each way, each once, in order.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from exalate_tui.transport.pg_streams import SCHEMA_VERSION

from .conftest import MakeInstance, wait_for
from .test_e2e_topologies import exchange

pytestmark = [pytest.mark.e2e]


def test_the_seeds_flow_with_the_public_side_on_postgresql(
    instances: MakeInstance, pg_url: str
) -> None:
    snow = instances("snow", public=True, database=pg_url)
    jira = instances("jira", public=False)
    assert "database" in (snow.home / "instance.toml").read_text()
    # A new database has no schema yet: check says so and changes nothing; migrate makes it.
    unmigrated = snow.cli("db", "check")
    assert unmigrated.returncode == 1 and "run `exalate-tui db migrate`" in unmigrated.stderr
    migrated = snow.json("db", "migrate")
    assert (migrated["from"], migrated["to"]) == (0, SCHEMA_VERSION)
    checked = snow.json("db", "check")
    assert checked["reachable"] and checked["schema_version"] == SCHEMA_VERSION
    again = snow.json("db", "migrate")
    assert again == {"database": checked["database"], "from": SCHEMA_VERSION, "to": SCHEMA_VERSION}
    snow.start()
    jira.start()
    snow.serving()
    jira.serving()
    assert f"streams in {checked['database']}" in snow.log.read_text()

    code = snow.ok(
        "initiate", "--no-url", "--mode", "script",
        "--local-name", "snow", "--remote-name", "jira",
    ).strip()  # fmt: skip
    accepted = jira.json("accept", "-", stdin=code)
    cid = accepted["connection"]["id"]
    assert accepted["stages"] == ["contacting", "accepted", "connected"]
    wait_for(lambda: snow.show(cid)["status"] == "active", "snow Active")
    wait_for(lambda: snow.state.last_applied(cid) >= 1, "jira's hello in PostgreSQL")
    wait_for(lambda: jira.state.last_applied(cid) >= 1, "snow's hello from PostgreSQL")
    assert snow.state.inbox(cid)[0].body == {"short_name": "jira"}
    # The public side's streams and its sync engine's tables are in the database, not in
    # a file of its home.
    state_file = snow.home / "state.sqlite3"
    if state_file.exists():
        with sqlite3.connect(state_file) as local:
            tables = {name for (name,) in local.execute("SELECT name FROM sqlite_master")}
        assert not {"outbox", "inbox", "sync_links", "sync_cursors"} & tables
    with psycopg.connect(pg_url) as db:
        row = db.execute("SELECT last_seq FROM exalate.streams WHERE cid = %s", (cid,)).fetchone()
    assert row is not None and row[0] >= 1

    exchange(snow, jira, cid, 200, "first")
    # A connection action from another process (the CLI) reaches the partner's poll.
    mark = jira.state.last_applied(cid)
    paused = snow.json("connections", "deactivate", cid)
    assert paused["partner"] == "queued"
    wait_for(lambda: jira.stored(cid).peer_state is not None, "jira sees the pause")
    snow.ok("connections", "activate", cid)
    wait_for(lambda: jira.state.last_applied(cid) >= mark + 2, "both news applied")
    kinds = [m.kind for m in jira.state.inbox(cid, after=mark)]
    assert kinds == ["connection.deactivated", "connection.activated"]
    exchange(snow, jira, cid, 50, "again")
