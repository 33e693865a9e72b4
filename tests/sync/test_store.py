"""`SqliteSyncStore`: the sync store's contract (store_contract.py) on `state.sqlite3`, and
what is the file's own."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home
from exalate_tui.sync.storage import open_sync_store, sync_state_exists
from exalate_tui.sync.store import (
    SqliteSyncStore,
    SyncStore,
    SyncStoreError,
)

from .store_contract import Opener, SyncStoreContract


class TestSqliteSyncStore(SyncStoreContract):
    @pytest.fixture
    def opener(self, tmp_path: Path) -> Iterator[Opener]:
        opened: list[SyncStore] = []

        def open_one() -> SyncStore:
            opened.append(SqliteSyncStore(tmp_path / "state.sqlite3"))
            return opened[-1]

        try:
            yield open_one
        finally:
            for store in opened:
                store.close()


def test_a_home_without_a_database_keeps_its_sync_tables_in_its_file(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow"))
    assert not sync_state_exists(home)
    store = open_sync_store(home)
    try:
        assert isinstance(store, SqliteSyncStore) and store.where == str(home.state_path)
        store.fence("(sync engine)", 3)  # nothing to fence: the writes go on
        store.set_meta("watermark", "1")
    finally:
        store.close()
    assert sync_state_exists(home)
    with sqlite3.connect(home.state_path) as db:
        assert db.execute("SELECT value FROM sync_meta").fetchall() == [("1",)]


def test_sync_tables_of_a_newer_version_are_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    SqliteSyncStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE sync_schema SET version = 99")
    with pytest.raises(SyncStoreError, match="newer exalate-tui"):
        SqliteSyncStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM sync_schema").fetchall() == [(99,)]
