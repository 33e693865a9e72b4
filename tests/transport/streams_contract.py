"""The storage contract: what every `Streams` keeps (exalate_tui/transport/streams.py),
as the node, the supervisor, the lifecycle and the sync engine rely on it. As
vdirsyncer holds each storage to one suite, `SqliteStreams` and `PgStreams` pass
this one.

A storage's test module subclasses `StreamsContract` and provides one fixture:
- `opener`: a `Store` whose `open()` gives a new handle on one new, empty store
  (another process's view of the same file or database), each closed after the
  test, and whose `where` is what `open_in_child(kind, where, listen)` opens in a
  child process (`listen`: a listen URL of its own, for a `where` behind PgBouncer).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from exalate_tui.transport.streams import Gap, Message, Streams


def open_in_child(kind: str, where: str, listen: str | None = None) -> Streams:
    """The store `where` names, opened in a child process (spawned: nothing inherited)."""
    if kind == "sqlite":
        from exalate_tui.transport.sqlite_streams import SqliteStreams

        return SqliteStreams(Path(where))
    from exalate_tui.transport.pg_streams import PgStreams

    return PgStreams(where, hints=False, listen_url=listen)


@dataclass
class Store:
    kind: str  # "sqlite" or "postgresql"
    where: str  # a path or a URL
    make: Callable[[], Streams]
    listen: str | None = None  # PostgreSQL's own URL, when `where` goes through PgBouncer
    handles: list[Streams] = field(default_factory=list)

    def open(self) -> Streams:
        self.handles.append(self.make())
        return self.handles[-1]

    def close(self) -> None:
        for handle in self.handles:
            handle.close()


def _enqueue_in_child(kind: str, where: str, count: int, listen: str | None = None) -> None:
    state = open_in_child(kind, where, listen)
    for _ in range(count):
        state.enqueue("a", "ping")
    state.close()


class StreamsContract:
    @pytest.fixture
    def state(self, opener: Store) -> Streams:
        return opener.open()

    # -- the outbox -------------------------------------------------------------------

    def test_sequence_numbers_are_per_connection_and_start_at_one(self, state: Streams) -> None:
        assert state.enqueue("a", "hello") == 1
        assert state.enqueue_many("a", [("ping", None), ("ping", {"n": 2})]) == [2, 3]
        assert state.enqueue("b", "hello") == 1
        assert state.last_seq("a") == 3
        assert state.last_seq("nobody") == 0
        assert state.last_seqs(["a", "b", "nobody"]) == {"a": 3, "b": 1, "nobody": 0}
        assert [m.seq for m in state.pending("a")] == [1, 2, 3]
        assert state.pending("a", after=2) == [Message(3, "ping", '{"n":2}')]

    def test_numbering_survives_acks_and_reopening(self, opener: Store) -> None:
        first = opener.open()
        first.enqueue_many("a", [("ping", None)] * 3)
        assert first.ack("a", 3) == 3
        first.close()
        opener.handles.remove(first)
        again = opener.open()
        assert again.pending("a") == []
        assert again.enqueue("a", "ping") == 4

    def test_wire_form_splices_the_stored_body(self, state: Streams) -> None:
        state.enqueue("a", "hello", {"text": 'é\n"quoted"'})
        (message,) = state.pending("a")
        decoded = json.loads(message.wire())
        assert decoded == {"seq": 1, "kind": "hello", "body": {"text": 'é\n"quoted"'}}
        assert Message.from_wire(decoded) == message

    def test_pending_wire_is_each_pending_message_in_wire_form(self, state: Streams) -> None:
        state.enqueue_many("a", [("hello", {"t": 'é"\n'}), ('kind "odd"', None), ("ping", [1])])
        assert state.pending_wire("a", 1, 5) == [m.wire() for m in state.pending("a", 1, 5)]

    def test_a_batch_bigger_than_one_insert_statement_keeps_its_order(self, state: Streams) -> None:
        seqs = state.enqueue_many("a", [("ping", {"n": n}) for n in range(1000)])
        assert seqs == list(range(1, 1001))
        assert [m.body["n"] for m in state.pending("a", limit=1000)] == list(range(1000))
        assert state.apply("b", state.pending("a", limit=1000)) == 1000
        assert [m.body["n"] for m in state.inbox("b", limit=1000)] == list(range(1000))

    def test_broadcast_gives_each_connection_its_next_seq(self, state: Streams) -> None:
        state.enqueue_many("a", [("ping", None)] * 2)
        assert state.broadcast(["a", "b"], "connection.deactivated", {"x": 1}) == {"a": 3, "b": 1}
        assert state.pending("b") == [Message(1, "connection.deactivated", '{"x":1}')]
        assert state.broadcast([], "ping") == {}

    def test_ack_prunes_only_up_to_the_acknowledged_seq(self, state: Streams) -> None:
        state.enqueue_many("a", [("ping", None)] * 5)
        assert state.ack("a", 2) == 2
        assert [m.seq for m in state.pending("a")] == [3, 4, 5]
        assert state.ack("a", 2) == 0
        count, oldest = state.backlog("a")
        assert count == 3 and oldest is not None and abs(oldest - time.time()) < 60

    # -- the inbox ----------------------------------------------------------------------

    def test_apply_is_exactly_once_across_redelivery(self, state: Streams) -> None:
        batch = [Message(1, "hello"), Message(2, "ping"), Message(3, "ping")]
        assert state.apply("a", batch) == 3
        # Redelivered, overlapping and out-of-order batches change nothing twice.
        assert state.apply("a", list(reversed(batch))) == 3
        assert state.apply("a", [Message(3, "ping"), Message(4, "ping")]) == 4
        assert [m.seq for m in state.inbox("a")] == [1, 2, 3, 4]
        assert state.applied() == {"a": 4}
        assert state.backlog("a", inbox_after=2)[0] == 2

    def test_a_redelivered_message_never_runs_its_effect_again(self, opener: Store) -> None:
        """The effect runs once per message, so an effect need not be idempotent."""
        state = opener.open()
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
        # Another handle on the same store (the node and the console; another worker).
        again = opener.open()
        assert again.apply("a", batch + [Message(4, "ping")], effect) == 4
        assert runs == [1, 2, 3, 4]

    def test_apply_refuses_a_gap_and_changes_nothing(self, state: Streams) -> None:
        state.apply("a", [Message(1, "hello")])
        with pytest.raises(Gap) as gap:
            state.apply("a", [Message(2, "ping"), Message(4, "ping")])
        assert gap.value.last_applied == 1
        assert state.last_applied("a") == 1
        assert [m.seq for m in state.inbox("a")] == [1]

    def test_a_failing_effect_rolls_the_whole_batch_back(self, state: Streams) -> None:
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

    def test_prune_inbox_drops_only_those_kinds_up_to_a_seq(self, state: Streams) -> None:
        state.apply("a", [Message(1, "hello"), Message(2, "sync.x"), Message(3, "sync.x")])
        assert state.prune_inbox("a", 2, ["sync.x"]) == 1
        assert state.prune_inbox("a", 3, []) == 0
        assert [m.seq for m in state.inbox("a")] == [1, 3]
        assert state.last_applied("a") == 3

    def test_each_listener_hears_what_it_listens_for_until_removed(self, state: Streams) -> None:
        enqueued: list[str] = []
        applied: list[str] = []
        stop_enqueued = state.on_enqueue(enqueued.append)
        stop_applied = state.on_apply(applied.append)
        state.enqueue("a", "ping")
        state.broadcast(["b", "c"], "ping")
        state.apply("d", [Message(1, "hello")])
        state.apply("d", [Message(1, "hello")])  # nothing new: no call
        stop_enqueued()
        stop_applied()
        state.enqueue("a", "ping")
        state.apply("d", [Message(2, "ping")])
        assert sorted(enqueued) == ["a", "b", "c"]
        assert applied == ["d"]

    # -- contact and housekeeping ---------------------------------------------------

    def test_contact_keeps_the_first_error_time_until_success(self, state: Streams) -> None:
        state.record_error("a", "connection refused", when=100.0)
        state.record_error("a", "timed out", when=130.0)
        contact = state.contact("a")
        assert (contact.last_error, contact.error_since) == ("timed out", 100.0)
        state.record_ok("a", when=140.0)
        assert state.contact("a").last_ok == 140.0
        assert state.contact("a").last_error is None
        assert state.contact("a").error_since is None
        assert state.contact("nobody").last_ok is None

    def test_forget_drops_a_connection_only(self, state: Streams) -> None:
        for cid in ("a", "b"):
            state.enqueue(cid, "hello")
            state.apply(cid, [Message(1, "hello")])
        state.forget("a")
        assert (state.pending("a"), state.inbox("a"), state.last_seq("a")) == ([], [], 0)
        assert state.last_seq("b") == 1
        state.check()

    def test_data_version_moves_when_another_handle_commits(self, opener: Store) -> None:
        watcher, writer = opener.open(), opener.open()
        before = watcher.data_version()
        writer.enqueue("a", "ping")
        deadline = time.monotonic() + 2
        while watcher.data_version() == before:
            assert time.monotonic() < deadline, "data_version never moved"
            time.sleep(0.005)

    # -- several writers --------------------------------------------------------------

    def test_two_processes_enqueueing_never_share_a_seq(self, opener: Store) -> None:
        opener.open()
        context = multiprocessing.get_context("spawn")
        children = [
            context.Process(
                target=_enqueue_in_child, args=(opener.kind, opener.where, 200, opener.listen)
            )
            for _ in range(2)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
            assert child.exitcode == 0
        seqs = [m.seq for m in opener.open().pending("a", limit=1000)]
        assert seqs == list(range(1, 401))

    def test_threads_applying_one_stream_at_once_apply_each_message_once(
        self, opener: Store
    ) -> None:
        handles = [opener.open() for _ in range(2)]
        runs: list[int] = []
        lock = threading.Lock()

        def effect(message: Message) -> None:
            with lock:
                runs.append(message.seq)

        batches = [[Message(seq, "ping") for seq in range(1, n + 1)] for n in range(1, 41)]

        def applier(state: Streams) -> None:
            for batch in batches:
                state.apply("a", batch, effect)

        threads = [threading.Thread(target=applier, args=(h,)) for h in handles]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(runs) == list(range(1, 41))
        assert [m.seq for m in handles[0].inbox("a")] == list(range(1, 41))

    # -- leases -----------------------------------------------------------------------

    def test_a_lease_taken_lets_its_holder_apply_and_can_be_given_up(self, state: Streams) -> None:
        epoch = state.take_lease("a", "worker-1")
        assert epoch is not None
        assert state.renew_lease("a", "worker-1", epoch)
        assert state.apply("a", [Message(1, "hello")], epoch=epoch or None) == 1
        state.drop_lease("a", "worker-1", epoch)
        assert state.take_lease("a", "worker-2") is not None
