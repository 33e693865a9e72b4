"""Which store a home's streams and connections live in, and opening them:
`open_streams(home)`, `open_home(path)` (its connections).

`state.sqlite3` in the home by default (`SqliteStreams`); a PostgreSQL database
(`PgStreams`, several workers sharing it) when the home chose one:
`EXALATE_TUI_DATABASE_URL` when set (so a deployment can keep the password out
of the home), else `instance.toml`'s `database` key (`exalate-tui init
--database URL`). The node, every command and the console open their streams
here, so each of them works unchanged on either.

The connections follow the streams: a home on PostgreSQL keeps them in the
database too (`PgConnections`), their secrets encrypted with the home's
database key, which never goes into the database: `EXALATE_TUI_DATABASE_KEY`
(base64 of 32 bytes) when set, else `<home>/database.key` (0600), which
`init --database` makes. Every worker of one database needs the same key.
`open_home` gives a `Home` whose connections open here when first used, so the
CLI, the node and the console get the store the home chose, from one place.

psycopg (and cryptography) are imported only when a home chose PostgreSQL: the
core install does without them (`pip install 'exalate-tui[postgres]'`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from pathlib import Path
from typing import Any

from exalate_tui.domain.models import check_database
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import ConnectionStore, FileConnections, Home
from exalate_tui.transport.streams import StateError, Streams

ENV = "EXALATE_TUI_DATABASE_URL"
LISTEN_ENV = "EXALATE_TUI_DATABASE_LISTEN_URL"
KEY_ENV = "EXALATE_TUI_DATABASE_KEY"
KEY_FILE = "database.key"  # Home.database_key_path
KEY_BYTES = 32  # AES-256-GCM


class DatabaseUrlError(ExalateError):
    """The PostgreSQL URL given (flag, environment or file) does not parse (bad input)."""

    bad_input = True


class DatabaseKeyError(ExalateError):
    """The key of the connections' secrets is missing, malformed, or not the one the
    database's secrets were written with (bad input: the admin gives the right one)."""

    bad_input = True


def database_url(home: Home) -> str | None:
    """The PostgreSQL URL this home's streams live in; None for `state.sqlite3`."""
    given = os.environ.get(ENV, "")
    if given.strip():
        try:
            return check_database(given)
        except ValueError as error:
            raise DatabaseUrlError(
                f"{ENV}: the PostgreSQL URL {error}; fix it or unset it"
            ) from None
    instance = home.load_instance()
    return instance.database if instance is not None else None


def state_exists(home: Home) -> bool:
    """Whether there is a store to read yet (a database always is; a file may not be)."""
    return database_url(home) is not None or home.state_path.exists()


def _pg() -> Any:
    try:
        from exalate_tui.transport import pg_streams
    except ImportError as error:
        raise StateError(
            f"PostgreSQL storage needs psycopg ({error}): pip install 'exalate-tui[postgres]'"
        ) from None
    return pg_streams


def listen_url() -> str | None:
    """`EXALATE_TUI_DATABASE_LISTEN_URL`: where the wake-up listener connects instead of the
    database URL (PostgreSQL itself, when that URL goes through PgBouncer); None when unset."""
    given = os.environ.get(LISTEN_ENV, "")
    if not given.strip():
        return None
    try:
        return check_database(given)
    except ValueError as error:
        raise DatabaseUrlError(
            f"{LISTEN_ENV}: the PostgreSQL URL {error}; fix it or unset it"
        ) from None


def open_pg(url: str, *, migrate: bool = True, hints: bool = True) -> Streams:
    """`PgStreams` on `url`; `migrate=False` refuses a schema that is not current."""
    streams: Streams = _pg().PgStreams(url, migrate=migrate, hints=hints, listen_url=listen_url())
    return streams


def migrate_pg(url: str) -> tuple[int, int]:
    """Bring the schema of `url` to this version; (version before, version after)."""
    result: tuple[int, int] = _pg().migrate_url(url)
    return result


def open_streams(home: Home, *, hints: bool = True) -> Streams:
    """The home's streams, opened (and their schema brought up to date).

    `hints=False` for a short-lived command: it tells the workers of its own
    enqueues but listens to nobody's (no listener connection)."""
    url = database_url(home)
    if url is not None:
        return open_pg(url, hints=hints)
    from exalate_tui.transport.sqlite_streams import SqliteStreams

    home.ensure()
    return SqliteStreams(home.state_path)


# -- the connections ------------------------------------------------------------------


def key_path(home: Home) -> Path:
    return home.database_key_path


def database_key(home: Home) -> tuple[bytes, str]:
    """The key of the connections' secrets, and where it came from (for messages)."""
    given = os.environ.get(KEY_ENV, "")
    if given.strip():
        return _decode_key(given, f"${KEY_ENV}"), f"${KEY_ENV}"
    path = key_path(home)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise DatabaseKeyError(
            f"no key for the connections' secrets in the database: neither ${KEY_ENV} nor "
            f"{path} is there; copy database.key from a worker of this database into "
            f"{home.path} (chmod 600), or set ${KEY_ENV} to the same key "
            "(`exalate-tui init --database URL` makes one for the first worker)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatabaseKeyError(f"{path}: cannot be read ({error}); fix it") from None
    return _decode_key(text, str(path)), str(path)


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise DatabaseKeyError(
            f"{where}: not a database key (base64 of {KEY_BYTES} bytes, as "
            f"`exalate-tui init --database URL` writes it into {KEY_FILE}): give it the "
            f"other workers' key (their {KEY_FILE}, or ${KEY_ENV})"
        )
    return key


def make_key(home: Home) -> Path | None:
    """Write a new random key into `<home>/database.key` (0600) unless there is one
    already or ${KEY_ENV} gives it; the path when one was made."""
    if os.environ.get(KEY_ENV, "").strip():
        return None
    path = key_path(home)
    home.ensure()
    text = base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii") + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


def open_pg_connections(
    home: Home, url: str, *, migrate: bool = True, register: bool = True
) -> Any:
    """`PgConnections` on `url` with this home's key (refused unless it is the
    database's: `DatabaseKeyError`)."""
    key, source = database_key(home)
    try:
        from exalate_tui.transport import pg_connections
    except ImportError as error:
        raise StateError(
            f"PostgreSQL storage needs psycopg and cryptography ({error}): "
            "pip install 'exalate-tui[postgres]'"
        ) from None
    return pg_connections.PgConnections(
        url, key, key_source=source, migrate=migrate, register=register
    )


def connection_store(home: Home) -> ConnectionStore:
    """The store of the home's connections: the database it chose, else its files."""
    url = database_url(home)
    if url is None:
        return FileConnections(home)
    store: ConnectionStore = open_pg_connections(home, url)
    return store


def open_home(path: str | os.PathLike[str] | None = None) -> Home:
    """The home at `path` (else the default one), its connections where it chose."""
    return Home.resolve(path, opener=connection_store)
