"""A home's connections and tombstones in PostgreSQL: `PgConnections`, for several workers.

The `home.store.ConnectionStore` of a home that chose a database
(transport/storage.py hands it to `Home`), in the tables of migration 6
(pg_streams.MIGRATIONS): `exalate.connections`, `exalate.tombstones` and the
one row of `exalate.connection_store`.

- **Secrets encrypted, the key outside.** A row's `document` is the
  connection without `token` and `secret`; those two go into `secrets`,
  AES-256-GCM under the home's database key (never stored in the database),
  a fresh nonce each write, and the row's id as associated data: a
  ciphertext copied onto another row does not decrypt. The store's row keeps
  an HMAC of the key, so a worker given another key is refused before it
  writes anything (`DatabaseKeyError`), rather than writing secrets the
  others cannot read.
- **Atomic, across workers.** Every write is one transaction that first bumps
  `connection_store.changes` (so writes take turns, and the counter moves in
  commit order); a name is taken once by the unique `name_key` (the name case
  folded): `NameTaken`, whichever worker saved first.
- **A cheap change check.** `stamp()` reads the counter: one row. The node's
  supervisor polls it (every `WATCH` s) and reads the connections again only
  when it moved; `load` then fetches only the rows whose version changed.
  `parsed(cid)` (each signed request, no I/O) answers from what was read
  while the counter was last seen unmoved within `FRESH` s, and never with a
  connection that has no secret yet (a handshake another worker answered
  moments ago must not be refused on a stale copy): otherwise the node reads
  the row itself (`find`, in a thread).

psycopg 3's synchronous API with a small pool of its own: called from the
worker threads, as `PgStreams` is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg.types.json import Jsonb
from pydantic import SecretStr, ValidationError

from exalate_tui.domain.models import Connection, shown_database
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Loaded, NameTaken, NotFound, StoreError
from exalate_tui.transport.pg_streams import (
    SCHEMA,
    SCHEMA_VERSION,
    _version,
    checkout,
    migrate_schema,
    open_pool,
    refused,
    unreachable,
)
from exalate_tui.transport.storage import KEY_ENV, KEY_FILE, DatabaseKeyError
from exalate_tui.transport.streams import StateError

# How long what was read stays good for `parsed` once the counter was seen unmoved: the
# supervisor looks every 0.1 s, so on a node this is never reached but when the
# database cannot be asked (then requests read the row, and get a 503).
FRESH = 1.0
# The node's threads find and read connections beside the supervisor's scans.
POOL_MAX = 4
NONCE_BYTES = 12
SECRETS = ("token", "secret")
# What the key's HMAC in the database is of (never the key itself).
_KEY_CHECK = b"exalate-tui database key check v1"
_AAD = b"exalate-tui connection secrets v1\0"
_NAME_UNIQUE = "connections_name_key_key"


class ConflictingImport(ExalateError):
    """A connection moved into the database is there already with other content."""

    bad_input = True


def _aad(cid: str) -> bytes:
    return _AAD + cid.encode()


def _glob_safe(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum() or ch == "-")


class PgConnections:
    """One process's handle on the connections in a PostgreSQL database; thread-safe.

    `migrate=False` refuses a schema that is not current (`db check`);
    `register=False` leaves a database that has no key yet without one (the
    first worker's store registers its key's HMAC).
    """

    def __init__(
        self,
        url: str,
        key: bytes,
        *,
        key_source: str,
        migrate: bool = True,
        register: bool = True,
    ) -> None:
        self._db_where = shown_database(url)
        self.where = f"{self._db_where}, table {SCHEMA}.connections"
        self._aead = AESGCM(key)
        self._key_check = hmac.new(key, _KEY_CHECK, hashlib.sha256).digest()
        self.key_source = key_source
        self._lock = threading.Lock()
        # id -> (version, connection) as last read; valid as of `_known` (the counter).
        self._cache: dict[str, tuple[int, Connection]] = {}
        self._problems: list[StoreError] = []
        self._known = -1
        self._complete = False  # the cache holds every connection as of `_known`
        self._checked = -math.inf  # monotonic time `_known` was last seen current
        self._pool = open_pool(
            url,
            self._db_where,
            name="exalate-tui-connections",
            max_size=POOL_MAX,
            options={"autocommit": True, "application_name": "exalate-tui connections"},
        )
        try:
            self.key_registered = self._open(migrate, register)
        except BaseException:
            self._pool.close()
            raise

    def _open(self, migrate: bool, register: bool) -> bool:
        """Bring the schema up (or check it), then check the key; whether the database
        has a key registered."""
        try:
            with self._pool.connection() as db:
                if migrate:
                    migrate_schema(db, self._db_where)
                else:
                    found = _version(db)
                    if found != SCHEMA_VERSION:
                        raise StateError(
                            f"{self._db_where}: the schema is at version {found}, not "
                            f"{SCHEMA_VERSION}; nothing was changed: run `exalate-tui db migrate`"
                        )
                if register:
                    db.execute(
                        f"UPDATE {SCHEMA}.connection_store SET key_check = %s "
                        "WHERE key_check IS NULL",
                        (self._key_check,),
                    )
                row = db.execute(f"SELECT key_check FROM {SCHEMA}.connection_store").fetchone()
        except psycopg.OperationalError as error:
            raise unreachable(self._db_where, error) from None
        except psycopg.Error as error:
            raise refused(self._db_where, error) from None
        stored = row[0] if row else None
        if stored is None:
            return False
        if not hmac.compare_digest(bytes(stored), self._key_check):
            raise DatabaseKeyError(
                f"{self.key_source}: not the key the connections' secrets in "
                f"{self._db_where} were written with; give this home the same key as the "
                f"other workers of this database (their {KEY_FILE}, or ${KEY_ENV}); "
                "nothing was changed"
            )
        return True

    def close(self) -> None:
        self._pool.close()

    def _db(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return checkout(self._pool, self._db_where)

    @contextmanager
    def _write(self) -> Iterator[tuple[psycopg.Connection[Any], int]]:
        """A transaction that has bumped the counter first: its new value, the version
        of what it writes. Writers of every worker take turns on that row."""
        with self._db() as db, db.transaction():
            row = db.execute(
                f"UPDATE {SCHEMA}.connection_store SET changes = changes + 1 RETURNING changes"
            ).fetchone()
            assert row is not None
            yield db, int(row[0])

    # -- the rows --------------------------------------------------------------------

    def _seal(self, connection: Connection) -> tuple[str, Jsonb, bytes]:
        """(name_key, document, secrets) of a row."""
        document = connection.model_dump(mode="json", exclude=set(SECRETS))
        hidden = {}
        for name in SECRETS:
            value = getattr(connection, name)
            if isinstance(value, SecretStr):
                hidden[name] = value.get_secret_value()
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(hidden).encode()
        sealed = nonce + self._aead.encrypt(nonce, plain, _aad(connection.id))
        return connection.name.casefold(), Jsonb(document), sealed

    def _open_row(self, table: str, cid: str, document: Any, sealed: bytes) -> Connection:
        """The connection of a row; a `StoreError` naming the row when it cannot be used."""
        where = Path(f"{SCHEMA}.{table}/{cid}")
        sealed = bytes(sealed)
        try:
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(cid))
        except InvalidTag:
            raise StoreError(
                where,
                "its secrets do not decrypt with this key (written for another row, or "
                "changed since); delete the row and set the connection up again",
            ) from None
        if not isinstance(document, dict) or document.get("id") != cid:
            raise StoreError(where, "its document is not this row's connection; delete the row")
        try:
            return Connection.model_validate({**document, **json.loads(plain)})
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "document"
            raise StoreError(where, f"key {key!r}: {first['msg']}; fix or delete the row") from None

    def _upsert(self, db: psycopg.Connection[Any], connection: Connection, version: int) -> None:
        name_key, document, sealed = self._seal(connection)
        try:
            db.execute(
                f"""INSERT INTO {SCHEMA}.connections (id, name_key, document, secrets, version)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (id) DO UPDATE SET name_key = EXCLUDED.name_key,
                    document = EXCLUDED.document, secrets = EXCLUDED.secrets,
                    version = EXCLUDED.version""",
                (connection.id, name_key, document, sealed, version),
            )
        except psycopg.errors.UniqueViolation as error:
            if error.diag.constraint_name != _NAME_UNIQUE:
                raise
            raise NameTaken(f"a connection named {connection.name!r} already exists") from None

    # -- the cache of what was read ----------------------------------------------------

    def _remember(self, version: int, cid: str, connection: Connection | None) -> None:
        """After this process's write of `version` committed (None: the row is gone)."""
        with self._lock:
            if connection is None:
                self._cache.pop(cid, None)
            else:
                self._cache[cid] = (version, connection.model_copy())
            if version == self._known + 1:
                # Nobody else wrote in between: the rest of the cache is as current.
                self._known = version
            else:
                self._checked = -math.inf

    def _seen(self, changes: int, cid: str | None = None, entry: Any = None) -> None:
        """A read saw the counter at `changes` (and, with `cid`, that row's `entry`)."""
        with self._lock:
            if changes == self._known:
                self._checked = time.monotonic()
            elif changes > self._known:
                self._checked = -math.inf
            if cid is not None and changes >= self._known:
                self._cache[cid] = entry

    # -- reading ---------------------------------------------------------------------

    def stamp(self) -> int | None:
        with self._db() as db:
            row = db.execute(f"SELECT changes FROM {SCHEMA}.connection_store").fetchone()
        assert row is not None
        changes = int(row[0])
        self._seen(changes)
        return changes

    def settled(self, stamp: int | None) -> bool:
        return True  # a counter moves with every write

    def signature(self) -> Hashable:
        return self.stamp()

    def parsed(self, cid: str) -> Connection | None:
        if time.monotonic() - self._checked > FRESH:
            return None
        entry = self._cache.get(cid)
        if entry is None or entry[1].secret is None:
            return None
        return entry[1].model_copy()

    def load(self) -> Loaded:
        with self._db() as db, db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = db.execute(f"SELECT changes FROM {SCHEMA}.connection_store").fetchone()
            assert row is not None
            changes = int(row[0])
            with self._lock:
                if self._complete and changes == self._known:
                    self._checked = time.monotonic()
                    return self._loaded(list(self._cache.values()), list(self._problems))
                versions = {cid: entry[0] for cid, entry in self._cache.items()}
            listing = [
                (str(cid), int(version))
                for cid, version in db.execute(
                    f"SELECT id, version FROM {SCHEMA}.connections"
                ).fetchall()
            ]
            wanted = [cid for cid, version in listing if versions.get(cid) != version]
            rows = (
                db.execute(
                    f"SELECT id, document, secrets FROM {SCHEMA}.connections WHERE id = ANY(%s)",
                    (wanted,),
                ).fetchall()
                if wanted
                else []
            )
        read: dict[str, Connection] = {}
        problems: list[StoreError] = []
        for cid, document, sealed in rows:
            try:
                read[cid] = self._open_row("connections", cid, document, sealed)
            except StoreError as problem:
                problems.append(problem)
        with self._lock:
            fresh: dict[str, tuple[int, Connection]] = {}
            for cid, version in listing:
                if cid in read:
                    fresh[cid] = (version, read[cid])
                elif (entry := self._cache.get(cid)) is not None and entry[0] >= version:
                    fresh[cid] = entry
            if changes >= self._known:
                # This process's own writes since the snapshot stay.
                fresh.update({c: e for c, e in self._cache.items() if e[0] > changes})
                self._cache, self._problems = fresh, problems
                self._known, self._complete = changes, True
                self._checked = time.monotonic()
            return self._loaded(list(fresh.values()), problems)

    @staticmethod
    def _loaded(entries: Sequence[tuple[int, Connection]], problems: list[StoreError]) -> Loaded:
        connections = [entry[1].model_copy() for entry in entries]
        connections.sort(key=lambda c: (c.created, c.name))
        return Loaded(connections, problems)

    def _read(self, cid: str, *, prefix: bool) -> Connection | None:
        """The row with this id (or, `prefix`, the one id starting so); None if none."""
        with self._db() as db:
            rows = db.execute(
                f"""SELECT (SELECT changes FROM {SCHEMA}.connection_store), id, version,
                    document, secrets FROM {SCHEMA}.connections WHERE id = %s""",
                (cid,),
            ).fetchall()
            if not rows and prefix:
                rows = db.execute(
                    f"""SELECT (SELECT changes FROM {SCHEMA}.connection_store), id, version,
                        document, secrets FROM {SCHEMA}.connections WHERE id LIKE %s
                        ORDER BY id""",
                    (cid + "%",),
                ).fetchall()
        if not rows:
            return None
        if len(rows) > 1:
            raise NotFound(f"{cid!r} matches {len(rows)} connections: give more of the id")
        changes, found, version, document, sealed = rows[0]
        entry = self._cache.get(found)
        if entry is not None and entry[0] == version:
            connection = entry[1]
        else:
            connection = self._open_row("connections", found, document, sealed)
            entry = (int(version), connection)
        self._seen(int(changes), found, entry)
        return connection.model_copy()

    def get(self, cid: str) -> Connection:
        if not cid:
            raise NotFound("no connection id given; see `exalate-tui connections`")
        if _glob_safe(cid) != cid:
            raise NotFound(f"no connection with id {cid!r}; see `exalate-tui connections`")
        found = self._read(cid, prefix=True)
        if found is None:
            raise NotFound(f"no connection with id {cid!r}; see `exalate-tui connections`")
        return found

    def find(self, cid: str) -> Connection | None:
        if not cid or _glob_safe(cid) != cid:
            return None
        return self._read(cid, prefix=False)

    def name_taken(self, name: str, *, except_id: str | None = None) -> bool:
        with self._db() as db:
            row = db.execute(
                f"SELECT 1 FROM {SCHEMA}.connections "
                "WHERE name_key = %s AND id IS DISTINCT FROM %s LIMIT 1",
                (name.casefold(), except_id),
            ).fetchone()
        return row is not None

    # -- writing ---------------------------------------------------------------------

    def _locked(self, db: psycopg.Connection[Any], cid: str) -> Connection:
        """The connection `cid` names (an id or a unique prefix), its row locked."""
        if not cid:
            raise NotFound("no connection id given; see `exalate-tui connections`")
        if _glob_safe(cid) != cid:
            raise NotFound(f"no connection with id {cid!r}; see `exalate-tui connections`")
        rows = db.execute(
            f"SELECT id, document, secrets FROM {SCHEMA}.connections WHERE id = %s FOR UPDATE",
            (cid,),
        ).fetchall()
        if not rows:
            rows = db.execute(
                f"SELECT id, document, secrets FROM {SCHEMA}.connections WHERE id LIKE %s "
                "ORDER BY id FOR UPDATE",
                (cid + "%",),
            ).fetchall()
        if len(rows) > 1:
            raise NotFound(f"{cid!r} matches {len(rows)} connections: give more of the id")
        if not rows:
            raise NotFound(f"no connection with id {cid!r}; see `exalate-tui connections`")
        found, document, sealed = rows[0]
        return self._open_row("connections", found, document, sealed)

    def save(self, connection: Connection) -> None:
        with self._write() as (db, version):
            self._upsert(db, connection, version)
        self._remember(version, connection.id, connection)

    def update(self, cid: str, change: Callable[[Connection], Connection | None]) -> Connection:
        with self._write() as (db, version):
            copy = self._locked(db, cid).model_copy(deep=True)
            # None means "changed in place": the copy is what was changed.
            updated = change(copy) or copy
            self._upsert(db, updated, version)
        self._remember(version, updated.id, updated)
        return updated

    def delete(self, cid: str) -> Connection:
        with self._write() as (db, version):
            connection = self._locked(db, cid)
            db.execute(f"DELETE FROM {SCHEMA}.connections WHERE id = %s", (connection.id,))
        self._remember(version, connection.id, None)
        return connection

    def bury(self, cid: str) -> Connection:
        with self._write() as (db, version):
            connection = self._locked(db, cid)
            db.execute(
                f"""INSERT INTO {SCHEMA}.tombstones (id, document, secrets, buried)
                SELECT id, document, secrets, %s FROM {SCHEMA}.connections WHERE id = %s
                ON CONFLICT (id) DO UPDATE SET document = EXCLUDED.document,
                    secrets = EXCLUDED.secrets, buried = EXCLUDED.buried""",
                (time.time(), connection.id),
            )
            db.execute(f"DELETE FROM {SCHEMA}.connections WHERE id = %s", (connection.id,))
        self._remember(version, connection.id, None)
        return connection

    # -- tombstones ------------------------------------------------------------------

    def get_tombstone(self, cid: str) -> Connection | None:
        if not cid or _glob_safe(cid) != cid:
            return None
        with self._db() as db:
            row = db.execute(
                f"SELECT document, secrets FROM {SCHEMA}.tombstones WHERE id = %s", (cid,)
            ).fetchone()
        return None if row is None else self._open_row("tombstones", cid, row[0], row[1])

    def tombstones(self) -> list[tuple[str, float]]:
        with self._db() as db:
            rows = db.execute(f"SELECT id, buried FROM {SCHEMA}.tombstones ORDER BY id").fetchall()
        return [(str(cid), float(buried)) for cid, buried in rows]

    def drop_tombstone(self, cid: str) -> None:
        if not cid or _glob_safe(cid) != cid:
            return
        with self._db() as db:
            db.execute(f"DELETE FROM {SCHEMA}.tombstones WHERE id = %s", (cid,))

    # -- administration ----------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """How many connections and tombstones the database holds (`db check`)."""
        with self._db() as db:
            row = db.execute(
                f"SELECT (SELECT COUNT(*) FROM {SCHEMA}.connections), "
                f"(SELECT COUNT(*) FROM {SCHEMA}.tombstones)"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def import_all(
        self, connections: Sequence[Connection], tombstones: Sequence[tuple[Connection, float]]
    ) -> int:
        """Move a home's files in, all or nothing (`init --database`); how many were not
        there yet. One already there the same is skipped (a move cut short, run again);
        one there with other content, or a name taken by another, refuses them all."""
        added = 0
        with self._write() as (db, version):
            for connection in connections:
                existing = db.execute(
                    f"SELECT document, secrets FROM {SCHEMA}.connections WHERE id = %s",
                    (connection.id,),
                ).fetchone()
                if existing is not None:
                    if self._open_row("connections", connection.id, *existing) == connection:
                        continue
                    raise ConflictingImport(
                        f"connection {connection.id} ({connection.name!r}) is in "
                        f"{self._db_where} already, with other content: nothing was moved"
                    )
                try:
                    self._upsert(db, connection, version)
                except NameTaken:
                    raise NameTaken(
                        f"a connection named {connection.name!r} is in {self._db_where} "
                        f"already (another id than {connection.id}): nothing was moved; "
                        f"rename one of them first"
                    ) from None
                added += 1
            for connection, buried in tombstones:
                _, document, sealed = self._seal(connection)
                db.execute(
                    f"INSERT INTO {SCHEMA}.tombstones (id, document, secrets, buried) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (connection.id, document, sealed, buried),
                )
        with self._lock:
            self._checked = -math.inf
        return added
