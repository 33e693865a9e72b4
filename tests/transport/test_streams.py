"""The durable message streams: numbering, acks, exactly-once apply, contact."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from exalate_tui.transport.sqlite_streams import SCHEMA_VERSION, Gap, SqliteStreams, StateError
from exalate_tui.transport.streams import Message


@pytest.fixture
def state(tmp_path: Path) -> SqliteStreams:
    return SqliteStreams(tmp_path / "state.sqlite3")


def test_sequence_numbers_are_per_connection_and_start_at_one(state: SqliteStreams) -> None:
    assert state.enqueue("a", "hello") == 1
    assert state.enqueue_many("a", [("ping", None), ("ping", {"n": 2})]) == [2, 3]
    assert state.enqueue("b", "hello") == 1
    assert state.last_seq("a") == 3
    assert [m.seq for m in state.pending("a")] == [1, 2, 3]
    assert state.pending("a", after=2) == [Message(3, "ping", '{"n":2}')]


def test_numbering_survives_acks_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    first = SqliteStreams(path)
    first.enqueue_many("a", [("ping", None)] * 3)
    assert first.ack("a", 3) == 3
    first.close()
    again = SqliteStreams(path)
    assert again.pending("a") == []
    assert again.enqueue("a", "ping") == 4


def test_wire_form_splices_the_stored_body(state: SqliteStreams) -> None:
    state.enqueue("a", "hello", {"text": 'é\n"quoted"'})
    (message,) = state.pending("a")
    decoded = json.loads(message.wire())
    assert decoded == {"seq": 1, "kind": "hello", "body": {"text": 'é\n"quoted"'}}
    assert Message.from_wire(decoded) == message


def test_pending_wire_is_each_pending_message_in_wire_form(state: SqliteStreams) -> None:
    state.enqueue_many("a", [("hello", {"t": 'é"\n'}), ('kind "odd"', None), ("ping", [1])])
    assert state.pending_wire("a", 1, 5) == [m.wire() for m in state.pending("a", 1, 5)]


def test_a_batch_bigger_than_one_insert_statement_keeps_its_order(state: SqliteStreams) -> None:
    seqs = state.enqueue_many("a", [("ping", {"n": n}) for n in range(1000)])
    assert seqs == list(range(1, 1001))
    assert [m.body["n"] for m in state.pending("a", limit=1000)] == list(range(1000))
    assert state.apply("b", state.pending("a", limit=1000)) == 1000
    assert [m.body["n"] for m in state.inbox("b", limit=1000)] == list(range(1000))


def test_ack_prunes_only_up_to_the_acknowledged_seq(state: SqliteStreams) -> None:
    state.enqueue_many("a", [("ping", None)] * 5)
    assert state.ack("a", 2) == 2
    assert [m.seq for m in state.pending("a")] == [3, 4, 5]
    assert state.ack("a", 2) == 0


def test_apply_is_exactly_once_across_redelivery(state: SqliteStreams) -> None:
    batch = [Message(1, "hello"), Message(2, "ping"), Message(3, "ping")]
    assert state.apply("a", batch) == 3
    # Redelivered, overlapping and out-of-order batches change nothing twice.
    assert state.apply("a", list(reversed(batch))) == 3
    assert state.apply("a", [Message(3, "ping"), Message(4, "ping")]) == 4
    assert [m.seq for m in state.inbox("a")] == [1, 2, 3, 4]


def test_a_redelivered_message_never_runs_its_effect_again(state: SqliteStreams) -> None:
    """The effect runs once per message, so an effect need not be idempotent."""
    runs: list[int] = []

    def effect(message: Message) -> None:
        runs.append(message.seq)

    batch = [Message(1, "hello"), Message(2, "ping"), Message(3, "ping")]
    assert state.apply("a", batch, effect) == 3
    assert runs == [1, 2, 3]
    assert state.apply("a", batch, effect) == 3
    assert state.apply("a", list(reversed(batch)), effect) == 3
    assert state.apply("a", [Message(2, "ping")], effect) == 3
    assert runs == [1, 2, 3]
    assert state.apply("a", [Message(3, "ping"), Message(4, "ping")], effect) == 4
    assert runs == [1, 2, 3, 4]
    # Another handle on the same file (the node and the console) knows it too.
    again = SqliteStreams(state.path)
    assert again.apply("a", batch + [Message(4, "ping")], effect) == 4
    assert runs == [1, 2, 3, 4]


def test_apply_refuses_a_gap_and_changes_nothing(state: SqliteStreams) -> None:
    state.apply("a", [Message(1, "hello")])
    with pytest.raises(Gap) as gap:
        state.apply("a", [Message(2, "ping"), Message(4, "ping")])
    assert gap.value.last_applied == 1
    assert state.last_applied("a") == 1
    assert [m.seq for m in state.inbox("a")] == [1]


def test_a_failing_effect_rolls_the_whole_batch_back(state: SqliteStreams) -> None:
    seen: list[int] = []

    def effect(message: Message) -> None:
        seen.append(message.seq)
        if message.seq == 2:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        state.apply("a", [Message(1, "hello"), Message(2, "ping")], effect)
    assert seen == [1, 2]
    assert state.last_applied("a") == 0
    assert state.inbox("a") == []
    assert state.apply("a", [Message(1, "hello"), Message(2, "ping")]) == 2


def test_contact_keeps_the_first_error_time_until_success(state: SqliteStreams) -> None:
    state.record_error("a", "connection refused", when=100.0)
    state.record_error("a", "timed out", when=130.0)
    contact = state.contact("a")
    assert (contact.last_error, contact.error_since) == ("timed out", 100.0)
    state.record_ok("a", when=140.0)
    assert state.contact("a").last_ok == 140.0
    assert state.contact("a").last_error is None
    assert state.contact("a").error_since is None


def test_forget_drops_a_connection_only(state: SqliteStreams) -> None:
    for cid in ("a", "b"):
        state.enqueue(cid, "hello")
        state.apply(cid, [Message(1, "hello")])
    state.forget("a")
    assert (state.pending("a"), state.inbox("a"), state.last_seq("a")) == ([], [], 0)
    assert state.last_seq("b") == 1


def test_data_version_moves_when_another_handle_commits(tmp_path: Path) -> None:
    watcher = SqliteStreams(tmp_path / "state.sqlite3")
    writer = SqliteStreams(tmp_path / "state.sqlite3")
    before = watcher.data_version()
    writer.enqueue("a", "ping")
    assert watcher.data_version() != before


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


def _enqueue_in_child(path: str, count: int) -> None:
    state = SqliteStreams(Path(path))
    for _ in range(count):
        state.enqueue("a", "ping")


def test_two_processes_enqueueing_never_share_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    SqliteStreams(path)
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_enqueue_in_child, args=(str(path), 200)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert [m.seq for m in SqliteStreams(path).pending("a", limit=1000)] == list(range(1, 401))


def test_opening_the_state_again_in_a_process_keeps_its_wal_for_every_process(
    tmp_path: Path,
) -> None:
    """A second open of `state.sqlite3` in the same process (the node's streams and sync
    store) must not drop SQLite's locks: another process closing the file would take
    itself for the last user and delete the WAL, and the two would stop seeing each
    other's writes (found by the two-node tests: a hello acknowledged, never applied)."""
    import subprocess
    import sys

    from exalate_tui.sync.store import SyncStore

    path = tmp_path / "state.sqlite3"
    streams = SqliteStreams(path)
    again = SqliteStreams(path)
    store = SyncStore(path)
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
