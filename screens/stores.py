"""What the screens that read or change connections are given: the home, its live state,
and the sync engine's tables; the readings of those tables the sync views show, and of
a Script connection's rules the Rules editor shows.

The readers here do I/O: screens call them from thread workers, never on the
event loop, and post what they read.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from exalate_tui.home.store import Home
from exalate_tui.transport.streams import Streams

if TYPE_CHECKING:
    # Loaded when a sync view first reads: the Connections tab's first frame needs none.
    from exalate_tui.domain.models import Connection
    from exalate_tui.flows.sync import ConnectionSync
    from exalate_tui.sync.store import Change, Link, SyncError, SyncStore
    from exalate_tui.trackers.adapter import Ticket, Tracker


class SyncAccess:
    """The sync tables (`SyncStore`: `state.sqlite3`'s, or the home's database's), opened
    by the first worker that needs them and shared by every screen (the store is safe
    across threads); the App closes it."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._store: SyncStore | None = None
        self._closed = False

    def store(self) -> SyncStore:
        """The store, opened on first use; `SyncStoreError` or `OSError` when it cannot be."""
        from exalate_tui.sync.storage import open_sync_store
        from exalate_tui.sync.store import SyncStoreError

        with self._lock:
            if self._closed:
                raise SyncStoreError(f"{self.home.state_path}: the console is closing")
            if self._store is None:
                self._store = open_sync_store(self.home)
            return self._store

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._store is not None:
                self._store.close()
                self._store = None


@dataclass(frozen=True)
class Stores:
    """The home, and its `state.sqlite3` as the console opened it, or why it could not."""

    home: Home
    state: Streams | None
    state_problem: str | None
    sync: SyncAccess | None = field(default=None, compare=False)


def read_connection_sync(stores: Stores, cid: str) -> ConnectionSync:
    """One connection's links, errors, queue and the tracker's health, as they are now."""
    from exalate_tui.flows.sync import ConnectionSync, QueueSide
    from exalate_tui.sync.engine import TRACKER_ERROR
    from exalate_tui.sync.store import SyncStoreError

    if stores.sync is None:
        return ConnectionSync(problem="The sync tables are not open.")
    try:
        store = stores.sync.store()
        links = store.links(cid)
        errors = store.errors(cid)
        tracker_error = store.meta(TRACKER_ERROR)
        outgoing = incoming = QueueSide(0, None)
        if stores.state is not None:
            outgoing = QueueSide(*stores.state.backlog(cid))
            incoming = QueueSide(*stores.state.backlog(cid, inbox_after=store.cursor(cid)))
    except (SyncStoreError, OSError) as error:
        return ConnectionSync(problem=str(error))
    return ConnectionSync(links, errors, outgoing, incoming, tracker_error)


def read_tracker_error(stores: Stores) -> str | None:
    """Why the tracker cannot be used, as the engine last recorded it (None: it works)."""
    from exalate_tui.sync.engine import TRACKER_ERROR
    from exalate_tui.sync.store import SyncStoreError

    if stores.sync is None:
        return None
    try:
        return stores.sync.store().meta(TRACKER_ERROR)
    except (SyncStoreError, OSError):
        return None


@dataclass(frozen=True)
class TicketSyncReading:
    """One ticket's links, its open errors and its history, with the connections'
    names and those it could be exalated over."""

    links: Sequence[Link] = ()
    errors: Sequence[SyncError] = ()
    history: Sequence[Change] = ()
    connections: Sequence[Connection] = ()  # every connection of the home
    problem: str | None = None


def read_ticket_sync(stores: Stores, key: str) -> TicketSyncReading:
    from exalate_tui.sync.store import SyncStoreError

    connections = stores.home.load_connections().connections
    if stores.sync is None:
        return TicketSyncReading(connections=connections)
    try:
        store = stores.sync.store()
        links = store.links(local_key=key)
        errors = [e for e in store.errors() if e.local_key == key]
        history = store.history(key)
    except (SyncStoreError, OSError) as error:
        return TicketSyncReading(connections=connections, problem=str(error))
    return TicketSyncReading(links, errors, history, connections)


class TrackerOnLoop:
    """The console's tracker, for a thread worker running its own event loop (a Test run
    in a worker: `asyncio.run(try_rules(...))`): each read runs on the App's loop, where
    the tracker was opened, and the worker waits for it."""

    def __init__(self, tracker: Tracker, loop: asyncio.AbstractEventLoop) -> None:
        self.tracker = tracker
        self.loop = loop

    async def get(self, key: str) -> Ticket:
        future = asyncio.run_coroutine_threadsafe(self.tracker.get(key), self.loop)
        return await asyncio.wrap_future(future)


@dataclass(frozen=True)
class RulesReading:
    """A Script connection's rules in force (direction → (version, source)), or why not."""

    connection: Connection | None
    current: dict[str, tuple[int, str]] = field(default_factory=dict)
    problem: str | None = None


def read_rules(stores: Stores, cid: str) -> RulesReading:
    """The connection and its rules in force (the Basic mapping written out, the first
    time, as the CLI does)."""
    from exalate_tui.domain.models import Mode
    from exalate_tui.home.store import NotFound, StoreError
    from exalate_tui.sync.script import rule_files

    try:
        connection = stores.home.get_connection(cid)
    except (NotFound, StoreError) as error:
        return RulesReading(None, problem=str(error))
    if connection.mode is not Mode.SCRIPT:
        return RulesReading(
            connection, problem=f"{connection.name} uses the Basic mapping: it has no rules."
        )
    try:
        files = rule_files(stores.home, connection)
        current = {d: (v.number, files.source(v)) for d, v in files.current().items()}
    except (StoreError, OSError) as error:
        return RulesReading(connection, problem=str(error))
    return RulesReading(connection, current)


@dataclass(frozen=True)
class VersionsReading:
    """Every saved version (number, direction, saved, note), oldest first, and each one's
    source (missing or altered files left out), or why they cannot be read."""

    versions: list[tuple[int, str, datetime, str]] = field(default_factory=list)
    sources: dict[int, str] = field(default_factory=dict)
    problem: str | None = None


def read_versions(stores: Stores, connection: Connection) -> VersionsReading:
    from exalate_tui.home.store import StoreError
    from exalate_tui.sync.script import rule_files

    try:
        files = rule_files(stores.home, connection)
        versions = files.versions()
    except (StoreError, OSError) as error:
        return VersionsReading(problem=str(error))
    sources: dict[int, str] = {}
    for version in versions:
        try:
            sources[version.number] = files.source(version)
        except (StoreError, OSError):
            continue
    return VersionsReading([(v.number, v.direction, v.saved, v.note) for v in versions], sources)


def ask_engine(stores: Stores, action: str, cid: str) -> str:
    """Queue `action` for the sync engine (whichever process runs it); '' or why not."""
    from exalate_tui.sync.store import SyncStoreError

    if stores.sync is None:
        return "the sync tables are not open"
    try:
        stores.sync.store().request(action, cid)
    except (SyncStoreError, OSError) as error:
        return str(error)
    return ""
