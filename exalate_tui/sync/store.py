"""What the sync engine remembers (docs/protocol.md): the `SyncStore` interface, and
`SqliteSyncStore`, its tables in `state.sqlite3` beside the streams.

`sync/storage.py`'s `open_sync_store(home)` opens the one a home chose: these tables in
`state.sqlite3` by default, in the PostgreSQL database when the home's streams
live there (`sync/pg_store.py`: `PgSyncStore`, the same tables in the schema
`exalate`), so that the one engine across several workers finds its links and
cursors whichever worker it moves to. Both pass one contract suite
(tests/sync/store_contract.py), and both run the same queries (`SqlSyncStore`,
written once in SQL that SQLite and PostgreSQL both accept).

On SQLite: tables of their own (`sync_*`, versioned in `sync_schema`), on a
connection of their own to the same WAL file:

- `sync_links`: per connection, a local ticket and the partner's, whether
  they sync, the last replica sent (`out_*`) and received (`in_*`). A
  replica's *version* is the seq of the message that carried it.
- `sync_sent`: the replicas sent that the partner may not have seen yet, to
  tell a concurrent edit of the same field from a later one.
- `sync_cursors`: per connection, the last inbox seq the engine processed;
  `sync_meta`: the tracker's watermark and the tracker's health.
- `sync_stash`: attachment bytes received ahead of the replica that names them.
- `sync_errors` and `sync_history`: what failed, and why each field changed;
- `sync_requests`: what an admin asked for (Exalate, Unexalate, Bulk,
  Retry, Resolve) from a process that is not running the engine: the
  engine takes them in order, so links have one writer.

The engine processes an inbox message and moves the cursor in one
transaction (`processed`), so history is written exactly once: on either store.

`deferred()` (bulk exalate, sync latency in benchmarks/README.md): inside
it, what `processed`, `save_link`, `sent_many` and `record_change` write is kept in
memory, readable at once through `link` and `link_by_remote`, and committed
in one transaction when it ends (one fsync for a batch of messages, not one
each). The engine's tracker writes come first and are durable on their own,
and each can be repeated harmlessly (found again by correlation or origin),
so a crash inside a batch only processes its messages again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from exalate_tui.errors import ExalateError
from exalate_tui.home.store import create_private
from exalate_tui.sync.replica import Content, content_of

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_links (
    cid TEXT NOT NULL, local_key TEXT NOT NULL, remote_key TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    origin TEXT NOT NULL,                 -- 'local': exalated here, 'remote': made from theirs
    restart INTEGER NOT NULL DEFAULT 0,   -- the next replica (re)starts the sync
    due INTEGER NOT NULL DEFAULT 0,       -- send a replica now, changed or not (a retry)
    out_version INTEGER NOT NULL DEFAULT 0, out_doc TEXT,
    in_version INTEGER NOT NULL DEFAULT 0, in_doc TEXT,
    created REAL NOT NULL, last_synced REAL,
    PRIMARY KEY (cid, local_key)
);
CREATE UNIQUE INDEX IF NOT EXISTS sync_links_remote ON sync_links (cid, remote_key);
CREATE TABLE IF NOT EXISTS sync_sent (
    cid TEXT NOT NULL, local_key TEXT NOT NULL, version INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (cid, local_key, version)
);
CREATE TABLE IF NOT EXISTS sync_cursors (cid TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sync_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sync_stash (
    cid TEXT NOT NULL, remote_key TEXT NOT NULL, sha256 TEXT NOT NULL,
    name TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (cid, remote_key, sha256)
);
CREATE TABLE IF NOT EXISTS sync_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cid TEXT NOT NULL, direction TEXT NOT NULL,   -- 'out' or 'in'
    local_key TEXT, remote_key TEXT,
    seq INTEGER,                                  -- 'in': the first inbox seq held back
    message TEXT NOT NULL, first_at REAL NOT NULL, last_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1, holds INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS sync_errors_ticket ON sync_errors (cid, direction, local_key);
CREATE TABLE IF NOT EXISTS sync_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    local_key TEXT NOT NULL, cid TEXT NOT NULL, remote_key TEXT,
    at REAL NOT NULL, version INTEGER, rules TEXT NOT NULL,
    changes TEXT NOT NULL, note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sync_history_key ON sync_history (local_key, id);
CREATE TABLE IF NOT EXISTS sync_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL, cid TEXT, key TEXT, arg TEXT, at REAL NOT NULL
);
"""


# The links `due` looks for, indexed: a step looks for them every time, and with
# thousands of links a scan of all of them would be most of an edit's latency.
_DUE = "active = 1 AND (out_version = 0 OR restart = 1 OR due = 1)"
_INDEXES = f"CREATE INDEX IF NOT EXISTS sync_links_due ON sync_links (cid, created) WHERE {_DUE}"


class SyncStoreError(ExalateError):
    """The sync tables cannot be used (`state.sqlite3`'s, or the database's); str() names
    the file or the database."""


@dataclass(frozen=True)
class Link:
    cid: str
    local_key: str
    remote_key: str | None
    active: bool
    origin: str
    restart: bool = False
    due: bool = False
    out_version: int = 0
    out_doc: Content | None = None  # what the partner holds of ours, as far as we know
    in_version: int = 0
    in_doc: Content | None = None  # the partner's last replica
    created: float = 0.0
    last_synced: float | None = None


@dataclass(frozen=True)
class SyncError:
    id: int
    cid: str
    direction: str
    local_key: str | None
    remote_key: str | None
    seq: int | None
    message: str
    first_at: float
    last_at: float
    attempts: int
    holds: bool


@dataclass(frozen=True)
class Change:
    """One history entry: what the engine did to a local ticket, and why."""

    id: int
    local_key: str
    cid: str
    remote_key: str | None
    at: float
    version: int | None
    rules: str
    changes: dict[str, Any]  # {"fields": {name: [old, new]}, "comments": n, "attachments": [names]}
    note: str


def _doc(content: Content | None) -> str | None:
    return None if content is None else json.dumps(content.doc(), separators=(",", ":"))


def _number(value: Any) -> int | None:
    return None if value is None else int(value)


def _content(text: str | None) -> Content | None:
    return None if text is None else content_of(json.loads(text))


_LINK_COLUMNS = (
    "cid, local_key, remote_key, active, origin, restart, due, out_version, out_doc, "
    "in_version, in_doc, created, last_synced"
)


def _link_row(link: Link) -> tuple[Any, ...]:
    """`link`'s values, in `_LINK_COLUMNS`' order."""
    return (
        link.cid,
        link.local_key,
        link.remote_key,
        link.active,
        link.origin,
        link.restart,
        link.due,
        link.out_version,
        _doc(link.out_doc),
        link.in_version,
        _doc(link.in_doc),
        link.created or time.time(),
        link.last_synced,
    )


def _link(row: tuple[Any, ...]) -> Link:
    (
        cid,
        local,
        remote,
        active,
        origin,
        restart,
        due,
        out_v,
        out_doc,
        in_v,
        in_doc,
        created,
        last,
    ) = row
    return Link(
        cid,
        local,
        remote,
        bool(active),
        origin,
        bool(restart),
        bool(due),
        out_v,
        _content(out_doc),
        in_v,
        _content(in_doc),
        created,
        last,
    )


class SyncStore(Protocol):
    """The engine's memory, whichever store holds it (`SqliteSyncStore`, `PgSyncStore`);
    safe to share between threads. Each write commits at once, in a transaction of its
    own, except inside `deferred()` (see the module's docstring)."""

    @property
    def where(self) -> str:
        """The store, fit to print: the file's path, or the database (no password)."""
        ...

    def close(self) -> None: ...

    def fence(self, lease: str, epoch: int) -> None:
        """From now on, commit a write only while the streams' lease `lease` is still at
        `epoch` (checked inside its transaction; `LeaseLost` otherwise): a holder that
        hung past its lease writes nothing. A no-op where one home owns the store."""
        ...

    def deferred(self) -> AbstractContextManager[None]: ...

    @property
    def pending(self) -> bool: ...

    def defer(self) -> None: ...

    def flush(self) -> None: ...

    def link(self, cid: str, local_key: str) -> Link | None: ...

    def link_by_remote(self, cid: str, remote_key: str) -> Link | None: ...

    def links(self, cid: str | None = None, local_key: str | None = None) -> list[Link]: ...

    def sent_keys(self, cid: str) -> set[str]: ...

    def save_link(self, link: Link) -> None: ...

    def sent_many(self, sent: list[tuple[Link, int, Content]]) -> None: ...

    def sent_since(self, cid: str, local_key: str, version: int) -> list[Content]: ...

    def cursors(self) -> dict[str, int]: ...

    def due(self, limit: int = -1) -> dict[str, list[str]]: ...

    def cursor(self, cid: str) -> int: ...

    def meta(self, name: str) -> str | None: ...

    def set_meta(self, name: str, value: str | None) -> None: ...

    def processed(
        self,
        cid: str,
        seq: int,
        *,
        link: Link | None = None,
        seen: int = 0,
        change: dict[str, Any] | None = None,
        stash: tuple[str, str, str, bytes] | None = None,
        unstash: str | None = None,
        resolve: int | None = None,
    ) -> None: ...

    def stashed(self, cid: str, remote_key: str, sha256: str) -> bytes | None: ...

    def fail(
        self,
        cid: str,
        direction: str,
        message: str,
        *,
        local_key: str | None = None,
        remote_key: str | None = None,
        seq: int | None = None,
        holds: bool = True,
    ) -> int: ...

    def errors(self, cid: str | None = None) -> list[SyncError]: ...

    def error(self, error_id: int) -> SyncError | None: ...

    def holding(self, cid: str, direction: str, key: str) -> SyncError | None: ...

    def resolve(self, error_id: int) -> None: ...

    def request(
        self, action: str, cid: str | None, key: str | None = None, arg: str | None = None
    ) -> None: ...

    def requests(self) -> list[tuple[int, str, str | None, str | None, str | None]]: ...

    def done(self, request_id: int) -> None: ...

    def record_change(self, cid: str, **change: Any) -> None: ...

    def history(self, local_key: str) -> list[Change]: ...

    def cids(self) -> set[str]: ...

    def forget(self, cid: str) -> None: ...


DB = TypeVar("DB")


class DeferredWrites(Generic[DB]):
    """What both stores share: `deferred()`, its writes kept for one transaction at its
    end, and the links and stash among them, readable at once. A store gives
    `_transaction()` (its database handle inside one transaction) and `_commit`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        # While `deferred()`: the writes to commit at its end, and the links among them.
        self._pending: list[Callable[[DB], None]] | None = None
        self._links: dict[tuple[str, str], Link] = {}
        self._by_remote: dict[tuple[str, str], str] = {}
        self._stash: dict[tuple[str, str, str], bytes] = {}
        self._unstashed: set[tuple[str, str]] = set()

    @contextmanager
    def _transaction(self) -> Iterator[DB]:
        raise NotImplementedError
        yield

    def _commit(self, writes: list[Callable[[DB], None]]) -> None:
        """Run `writes` in one transaction."""
        with self._transaction() as db:
            for write in writes:
                write(db)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Keep this block's `processed`, `save_link`, `sent_many` and `record_change`
        writes for one transaction at its end (also when it ends by an exception: what
        was done stays done). Not reentrant; other writes commit at once, as always."""
        self.defer()
        try:
            yield
        finally:
            self.flush()

    @property
    def pending(self) -> bool:
        """Whether `deferred()` holds writes not committed yet."""
        with self._lock:
            return bool(self._pending)

    def defer(self) -> None:
        """`deferred()`'s start, for a caller that flushes in a thread of its own."""
        with self._lock:
            assert self._pending is None, "deferred() is not reentrant"
            self._pending = []

    def flush(self) -> None:
        """Commit what `deferred()` holds, and end it."""
        with self._lock:
            pending, self._pending = self._pending, None
            try:
                if pending:
                    self._commit(pending)
            finally:
                self._links.clear()
                self._by_remote.clear()
                self._stash.clear()
                self._unstashed.clear()

    def _write(self, write: Callable[[DB], None]) -> None:
        """Now in its own transaction, or at the end of `deferred()`."""
        with self._lock:
            if self._pending is not None:
                self._pending.append(write)
                return
            self._commit([write])

    def _keep(self, link: Link) -> None:
        if self._pending is not None:
            self._links[(link.cid, link.local_key)] = link
            if link.remote_key is not None:
                self._by_remote[(link.cid, link.remote_key)] = link.local_key

    def _kept(
        self, cid: str, local_key: str | None = None, remote_key: str | None = None
    ) -> Link | None:
        """The link `deferred()` holds for this local (or remote) key, if any."""
        with self._lock:
            if remote_key is not None:
                local_key = self._by_remote.get((cid, remote_key))
                if local_key is None:
                    return None
            return self._links.get((cid, local_key or ""))

    def _keep_processed(
        self,
        cid: str,
        link: Link | None,
        stash: tuple[str, str, str, bytes] | None,
        unstash: str | None,
    ) -> None:
        """`processed`'s link and stash, readable at once while `deferred()`."""
        if self._pending is None:
            return
        if link is not None:
            self._keep(link)
        if unstash is not None:
            self._unstashed.add((cid, unstash))
            for where in [w for w in self._stash if w[:2] == (cid, unstash)]:
                del self._stash[where]
        if stash is not None:
            self._stash[(cid, *stash[:2])] = stash[3]

    def _kept_stash(self, cid: str, remote_key: str, sha256: str) -> tuple[bool, bytes | None]:
        """(whether `deferred()` knows, the bytes it holds) for this attachment."""
        with self._lock:
            if (cid, remote_key, sha256) in self._stash:
                return True, self._stash[(cid, remote_key, sha256)]
            return (cid, remote_key) in self._unstashed, None


class SqlSyncStore(DeferredWrites[DB]):
    """The queries both stores share, written once: `?` placeholders, each table
    named after `self._prefix` (`exalate.` on PostgreSQL). A store gives `_rows` and
    `_execute` (which turn this SQL into its dialect), `_transaction`, and `_due`,
    the SQL of a link with a replica due (SQLite's matches its partial index)."""

    _prefix = ""
    _due = ""

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _execute(self, db: DB, sql: str, *args: Any) -> Any:
        """Run one statement in `db`'s transaction; its cursor."""
        raise NotImplementedError

    # -- links ------------------------------------------------------------------

    def link(self, cid: str, local_key: str) -> Link | None:
        if (kept := self._kept(cid, local_key)) is not None:
            return kept
        rows = self._rows(
            f"SELECT {_LINK_COLUMNS} FROM {self._prefix}sync_links WHERE cid = ? AND local_key = ?",
            cid,
            local_key,
        )
        return _link(rows[0]) if rows else None

    def link_by_remote(self, cid: str, remote_key: str) -> Link | None:
        if (kept := self._kept(cid, remote_key=remote_key)) is not None:
            return kept
        rows = self._rows(
            f"SELECT {_LINK_COLUMNS} FROM {self._prefix}sync_links "
            "WHERE cid = ? AND remote_key = ?",
            cid,
            remote_key,
        )
        return _link(rows[0]) if rows else None

    def links(self, cid: str | None = None, local_key: str | None = None) -> list[Link]:
        """Links of one connection, of one local ticket, or all; oldest first."""
        where, args = [], []
        if cid is not None:
            where.append("cid = ?")
            args.append(cid)
        if local_key is not None:
            where.append("local_key = ?")
            args.append(local_key)
        sql = f"SELECT {_LINK_COLUMNS} FROM {self._prefix}sync_links"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_link(row) for row in self._rows(sql + " ORDER BY created, local_key", *args)]

    def sent_keys(self, cid: str) -> set[str]:
        """Local keys of `cid` that sync and whose replica has been enqueued since they
        (re)started (Bulk exalate's progress: read often, so no replica is parsed)."""
        rows = self._rows(
            f"SELECT local_key FROM {self._prefix}sync_links WHERE cid = ? AND active "
            "AND out_version > 0 AND NOT restart",
            cid,
        )
        return {key for (key,) in rows}

    def save_link(self, link: Link) -> None:
        with self._lock:
            self._keep(link)
            self._write(lambda db: self._put_link(db, link))

    def _put_link(self, db: DB, link: Link) -> None:
        """Write `link` over the row of its local key, and over any other row holding
        its remote key (each dialect has its own upsert)."""
        raise NotImplementedError

    def sent_many(self, sent: list[tuple[Link, int, Content]]) -> None:
        """Replicas enqueued (link, the seq that carries it, its content): one transaction."""
        now = time.time()
        done = [
            (
                replace(
                    link,
                    out_version=version,
                    out_doc=content,
                    restart=False,
                    due=False,
                    last_synced=now,
                ),
                content,
            )
            for link, version, content in sent
        ]

        def write(db: DB) -> None:
            for link, content in done:
                self._put_link(db, link)
                self._execute(
                    db,
                    f"INSERT INTO {self._prefix}sync_sent VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (cid, local_key, version) DO UPDATE SET doc = EXCLUDED.doc",
                    link.cid,
                    link.local_key,
                    link.out_version,
                    _doc(content),
                )

        with self._lock:
            for link, _ in done:
                self._keep(link)
            self._write(write)

    def sent_since(self, cid: str, local_key: str, version: int) -> list[Content]:
        """The replicas sent from `version` on (from the latest kept before it), oldest first."""
        rows = self._rows(
            f"SELECT doc FROM {self._prefix}sync_sent WHERE cid = ? AND local_key = ? "
            f"AND version >= (SELECT COALESCE(MAX(version), 0) FROM {self._prefix}sync_sent "
            "WHERE cid = ? AND local_key = ? AND version <= ?) ORDER BY version",
            cid,
            local_key,
            cid,
            local_key,
            version,
        )
        return [content for (doc,) in rows if (content := _content(doc)) is not None]

    # -- the inbox cursor, the tracker's watermark ---------------------------------

    def cursors(self) -> dict[str, int]:
        """Every connection's inbox cursor, in one read."""
        rows = self._rows(f"SELECT cid, seq FROM {self._prefix}sync_cursors")
        return {cid: int(seq) for cid, seq in rows}

    def due(self, limit: int = -1) -> dict[str, list[str]]:
        """Per connection (cid → local keys), the active links with a replica due whether
        or not their ticket changed: never sent yet or (re)started (unless an error holds
        them), or retried; oldest first, at most `limit` in all (no limit if negative).
        One query for every connection: a node may hold thousands."""
        sql = (
            f"SELECT cid, local_key FROM {self._prefix}sync_links AS l WHERE {self._due} "
            f"AND (due OR NOT EXISTS (SELECT 1 FROM {self._prefix}sync_errors WHERE cid = l.cid "
            "AND direction = 'out' AND holds AND local_key = l.local_key)) ORDER BY created"
        )
        found: dict[str, list[str]] = {}
        for cid, key in self._rows(sql + " LIMIT ?", limit) if limit >= 0 else self._rows(sql):
            found.setdefault(cid, []).append(key)
        return found

    def cursor(self, cid: str) -> int:
        rows = self._rows(f"SELECT seq FROM {self._prefix}sync_cursors WHERE cid = ?", cid)
        return int(rows[0][0]) if rows else 0

    def meta(self, name: str) -> str | None:
        rows = self._rows(f"SELECT value FROM {self._prefix}sync_meta WHERE name = ?", name)
        return str(rows[0][0]) if rows else None

    def set_meta(self, name: str, value: str | None) -> None:
        with self._transaction() as db:
            if value is None:
                self._execute(db, f"DELETE FROM {self._prefix}sync_meta WHERE name = ?", name)
            else:
                self._execute(
                    db,
                    f"INSERT INTO {self._prefix}sync_meta VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    name,
                    value,
                )

    def processed(
        self,
        cid: str,
        seq: int,
        *,
        link: Link | None = None,
        seen: int = 0,
        change: dict[str, Any] | None = None,
        stash: tuple[str, str, str, bytes] | None = None,
        unstash: str | None = None,
        resolve: int | None = None,
    ) -> None:
        """Inbox message `seq` of `cid` is done: record what it did and move the cursor,
        in one transaction.

        `link` as it is now, and `seen`, the version of ours the partner had;
        `change`, a history entry (`record_change`'s keywords); `stash`
        (remote_key, sha256, name, bytes) keeps an attachment's bytes until its
        replica, `unstash` drops a remote key's; `resolve`, an error retried."""
        p = self._prefix

        def write(db: DB) -> None:
            if link is not None:
                self._put_link(db, link)
                if seen:  # the partner has our replica `seen`: older ones are of no more use
                    self._execute(
                        db,
                        f"DELETE FROM {p}sync_sent WHERE cid = ? AND local_key = ? AND version < "
                        f"(SELECT COALESCE(MAX(version), 0) FROM {p}sync_sent WHERE cid = ? "
                        "AND local_key = ? AND version <= ?)",
                        *(cid, link.local_key, cid, link.local_key, seen),
                    )
            if change is not None:
                self._add_change(db, cid=cid, **change)
            if stash is not None:
                self._execute(
                    db,
                    f"INSERT INTO {p}sync_stash VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (cid, remote_key, sha256) DO UPDATE SET "
                    "name = EXCLUDED.name, data = EXCLUDED.data",
                    *(cid, *stash),
                )
            if unstash is not None:
                self._execute(
                    db, f"DELETE FROM {p}sync_stash WHERE cid = ? AND remote_key = ?", cid, unstash
                )
            if resolve is not None:
                self._execute(db, f"DELETE FROM {p}sync_errors WHERE id = ?", resolve)
            self._execute(  # the cursor never moves back
                db,
                f"INSERT INTO {p}sync_cursors AS c VALUES (?, ?) "
                "ON CONFLICT (cid) DO UPDATE SET seq = EXCLUDED.seq WHERE EXCLUDED.seq > c.seq",
                cid,
                seq,
            )

        with self._lock:
            self._keep_processed(cid, link, stash, unstash)
            self._write(write)

    def stashed(self, cid: str, remote_key: str, sha256: str) -> bytes | None:
        known, data = self._kept_stash(cid, remote_key, sha256)
        if known:
            return data
        rows = self._rows(
            f"SELECT data FROM {self._prefix}sync_stash "
            "WHERE cid = ? AND remote_key = ? AND sha256 = ?",
            cid,
            remote_key,
            sha256,
        )
        return bytes(rows[0][0]) if rows else None

    # -- errors -----------------------------------------------------------------

    def fail(
        self,
        cid: str,
        direction: str,
        message: str,
        *,
        local_key: str | None = None,
        remote_key: str | None = None,
        seq: int | None = None,
        holds: bool = True,
    ) -> int:
        """Record (or count again) the error on one ticket; returns its id.

        An incoming error keeps the seq it first held back; a later failure of
        the same ticket only counts another attempt."""
        now = time.time()
        key_column, key = (
            ("local_key", local_key) if direction == "out" else ("remote_key", remote_key)
        )
        with self._transaction() as db:
            row = self._execute(
                db,
                f"SELECT id FROM {self._prefix}sync_errors "
                f"WHERE cid = ? AND direction = ? AND {key_column} = ?",
                *(cid, direction, key),
            ).fetchone()
            if row:
                self._execute(
                    db,
                    f"UPDATE {self._prefix}sync_errors SET message = ?, last_at = ?, "
                    "attempts = attempts + 1, local_key = COALESCE(?, local_key) WHERE id = ?",
                    *(message, now, local_key, row[0]),
                )
                return int(row[0])
            made = self._execute(
                db,
                f"INSERT INTO {self._prefix}sync_errors (cid, direction, local_key, remote_key, "
                "seq, message, first_at, last_at, holds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "RETURNING id",
                *(cid, direction, local_key, remote_key, seq, message, now, now, holds),
            ).fetchone()
            assert made is not None
            return int(made[0])

    def errors(self, cid: str | None = None) -> list[SyncError]:
        return (
            self._errors("WHERE cid = ? ORDER BY id", cid) if cid else self._errors("ORDER BY id")
        )

    def _errors(self, where: str, *args: Any) -> list[SyncError]:
        rows = self._rows(
            "SELECT id, cid, direction, local_key, remote_key, seq, message, first_at, last_at, "
            f"attempts, holds FROM {self._prefix}sync_errors {where}",
            *args,
        )
        return [
            SyncError(
                int(r[0]),
                r[1],
                r[2],
                r[3],
                r[4],
                _number(r[5]),
                r[6],
                r[7],
                r[8],
                int(r[9]),
                bool(r[10]),
            )
            for r in rows
        ]

    def error(self, error_id: int) -> SyncError | None:
        found = self._errors("WHERE id = ?", error_id)
        return found[0] if found else None

    def holding(self, cid: str, direction: str, key: str) -> SyncError | None:
        """The error holding back this ticket's changes in `direction`, if any."""
        column = "local_key" if direction == "out" else "remote_key"
        found = self._errors(
            f"WHERE cid = ? AND direction = ? AND holds AND {column} = ? ORDER BY id LIMIT 1",
            cid,
            direction,
            key,
        )
        return found[0] if found else None

    def resolve(self, error_id: int) -> None:
        with self._transaction() as db:
            self._execute(db, f"DELETE FROM {self._prefix}sync_errors WHERE id = ?", error_id)

    # -- requests -----------------------------------------------------------------

    def request(
        self, action: str, cid: str | None, key: str | None = None, arg: str | None = None
    ) -> None:
        """Ask the engine (in whichever process or worker runs it) for `action`; it runs
        in order."""
        with self._transaction() as db:
            self._execute(
                db,
                f"INSERT INTO {self._prefix}sync_requests (action, cid, key, arg, at) "
                "VALUES (?, ?, ?, ?, ?)",
                *(action, cid, key, arg, time.time()),
            )

    def requests(self) -> list[tuple[int, str, str | None, str | None, str | None]]:
        """The requests waiting, oldest first: (id, action, cid, key, arg)."""
        return [
            (int(row[0]), row[1], row[2], row[3], row[4])
            for row in self._rows(
                f"SELECT id, action, cid, key, arg FROM {self._prefix}sync_requests ORDER BY id"
            )
        ]

    def done(self, request_id: int) -> None:
        with self._transaction() as db:
            self._execute(db, f"DELETE FROM {self._prefix}sync_requests WHERE id = ?", request_id)

    # -- history ------------------------------------------------------------------

    def _add_change(
        self,
        db: DB,
        *,
        cid: str,
        local_key: str,
        remote_key: str | None,
        version: int | None,
        rules: str,
        changes: dict[str, Any],
        note: str = "",
    ) -> None:
        self._execute(
            db,
            f"INSERT INTO {self._prefix}sync_history (local_key, cid, remote_key, at, version, "
            "rules, changes, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            *(local_key, cid, remote_key, time.time(), version, rules, json.dumps(changes), note),
        )

    def record_change(self, cid: str, **change: Any) -> None:
        self._write(lambda db: self._add_change(db, cid=cid, **change))

    def history(self, local_key: str) -> list[Change]:
        rows = self._rows(
            "SELECT id, local_key, cid, remote_key, at, version, rules, changes, note "
            f"FROM {self._prefix}sync_history WHERE local_key = ? ORDER BY id",
            local_key,
        )
        return [
            Change(int(r[0]), r[1], r[2], r[3], r[4], _number(r[5]), r[6], json.loads(r[7]), r[8])
            for r in rows
        ]

    # -- housekeeping ---------------------------------------------------------------

    def cids(self) -> set[str]:
        """The connections the engine holds anything for (links, a cursor, requests)."""
        p = self._prefix
        rows = self._rows(
            f"SELECT cid FROM {p}sync_links UNION SELECT cid FROM {p}sync_cursors "
            f"UNION SELECT cid FROM {p}sync_errors"
        )
        return {cid for (cid,) in rows}

    def forget(self, cid: str) -> None:
        """A deleted connection: its links, queue and errors go; its history stays,
        and the tickets on both sides are kept."""
        with self._transaction() as db:
            for table in (
                "sync_links",
                "sync_sent",
                "sync_cursors",
                "sync_stash",
                "sync_errors",
                "sync_requests",
            ):
                self._execute(db, f"DELETE FROM {self._prefix}{table} WHERE cid = ?", cid)


class SqliteSyncStore(SqlSyncStore[sqlite3.Connection]):
    """The sync tables of one `state.sqlite3`; safe to share between threads."""

    _due = _DUE

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        # 0600 before SQLite opens it, as the streams do: it holds the partner's replicas.
        create_private(path)
        try:
            self._db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._transaction() as db:
                db.execute("CREATE TABLE IF NOT EXISTS sync_schema (version INTEGER NOT NULL)")
                row = db.execute("SELECT version FROM sync_schema").fetchone()
                if row and row[0] > SCHEMA_VERSION:
                    raise SyncStoreError(
                        f"{path}: its sync tables were written by a newer exalate-tui (version "
                        f"{row[0]}; this one reads up to {SCHEMA_VERSION}): update exalate-tui"
                    )
                if row is None:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("INSERT INTO sync_schema VALUES (?)", (SCHEMA_VERSION,))
                db.execute(_INDEXES)  # added within version 1: older files gain it here
        except sqlite3.DatabaseError as error:
            raise SyncStoreError(f"{path}: cannot hold the sync tables ({error})") from None

    @property
    def where(self) -> str:
        return str(self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def fence(self, lease: str, epoch: int) -> None:
        """Nothing to fence: the home's `EngineLock` (a flock) lets one engine write."""

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _execute(self, db: sqlite3.Connection, sql: str, *args: Any) -> sqlite3.Cursor:
        return db.execute(sql, args)

    def _put_link(self, db: sqlite3.Connection, link: Link) -> None:
        # REPLACE drops the rows clashing on either key and inserts a new row (a new rowid).
        db.execute(
            f"INSERT OR REPLACE INTO sync_links ({_LINK_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _link_row(link),
        )
