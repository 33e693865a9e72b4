"""The durable message streams: numbering, acks, exactly-once apply, contact."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from exalate_tui.transport.streams import Gap, Message, State, StateError


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State(tmp_path / "state.sqlite3")


def test_sequence_numbers_are_per_connection_and_start_at_one(state: State) -> None:
    assert state.enqueue("a", "hello") == 1
    assert state.enqueue_many("a", [("ping", None), ("ping", {"n": 2})]) == [2, 3]
    assert state.enqueue("b", "hello") == 1
    assert state.last_seq("a") == 3
    assert [m.seq for m in state.pending("a")] == [1, 2, 3]
    assert state.pending("a", after=2) == [Message(3, "ping", '{"n":2}')]


def test_numbering_survives_acks_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    first = State(path)
    first.enqueue_many("a", [("ping", None)] * 3)
    assert first.ack("a", 3) == 3
    first.close()
    again = State(path)
    assert again.pending("a") == []
    assert again.enqueue("a", "ping") == 4


def test_wire_form_splices_the_stored_body(state: State) -> None:
    state.enqueue("a", "hello", {"text": 'é\n"quoted"'})
    (message,) = state.pending("a")
    decoded = json.loads(message.wire())
    assert decoded == {"seq": 1, "kind": "hello", "body": {"text": 'é\n"quoted"'}}
    assert Message.from_wire(decoded) == message


def test_pending_wire_is_each_pending_message_in_wire_form(state: State) -> None:
    state.enqueue_many("a", [("hello", {"t": 'é"\n'}), ('kind "odd"', None), ("ping", [1])])
    assert state.pending_wire("a", 1, 5) == [m.wire() for m in state.pending("a", 1, 5)]


def test_a_batch_bigger_than_one_insert_statement_keeps_its_order(state: State) -> None:
    seqs = state.enqueue_many("a", [("ping", {"n": n}) for n in range(1000)])
    assert seqs == list(range(1, 1001))
    assert [m.body["n"] for m in state.pending("a", limit=1000)] == list(range(1000))
    assert state.apply("b", state.pending("a", limit=1000)) == 1000
    assert [m.body["n"] for m in state.inbox("b", limit=1000)] == list(range(1000))


def test_ack_prunes_only_up_to_the_acknowledged_seq(state: State) -> None:
    state.enqueue_many("a", [("ping", None)] * 5)
    assert state.ack("a", 2) == 2
    assert [m.seq for m in state.pending("a")] == [3, 4, 5]
    assert state.ack("a", 2) == 0


def test_apply_is_exactly_once_across_redelivery(state: State) -> None:
    batch = [Message(1, "hello"), Message(2, "ping"), Message(3, "ping")]
    assert state.apply("a", batch) == 3
    # Redelivered, overlapping and out-of-order batches change nothing twice.
    assert state.apply("a", list(reversed(batch))) == 3
    assert state.apply("a", [Message(3, "ping"), Message(4, "ping")]) == 4
    assert [m.seq for m in state.inbox("a")] == [1, 2, 3, 4]


def test_a_redelivered_message_never_runs_its_effect_again(state: State) -> None:
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
    again = State(state.path)
    assert again.apply("a", batch + [Message(4, "ping")], effect) == 4
    assert runs == [1, 2, 3, 4]


def test_apply_refuses_a_gap_and_changes_nothing(state: State) -> None:
    state.apply("a", [Message(1, "hello")])
    with pytest.raises(Gap) as gap:
        state.apply("a", [Message(2, "ping"), Message(4, "ping")])
    assert gap.value.last_applied == 1
    assert state.last_applied("a") == 1
    assert [m.seq for m in state.inbox("a")] == [1]


def test_a_failing_effect_rolls_the_whole_batch_back(state: State) -> None:
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


def test_contact_keeps_the_first_error_time_until_success(state: State) -> None:
    state.record_error("a", "connection refused", when=100.0)
    state.record_error("a", "timed out", when=130.0)
    contact = state.contact("a")
    assert (contact.last_error, contact.error_since) == ("timed out", 100.0)
    state.record_ok("a", when=140.0)
    assert state.contact("a").last_ok == 140.0
    assert state.contact("a").last_error is None
    assert state.contact("a").error_since is None


def test_forget_drops_a_connection_only(state: State) -> None:
    for cid in ("a", "b"):
        state.enqueue(cid, "hello")
        state.apply(cid, [Message(1, "hello")])
    state.forget("a")
    assert (state.pending("a"), state.inbox("a"), state.last_seq("a")) == ([], [], 0)
    assert state.last_seq("b") == 1


def test_data_version_moves_when_another_handle_commits(tmp_path: Path) -> None:
    watcher = State(tmp_path / "state.sqlite3")
    writer = State(tmp_path / "state.sqlite3")
    before = watcher.data_version()
    writer.enqueue("a", "ping")
    assert watcher.data_version() != before


def test_the_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    State(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_damaged_file_is_reported_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="state.sqlite3: cannot be used"):
        State(path)
    assert path.read_bytes().startswith(b"this is not a database")


def _enqueue_in_child(path: str, count: int) -> None:
    state = State(Path(path))
    for _ in range(count):
        state.enqueue("a", "ping")


def test_two_processes_enqueueing_never_share_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    State(path)
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_enqueue_in_child, args=(str(path), 200)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert [m.seq for m in State(path).pending("a", limit=1000)] == list(range(1, 401))
