"""The embedded tracker: tickets in `tracker.sqlite3`, attachment bytes in `attachments/`.

What an instance fronts unless configured otherwise, so everything works on
a fresh machine: the console's Tickets tab and `exalate-tui tickets` write
here, the sync engine reads and writes here.

- Keys are `<PREFIX>-<n>`: PREFIX is the instance's short name upper-cased,
  keeping only A-Z and 0-9 ("T" when nothing is left or there is no
  instance yet), fixed when the file is created and stored in it.
- Every write takes the next value of one change counter (`rev`) and stamps
  it on the ticket it changed, so `changed(watermark)` is one indexed range
  read: each changed key once, oldest change first. A write that changes
  nothing (an update to the values already there, a comment or attachment
  already present by origin or hash) takes no rev and leaves `updated` alone.
- Durable: WAL, `synchronous=FULL`, the file 0600 before SQLite opens it
  (its -wal and -shm files take that mode), the schema's version in
  `PRAGMA user_version` (a newer one is refused). Attachment bytes are
  written atomically (temp file, fsync, rename) under their SHA-256 before
  the row naming them commits.
- Watching: each commit wakes this process's watchers at once and rings the
  file's doorbell (`transport/doorbell.py`); the first watcher in any process
  listens there, so it hears other processes' commits at once too. When
  another process listens already, a watcher polls `PRAGMA data_version`
  every `POLL` seconds instead.

SQLite work runs in a thread (`asyncio.to_thread`) under one lock: a
durable commit waits for the disk, which the console's event loop must not.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import os
import re
import secrets
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from exalate_tui.home.store import create_private
from exalate_tui.trackers.adapter import (
    EDITABLE,
    PRIORITIES,
    STATUSES,
    TYPES,
    Attachment,
    Changed,
    Comment,
    NewComment,
    Query,
    Ticket,
    TicketNotFound,
    TicketRefused,
    TrackerError,
    TrackerUnavailable,
)
from exalate_tui.trackers.query import DATETIME, INT, LABELS, STR, EncodedQuery, Kind, parse
from exalate_tui.transport.doorbell import Bell, doorbell_address, listen

R = TypeVar("R")

# The schema's version, kept in `PRAGMA user_version`: 1 is the tables below.
SCHEMA_VERSION = 1
MAX_ATTACHMENT = 10 * 1024 * 1024  # 10 MiB
MAX_SUMMARY = 1000
MAX_TEXT = 1_000_000  # a description or a comment's body, in characters
MAX_NAME = 255  # an assignee, a reporter, an author, a label, an attachment's name
# How often a watcher that could not bind the doorbell looks at `data_version`.
POLL = 0.2
PRIORITY_WORDS = "1 critical, 2 high, 3 moderate, 4 low, 5 planning"

_TABLES = (
    # name: prefix (text), id (a random id of this file: watermarks of another file
    # start over), rev (the last change counter given out).
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value NOT NULL)",
    """CREATE TABLE tickets (
        n INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL, summary TEXT NOT NULL, description TEXT NOT NULL,
        status TEXT NOT NULL, priority INTEGER NOT NULL,
        assignee TEXT NOT NULL, reporter TEXT NOT NULL,
        labels TEXT NOT NULL,                      -- a JSON array of text
        created TEXT NOT NULL, updated TEXT NOT NULL,  -- ISO 8601, UTC, microseconds
        correlation TEXT UNIQUE, rev INTEGER NOT NULL
    )""",
    "CREATE INDEX tickets_by_rev ON tickets (rev)",
    """CREATE TABLE comments (
        id INTEGER PRIMARY KEY, ticket INTEGER NOT NULL REFERENCES tickets (n),
        author TEXT NOT NULL, body TEXT NOT NULL, internal INTEGER NOT NULL,
        created TEXT NOT NULL, origin TEXT, UNIQUE (ticket, origin)
    )""",
    """CREATE TABLE attachments (
        ticket INTEGER NOT NULL REFERENCES tickets (n), sha256 TEXT NOT NULL,
        name TEXT NOT NULL, size INTEGER NOT NULL, created TEXT NOT NULL, origin TEXT,
        PRIMARY KEY (ticket, sha256), UNIQUE (ticket, origin)
    )""",
)

# The fields a filter or a trigger names (`check_query`), with what each holds.
FIELDS: Mapping[str, Kind] = {
    "key": STR,
    "type": STR.with_choices(TYPES),
    "summary": STR,
    "description": STR,
    "status": STR.with_choices(STATUSES),
    "priority": INT.with_choices(PRIORITIES),
    "assignee": STR,
    "reporter": STR,
    "labels": LABELS,
    "created": DATETIME,
    "updated": DATETIME,
}
_TICKET_COLUMNS = (
    "n, key, type, summary, description, status, priority, assignee, reporter, labels, "
    "created, updated, correlation"
)


def prefix_for(short_name: str | None) -> str:
    """The key prefix of a tracker created for `short_name`: "snow" → "SNOW", "jsm-2" → "JSM2"."""
    return re.sub(r"[^A-Z0-9]", "", (short_name or "").upper()) or "T"


def ticket_values(ticket: Ticket) -> dict[str, Any]:
    """A ticket as the field values a query matches (`FIELDS`)."""
    return {name: getattr(ticket, name) for name in FIELDS}


@dataclass(frozen=True)
class TicketQuery:
    """A filter parsed against the embedded tracker's fields: the adapter's `Query`."""

    encoded: EncodedQuery

    @property
    def text(self) -> str:
        return self.encoded.text

    def matches(self, ticket: Ticket) -> bool:
        return self.encoded.matches(ticket_values(ticket))


def _now() -> datetime:
    return datetime.now(UTC)


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name, no passwd entry (a bare container)
        return "unknown"


# How long a write waits for another process's transaction before the tracker counts
# as unavailable (the sync engine then shows Error and retries).
BUSY_TIMEOUT = 10.0


class EmbeddedTracker:
    """One open `tracker.sqlite3`; one per process is enough (it is thread-safe)."""

    kind = "embedded"
    polls = False  # every write rings its watchers at once
    max_attachment = MAX_ATTACHMENT

    def __init__(
        self,
        path: Path,
        attachments: Path,
        *,
        short_name: str | None = None,
        user: str | None = None,
        now: Callable[[], datetime] = _now,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.path = path
        self.attachments = attachments
        # Who writes when no reporter or author is given: the instance, or the OS user.
        self.user = user or short_name or _default_user()
        self._now = now
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0600 before SQLite opens it: it creates the -wal and -shm files with its mode.
        create_private(path)
        self._db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a ticket, comment or attachment the CLI said it saved survives a power cut.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self.prefix, self._file_id = _open_schema(self._db, path, prefix_for(short_name))
        except TrackerError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise _damaged(path, error) from None
        self._lock = threading.RLock()
        self._bumped = False
        self._closed = False
        # A random token in our own rings, so our own watcher ignores them.
        self._token = secrets.token_bytes(8)
        self._bell = Bell(doorbell_address(path))
        self._watchers: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
        self._stop_hearing: Callable[[], None] | None = None

    # -- plumbing -------------------------------------------------------------

    async def _run(self, work: Callable[..., R], *args: Any) -> R:
        return await asyncio.to_thread(self._locked, work, *args)

    def _locked(self, work: Callable[..., R], *args: Any) -> R:
        with self._lock:
            if self._closed:
                raise TrackerUnavailable(f"{self.path}: the tracker was closed")
            self._bumped = False
            try:
                result = work(*args)
            except sqlite3.OperationalError as error:
                raise TrackerUnavailable(
                    f"{self.path}: cannot be used now ({error}); it is retried"
                ) from None
            except sqlite3.DatabaseError as error:
                raise _damaged(self.path, error) from None
            bumped = self._bumped
        if bumped:
            self._committed()
        return result

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back by itself (disk full)
                self._db.execute("ROLLBACK")
            raise

    def _bump(self, db: sqlite3.Connection) -> int:
        """The next change counter, inside the write transaction."""
        (rev,) = db.execute(
            "UPDATE meta SET value = value + 1 WHERE name = 'rev' RETURNING value"
        ).fetchone()
        self._bumped = True
        return int(rev)

    def _committed(self) -> None:
        self._bell.ring(self._token)
        self._wake_watchers()

    def _wake_watchers(self) -> None:
        for loop, wake in list(self._watchers):
            with contextlib.suppress(RuntimeError):  # its loop is closed or closing
                loop.call_soon_threadsafe(wake)

    # -- watching -------------------------------------------------------------

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        entry = (loop, wake)
        self._watchers.append(entry)
        if self._stop_hearing is None:
            self._stop_hearing = self._hear_others()

        def stop() -> None:
            if entry in self._watchers:
                self._watchers.remove(entry)
            if not self._watchers and self._stop_hearing is not None:
                self._stop_hearing()
                self._stop_hearing = None

        return stop

    def _hear_others(self) -> Callable[[], None]:
        """Listen at the doorbell, or else poll `data_version`; returns what stops it."""

        def heard(payload: bytes) -> None:
            if payload != self._token:
                self._wake_watchers()

        stop_listening = listen(self._bell.address, heard)
        if stop_listening is not None:
            return stop_listening
        task = asyncio.get_running_loop().create_task(self._poll(), name="tracker:data_version")

        def stop_polling() -> None:
            task.cancel()

        return stop_polling

    async def _poll(self) -> None:
        last: int | None = None
        while not self._closed:
            current: int | None
            try:
                current = await self._run(self._data_version)
            except TrackerError:
                current = last  # busy for now: the next look tells
            if last is not None and current != last:
                self._wake_watchers()
            last = current
            await asyncio.sleep(POLL)

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # -- reading --------------------------------------------------------------

    async def changed(self, watermark: str | None, limit: int = 500) -> Changed:
        return await self._run(self._changed, watermark, limit)

    def _changed(self, watermark: str | None, limit: int) -> Changed:
        after = self._after(watermark)
        rows = self._db.execute(
            "SELECT key, rev FROM tickets WHERE rev > ? ORDER BY rev LIMIT ?", (after, limit)
        ).fetchall()
        last = rows[-1][1] if rows else after
        return Changed(tuple(key for key, _ in rows), f"{self._file_id}:{last}")

    def _after(self, watermark: str | None) -> int:
        """The rev a watermark stands for; 0 (everything) for another file's or a bad one."""
        if watermark is None:
            return 0
        file_id, _, rev = watermark.partition(":")
        if file_id != self._file_id or not rev.isdigit():
            return 0
        return int(rev)

    async def get(self, key: str) -> Ticket:
        return await self._run(self._get, key)

    def _get(self, key: str) -> Ticket:
        return self._full(self._row(key))

    async def get_many(self, keys: Sequence[str]) -> list[Ticket]:
        return await self._run(self._get_many, [str(key).upper() for key in keys])

    def _get_many(self, keys: list[str]) -> list[Ticket]:
        rows = {
            row[1]: tuple(row)
            for row in self._db.execute(
                f"SELECT {_TICKET_COLUMNS} FROM tickets "
                "WHERE key IN (SELECT value FROM json_each(?))",
                (json.dumps(keys),),
            )
        }
        return self._with_children([rows[key] for key in dict.fromkeys(keys) if key in rows])

    def _row(self, key: str) -> tuple[Any, ...]:
        row = self._db.execute(
            f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE key = ?", (str(key).upper(),)
        ).fetchone()
        if row is None:
            raise TicketNotFound(
                f"no ticket {key!r} in the embedded tracker (its keys are {self.prefix}-1, "
                f"{self.prefix}-2, …); see `exalate-tui tickets`"
            )
        return tuple(row)

    def _full(self, row: tuple[Any, ...]) -> Ticket:
        """The ticket of `row` with its comments and attachments."""
        return self._with_children([row])[0]

    def _with_children(self, rows: list[tuple[Any, ...]]) -> list[Ticket]:
        if not rows:
            return []
        numbers = json.dumps([row[0] for row in rows])
        comments: dict[int, list[Comment]] = {}
        for n, cid, author, body, internal, created, origin in self._db.execute(
            "SELECT ticket, id, author, body, internal, created, origin FROM comments "
            "WHERE ticket IN (SELECT value FROM json_each(?)) ORDER BY id",
            (numbers,),
        ):
            comment = Comment(
                str(cid), author, body, bool(internal), datetime.fromisoformat(created), origin
            )
            comments.setdefault(n, []).append(comment)
        attachments: dict[int, list[Attachment]] = {}
        for n, sha, name, size, created, origin in self._db.execute(
            "SELECT ticket, sha256, name, size, created, origin FROM attachments "
            "WHERE ticket IN (SELECT value FROM json_each(?)) ORDER BY rowid",
            (numbers,),
        ):
            attachment = Attachment(sha, name, size, datetime.fromisoformat(created), origin)
            attachments.setdefault(n, []).append(attachment)
        return [
            _ticket(row, tuple(comments.get(row[0], ())), tuple(attachments.get(row[0], ())))
            for row in rows
        ]

    def check_query(self, text: str) -> Query:
        return TicketQuery(parse(text, FIELDS))

    async def search(self, query: Query | None = None, limit: int | None = None) -> list[Ticket]:
        return await self._run(self._search, query, limit)

    def _search(self, query: Query | None, limit: int | None) -> list[Ticket]:
        rows = [
            tuple(row)
            for row in self._db.execute(f"SELECT {_TICKET_COLUMNS} FROM tickets ORDER BY n")
        ]
        if isinstance(query, TicketQuery):
            # Matched and ordered on the bare rows: comments are read for the chosen only.
            shallow = {row[0]: ticket_values(_ticket(row)) for row in rows}
            rows = [row for row in rows if query.encoded.matches(shallow[row[0]])]
            rows = query.encoded.sort(rows, lambda row: shallow[row[0]])
            return self._with_children(rows[:limit])
        tickets = self._with_children(rows)
        if query is not None:
            tickets = [ticket for ticket in tickets if query.matches(ticket)]
        return tickets[:limit]

    async def find_created(self, correlation: str) -> Ticket | None:
        return await self._run(self._find_created, correlation)

    def _find_created(self, correlation: str) -> Ticket | None:
        row = self._db.execute(
            f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE correlation = ?", (correlation,)
        ).fetchone()
        return None if row is None else self._full(tuple(row))

    async def attachment_bytes(self, key: str, sha256: str) -> bytes:
        await self._run(self._attachment_row, key, sha256)
        return await asyncio.to_thread(self._read_blob, key, sha256)

    def _attachment_row(self, key: str, sha256: str) -> None:
        (n, *_) = self._row(key)
        if not self._db.execute(
            "SELECT 1 FROM attachments WHERE ticket = ? AND sha256 = ?", (n, sha256)
        ).fetchone():
            raise TicketNotFound(f"ticket {key} has no attachment with SHA-256 {sha256}")

    def _read_blob(self, key: str, sha256: str) -> bytes:
        blob = self.attachments / sha256
        try:
            data = blob.read_bytes()
        except FileNotFoundError:
            raise TrackerError(
                f"{blob}: the bytes of an attachment of {key} are missing; attach the file again"
            ) from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise TrackerError(
                f"{blob}: the bytes of an attachment of {key} are damaged (their SHA-256 "
                "differs); attach the file again"
            )
        return data

    # -- writing --------------------------------------------------------------

    async def create(
        self,
        fields: Mapping[str, Any],
        *,
        reporter: str | None = None,
        correlation: str | None = None,
        comments: Sequence[NewComment] = (),
    ) -> Ticket:
        """A new ticket with `comments`, in one transaction; with a `correlation` already
        used, that ticket, unchanged."""
        values = checked_fields(fields)
        if "summary" not in values:
            raise TicketRefused("a ticket needs a summary: give it a short line of text", "summary")
        who = _name("reporter", reporter) if reporter is not None else self.user
        notes = [self._checked_comment(c.body, c.internal, c.author, c.origin) for c in comments]
        return await self._run(self._create, values, who, correlation, notes)

    def _checked_comment(
        self, body: str, internal: bool, author: str | None, origin: str | None
    ) -> tuple[str, bool, str, str | None]:
        text = _text("body", body, MAX_TEXT)
        if not text.strip():
            raise TicketRefused("a comment needs a body: give it some text", "body")
        who = _name("author", author) if author is not None else self.user
        return text, bool(internal), who, origin

    def _create(
        self,
        values: dict[str, Any],
        reporter: str,
        correlation: str | None,
        comments: list[tuple[str, bool, str, str | None]],
    ) -> Ticket:
        with self._transaction() as db:
            if correlation is not None:
                found = self._find_created(correlation)
                if found is not None:
                    return found
            rev = self._bump(db)
            (n,) = db.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM tickets").fetchone()
            now = _stamp(self._now())
            key = f"{self.prefix}-{n}"
            db.execute(
                f"INSERT INTO tickets ({_TICKET_COLUMNS}, rev) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    n,
                    key,
                    values.get("type", "incident"),
                    values["summary"],
                    values.get("description", ""),
                    values.get("status", "new"),
                    values.get("priority", 3),
                    values.get("assignee", ""),
                    reporter,
                    json.dumps(list(values.get("labels", ()))),
                    now,
                    now,
                    correlation,
                    rev,
                ),
            )
            rows = [(n, who, text, int(note), now, origin) for text, note, who, origin in comments]
            db.executemany(
                "INSERT OR IGNORE INTO comments (ticket, author, body, internal, created, origin) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._get(key)

    async def update(self, key: str, fields: Mapping[str, Any]) -> Ticket:
        values = checked_fields(fields)
        return await self._run(self._update, key, values)

    def _update(self, key: str, values: dict[str, Any]) -> Ticket:
        with self._transaction() as db:
            row = self._row(key)
            current = _ticket(row)
            changes = {
                name: value for name, value in values.items() if getattr(current, name) != value
            }
            if not changes:
                return self._full(row)
            rev = self._bump(db)
            if "labels" in changes:
                changes["labels"] = json.dumps(list(changes["labels"]))
            assignments = ", ".join(f"{name} = ?" for name in changes)
            db.execute(
                f"UPDATE tickets SET {assignments}, updated = ?, rev = ? WHERE n = ?",
                (*changes.values(), _stamp(self._now()), rev, row[0]),
            )
            return self._get(current.key)

    async def comment(
        self,
        key: str,
        body: str,
        *,
        internal: bool = False,
        author: str | None = None,
        origin: str | None = None,
    ) -> Comment:
        checked = self._checked_comment(body, internal, author, origin)
        return await self._run(self._comment, key, *checked)

    def _comment(
        self, key: str, body: str, internal: bool, author: str, origin: str | None
    ) -> Comment:
        with self._transaction() as db:
            n = self._row(key)[0]
            if origin is not None:
                found = db.execute(
                    "SELECT id, author, body, internal, created, origin FROM comments "
                    "WHERE ticket = ? AND origin = ?",
                    (n, origin),
                ).fetchone()
                if found is not None:
                    cid, who, text, internal_, created, origin_ = found
                    return Comment(
                        str(cid),
                        who,
                        text,
                        bool(internal_),
                        datetime.fromisoformat(created),
                        origin_,
                    )
            now = self._now()
            cursor = db.execute(
                "INSERT INTO comments (ticket, author, body, internal, created, origin) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (n, author, body, int(internal), _stamp(now), origin),
            )
            self._touch(db, n, now)
            return Comment(str(cursor.lastrowid), author, body, internal, _exact(now), origin)

    def _touch(self, db: sqlite3.Connection, n: int, now: datetime) -> None:
        """A comment or an attachment changes its ticket: `updated` and the change counter."""
        rev = self._bump(db)
        db.execute("UPDATE tickets SET updated = ?, rev = ? WHERE n = ?", (_stamp(now), rev, n))

    async def attach(
        self, key: str, name: str, data: bytes, *, origin: str | None = None
    ) -> Attachment:
        shown = _name("name", name)
        if not shown.strip():
            raise TicketRefused("an attachment needs a file name", "name")
        if len(data) > MAX_ATTACHMENT:
            raise TicketRefused(
                f"attachment {shown!r} is {len(data):,} bytes; the embedded tracker takes "
                f"attachments up to 10 MiB ({MAX_ATTACHMENT:,} bytes)",
                "data",
            )
        sha256 = hashlib.sha256(data).hexdigest()
        await self._run(self._row, key)  # an unknown key writes no bytes
        await asyncio.to_thread(self._write_blob, sha256, data)
        return await self._run(self._attach, key, shown, sha256, len(data), origin)

    def _write_blob(self, sha256: str, data: bytes) -> None:
        """The bytes under their hash: temp file, fsync, rename, so a blob is whole or absent."""
        self.attachments.mkdir(mode=0o700, parents=True, exist_ok=True)
        blob = self.attachments / sha256
        if blob.exists():
            return
        fd, temp = tempfile.mkstemp(dir=self.attachments, prefix=f".{sha256[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, blob)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        directory = os.open(self.attachments, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _attach(
        self, key: str, name: str, sha256: str, size: int, origin: str | None
    ) -> Attachment:
        with self._transaction() as db:
            n = self._row(key)[0]
            found = db.execute(
                "SELECT sha256, name, size, created, origin FROM attachments "
                "WHERE ticket = ? AND (sha256 = ? OR origin = ?)",
                (n, sha256, origin),
            ).fetchone()
            if found is not None:
                sha, shown, length, created, origin_ = found
                return Attachment(sha, shown, length, datetime.fromisoformat(created), origin_)
            now = self._now()
            db.execute(
                "INSERT INTO attachments (ticket, sha256, name, size, created, origin) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (n, sha256, name, size, _stamp(now), origin),
            )
            self._touch(db, n, now)
            return Attachment(sha256, name, size, _exact(now), origin)

    @contextlib.asynccontextmanager
    async def deferred(self) -> AsyncIterator[None]:
        """Writes through this object commit with `synchronous=NORMAL` until the block
        ends, then one fsync of the WAL makes them all durable (the bulk exalate figure
        in benchmarks/README.md: one wait for the disk per batch of partner tickets, not
        one per ticket). A power cut inside the block loses only its own last commits,
        whole and in order (WAL frames are checksummed); the engine has recorded none of
        them yet, so it writes them again. Other processes' writes stay FULL."""
        await self._run(self._synchronous, "NORMAL")
        try:
            yield
        finally:
            await self._run(self._synchronous, "FULL")
            await asyncio.to_thread(self._sync_wal)

    def _synchronous(self, level: str) -> None:
        self._db.execute(f"PRAGMA synchronous={level}")

    def _sync_wal(self) -> None:
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed into the database file, which the checkpoint synced
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def close(self) -> None:
        if self._stop_hearing is not None:
            self._stop_hearing()
            self._stop_hearing = None
        self._watchers.clear()
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
        self._bell.close()


def _open_schema(db: sqlite3.Connection, path: Path, prefix: str) -> tuple[str, str]:
    """Bring a new file to `SCHEMA_VERSION`; refuse a newer one. Returns (prefix, file id)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise TrackerUnavailable(
                f"{path}: written by a newer exalate-tui (schema version {version}; this one "
                f"reads up to {SCHEMA_VERSION}): update exalate-tui on this machine"
            )
        if version == 0:
            if db.execute("SELECT 1 FROM sqlite_master").fetchone():
                raise TrackerUnavailable(
                    f"{path}: holds tables but is not an embedded tracker; move it aside"
                )
            for sql in _TABLES:
                db.execute(sql)
            db.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)",
                [("prefix", prefix), ("id", secrets.token_hex(8)), ("rev", 0)],
            )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return str(meta["prefix"]), str(meta["id"])


def _damaged(path: Path, error: Exception) -> TrackerUnavailable:
    return TrackerUnavailable(
        f"{path}: cannot be used as the embedded tracker ({error}); move it aside to start "
        "an empty one (its tickets would be lost), or put back a copy from a backup"
    )


def _ticket(
    row: tuple[Any, ...],
    comments: tuple[Comment, ...] = (),
    attachments: tuple[Attachment, ...] = (),
) -> Ticket:
    (_, key, type_, summary, description, status, priority, assignee, reporter, labels) = row[:10]
    created, updated, correlation = row[10:13]
    return Ticket(
        key=key,
        type=type_,
        summary=summary,
        description=description,
        status=status,
        priority=priority,
        assignee=assignee,
        reporter=reporter,
        labels=tuple(json.loads(labels)),
        created=datetime.fromisoformat(created),
        updated=datetime.fromisoformat(updated),
        comments=comments,
        attachments=attachments,
        correlation=correlation,
    )


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _exact(when: datetime) -> datetime:
    """`when` as it reads back from the file (UTC, whole microseconds)."""
    return datetime.fromisoformat(_stamp(when))


def checked_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` validated and normalised; `TicketRefused` names the first bad one."""
    unknown = [name for name in fields if name not in EDITABLE]
    if unknown:
        raise TicketRefused(
            f"{unknown[0]!r} is not a field a ticket's writer sets; the fields are "
            f"{', '.join(EDITABLE)}",
            unknown[0],
        )
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "type":
            values[name] = _choice(name, value, TYPES)
        elif name == "status":
            values[name] = _choice(name, value, STATUSES)
        elif name == "priority":
            if isinstance(value, bool) or not isinstance(value, int) or value not in PRIORITIES:
                raise TicketRefused(
                    f"priority {value!r} is not a priority; give 1 to 5 ({PRIORITY_WORDS})",
                    name,
                )
            values[name] = value
        elif name == "summary":
            text = _text(name, value, MAX_SUMMARY)
            if not text.strip():
                raise TicketRefused(
                    "a ticket needs a summary: give it a short line of text", "summary"
                )
            values[name] = text
        elif name == "description":
            values[name] = _text(name, value, MAX_TEXT)
        elif name == "assignee":
            values[name] = _name(name, value)
        else:
            values[name] = _labels(value)
    return values


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise TicketRefused(
            f"{name} {value!r} is not one this tracker has; give one of {', '.join(allowed)}", name
        )
    return str(value)


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise TicketRefused(f"{name} must be text, not {type(value).__name__}", name)
    if len(value) > limit:
        raise TicketRefused(
            f"{name} is {len(value):,} characters long; the limit is {limit:,}", name
        )
    return value


def _name(name: str, value: Any) -> str:
    return _text(name, value, MAX_NAME)


def _labels(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TicketRefused("labels must be a list of labels", "labels")
    labels: list[str] = []
    for label in value:
        text = _name("labels", label).strip()
        if not text or "," in text or not text.isprintable():
            raise TicketRefused(
                f"label {label!r} is not one: a label is a word or a few, "
                "with no comma and no control character",
                "labels",
            )
        if text not in labels:
            labels.append(text)
    return tuple(labels)
