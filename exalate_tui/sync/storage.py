"""Which store a home's sync tables live in, and opening it: `open_sync_store(home)`.

Where the home's streams are (transport/storage.py): in its PostgreSQL
database when it chose one (`PgSyncStore`, sync/pg_store.py), else in its
`state.sqlite3` (`SqliteSyncStore`). The engine, every command and the console
open the sync store here. A module of its own so that what only reads the
store's values (flows/) loads no database driver.
"""

from __future__ import annotations

from exalate_tui.home.store import Home
from exalate_tui.sync.store import SqliteSyncStore, SyncStore, SyncStoreError
from exalate_tui.transport.storage import database_url, listen_url, state_exists


def sync_state_exists(home: Home) -> bool:
    """Whether there is a store to read yet (a database always is; a file may not be)."""
    return state_exists(home)


def open_sync_store(home: Home) -> SyncStore:
    """The home's sync store: in the PostgreSQL database its streams live in
    (`storage.database_url`), else in its `state.sqlite3`. The one place it is opened."""
    url = database_url(home)
    if url is not None:
        try:
            from exalate_tui.sync.pg_store import PgSyncStore
        except ImportError as error:
            raise SyncStoreError(
                f"PostgreSQL storage needs psycopg ({error}): pip install 'exalate-tui[postgres]'"
            ) from None
        return PgSyncStore(url, pooled=listen_url() not in (None, url))
    home.ensure()
    return SqliteSyncStore(home.state_path)
