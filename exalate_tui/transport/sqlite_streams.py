"""Durable per-connection message streams: `state.sqlite3` (WAL).

Per connection, an outbox (what this side sends, numbered from 1, kept until
the other side acknowledges it), an inbox (what this side has applied) and
the stream's cursors and last contact. Applying a batch and moving the
cursor is one transaction: exactly-once effect on top of at-least-once
delivery. Bodies are stored as JSON text and sent as such, never re-encoded.

Every enqueue also rings the home's *doorbell* (`doorbell.doorbell_address`): one
datagram to the node serving this state, so its long-polls answer within a
millisecond even when another process (the console, the CLI) enqueued.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["SCHEMA_VERSION", "Gap", "SqliteStreams", "StateError", "doorbell_address"]

from exalate_tui.domain.live import Contact
from exalate_tui.home.store import create_private
from exalate_tui.transport.doorbell import doorbell_address

# Gap and StateError are every store's (streams.py); imported from here too.
from exalate_tui.transport.streams import Gap, Message, StateError, compact, quoted

# The schema's version, kept in `PRAGMA user_version`: 1 is the tables below.
SCHEMA_VERSION = 1

# Plain rowid tables: in a WITHOUT ROWID table each ~1 KB row lives inside the
# primary-key b-tree, and inserts are then too slow for the throughput target
# (benchmarks/README.md).
_TABLES = {
    "outbox": """CREATE TABLE IF NOT EXISTS outbox (
        cid TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
        body TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (cid, seq)
    )""",
    "inbox": """CREATE TABLE IF NOT EXISTS inbox (
        cid TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
        body TEXT NOT NULL, applied_at REAL NOT NULL, PRIMARY KEY (cid, seq)
    )""",
    "streams": """CREATE TABLE IF NOT EXISTS streams (
        cid TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL DEFAULT 0,      -- highest seq given to an outgoing message
        last_applied INTEGER NOT NULL DEFAULT 0,  -- highest seq applied from the other side
        last_ok REAL, last_error TEXT, error_since REAL
    )""",
}


def _open_schema(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file to `SCHEMA_VERSION`, once; refuse a file a newer version wrote."""
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{path}: written by a newer exalate-tui (schema version {version}; this one "
                f"reads up to {SCHEMA_VERSION}): update exalate-tui on this machine"
            )
        if version == 0:
            _version_1(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _version_1(db: sqlite3.Connection) -> None:
    """A new file, or one from before the schema had a version, whose outbox and inbox
    may be WITHOUT ROWID tables: those are moved into rowid tables."""
    moved = []
    for table in ("outbox", "inbox"):
        row = db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if row and "WITHOUT ROWID" in row[0].upper():
            db.execute(f"ALTER TABLE {table} RENAME TO {table}_without_rowid")
            moved.append(table)
    for sql in _TABLES.values():
        db.execute(sql)
    for table in moved:
        db.execute(f"INSERT INTO {table} SELECT * FROM {table}_without_rowid")
        db.execute(f"DROP TABLE {table}_without_rowid")


# Pages of 16 KiB for a new file: ~1 KB messages fill a 4 KiB page with three, so
# pruning them would touch several times as many pages (benchmarks/README.md, throughput).
PAGE_SIZE = 16384


# Rows per INSERT statement (5 values each, under SQLite's oldest limit of 999 variables).
_ROWS_PER_INSERT = 199


def _insert_rows(db: sqlite3.Connection, into: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows of five values with one statement per `_ROWS_PER_INSERT`, not one per row.

    `executemany` steps SQLite once per row and drops and retakes the GIL at
    each step: while the event loop thread is busy (parsing the next batch),
    every row then waits for the GIL. One step per many rows inserts a
    fetched batch without that convoy (benchmarks/README.md, throughput).
    """
    for at in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[at : at + _ROWS_PER_INSERT]
        values = ",".join(["(?,?,?,?,?)"] * len(chunk))
        db.execute(f"INSERT INTO {into} VALUES {values}", [value for row in chunk for value in row])


class SqliteStreams:
    """One open `state.sqlite3`; safe to share between threads of a process.

    The SQLite implementation of `streams.Streams`.
    """

    lease_ttl = 0.0  # its leases are the home's flock: nothing runs out
    workers = False  # one node serves a home: its own memory of signatures is all of it

    def __init__(self, path: Path) -> None:
        self.path = path
        # 0600 before SQLite opens it: it creates the -wal and -shm files (the same
        # messages) with the database's mode at that moment, and keeps them while open.
        create_private(path)
        try:
            self._db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            # Only takes effect on a file that has no tables yet (WAL mode fixes it after).
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged or applied message survives a power cut too.
            self._db.execute("PRAGMA synchronous=FULL")
            _open_schema(self._db, path)
        except StateError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as error:
            raise StateError(
                f"{path}: cannot be used as the message store ({error}); "
                "move it aside and restart (undelivered messages in it would be lost)"
            ) from None
        self._lock = threading.RLock()
        self._listeners: list[Callable[[str], None]] = []
        self._appliers: list[Callable[[str], None]] = []
        self._doorbell = doorbell_address(path)
        self._bell: socket.socket | None = None

    @property
    def where(self) -> str:
        return str(self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._bell is not None:
                self._bell.close()

    def on_enqueue(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(cid)` after each enqueue through this object commits.

        This is the in-process wake-up (docs/protocol.md): the node's long-poll
        and the supervisor's pushers learn of new messages at once. It runs in
        the enqueuing thread, so a listener must be thread-safe. Enqueues by
        other processes are not seen here; watch `data_version` for those.
        Returns a function that removes the listener.
        """
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def on_hint(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Never called: other processes on this file ring the doorbell instead."""
        return lambda: None

    def on_apply(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(cid)` after a batch with new messages is applied through this
        object: the sync engine reads the inbox at once. Same terms as `on_enqueue`."""
        with self._lock:
            self._appliers.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._appliers:
                    self._appliers.remove(listener)

        return remove

    def _transaction(self, *, durable: bool = True) -> _Transaction:
        return _Transaction(self, durable=durable)

    def _stream(self, cid: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO streams (cid) VALUES (?)", (cid,))

    # -- outbox ---------------------------------------------------------------

    def enqueue(self, cid: str, kind: str, body: Any = None) -> int:
        return self.enqueue_many(cid, [(kind, body)])[0]

    def enqueue_many(self, cid: str, items: Iterable[tuple[str, Any]]) -> list[int]:
        """Append messages to the outbox in one transaction; returns their seqs."""
        rows = [(kind, compact(body)) for kind, body in items]
        now = time.time()
        with self._transaction() as db:
            self._stream(cid)
            (last,) = db.execute("SELECT last_seq FROM streams WHERE cid = ?", (cid,)).fetchone()
            seqs = list(range(last + 1, last + 1 + len(rows)))
            _insert_rows(
                db,
                "outbox (cid, seq, kind, body, created)",
                [(cid, seq, kind, body, now) for seq, (kind, body) in zip(seqs, rows, strict=True)],
            )
            db.execute("UPDATE streams SET last_seq = ? WHERE cid = ?", (last + len(rows), cid))
        self._ring(cid)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(cid)
        return seqs

    def broadcast(self, cids: Sequence[str], kind: str, body: Any = None) -> dict[str, int]:
        """The same message to each connection in `cids`, in one transaction; their seqs."""
        text = compact(body)
        now = time.time()
        seqs = {}
        with self._transaction() as db:
            for cid in cids:
                self._stream(cid)
                (last,) = db.execute(
                    "SELECT last_seq FROM streams WHERE cid = ?", (cid,)
                ).fetchone()
                db.execute(
                    "INSERT INTO outbox (cid, seq, kind, body, created) VALUES (?, ?, ?, ?, ?)",
                    (cid, last + 1, kind, text, now),
                )
                db.execute("UPDATE streams SET last_seq = ? WHERE cid = ?", (last + 1, cid))
                seqs[cid] = last + 1
        with self._lock:
            listeners = list(self._listeners)
        for cid in cids:
            self._ring(cid)
            for listener in listeners:
                listener(cid)
        return seqs

    def _ring(self, cid: str) -> None:
        """Tell the node serving this state (if any) that `cid`'s outbox grew; never blocks."""
        if self._doorbell is None:
            return
        try:
            with self._lock:
                if self._bell is None:
                    self._bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._bell.setblocking(False)
                self._bell.sendto(cid.encode(), self._doorbell)
        except OSError:
            pass  # no node listens, or its queue is full: it watches data_version too

    def pending(self, cid: str, after: int = 0, limit: int = 500) -> list[Message]:
        return self._read_messages("outbox", cid, after, limit)

    def pending_wire(self, cid: str, after: int = 0, limit: int = 500) -> list[str]:
        """`pending`, each message already in its wire form (`Message.wire`).

        What a long-poll answers: thousands a poll, so no `Message` objects on the way.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, body FROM outbox WHERE cid = ? AND seq > ? ORDER BY seq LIMIT ?",
                (cid, after, limit),
            ).fetchall()
        return [f'{{"seq":{seq},"kind":{quoted(kind)},"body":{body}}}' for seq, kind, body in rows]

    def last_seq(self, cid: str) -> int:
        return self._read_int("SELECT last_seq FROM streams WHERE cid = ?", cid)

    def last_seqs(self, cids: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {cid: self.last_seq(cid) for cid in cids}

    def backlog(self, cid: str, *, inbox_after: int | None = None) -> tuple[int, float | None]:
        """Outbox messages not yet acknowledged and when the oldest was queued; with
        `inbox_after`, inbox messages after that seq and when the oldest arrived."""
        with self._lock:
            if inbox_after is None:
                row = self._db.execute(
                    "SELECT COUNT(*), MIN(created) FROM outbox WHERE cid = ?", (cid,)
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*), MIN(applied_at) FROM inbox WHERE cid = ? AND seq > ?",
                    (cid, inbox_after),
                ).fetchone()
        return int(row[0]), row[1]

    def ack(self, cid: str, upto: int) -> int:
        """The other side applied everything up to `upto`: prune it. Returns rows pruned."""
        with self._transaction(durable=False) as db:
            return db.execute("DELETE FROM outbox WHERE cid = ? AND seq <= ?", (cid, upto)).rowcount

    # -- inbox ----------------------------------------------------------------

    def last_applied(self, cid: str) -> int:
        return self._read_int("SELECT last_applied FROM streams WHERE cid = ?", cid)

    def applied(self) -> dict[str, int]:
        """Every stream's last applied seq, in one read (the sync engine's "what is new")."""
        with self._lock:
            rows = self._db.execute("SELECT cid, last_applied FROM streams").fetchall()
        return {cid: int(seq) for cid, seq in rows}

    def apply(
        self,
        cid: str,
        messages: Sequence[Message],
        effect: Callable[[Message], None] | None = None,
        *,
        epoch: int | None = None,  # a file's leases are its home's flock: nothing to check
    ) -> int:
        """Apply a batch once, in order, in one transaction; returns the new cursor.

        Messages at or below the cursor were applied before and are skipped.
        `effect` runs for each new message inside the transaction (an error
        rolls the whole batch back), so it must be idempotent.
        """
        cursor = self._apply(cid, messages, effect)
        if cursor is not None:
            with self._lock:
                appliers = list(self._appliers)
            for listener in appliers:
                listener(cid)
            return cursor
        return self.last_applied(cid)

    def _apply(
        self,
        cid: str,
        messages: Sequence[Message],
        effect: Callable[[Message], None] | None,
    ) -> int | None:
        """`apply`'s transaction; None when nothing in the batch was new."""
        with self._transaction() as db:
            self._stream(cid)
            (cursor,) = db.execute(
                "SELECT last_applied FROM streams WHERE cid = ?", (cid,)
            ).fetchone()
            fresh = sorted((m for m in messages if m.seq > cursor), key=lambda m: m.seq)
            if not fresh:
                return None
            expected = cursor + 1
            for message in fresh:
                if message.seq != expected:
                    raise Gap(cursor)
                expected += 1
            now = time.time()
            for message in fresh:
                if effect is not None:
                    effect(message)
            _insert_rows(
                db,
                "inbox (cid, seq, kind, body, applied_at)",
                [(cid, m.seq, m.kind, m.body_json, now) for m in fresh],
            )
            cursor = fresh[-1].seq
            db.execute("UPDATE streams SET last_applied = ? WHERE cid = ?", (cursor, cid))
            return int(cursor)

    def inbox(self, cid: str, after: int = 0, limit: int = 1000) -> list[Message]:
        return self._read_messages("inbox", cid, after, limit)

    # -- leases: a file belongs to one home, whose flock (locks/<cid>.lock) fences ----

    def take_lease(self, cid: str, holder: str) -> int | None:
        return 0

    def renew_lease(self, cid: str, holder: str, epoch: int) -> bool:
        return True

    def drop_lease(self, cid: str, holder: str, epoch: int) -> None:
        return None

    def claim_handshake(self, cid: str, holder: str, digest: bytes) -> bool:
        return True  # one node per home: the home lock decides which handshake wins

    def first_use(self, signature: bytes, expires: float) -> bool:
        return True  # one node per home: its ReplayCache has seen everything

    def prune_inbox(self, cid: str, upto: int, kinds: Iterable[str]) -> int:
        """Drop applied messages of these kinds up to `upto` (the layer above is done with
        them); the cursor is untouched. Returns how many went.

        Not durable (as `ack`): a pruned row that comes back after a power cut is only
        pruned again."""
        wanted = sorted(set(kinds))
        if not wanted:
            return 0
        marks = ",".join("?" * len(wanted))
        with self._transaction(durable=False) as db:
            return db.execute(
                f"DELETE FROM inbox WHERE cid = ? AND seq <= ? AND kind IN ({marks})",
                (cid, upto, *wanted),
            ).rowcount

    # -- contact --------------------------------------------------------------

    def record_ok(self, cid: str, when: float | None = None) -> None:
        with self._transaction(durable=False) as db:
            self._stream(cid)
            db.execute(
                "UPDATE streams SET last_ok = ?, last_error = NULL, error_since = NULL "
                "WHERE cid = ?",
                (time.time() if when is None else when, cid),
            )

    def record_error(self, cid: str, error: str, when: float | None = None) -> None:
        with self._transaction(durable=False) as db:
            self._stream(cid)
            db.execute(
                "UPDATE streams SET last_error = ?, error_since = COALESCE(error_since, ?) "
                "WHERE cid = ?",
                (error, time.time() if when is None else when, cid),
            )

    def contact(self, cid: str) -> Contact:
        with self._lock:
            row = self._db.execute(
                "SELECT last_ok, last_error, error_since FROM streams WHERE cid = ?", (cid,)
            ).fetchone()
        return Contact(*row) if row else Contact()

    # -- housekeeping ---------------------------------------------------------

    def forget(self, cid: str) -> None:
        """Drop every trace of a deleted connection."""
        with self._transaction() as db:
            for table in ("outbox", "inbox", "streams"):
                db.execute(f"DELETE FROM {table} WHERE cid = ?", (cid,))

    def check(self) -> None:
        """SQLite's quick check of every page (a store that opens may still have broken
        ones: "database disk image is malformed"); `StateError` when it finds any."""
        try:
            with self._lock:
                row = self._db.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.DatabaseError as error:
            problem = str(error)
        else:
            if row is not None and row[0] == "ok":
                return
            problem = str(row[0]) if row else "no answer"
        raise StateError(
            f"{self.path}: the message store is damaged ({problem}); nothing was changed; "
            "move it aside and restart (undelivered messages in it would be lost)"
        )

    def data_version(self) -> int:
        """Changes when another connection (another process) commits: cheap to poll."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _read_messages(
        self, table: Literal["outbox", "inbox"], cid: str, after: int, limit: int
    ) -> list[Message]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, kind, body FROM {table} "
                "WHERE cid = ? AND seq > ? ORDER BY seq LIMIT ?",
                (cid, after, limit),
            ).fetchall()
        return [Message(*row) for row in rows]

    def _read_int(self, sql: str, cid: str) -> int:
        with self._lock:
            row = self._db.execute(sql, (cid,)).fetchone()
        return int(row[0]) if row else 0


class _Transaction:
    """`BEGIN IMMEDIATE` … `COMMIT` under the thread lock; rollback on any error.

    `durable=False` commits without waiting for the disk (synchronous=NORMAL
    for this one transaction). Only for writes whose loss in a power cut
    harms nothing: pruning acknowledged messages (the receiver's durable
    cursor keeps them from being sent again; they are pruned at the next
    ack) and the advisory last-contact times. In WAL mode the next durable
    commit syncs the log with these frames in it, in order.
    """

    def __init__(self, state: SqliteStreams, *, durable: bool = True) -> None:
        self._state = state
        self._durable = durable

    def __enter__(self) -> sqlite3.Connection:
        self._state._lock.acquire()
        try:
            if not self._durable:
                self._state._db.execute("PRAGMA synchronous=NORMAL")
            self._state._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._restore()
            self._state._lock.release()
            raise
        return self._state._db

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            self._state._db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            try:
                self._restore()
            finally:
                self._state._lock.release()

    def _restore(self) -> None:
        if not self._durable:
            self._state._db.execute("PRAGMA synchronous=FULL")
