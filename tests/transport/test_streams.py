"""`SqliteStreams`: the storage contract (streams_contract.py), and what is the file's own
(WAL, its mode, the schema's version in `PRAGMA user_version`, its locks)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from streams_contract import Store, StreamsContract

from exalate_tui.transport.sqlite_streams import SCHEMA_VERSION, SqliteStreams, StateError


class TestSqliteStreams(StreamsContract):
    @pytest.fixture
    def opener(self, tmp_path: Path) -> Iterator[Store]:
        path = tmp_path / "state.sqlite3"
        store = Store("sqlite", str(path), lambda: SqliteStreams(path))
        try:
            yield store
        finally:
            store.close()


def test_the_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    SqliteStreams(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_damaged_file_is_reported_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="state.sqlite3: cannot be used"):
        SqliteStreams(path)
    assert path.read_bytes().startswith(b"this is not a database")


def test_a_new_file_is_at_the_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    SqliteStreams(path).close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION == 1


def test_a_file_from_before_the_schema_version_is_moved_to_rowid_tables_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE outbox (cid TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
            body TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (cid, seq)) WITHOUT ROWID;
        CREATE TABLE inbox (cid TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
            body TEXT NOT NULL, applied_at REAL NOT NULL, PRIMARY KEY (cid, seq)) WITHOUT ROWID;
        CREATE TABLE streams (cid TEXT PRIMARY KEY, last_seq INTEGER NOT NULL DEFAULT 0,
            last_applied INTEGER NOT NULL DEFAULT 0, last_ok REAL, last_error TEXT,
            error_since REAL);
        INSERT INTO outbox VALUES ('a', 1, 'hello', '{"short_name":"x"}', 0);
        INSERT INTO inbox VALUES ('a', 1, 'hello', '{"short_name":"y"}', 0);
        INSERT INTO streams (cid, last_seq, last_applied) VALUES ('a', 1, 1);
        """
    )
    old.close()
    state = SqliteStreams(path)
    assert [m.body for m in state.pending("a")] == [{"short_name": "x"}]
    assert [m.body for m in state.inbox("a")] == [{"short_name": "y"}]
    assert state.enqueue("a", "ping") == 2
    state.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = [sql for (sql,) in db.execute("SELECT sql FROM sqlite_master WHERE type='table'")]
    assert not any("WITHOUT ROWID" in sql.upper() for sql in tables)
    assert len(tables) == 3


def test_a_file_from_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    SqliteStreams(path).close()
    sqlite3.connect(path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="newer exalate-tui .*update exalate-tui"):
        SqliteStreams(path)
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION + 1


def test_opening_the_state_again_in_a_process_keeps_its_wal_for_every_process(
    tmp_path: Path,
) -> None:
    """A second open of `state.sqlite3` in the same process (the node's streams and sync
    store) must not drop SQLite's locks: another process closing the file would take
    itself for the last user and delete the WAL, and the two would stop seeing each
    other's writes (found by the two-node tests: a hello acknowledged, never applied)."""
    import subprocess
    import sys

    from exalate_tui.sync.store import SqliteSyncStore

    path = tmp_path / "state.sqlite3"
    streams = SqliteStreams(path)
    again = SqliteStreams(path)
    store = SqliteSyncStore(path)
    try:
        streams.enqueue("c", "ping", {"n": 1})
        reader = (
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
            "print(db.execute('SELECT COUNT(*) FROM outbox').fetchone()[0]); db.close()"
        )
        subprocess.run([sys.executable, "-c", reader, str(path)], check=True, capture_output=True)
        assert (tmp_path / "state.sqlite3-wal").exists()
        streams.enqueue("c", "ping", {"n": 2})
        seen = subprocess.run(
            [sys.executable, "-c", reader, str(path)], check=True, capture_output=True, text=True
        )
        assert seen.stdout.strip() == "2"
    finally:
        store.close()
        again.close()
        streams.close()
