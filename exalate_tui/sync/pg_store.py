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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from exalate_tui.domain.models import shown_database
from exalate_tui.sync.store import _LINK_COLUMNS, Link, SqlSyncStore, SyncStoreError, _link_row
from exalate_tui.transport.pg_streams import (
    SCHEMA,
    connection_options,
    migrate_schema,
    open_pool,
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
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in _LINK_COLUMNS.split(", ")[2:])
)
# SQLite's INSERT OR REPLACE drops a row clashing on any unique key: here the other
# local ticket that held this remote key (the unique index on (cid, remote_key)).
_CLEAR_REMOTE = (
    f"DELETE FROM {SCHEMA}.sync_links WHERE cid = %s AND remote_key = %s AND local_key <> %s"
)


class SyncDatabaseError(SyncStoreError, StateError):
    """The database of the sync tables cannot be reached or used; str() names it
    (without its password) and what to check."""


class PgSyncStore(SqlSyncStore[psycopg.Connection[Any]]):
    """The sync tables in a PostgreSQL database; safe to share between threads.
    Its queries are `SqlSyncStore`'s, their `?` placeholders turned into psycopg's `%s`."""

    _prefix = f"{SCHEMA}."
    _due = _DUE

    def __init__(self, url: str, *, pooled: bool = False) -> None:
        """`pooled`: `url` goes through PgBouncer (`pg_streams.connection_options`)."""
        super().__init__()
        self._where = shown_database(url)
        self._fence: tuple[str, int] | None = None
        try:
            self._pool = open_pool(
                url,
                self._where,
                name="exalate-tui-sync",
                max_size=POOL_MAX,
                options=connection_options("exalate-tui sync", pooled=pooled),
            )
        except StateError as error:  # out of reach
            raise SyncDatabaseError(str(error)) from None
        try:
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
            return db.execute(sql.replace("?", "%s"), args).fetchall()

    def _execute(self, db: psycopg.Connection[Any], sql: str, *args: Any) -> psycopg.Cursor[Any]:
        return db.execute(sql.replace("?", "%s"), args)

    def _put_link(self, db: psycopg.Connection[Any], link: Link) -> None:
        if link.remote_key is not None:
            db.execute(_CLEAR_REMOTE, (link.cid, link.remote_key, link.local_key))
        db.execute(_UPSERT_LINK, _link_row(link))
