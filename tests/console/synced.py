"""Two real instances that sync tickets, for the console's sync views: snow (the home
the console opens) and jira, each with its embedded tracker, streams, sync store and
engine, wired back to back as tests/sync/pair.py does (every part real but the HTTP).

`story(root)` plays the same history every time: tickets synced both ways, an
edit and a comment from jira, a problem Basic refuses, a replica snow refuses,
one ticket unexalated, a change still queued, a trigger that matches a ticket
not sent yet (for Bulk exalate); then pins every time the engine
stamped (it reads the wall clock) to fixed moments before NOW, so snapshots
are the same each run. snow also has a second connection, snow_to_zendesk,
that syncs but has no tickets yet.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import NOW
from pydantic import SecretStr
from sync.pair import CID, Pair, Side

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.sync import replica as wire
from exalate_tui.sync.engine import Engine
from exalate_tui.sync.store import SqliteSyncStore
from exalate_tui.trackers.embedded import EmbeddedTracker
from exalate_tui.transport.sqlite_streams import SqliteStreams

ZENDESK = "5f0c1d2e-0000-4000-8000-00000000002a"
CREATED = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)
TRIGGER = "type=incident^priority<=2"


def clock(start: datetime) -> Callable[[], datetime]:
    moments: Iterator[datetime] = (start + timedelta(minutes=7 * n) for n in range(10_000))
    return lambda: next(moments)


def side(root: Path, name: str, other: str, role: Role, start: datetime) -> Side:
    home = Home(root / name)
    url = "https://snow.example.com" if name == "snow" else None
    home.save_instance(Instance(short_name=name, public_url=url))
    home.save_connection(
        Connection(
            id=CID,
            name="snow_to_jira",
            mode=Mode.BASIC,
            topology=Topology.PUBLIC_PRIVATE,
            role=role,
            local_name=name,
            remote_name=other,
            status=Status.ACTIVE,
            secret=SecretStr("s" * 43),
            remote_url="https://snow.example.com" if role is Role.ACCEPTOR else None,
            created=CREATED,
            triggers=[TRIGGER] if name == "snow" else [],
        )
    )
    home.ensure()
    streams = SqliteStreams(home.state_path)
    tracker = EmbeddedTracker(
        home.tracker_path, home.attachments_dir, short_name=name, now=clock(start)
    )
    store = SqliteSyncStore(home.state_path)
    return Side(home, streams, tracker, store, Engine(home, streams, tracker, store))


def zendesk(home: Home) -> None:
    home.save_connection(
        Connection(
            id=ZENDESK,
            name="snow_to_zendesk",
            mode=Mode.SCRIPT,
            topology=Topology.PUBLIC_PUBLIC,
            role=Role.INITIATOR,
            local_name="snow",
            remote_name="zendesk",
            remote_url="https://zendesk.example.com",
            status=Status.ACTIVE,
            secret=SecretStr("z" * 43),
            created=CREATED + timedelta(days=1),
        )
    )


async def open_pair(root: Path) -> Pair:
    start = datetime.fromtimestamp(NOW, UTC) - timedelta(hours=3)
    snow = side(root, "snow", "jira", Role.INITIATOR, start)
    jira = side(root, "jira", "snow", Role.ACCEPTOR, start + timedelta(minutes=3))
    return Pair(snow, jira)


async def close_pair(pair: Pair) -> None:
    for one in (pair.a, pair.b):
        one.store.close()
        one.streams.close()
        await one.tracker.close()


async def play(pair: Pair) -> None:
    """The story the sync views show."""
    snow, jira = pair.a, pair.b
    mail = await snow.tracker.create(
        {"summary": "Mail is down for the whole of floor 3", "priority": 1}, reporter="ana"
    )
    await snow.tracker.create({"summary": "VPN certificate expires on Friday", "priority": 2})
    await snow.tracker.create({"summary": "Order toner", "priority": 4})
    await pair.settle()
    # jira works on its copy of the mail ticket: the change and the comment come back.
    [copy] = [t for t in await jira.tracker.search() if t.summary.startswith("Mail")]
    await jira.tracker.update(copy.key, {"status": "in_progress", "priority": 2})
    await jira.tracker.comment(copy.key, "Relay certificate renewed on our side.", author="joe")
    # And exalates one of its own: snow makes its copy, and says where it came from.
    laptop = await jira.tracker.create({"summary": "Laptop will not boot", "priority": 2})
    jira.store.request("exalate", CID, laptop.key)
    await pair.settle()
    # A problem exalated by hand: Basic syncs incidents only, so it fails and says why.
    problem = await snow.tracker.create(
        {"type": "problem", "summary": "Printer queue stuck after the driver update"}
    )
    snow.store.request("exalate", CID, problem.key)
    # A replica from jira that snow's tracker refuses (no such status).
    jira.streams.enqueue(
        CID,
        wire.REPLICA,
        {"v": 1, "key": "JIRA-99", "seen": 0, "fields": {"summary": "x", "status": "exploded"}},
    )
    await pair.settle()
    # The VPN ticket stops syncing; both copies stay.
    snow.store.request("unexalate", CID, "SNOW-2")
    await pair.settle()
    # An edit not yet carried: it waits in snow's outbox.
    await snow.tracker.update(mail.key, {"description": "Since 9:00 nobody on floor 3."})
    await snow.engine.settle()
    # A second trigger, added after the tickets it matches changed: Bulk exalate sends them.
    snow.set_triggers(TRIGGER, "priority=4")


def pin_times(home: Home) -> None:
    """Every moment the engine and the streams stamped, moved to fixed times before NOW."""
    db = sqlite3.connect(home.state_path)
    try:
        with db:
            db.execute(
                "UPDATE sync_links SET created = ?, last_synced = ? + rowid * 60 "
                "WHERE last_synced IS NOT NULL",
                (NOW - 7200, NOW - 3600),
            )
            db.execute("UPDATE sync_links SET created = ?", (NOW - 7200,))
            db.execute("UPDATE sync_history SET at = ? + id * 300", (NOW - 7200,))
            db.execute("UPDATE sync_errors SET first_at = ?, last_at = ?", (NOW - 1800, NOW - 240))
            db.execute("UPDATE outbox SET created = ?", (NOW - 90,))
            db.execute("UPDATE inbox SET applied_at = ?", (NOW - 600,))
    finally:
        db.close()


async def story(root: Path) -> Home:
    """snow's home after the story, everything closed; times pinned."""
    pair = await open_pair(root)
    try:
        await play(pair)
    finally:
        await close_pair(pair)
    zendesk(pair.a.home)
    pin_times(pair.a.home)
    return pair.a.home
