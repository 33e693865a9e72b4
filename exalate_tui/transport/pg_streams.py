"""Durable per-connection message streams in PostgreSQL: `PgStreams`, for several workers.

The same promises as `SqliteStreams` (streams.py), kept by PostgreSQL for any
number of processes on any number of hosts sharing one database:

- **Sequence numbers without gaps, in commit order.** A stream's `last_seq`
  is a counter row (`exalate.streams`) bumped by the statement that appends
  the messages: the row stays locked until that commit, so two workers
  appending to one stream take turns, and a rolled-back append gives its
  numbers back. Not a sequence: sequences skip numbers on rollback and hand
  them out in start order, not commit order, so a reader could see 8 before
  7 and take 7 for lost.
- **Exactly-once apply.** `apply` locks the stream's row, skips what is at
  or below its cursor, runs `effect` per new message, inserts them and moves
  the cursor, all in one transaction.
- **Batches per round trip.** An append is one statement (`unnest` of the
  batch) in autocommit: one round trip for any number of messages.
- **A versioned schema.** `exalate.schema_version` says which migration
  (`MIGRATIONS`) the schema is at; opening brings it there under an advisory
  lock (workers starting together migrate once) and refuses a newer one.

Wake-ups across workers (`pg_wakeups.Hints`): after an append commits, the
cid is handed to a debounced NOTIFY (never one per message, never inside the
append's transaction), and one listener connection per worker, outside the
pool, hears the other workers' cids and calls the `on_hint` listeners with
them. A hint is only a hint: `data_version` also moves each `POLL_EVERY`
seconds, and on every call while the listener is down, so a watcher looks
again by itself.

psycopg 3's synchronous API with a psycopg_pool pool: the streams are called
from worker threads (`asyncio.to_thread`), as `SqliteStreams` is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from exalate_tui.domain.live import Contact
from exalate_tui.domain.models import shown_database
from exalate_tui.transport.pg_wakeups import Hints, check_listening
from exalate_tui.transport.streams import (
    Gap,
    LeaseLost,
    Message,
    StateError,
    compact,
    quoted,
)

SCHEMA = "exalate"

# Each migration brings the schema from the version before it to its own number, in one
# transaction. Never edit one that shipped: add the next.
MIGRATIONS: dict[int, str] = {
    1: f"""
    CREATE TABLE {SCHEMA}.streams (
        cid text PRIMARY KEY,
        last_seq bigint NOT NULL DEFAULT 0,      -- highest seq given to an outgoing message
        last_applied bigint NOT NULL DEFAULT 0,  -- highest seq applied from the other side
        last_ok double precision, last_error text, error_since double precision
    );
    CREATE TABLE {SCHEMA}.outbox (
        cid text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, body text NOT NULL,
        created double precision NOT NULL, PRIMARY KEY (cid, seq)
    );
    CREATE TABLE {SCHEMA}.inbox (
        cid text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, body text NOT NULL,
        applied_at double precision NOT NULL, PRIMARY KEY (cid, seq)
    );
    """,
    # Who makes a connection's requests (its poller): a lease with a fencing epoch.
    2: f"""
    CREATE TABLE {SCHEMA}.leases (
        cid text PRIMARY KEY, holder text NOT NULL,
        epoch bigint NOT NULL,              -- bumped by every new holder, never reset
        expires double precision NOT NULL   -- the database's clock, Unix seconds
    );
    """,
    # Signatures accepted by any worker, so a replay is refused whichever one it reaches.
    # UNLOGGED: no WAL, so an insert's commit waits for no disk (lost in a crash of the
    # server: then a replay within the clock window is refused only by the worker that
    # saw the original).
    3: f"""
    CREATE UNLOGGED TABLE {SCHEMA}.signatures (
        sig bytea PRIMARY KEY,
        expires double precision NOT NULL   -- its ts + the clock window, Unix seconds
    );
    CREATE INDEX signatures_expires ON {SCHEMA}.signatures (expires);
    """,
    # Which worker burnt a connection's invitation: a code is accepted once across all.
    4: f"""
    CREATE TABLE {SCHEMA}.handshakes (
        cid text PRIMARY KEY,
        holder text NOT NULL,    -- the worker (host and home) that answered it
        digest bytea NOT NULL,   -- of the offer it answered: the same one may ask again
        at double precision NOT NULL
    );
    """,
    # The sync engine's tables (sync/pg_store.py: `PgSyncStore`), as `state.sqlite3`
    # holds them (sync/store.py), so the one engine across the workers finds its links,
    # cursors and errors whichever worker it moves to.
    5: f"""
    CREATE TABLE {SCHEMA}.sync_links (
        cid text NOT NULL, local_key text NOT NULL, remote_key text,
        active boolean NOT NULL DEFAULT true,
        origin text NOT NULL,
        restart boolean NOT NULL DEFAULT false,
        due boolean NOT NULL DEFAULT false,
        out_version bigint NOT NULL DEFAULT 0, out_doc text,
        in_version bigint NOT NULL DEFAULT 0, in_doc text,
        created double precision NOT NULL, last_synced double precision,
        PRIMARY KEY (cid, local_key)
    );
    CREATE UNIQUE INDEX sync_links_remote ON {SCHEMA}.sync_links (cid, remote_key);
    CREATE INDEX sync_links_due ON {SCHEMA}.sync_links (cid, created)
        WHERE active AND (out_version = 0 OR restart OR due);
    CREATE TABLE {SCHEMA}.sync_sent (
        cid text NOT NULL, local_key text NOT NULL, version bigint NOT NULL, doc text NOT NULL,
        PRIMARY KEY (cid, local_key, version)
    );
    CREATE TABLE {SCHEMA}.sync_cursors (cid text PRIMARY KEY, seq bigint NOT NULL);
    CREATE TABLE {SCHEMA}.sync_meta (name text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE {SCHEMA}.sync_stash (
        cid text NOT NULL, remote_key text NOT NULL, sha256 text NOT NULL,
        name text NOT NULL, data bytea NOT NULL, PRIMARY KEY (cid, remote_key, sha256)
    );
    CREATE TABLE {SCHEMA}.sync_errors (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        cid text NOT NULL, direction text NOT NULL,
        local_key text, remote_key text, seq bigint,
        message text NOT NULL, first_at double precision NOT NULL,
        last_at double precision NOT NULL,
        attempts integer NOT NULL DEFAULT 1, holds boolean NOT NULL DEFAULT true
    );
    CREATE INDEX sync_errors_ticket ON {SCHEMA}.sync_errors (cid, direction, local_key);
    CREATE TABLE {SCHEMA}.sync_history (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        local_key text NOT NULL, cid text NOT NULL, remote_key text,
        at double precision NOT NULL, version bigint, rules text NOT NULL,
        changes text NOT NULL, note text NOT NULL DEFAULT ''
    );
    CREATE INDEX sync_history_key ON {SCHEMA}.sync_history (local_key, id);
    CREATE TABLE {SCHEMA}.sync_requests (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        action text NOT NULL, cid text, key text, arg text, at double precision NOT NULL
    );
    """,
    # The connections and their tombstones (pg_connections.py): a document without the
    # secrets, the secrets AES-GCM-encrypted under a key kept outside the database.
    6: f"""
    CREATE TABLE {SCHEMA}.connections (
        id text PRIMARY KEY,
        name_key text NOT NULL UNIQUE,  -- the name case folded: taken once across workers
        document jsonb NOT NULL,        -- the connection without `token` and `secret`
        secrets bytea NOT NULL,         -- nonce || AES-GCM of them, the id authenticated
        version bigint NOT NULL         -- connection_store.changes of its last write
    );
    CREATE TABLE {SCHEMA}.tombstones (
        id text PRIMARY KEY,
        document jsonb NOT NULL, secrets bytea NOT NULL,
        buried double precision NOT NULL   -- when it was deleted, Unix seconds
    );
    CREATE TABLE {SCHEMA}.connection_store (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        changes bigint NOT NULL DEFAULT 0,  -- bumped by every write of the two above
        key_check bytea                     -- HMAC of the key: another key is refused
    );
    INSERT INTO {SCHEMA}.connection_store DEFAULT VALUES;
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)
# Forgotten signatures are swept once per this many first uses.
SWEEP_EVERY = 1000

# How long a lease runs unless renewed (every third of it): a worker that dies hands its
# connections on within this, plus the others' next look (the supervisor's rescan).
LEASE_TTL = 5.0
_NOW = "extract(epoch from clock_timestamp())"

# Any 64-bit number of our own: migrations of one database take turns on it.
_MIGRATION_LOCK = 0x6578616C617465  # "exalate"

# How long opening waits for the database before saying it cannot be reached.
CONNECT_TIMEOUT = 10.0
# The pool: the streams are used from the default executor's threads (and the loop).
POOL_MAX = 8


# From this many messages on, an append or an apply sends its rows with COPY (~4× the
# rate of one INSERT of the batch's arrays: benchmarks/postgres.py, throughput); fewer
# go in one statement, one round trip.
COPY_FROM = 32


def _copy(db: psycopg.Connection[Any], into: str, rows: Iterable[tuple[Any, ...]]) -> None:
    with db.cursor().copy(f"COPY {SCHEMA}.{into} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _version(db: psycopg.Connection[Any]) -> int:
    """The schema's version; 0 for a database that has none of our tables yet."""
    row = db.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.schema_version",)).fetchone()
    if not row or not row[0]:
        return 0
    found = db.execute(f"SELECT version FROM {SCHEMA}.schema_version").fetchone()
    return int(found[0]) if found else 0


def migrate_schema(db: psycopg.Connection[Any], where: str) -> tuple[int, int]:
    """Bring the schema to `SCHEMA_VERSION`, under the advisory lock; (before, after).

    `db` is in autocommit; the migrations run in one transaction. A schema a
    newer exalate-tui wrote is refused and left alone."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        before = _version(db)
        if before > SCHEMA_VERSION:
            raise StateError(
                f"{where}: written by a newer exalate-tui (schema version {before}; this one "
                f"reads up to {SCHEMA_VERSION}): update exalate-tui on this machine"
            )
        if before < SCHEMA_VERSION:
            db.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (version integer NOT NULL)"
            )
            for number in range(before + 1, SCHEMA_VERSION + 1):
                db.execute(MIGRATIONS[number])
            db.execute(f"DELETE FROM {SCHEMA}.schema_version")
            db.execute(
                f"INSERT INTO {SCHEMA}.schema_version (version) VALUES (%s)", (SCHEMA_VERSION,)
            )
    return before, SCHEMA_VERSION


def migrate_url(url: str) -> tuple[int, int]:
    """`migrate_schema` on a connection of its own (`exalate-tui db migrate`)."""
    where = shown_database(url)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)) as db:
            return migrate_schema(db, where)
    except psycopg.OperationalError as error:
        raise unreachable(where, error) from None
    except psycopg.Error as error:
        raise refused(where, error) from None


def connection_options(name: str, *, pooled: bool) -> dict[str, Any]:
    """The pool's connection options. `pooled`: the URL goes through a pooler in transaction
    mode (PgBouncer; the home set a listen URL of its own), where the next statement may run
    on a server connection that never saw a statement prepared: none is. Direct, psycopg
    prepares a statement from its fifth use on (an enqueue ~100 µs instead of ~200 µs)."""
    options: dict[str, Any] = {"autocommit": True, "application_name": name}
    if pooled:
        options["prepare_threshold"] = None
    return options


def refused(where: str, error: BaseException) -> StateError:
    """The database answered but refused the schema's statements (rights, a clash)."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return StateError(
        f"{where}: the schema `{SCHEMA}` cannot be read or made there ({reason}); the "
        f"URL's user needs the right to create the schema (CREATE on the database) or to "
        f"use `{SCHEMA}` once made"
    )


@contextmanager
def checkout(pool: ConnectionPool, where: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of `pool`; a database that went away is a `StateError` naming `where`."""
    try:
        with pool.connection() as db:
            yield db
    except (PoolTimeout, psycopg.OperationalError) as error:
        raise unreachable(where, error) from None


def open_pool(
    url: str, where: str, *, name: str, max_size: int, options: dict[str, Any]
) -> ConnectionPool:
    """An open pool on `url` (the streams', the connections' and the sync tables' each
    have one); a database out of reach is a `StateError` naming `where` at once: one
    connection is made first, as the pool alone would only time out."""
    try:
        psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT)).close()
    except psycopg.Error as error:
        raise unreachable(where, error) from None
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs=options,
        # A connection the server dropped (a restart) is found and replaced on checkout.
        check=ConnectionPool.check_connection,
        open=False,
        name=name,
        timeout=CONNECT_TIMEOUT,
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT)
    except PoolTimeout as error:
        pool.close()
        raise unreachable(where, error) from None
    return pool


def unreachable(where: str, error: BaseException) -> StateError:
    """The error for a database that cannot be reached, naming what to check."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return StateError(
        f"{where}: cannot be reached ({reason}); check that PostgreSQL runs there and the "
        "URL's host, port, user, password and database (`exalate-tui db check`)"
    )


class PgStreams:
    """One worker's handle on the streams in a PostgreSQL database; thread-safe.

    The PostgreSQL implementation of `streams.Streams`. `migrate=False`
    refuses a schema that is not at `SCHEMA_VERSION` instead of migrating it
    (`exalate-tui db check`); `hints=False` runs no listener (a short-lived
    CLI command: it still notifies the others of its enqueues); `listen_url`,
    where the listener connects instead of `url` (PostgreSQL itself, when
    `url` goes through PgBouncer in transaction mode: `check_listening`; then
    no statement is prepared, `connection_options`).
    """

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        hints: bool = True,
        lease_ttl: float = LEASE_TTL,
        listen_url: str | None = None,
    ) -> None:
        self.url = url
        self.lease_ttl = lease_ttl
        self._where = shown_database(url)
        self._listeners: list[Callable[[str], None]] = []
        self._appliers: list[Callable[[str], None]] = []
        self._hinters: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._uses = 0
        # One connection first, so a database that cannot be reached says why at once
        # (the pool would only time out).
        self._pool = open_pool(
            url,
            self._where,
            name="exalate-tui",
            max_size=POOL_MAX,
            options=connection_options("exalate-tui", pooled=listen_url not in (None, url)),
        )
        try:
            with self._pool.connection() as db:
                if migrate:
                    migrate_schema(db, self._where)
                else:
                    found = _version(db)
                    if found != SCHEMA_VERSION:
                        raise StateError(
                            f"{self._where}: the schema is at version {found}, this exalate-tui "
                            f"needs {SCHEMA_VERSION}: run `exalate-tui db migrate`"
                            if found < SCHEMA_VERSION
                            else f"{self._where}: written by a newer exalate-tui (schema "
                            f"version {found}; this one reads up to {SCHEMA_VERSION}): "
                            "update exalate-tui on this machine"
                        )
        except psycopg.OperationalError as error:
            self._pool.close()
            raise unreachable(self._where, error) from None
        except psycopg.Error as error:
            self._pool.close()
            raise refused(self._where, error) from None
        except BaseException:
            self._pool.close()
            raise
        # The listener straight to PostgreSQL (`listen_url`) when a pooler stands before it.
        listen_to = listen_url or url
        if hints:
            try:
                check_listening(listen_to, url)
            except BaseException:
                self._pool.close()
                raise
        self.hints = Hints(listen_to, self._heard, self._notify, listen=hints)

    @property
    def where(self) -> str:
        return self._where

    def close(self) -> None:
        self.hints.close(self._notify)
        self._pool.close()

    def _db(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return checkout(self._pool, self._where)

    # -- listeners ------------------------------------------------------------------

    def on_enqueue(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(cid)` after each enqueue through this object commits."""
        return self._add(self._listeners, listener)

    def on_hint(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(cid)` when another worker says it enqueued for `cid`
        (`pg_wakeups.Hints`, in the listener's thread)."""
        return self._add(self._hinters, listener)

    def on_apply(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(cid)` after a batch with new messages is applied here."""
        return self._add(self._appliers, listener)

    def _add(
        self, into: list[Callable[[str], None]], listener: Callable[[str], None]
    ) -> Callable[[], None]:
        with self._lock:
            into.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in into:
                    into.remove(listener)

        return remove

    def _call(self, into: list[Callable[[str], None]], cids: Iterable[str]) -> None:
        with self._lock:
            listeners = list(into)
        for cid in cids:
            for listener in listeners:
                listener(cid)

    def _heard(self, cids: Iterable[str]) -> None:
        """Another worker enqueued for these cids (a hint from `Hints`)."""
        self._call(self._hinters, cids)

    def _notify(self, channel: str, payloads: Sequence[str]) -> None:
        """Send the hints `Hints` gathered: one statement, however many payloads."""
        with self._db() as db:
            db.execute(
                "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (channel, list(payloads))
            )

    def _enqueued(self, cids: Sequence[str]) -> None:
        self.hints.tell(cids)
        self._call(self._listeners, cids)

    # -- outbox ---------------------------------------------------------------------

    def enqueue(self, cid: str, kind: str, body: Any = None) -> int:
        return self.enqueue_many(cid, [(kind, body)])[0]

    def enqueue_many(self, cid: str, items: Iterable[tuple[str, Any]]) -> list[int]:
        """Append messages to the outbox in one statement (one transaction); their seqs."""
        kinds, bodies = [], []
        for kind, body in items:
            kinds.append(kind)
            bodies.append(compact(body))
        if not kinds:
            return []
        count, now = len(kinds), time.time()
        with self._db() as db:
            if count >= COPY_FROM:
                with db.transaction():
                    # The counter row is bumped first and stays locked until this commits.
                    row = db.execute(
                        f"""INSERT INTO {SCHEMA}.streams AS s (cid, last_seq) VALUES (%s, %s)
                        ON CONFLICT (cid) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq
                        RETURNING last_seq""",
                        (cid, count),
                    ).fetchone()
                    assert row is not None
                    first = int(row[0]) - count + 1
                    _copy(
                        db,
                        "outbox (cid, seq, kind, body, created)",
                        ((cid, first + n, kinds[n], bodies[n], now) for n in range(count)),
                    )
                seqs = list(range(first, first + count))
                self._enqueued([cid])
                return seqs
            # A few: one statement, one round trip (the counter row locked to its commit).
            rows = db.execute(
                f"""WITH counter AS (
                    INSERT INTO {SCHEMA}.streams AS s (cid, last_seq) VALUES (%(cid)s, %(n)s)
                    ON CONFLICT (cid) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq
                    RETURNING last_seq
                )
                INSERT INTO {SCHEMA}.outbox (cid, seq, kind, body, created)
                SELECT %(cid)s, counter.last_seq - %(n)s + m.n, m.kind, m.body, %(now)s
                FROM counter, unnest(%(kinds)s::text[], %(bodies)s::text[])
                    WITH ORDINALITY AS m(kind, body, n)
                RETURNING seq""",
                {"cid": cid, "n": count, "now": now, "kinds": kinds, "bodies": bodies},
            ).fetchall()
        seqs = sorted(int(seq) for (seq,) in rows)
        self._enqueued([cid])
        return seqs

    def broadcast(self, cids: Sequence[str], kind: str, body: Any = None) -> dict[str, int]:
        """The same message to each connection in `cids`, in one transaction; their seqs."""
        if not cids:
            return {}
        text = compact(body)
        # One order for every writer, so two broadcasts never wait on each other's rows.
        ordered = sorted(set(cids))
        with self._db() as db:
            rows = db.execute(
                f"""WITH counter AS (
                    INSERT INTO {SCHEMA}.streams AS s (cid, last_seq)
                    SELECT c, 1 FROM unnest(%(cids)s::text[]) AS c ORDER BY c
                    ON CONFLICT (cid) DO UPDATE SET last_seq = s.last_seq + 1
                    RETURNING cid, last_seq
                )
                INSERT INTO {SCHEMA}.outbox (cid, seq, kind, body, created)
                SELECT cid, last_seq, %(kind)s, %(body)s, %(now)s FROM counter
                RETURNING cid, seq""",
                {"cids": ordered, "kind": kind, "body": text, "now": time.time()},
            ).fetchall()
        seqs = {str(cid): int(seq) for cid, seq in rows}
        self._enqueued(list(cids))
        return {cid: seqs[cid] for cid in cids}

    def pending(self, cid: str, after: int = 0, limit: int = 500) -> list[Message]:
        return self._read_messages("outbox", cid, after, limit)

    def pending_wire(self, cid: str, after: int = 0, limit: int = 500) -> list[str]:
        with self._db() as db:
            rows = db.execute(
                f"SELECT seq, kind, body FROM {SCHEMA}.outbox "
                "WHERE cid = %s AND seq > %s ORDER BY seq LIMIT %s",
                (cid, after, limit),
            ).fetchall()
        return [f'{{"seq":{seq},"kind":{quoted(kind)},"body":{body}}}' for seq, kind, body in rows]

    def last_seq(self, cid: str) -> int:
        return self._read_int("last_seq", cid)

    def last_seqs(self, cids: Sequence[str]) -> dict[str, int]:
        """`last_seq` of each of `cids`, in one query (0 for a stream not yet made)."""
        with self._db() as db:
            rows = db.execute(
                f"SELECT cid, last_seq FROM {SCHEMA}.streams WHERE cid = ANY(%s)", (list(cids),)
            ).fetchall()
        found = {str(cid): int(seq) for cid, seq in rows}
        return {cid: found.get(cid, 0) for cid in cids}

    def backlog(self, cid: str, *, inbox_after: int | None = None) -> tuple[int, float | None]:
        with self._db() as db:
            if inbox_after is None:
                row = db.execute(
                    f"SELECT COUNT(*), MIN(created) FROM {SCHEMA}.outbox WHERE cid = %s", (cid,)
                ).fetchone()
            else:
                row = db.execute(
                    f"SELECT COUNT(*), MIN(applied_at) FROM {SCHEMA}.inbox "
                    "WHERE cid = %s AND seq > %s",
                    (cid, inbox_after),
                ).fetchone()
        assert row is not None
        return int(row[0]), row[1]

    def ack(self, cid: str, upto: int) -> int:
        with self._db() as db:
            done = db.execute(
                f"DELETE FROM {SCHEMA}.outbox WHERE cid = %s AND seq <= %s", (cid, upto)
            )
            return done.rowcount

    # -- inbox ----------------------------------------------------------------------

    def last_applied(self, cid: str) -> int:
        return self._read_int("last_applied", cid)

    def applied(self) -> dict[str, int]:
        with self._db() as db:
            rows = db.execute(f"SELECT cid, last_applied FROM {SCHEMA}.streams").fetchall()
        return {str(cid): int(seq) for cid, seq in rows}

    def apply(
        self,
        cid: str,
        messages: Sequence[Message],
        effect: Callable[[Message], None] | None = None,
        *,
        epoch: int | None = None,
    ) -> int:
        """Apply a batch once, in order, in one transaction; returns the new cursor.

        The stream's row is locked first, so a worker applying the same stream
        at the same moment waits, then sees this cursor and skips the batch.
        `effect` runs for each new message inside the transaction. With
        `epoch`, the lease's row is read FOR SHARE first: a newer holder's
        `take_lease` waits for this commit, and this one is refused
        (`LeaseLost`) once a newer one has taken it, however long it hung."""
        with self._db() as db, db.transaction():
            if epoch is not None:
                held = db.execute(
                    f"SELECT epoch FROM {SCHEMA}.leases WHERE cid = %s FOR SHARE", (cid,)
                ).fetchone()
                if held is None or int(held[0]) != epoch:
                    raise LeaseLost(
                        f"connection {cid}: another worker holds its lease now "
                        f"(epoch {held[0] if held else 'none'}, this one {epoch}); "
                        "nothing was applied"
                    )
            row = db.execute(
                f"""INSERT INTO {SCHEMA}.streams AS s (cid) VALUES (%s)
                ON CONFLICT (cid) DO UPDATE SET last_applied = s.last_applied
                RETURNING last_applied""",
                (cid,),
            ).fetchone()
            assert row is not None
            cursor = int(row[0])
            fresh = sorted((m for m in messages if m.seq > cursor), key=lambda m: m.seq)
            if not fresh:
                return cursor
            expected = cursor + 1
            for message in fresh:
                if message.seq != expected:
                    raise Gap(cursor)
                expected += 1
            for message in fresh:
                if effect is not None:
                    effect(message)
            now = time.time()
            rows = ((cid, m.seq, m.kind, m.body_json, now) for m in fresh)
            if len(fresh) >= COPY_FROM:
                _copy(db, "inbox (cid, seq, kind, body, applied_at)", rows)
            else:
                db.cursor().executemany(
                    f"INSERT INTO {SCHEMA}.inbox (cid, seq, kind, body, applied_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    list(rows),
                )
            cursor = fresh[-1].seq
            db.execute(
                f"UPDATE {SCHEMA}.streams SET last_applied = %s WHERE cid = %s", (cursor, cid)
            )
        self._call(self._appliers, [cid])
        return cursor

    def inbox(self, cid: str, after: int = 0, limit: int = 1000) -> list[Message]:
        return self._read_messages("inbox", cid, after, limit)

    # -- signatures: one memory of replays for every worker -------------------------

    workers = True  # other processes and hosts share this store

    def first_use(self, signature: bytes, expires: float) -> bool:
        """Whether no worker has accepted this signature before (then it is remembered
        until `expires`); a sweep of expired ones now and then."""
        with self._lock:
            self._uses += 1
            sweep = self._uses % SWEEP_EVERY == 0
        with self._db() as db:
            if sweep:
                db.execute(f"DELETE FROM {SCHEMA}.signatures WHERE expires < %s", (time.time(),))
            row = db.execute(
                f"INSERT INTO {SCHEMA}.signatures (sig, expires) VALUES (%s, %s) "
                "ON CONFLICT (sig) DO NOTHING RETURNING 1",
                (signature, expires),
            ).fetchone()
        return row is not None

    # -- handshakes: an invitation burns once across the workers --------------------

    def claim_handshake(self, cid: str, holder: str, digest: bytes) -> bool:
        """Whether `holder` may answer this handshake: no worker has, or it did itself
        for this very offer (a repeat after a lost answer, or a failed store)."""
        with self._db() as db:
            row = db.execute(
                f"""INSERT INTO {SCHEMA}.handshakes AS h (cid, holder, digest, at)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (cid) DO UPDATE SET at = EXCLUDED.at
                WHERE h.holder = EXCLUDED.holder AND h.digest = EXCLUDED.digest
                RETURNING 1""",
                (cid, holder, digest, time.time()),
            ).fetchone()
        return row is not None

    # -- leases ---------------------------------------------------------------------

    def take_lease(self, cid: str, holder: str) -> int | None:
        """A new epoch when the lease is free, run out, or already `holder`'s (a holder
        taking it again fences its own earlier jobs too); None while another's runs."""
        with self._db() as db:
            row = db.execute(
                f"""INSERT INTO {SCHEMA}.leases AS l (cid, holder, epoch, expires)
                VALUES (%(cid)s, %(holder)s, 1, {_NOW} + %(ttl)s)
                ON CONFLICT (cid) DO UPDATE SET
                    holder = EXCLUDED.holder, epoch = l.epoch + 1, expires = EXCLUDED.expires
                WHERE l.expires < {_NOW} OR l.holder = EXCLUDED.holder
                RETURNING epoch""",
                {"cid": cid, "holder": holder, "ttl": self.lease_ttl},
            ).fetchone()
        return None if row is None else int(row[0])

    def renew_lease(self, cid: str, holder: str, epoch: int) -> bool:
        with self._db() as db:
            row = db.execute(
                f"""UPDATE {SCHEMA}.leases SET expires = {_NOW} + %s
                WHERE cid = %s AND holder = %s AND epoch = %s RETURNING 1""",
                (self.lease_ttl, cid, holder, epoch),
            ).fetchone()
        return row is not None

    def drop_lease(self, cid: str, holder: str, epoch: int) -> None:
        with self._db() as db:
            db.execute(
                f"UPDATE {SCHEMA}.leases SET expires = 0 "
                "WHERE cid = %s AND holder = %s AND epoch = %s",
                (cid, holder, epoch),
            )

    def prune_inbox(self, cid: str, upto: int, kinds: Iterable[str]) -> int:
        wanted = sorted(set(kinds))
        if not wanted:
            return 0
        with self._db() as db:
            done = db.execute(
                f"DELETE FROM {SCHEMA}.inbox WHERE cid = %s AND seq <= %s AND kind = ANY(%s)",
                (cid, upto, wanted),
            )
            return done.rowcount

    # -- contact --------------------------------------------------------------------

    def record_ok(self, cid: str, when: float | None = None) -> None:
        with self._db() as db:
            db.execute(
                f"""INSERT INTO {SCHEMA}.streams AS s (cid, last_ok) VALUES (%s, %s)
                ON CONFLICT (cid) DO UPDATE
                SET last_ok = EXCLUDED.last_ok, last_error = NULL, error_since = NULL""",
                (cid, time.time() if when is None else when),
            )

    def record_error(self, cid: str, error: str, when: float | None = None) -> None:
        with self._db() as db:
            db.execute(
                f"""INSERT INTO {SCHEMA}.streams AS s (cid, last_error, error_since)
                VALUES (%s, %s, %s)
                ON CONFLICT (cid) DO UPDATE SET last_error = EXCLUDED.last_error,
                    error_since = COALESCE(s.error_since, EXCLUDED.error_since)""",
                (cid, error, time.time() if when is None else when),
            )

    def contact(self, cid: str) -> Contact:
        with self._db() as db:
            row = db.execute(
                f"SELECT last_ok, last_error, error_since FROM {SCHEMA}.streams WHERE cid = %s",
                (cid,),
            ).fetchone()
        return Contact(*row) if row else Contact()

    # -- housekeeping ---------------------------------------------------------------

    def forget(self, cid: str) -> None:
        with self._db() as db, db.transaction():
            for table in ("outbox", "inbox", "streams", "leases", "handshakes"):
                db.execute(f"DELETE FROM {SCHEMA}.{table} WHERE cid = %s", (cid,))

    def check(self) -> None:
        """The database answers and its schema is the one this exalate-tui reads;
        PostgreSQL checks its own pages (`StateError` otherwise)."""
        with self._db() as db:
            found = _version(db)
        if found != SCHEMA_VERSION:
            raise StateError(
                f"{self._where}: the schema is at version {found}, not {SCHEMA_VERSION}; "
                "nothing was changed: run `exalate-tui db migrate`"
            )

    def data_version(self) -> int:
        """Moves when another worker says it committed (a hint), every `POLL_EVERY` s,
        and on every call while the listener is down: cheap to poll, never stuck."""
        return self.hints.version()

    # -- reads ----------------------------------------------------------------------

    def _read_messages(
        self, table: Literal["outbox", "inbox"], cid: str, after: int, limit: int
    ) -> list[Message]:
        with self._db() as db:
            rows = db.execute(
                f"SELECT seq, kind, body FROM {SCHEMA}.{table} "
                "WHERE cid = %s AND seq > %s ORDER BY seq LIMIT %s",
                (cid, after, limit),
            ).fetchall()
        return [Message(int(seq), kind, body) for seq, kind, body in rows]

    def _read_int(self, column: Literal["last_seq", "last_applied"], cid: str) -> int:
        with self._db() as db:
            row = db.execute(
                f"SELECT {column} FROM {SCHEMA}.streams WHERE cid = %s", (cid,)
            ).fetchone()
        return int(row[0]) if row else 0
