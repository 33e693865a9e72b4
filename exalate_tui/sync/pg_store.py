"""The sync engine's tables in PostgreSQL: `PgSyncStore`, for several workers.

When a home's streams live in PostgreSQL (transport/storage.py), one sync
engine runs across all its workers, by the streams' lease `(sync engine)`
(sync/service.py); its links, cursors, sent replicas, errors, requests,
history, stash and meta live here, in the schema `exalate` (`pg_streams`'s
migration 5), so the engine finds them whichever worker it moves to, and a
command on any worker's home (Exalate, Retry, history) sees the same.

The same promises as `SqliteSyncStore` (sync/store.py), held to one contract
suite (tests/sync/store_contract.py):

- **Exactly-once effect.** `processed` writes what a message did (a link, a
  history entry, the stash, an error resolved) and moves the engine's inbox
  cursor in one transaction.
- **Batches per round trip.** `deferred()`'s writes commit in one
  transaction at its end, sent in psycopg's pipeline mode: the statements of
  a batch (a bulk exalate's thousand links) go out together instead of one
  round trip each.
- **Fencing.** Once `fence(lease, epoch)` is called, every write transaction
  first reads that lease's row (FOR SHARE) and commits nothing
  (`LeaseLost`) once another worker has taken it: an engine that hung past
  its lease cannot overwrite what its successor wrote.

A database out of reach is a `SyncDatabaseError`: a `StateError` for the
engine (an outage it waits out) and a `SyncStoreError` for the console.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from exalate_tui.domain.models import shown_database
from exalate_tui.sync.replica import Content
from exalate_tui.sync.store import (
    _LINK_COLUMNS,
    Change,
    DeferredWrites,
    Link,
    SyncError,
    SyncStoreError,
    _content,
    _doc,
    _link,
)
from exalate_tui.transport.pg_streams import (
    CONNECT_TIMEOUT,
    SCHEMA,
    connection_options,
    migrate_schema,
    refused,
    unreachable,
)
from exalate_tui.transport.streams import LeaseLost, StateError

# The store is used by one engine (and a few commands): its writes take turns under
# the store's lock, as on SQLite, so two connections are plenty.
POOL_MAX = 2

_DUE = "active AND (out_version = 0 OR restart OR due)"
_UPSERT_LINK = (
    f"INSERT INTO {SCHEMA}.sync_links ({_LINK_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (cid, local_key) DO UPDATE SET "
    + ", ".join(
        f"{column} = EXCLUDED.{column}" for column in _LINK_COLUMNS.replace(" ", "").split(",")[2:]
    )
)
# SQLite's INSERT OR REPLACE drops a row clashing on any unique key: here the other
# local ticket that held this remote key (the unique index on (cid, remote_key)).
_CLEAR_REMOTE = (
    f"DELETE FROM {SCHEMA}.sync_links WHERE cid = %s AND remote_key = %s AND local_key <> %s"
)


class SyncDatabaseError(SyncStoreError, StateError):
    """The database of the sync tables cannot be reached or used; str() names it
    (without its password) and what to check."""


class PgSyncStore(DeferredWrites[psycopg.Connection[Any]]):
    """The sync tables in a PostgreSQL database; safe to share between threads."""

    def __init__(self, url: str, *, pooled: bool = False) -> None:
        """`pooled`: `url` goes through PgBouncer (`pg_streams.connection_options`)."""
        super().__init__()
        self._where = shown_database(url)
        self._fence: tuple[str, int] | None = None
        try:
            psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT)).close()
        except psycopg.Error as error:
            raise SyncDatabaseError(str(unreachable(self._where, error))) from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX,
            kwargs=connection_options("exalate-tui sync", pooled=pooled),
            check=ConnectionPool.check_connection,
            open=False,
            name="exalate-tui-sync",
            timeout=CONNECT_TIMEOUT,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            with self._pool.connection() as db:
                migrate_schema(db, self._where)
        except StateError as error:  # a newer schema
            self._pool.close()
            raise SyncDatabaseError(str(error)) from None
        except (PoolTimeout, psycopg.OperationalError) as error:
            self._pool.close()
            raise SyncDatabaseError(str(unreachable(self._where, error))) from None
        except psycopg.Error as error:
            self._pool.close()
            raise SyncDatabaseError(str(refused(self._where, error))) from None

    @property
    def where(self) -> str:
        return self._where

    def close(self) -> None:
        self._pool.close()

    def fence(self, lease: str, epoch: int) -> None:
        with self._lock:
            self._fence = (lease, epoch)

    # -- the database -----------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as db:
                yield db
        except (PoolTimeout, psycopg.OperationalError) as error:
            raise SyncDatabaseError(str(unreachable(self._where, error))) from None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock, self._connection() as db, db.transaction():
            if self._fence is not None:
                lease, epoch = self._fence
                held = db.execute(
                    f"SELECT epoch FROM {SCHEMA}.leases WHERE cid = %s FOR SHARE", (lease,)
                ).fetchone()
                if held is None or int(held[0]) != epoch:
                    raise LeaseLost(
                        f"{lease}: another worker holds its lease now (epoch "
                        f"{held[0] if held else 'none'}, this one {epoch}); nothing was written"
                    )
            yield db

    def _commit(self, writes: list[Callable[[psycopg.Connection[Any]], None]]) -> None:
        """One transaction, its statements pipelined: a batch's round trips, not one each."""
        with self._transaction() as db, db.pipeline():
            for write in writes:
                write(db)

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock, self._connection() as db:
            return db.execute(sql, args).fetchall()

    # -- links ------------------------------------------------------------------------

    def link(self, cid: str, local_key: str) -> Link | None:
        if (kept := self._kept(cid, local_key)) is not None:
            return kept
        rows = self._rows(
            f"SELECT {_LINK_COLUMNS} FROM {SCHEMA}.sync_links WHERE cid = %s AND local_key = %s",
            cid,
            local_key,
        )
        return _link(rows[0]) if rows else None

    def link_by_remote(self, cid: str, remote_key: str) -> Link | None:
        if (kept := self._kept(cid, remote_key=remote_key)) is not None:
            return kept
        rows = self._rows(
            f"SELECT {_LINK_COLUMNS} FROM {SCHEMA}.sync_links WHERE cid = %s AND remote_key = %s",
            cid,
            remote_key,
        )
        return _link(rows[0]) if rows else None

    def links(self, cid: str | None = None, local_key: str | None = None) -> list[Link]:
        """Links of one connection, of one local ticket, or all; oldest first."""
        where, args = [], []
        if cid is not None:
            where.append("cid = %s")
            args.append(cid)
        if local_key is not None:
            where.append("local_key = %s")
            args.append(local_key)
        sql = f"SELECT {_LINK_COLUMNS} FROM {SCHEMA}.sync_links"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_link(row) for row in self._rows(sql + " ORDER BY created, local_key", *args)]

    def sent_keys(self, cid: str) -> set[str]:
        rows = self._rows(
            f"SELECT local_key FROM {SCHEMA}.sync_links WHERE cid = %s AND active "
            "AND out_version > 0 AND NOT restart",
            cid,
        )
        return {key for (key,) in rows}

    def save_link(self, link: Link) -> None:
        with self._lock:
            self._keep(link)
            self._write(lambda db: self._put_link(db, link))

    @staticmethod
    def _put_link(db: psycopg.Connection[Any], link: Link) -> None:
        if link.remote_key is not None:
            db.execute(_CLEAR_REMOTE, (link.cid, link.remote_key, link.local_key))
        db.execute(
            _UPSERT_LINK,
            (
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
            ),
        )

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

        def write(db: psycopg.Connection[Any]) -> None:
            for link, _ in done:
                self._put_link(db, link)
            db.cursor().executemany(
                f"INSERT INTO {SCHEMA}.sync_sent VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (cid, local_key, version) DO UPDATE SET doc = EXCLUDED.doc",
                [(link.cid, link.local_key, link.out_version, _doc(c)) for link, c in done],
            )

        with self._lock:
            for link, _ in done:
                self._keep(link)
            self._write(write)

    def sent_since(self, cid: str, local_key: str, version: int) -> list[Content]:
        """The replicas sent from `version` on (from the latest kept before it), oldest first."""
        rows = self._rows(
            f"SELECT doc FROM {SCHEMA}.sync_sent WHERE cid = %s AND local_key = %s "
            f"AND version >= (SELECT COALESCE(MAX(version), 0) FROM {SCHEMA}.sync_sent "
            "WHERE cid = %s AND local_key = %s AND version <= %s) ORDER BY version",
            cid,
            local_key,
            cid,
            local_key,
            version,
        )
        return [content for (doc,) in rows if (content := _content(doc)) is not None]

    # -- the inbox cursor, the tracker's watermark ---------------------------------------

    def cursors(self) -> dict[str, int]:
        return {
            cid: int(seq) for cid, seq in self._rows(f"SELECT cid, seq FROM {SCHEMA}.sync_cursors")
        }

    def due(self, limit: int = -1) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for cid, key in self._rows(
            f"SELECT cid, local_key FROM {SCHEMA}.sync_links AS l WHERE {_DUE} AND (due "
            f"OR NOT EXISTS (SELECT 1 FROM {SCHEMA}.sync_errors WHERE cid = l.cid "
            "AND direction = 'out' AND holds AND local_key = l.local_key)) "
            "ORDER BY created LIMIT %s",
            limit if limit >= 0 else None,
        ):
            found.setdefault(cid, []).append(key)
        return found

    def cursor(self, cid: str) -> int:
        rows = self._rows(f"SELECT seq FROM {SCHEMA}.sync_cursors WHERE cid = %s", cid)
        return int(rows[0][0]) if rows else 0

    def meta(self, name: str) -> str | None:
        rows = self._rows(f"SELECT value FROM {SCHEMA}.sync_meta WHERE name = %s", name)
        return str(rows[0][0]) if rows else None

    def set_meta(self, name: str, value: str | None) -> None:
        with self._transaction() as db:
            if value is None:
                db.execute(f"DELETE FROM {SCHEMA}.sync_meta WHERE name = %s", (name,))
            else:
                db.execute(
                    f"INSERT INTO {SCHEMA}.sync_meta VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    (name, value),
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
        """Inbox message `seq` of `cid` is done: what it did and the cursor, in one
        transaction (`SqliteSyncStore.processed` says what each keyword records)."""

        def write(db: psycopg.Connection[Any]) -> None:
            if link is not None:
                self._put_link(db, link)
                if seen:
                    db.execute(
                        f"DELETE FROM {SCHEMA}.sync_sent WHERE cid = %s AND local_key = %s "
                        f"AND version < (SELECT COALESCE(MAX(version), 0) FROM {SCHEMA}.sync_sent "
                        "WHERE cid = %s AND local_key = %s AND version <= %s)",
                        (cid, link.local_key, cid, link.local_key, seen),
                    )
            if change is not None:
                self._add_change(db, cid=cid, **change)
            if stash is not None:
                db.execute(
                    f"INSERT INTO {SCHEMA}.sync_stash VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (cid, remote_key, sha256) DO UPDATE SET "
                    "name = EXCLUDED.name, data = EXCLUDED.data",
                    (cid, *stash),
                )
            if unstash is not None:
                db.execute(
                    f"DELETE FROM {SCHEMA}.sync_stash WHERE cid = %s AND remote_key = %s",
                    (cid, unstash),
                )
            if resolve is not None:
                db.execute(f"DELETE FROM {SCHEMA}.sync_errors WHERE id = %s", (resolve,))
            db.execute(
                f"INSERT INTO {SCHEMA}.sync_cursors AS c VALUES (%s, %s) "
                "ON CONFLICT (cid) DO UPDATE SET seq = GREATEST(c.seq, EXCLUDED.seq)",
                (cid, seq),
            )

        with self._lock:
            self._keep_processed(cid, link, stash, unstash)
            self._write(write)

    def stashed(self, cid: str, remote_key: str, sha256: str) -> bytes | None:
        known, data = self._kept_stash(cid, remote_key, sha256)
        if known:
            return data
        rows = self._rows(
            f"SELECT data FROM {SCHEMA}.sync_stash "
            "WHERE cid = %s AND remote_key = %s AND sha256 = %s",
            cid,
            remote_key,
            sha256,
        )
        return bytes(rows[0][0]) if rows else None

    # -- errors ---------------------------------------------------------------------------

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
        """Record (or count again) the error on one ticket; returns its id."""
        now = time.time()
        key_column, key = (
            ("local_key", local_key) if direction == "out" else ("remote_key", remote_key)
        )
        with self._transaction() as db:
            row = db.execute(
                f"SELECT id FROM {SCHEMA}.sync_errors "
                f"WHERE cid = %s AND direction = %s AND {key_column} = %s",
                (cid, direction, key),
            ).fetchone()
            if row:
                db.execute(
                    f"UPDATE {SCHEMA}.sync_errors SET message = %s, last_at = %s, "
                    "attempts = attempts + 1, local_key = COALESCE(%s, local_key) WHERE id = %s",
                    (message, now, local_key, row[0]),
                )
                return int(row[0])
            made = db.execute(
                f"INSERT INTO {SCHEMA}.sync_errors (cid, direction, local_key, remote_key, seq, "
                "message, first_at, last_at, holds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING id",
                (cid, direction, local_key, remote_key, seq, message, now, now, holds),
            ).fetchone()
            assert made is not None
            return int(made[0])

    def errors(self, cid: str | None = None) -> list[SyncError]:
        return (
            self._errors("WHERE cid = %s ORDER BY id", cid) if cid else self._errors("ORDER BY id")
        )

    def _errors(self, where: str, *args: Any) -> list[SyncError]:
        rows = self._rows(
            "SELECT id, cid, direction, local_key, remote_key, seq, message, first_at, last_at, "
            f"attempts, holds FROM {SCHEMA}.sync_errors {where}",
            *args,
        )
        return [
            SyncError(
                int(r[0]),
                r[1],
                r[2],
                r[3],
                r[4],
                None if r[5] is None else int(r[5]),
                r[6],
                r[7],
                r[8],
                int(r[9]),
                bool(r[10]),
            )
            for r in rows
        ]

    def error(self, error_id: int) -> SyncError | None:
        found = self._errors("WHERE id = %s", error_id)
        return found[0] if found else None

    def holding(self, cid: str, direction: str, key: str) -> SyncError | None:
        column = "local_key" if direction == "out" else "remote_key"
        found = self._errors(
            f"WHERE cid = %s AND direction = %s AND holds AND {column} = %s ORDER BY id LIMIT 1",
            cid,
            direction,
            key,
        )
        return found[0] if found else None

    def resolve(self, error_id: int) -> None:
        with self._transaction() as db:
            db.execute(f"DELETE FROM {SCHEMA}.sync_errors WHERE id = %s", (error_id,))

    # -- requests ---------------------------------------------------------------------------

    def request(
        self, action: str, cid: str | None, key: str | None = None, arg: str | None = None
    ) -> None:
        """Ask the engine (on whichever worker runs it) for `action`; it runs in order."""
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO {SCHEMA}.sync_requests (action, cid, key, arg, at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (action, cid, key, arg, time.time()),
            )

    def requests(self) -> list[tuple[int, str, str | None, str | None, str | None]]:
        return [
            (int(row[0]), row[1], row[2], row[3], row[4])
            for row in self._rows(
                f"SELECT id, action, cid, key, arg FROM {SCHEMA}.sync_requests ORDER BY id"
            )
        ]

    def done(self, request_id: int) -> None:
        with self._transaction() as db:
            db.execute(f"DELETE FROM {SCHEMA}.sync_requests WHERE id = %s", (request_id,))

    # -- history ------------------------------------------------------------------------------

    @staticmethod
    def _add_change(
        db: psycopg.Connection[Any],
        *,
        cid: str,
        local_key: str,
        remote_key: str | None,
        version: int | None,
        rules: str,
        changes: dict[str, Any],
        note: str = "",
    ) -> None:
        db.execute(
            f"INSERT INTO {SCHEMA}.sync_history (local_key, cid, remote_key, at, version, rules, "
            "changes, note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (local_key, cid, remote_key, time.time(), version, rules, json.dumps(changes), note),
        )

    def record_change(self, cid: str, **change: Any) -> None:
        self._write(lambda db: self._add_change(db, cid=cid, **change))

    def history(self, local_key: str) -> list[Change]:
        rows = self._rows(
            "SELECT id, local_key, cid, remote_key, at, version, rules, changes, note "
            f"FROM {SCHEMA}.sync_history WHERE local_key = %s ORDER BY id",
            local_key,
        )
        return [
            Change(
                int(r[0]),
                r[1],
                r[2],
                r[3],
                r[4],
                None if r[5] is None else int(r[5]),
                r[6],
                json.loads(r[7]),
                r[8],
            )
            for r in rows
        ]

    # -- housekeeping ---------------------------------------------------------------------------

    def cids(self) -> set[str]:
        rows = self._rows(
            f"SELECT cid FROM {SCHEMA}.sync_links UNION SELECT cid FROM {SCHEMA}.sync_cursors "
            f"UNION SELECT cid FROM {SCHEMA}.sync_errors"
        )
        return {cid for (cid,) in rows}

    def forget(self, cid: str) -> None:
        """A deleted connection: its links, queue and errors go; its history stays."""
        with self._transaction() as db:
            for table in (
                "sync_links",
                "sync_sent",
                "sync_cursors",
                "sync_stash",
                "sync_errors",
                "sync_requests",
            ):
                db.execute(f"DELETE FROM {SCHEMA}.{table} WHERE cid = %s", (cid,))
