"""Which store a home's message streams live in, and opening it: `open_streams(home)`.

`state.sqlite3` in the home by default (`SqliteStreams`); a PostgreSQL database
(`PgStreams`, several workers sharing it) when the home chose one:
`EXALATE_TUI_DATABASE_URL` when set (so a deployment can keep the password out
of the home), else `instance.toml`'s `database` key (`exalate-tui init
--database URL`). The node, every command and the console open their streams
here, so each of them works unchanged on either.

psycopg is imported only when a home chose PostgreSQL: the core install does
without it (`pip install 'exalate-tui[postgres]'`).
"""

from __future__ import annotations

import os
from typing import Any

from exalate_tui.domain.models import check_database
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home
from exalate_tui.transport.streams import StateError, Streams

ENV = "EXALATE_TUI_DATABASE_URL"
LISTEN_ENV = "EXALATE_TUI_DATABASE_LISTEN_URL"


class DatabaseUrlError(ExalateError):
    """The PostgreSQL URL given (flag, environment or file) does not parse (bad input)."""

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
