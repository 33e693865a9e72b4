"""`PgStreams`: the storage contract (streams_contract.py) on a real PostgreSQL, and what is
PostgreSQL's own: the versioned schema, appends racing from several workers, the hints."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from pgcluster import Cluster
from streams_contract import Store, StreamsContract

from exalate_tui.transport import pg_wakeups
from exalate_tui.transport.pg_streams import (
    COPY_FROM,
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    PgStreams,
)
from exalate_tui.transport.streams import LeaseLost, Message, StateError


class TestPgStreams(StreamsContract):
    @pytest.fixture
    def opener(self, pg_url: str) -> Iterator[Store]:
        store = Store("postgresql", pg_url, lambda: PgStreams(pg_url))
        try:
            yield store
        finally:
            store.close()


@pytest.fixture
def streams(pg_url: str) -> Iterator[list[PgStreams]]:
    """Handles to close at the end: `streams.append(PgStreams(url))`."""
    opened: list[PgStreams] = []
    try:
        yield opened
    finally:
        for handle in opened:
            handle.close()


def _version(url: str) -> int | None:
    with psycopg.connect(url) as db:
        row = db.execute(f"SELECT version FROM {SCHEMA}.schema_version").fetchone()
    return None if row is None else int(row[0])


# -- the schema ---------------------------------------------------------------------------


def test_a_new_database_gets_the_schema_at_its_version_once(
    pg_url: str, streams: list[PgStreams]
) -> None:
    openers = [threading.Thread(target=lambda: streams.append(PgStreams(pg_url))) for _ in "abc"]
    for thread in openers:
        thread.start()
    for thread in openers:
        thread.join(30)
    assert len(streams) == 3  # three workers starting at once: none failed
    assert _version(pg_url) == SCHEMA_VERSION == max(MIGRATIONS)
    with psycopg.connect(pg_url) as db:
        assert db.execute(f"SELECT COUNT(*) FROM {SCHEMA}.schema_version").fetchone() == (1,)


def test_a_database_at_an_earlier_version_moves_forward_keeping_its_messages(
    pg_url: str, streams: list[PgStreams]
) -> None:
    """Version 1 (the streams, before leases) as an earlier exalate-tui left it."""
    with psycopg.connect(pg_url, autocommit=True) as db, db.transaction():
        db.execute(f"CREATE SCHEMA {SCHEMA}")
        db.execute(f"CREATE TABLE {SCHEMA}.schema_version (version integer NOT NULL)")
        db.execute(MIGRATIONS[1])
        db.execute(f"INSERT INTO {SCHEMA}.schema_version VALUES (1)")
        db.execute(f"INSERT INTO {SCHEMA}.streams (cid, last_seq) VALUES ('a', 1)")
        db.execute(f"INSERT INTO {SCHEMA}.outbox VALUES ('a', 1, 'hello', '{{}}', 0)")
    with pytest.raises(StateError, match="version 1, .*run `exalate-tui db migrate`"):
        PgStreams(pg_url, migrate=False)
    state = PgStreams(pg_url)
    streams.append(state)
    assert _version(pg_url) == SCHEMA_VERSION
    assert state.pending("a") == [Message(1, "hello", "{}")]
    assert state.enqueue("a", "ping") == 2
    assert state.take_lease("a", "worker") == 1


def test_a_schema_from_a_newer_version_is_refused_and_left_alone(
    pg_url: str, streams: list[PgStreams]
) -> None:
    PgStreams(pg_url).close()
    with psycopg.connect(pg_url) as db:
        db.execute(f"UPDATE {SCHEMA}.schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StateError, match="newer exalate-tui .*update exalate-tui"):
        PgStreams(pg_url)
    assert _version(pg_url) == SCHEMA_VERSION + 1


def test_without_migrating_an_empty_database_says_to_run_db_migrate(pg_url: str) -> None:
    needs = rf"version 0, .*needs {SCHEMA_VERSION}: run `exalate-tui db migrate`"
    with pytest.raises(StateError, match=needs):
        PgStreams(pg_url, migrate=False)
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT to_regclass('exalate.outbox')").fetchone() == (None,)


def test_an_unreachable_database_names_it_without_its_password(postgres: Cluster) -> None:
    url = f"postgresql://alice:s3cr3t-pw@/nowhere?host={postgres.directory}&port=1"
    with pytest.raises(StateError) as refused:
        PgStreams(url)
    text = str(refused.value)
    assert "cannot be reached" in text and "exalate-tui db check" in text
    assert "alice@" in text and "s3cr3t-pw" not in text


# -- several workers appending ------------------------------------------------------------


def test_appends_racing_from_several_workers_are_gapless_in_commit_order(
    pg_url: str, streams: list[PgStreams]
) -> None:
    """Each reader sees seqs 1..N with no hole at any moment: a seq is never visible
    before every lower one is (commit order), and no append's number is lost."""
    workers = [PgStreams(pg_url, hints=False) for _ in range(3)]
    streams.extend(workers)
    reader = PgStreams(pg_url, hints=False)
    streams.append(reader)
    holes: list[list[int]] = []
    done = threading.Event()

    def size(n: int) -> int:  # now and then a batch big enough to go by COPY
        return COPY_FROM + n if n % 10 == 0 else 1 + n % 3

    def append(state: PgStreams) -> None:
        for n in range(60):
            state.enqueue_many("a", [("ping", {"n": n})] * size(n))

    def read() -> None:
        while not done.is_set():
            seqs = [m.seq for m in reader.pending("a", limit=10_000)]
            if seqs != list(range(1, len(seqs) + 1)):
                holes.append(seqs)

    watcher = threading.Thread(target=read)
    watcher.start()
    appenders = [threading.Thread(target=append, args=(w,)) for w in workers]
    for thread in appenders:
        thread.start()
    for thread in appenders:
        thread.join(60)
    done.set()
    watcher.join(10)
    total = 3 * sum(size(n) for n in range(60))
    assert [m.seq for m in reader.pending("a", limit=10_000)] == list(range(1, total + 1))
    assert reader.last_seq("a") == total
    assert not holes, f"a reader saw a hole: {holes[0][:20]}"


def test_a_rolled_back_append_gives_its_numbers_back(pg_url: str, streams: list[PgStreams]) -> None:
    state = PgStreams(pg_url)
    streams.append(state)
    state.enqueue("a", "hello")
    with pytest.raises(psycopg.Error):  # NUL is refused by PostgreSQL's text
        state.enqueue_many("a", [("ping", None), ("bad\x00kind", None)])
    assert state.enqueue("a", "ping") == 2
    assert [m.seq for m in state.pending("a")] == [1, 2]


# -- wake-ups across workers --------------------------------------------------------------


def _heard(state: PgStreams) -> tuple[list[tuple[str, float]], threading.Event]:
    heard: list[tuple[str, float]] = []
    event = threading.Event()

    def listener(cid: str) -> None:
        heard.append((cid, time.monotonic()))
        event.set()

    state.on_hint(listener)
    return heard, event


def _listening(state: PgStreams, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not state.hints.listening:
        assert time.monotonic() < deadline, "the listener never connected"
        time.sleep(0.01)


def test_an_enqueue_on_one_worker_is_heard_on_another_within_milliseconds(
    pg_url: str, streams: list[PgStreams]
) -> None:
    a, b = PgStreams(pg_url), PgStreams(pg_url)
    streams.extend([a, b])
    _listening(a)
    heard, event = _heard(a)
    delays = []
    for n in range(20):
        event.clear()
        heard.clear()
        started = time.monotonic()
        b.enqueue(f"c{n}", "ping")
        assert event.wait(2), "worker A never heard worker B's enqueue"
        delays.append(heard[0][1] - started)
        assert [cid for cid, _ in heard] == [f"c{n}"]
    delays.sort()
    print(f"hint B -> A: median {delays[10] * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms")
    assert delays[10] < 0.05


def test_a_burst_of_enqueues_sends_a_few_notifies_not_one_per_message(
    pg_url: str, streams: list[PgStreams]
) -> None:
    a, b = PgStreams(pg_url), PgStreams(pg_url)
    streams.extend([a, b])
    _listening(a)
    heard, _ = _heard(a)
    threads = [
        threading.Thread(target=lambda n=n: [b.enqueue(f"c{n}", "ping") for _ in range(100)])
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    deadline = time.monotonic() + 2
    while {cid for cid, _ in heard} != {"c0", "c1", "c2", "c3"}:
        assert time.monotonic() < deadline, f"heard only {sorted({c for c, _ in heard})}"
        time.sleep(0.01)
    sent = b.hints.sent
    print(f"400 enqueues on 4 connections: {sent} NOTIFY statements")
    assert sent < 200


def test_the_hints_survive_the_listener_losing_its_connection(
    pg_url: str, postgres: Cluster, streams: list[PgStreams]
) -> None:
    a, b = PgStreams(pg_url), PgStreams(pg_url)
    streams.extend([a, b])
    _listening(a)
    heard, event = _heard(a)
    pid = a.hints.backend_pid
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # Down: data_version moves on every look, so watchers poll the outboxes meanwhile.
    deadline = time.monotonic() + 5
    while a.hints.backend_pid == pid:
        assert time.monotonic() < deadline, "the listener never noticed"
        time.sleep(0.01)
    _listening(a)
    assert a.hints.backend_pid != pid
    b.enqueue("after", "ping")
    assert event.wait(2), "no hint heard once the listener reconnected"
    assert heard[-1][0] == "after"


def test_data_version_moves_by_itself_when_no_hint_comes(
    pg_url: str, streams: list[PgStreams]
) -> None:
    a = PgStreams(pg_url)
    streams.append(a)
    _listening(a)
    first = a.data_version()
    deadline = time.monotonic() + pg_wakeups.POLL_EVERY * 2 + 0.5
    while a.data_version() == first:
        assert time.monotonic() < deadline, "data_version is stuck without hints"
        time.sleep(0.05)


def test_an_apply_on_one_worker_is_seen_by_another_at_once(
    pg_url: str, streams: list[PgStreams]
) -> None:
    a, b = PgStreams(pg_url, hints=False), PgStreams(pg_url, hints=False)
    streams.extend([a, b])
    assert a.apply("x", [Message(1, "hello")]) == 1
    assert b.last_applied("x") == 1 and b.apply("x", [Message(1, "hello")]) == 1


def test_a_command_that_enqueues_and_closes_at_once_still_wakes_the_others(
    pg_url: str, streams: list[PgStreams]
) -> None:
    """A short-lived command (no listener) closes right after its enqueue: the hint
    still goes out before it does, so the node serving the partner answers at once."""
    a = PgStreams(pg_url)
    streams.append(a)
    _listening(a)
    heard, event = _heard(a)
    command = PgStreams(pg_url, hints=False)
    command.enqueue("c", "connection.deactivated")
    command.close()
    assert event.wait(1), "the closing command's hint was lost"
    assert [cid for cid, _ in heard] == ["c"]


def test_a_worker_carries_on_across_a_restart_of_postgresql(postgres: Cluster) -> None:
    """PostgreSQL restarted (crashed, `immediate`): what was committed is there, the
    calls made while it is down fail as `StateError` naming the database, the next
    ones work again on fresh connections, and the listener is back within seconds."""
    cluster = Cluster().start()  # our own: the session's stays up for the other tests
    try:
        url = cluster.database()
        a, b = PgStreams(url), PgStreams(url)
        try:
            _listening(a)
            assert b.enqueue_many("c", [("ping", None)] * 3) == [1, 2, 3]
            assert a.apply("c", b.pending("c")) == 3
            cluster.restart()
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert b.enqueue("c", "ping") == 4
                    break
                except StateError as error:
                    assert "cannot be reached" in str(error)
                    assert time.monotonic() < deadline, "never reconnected"
                    time.sleep(0.1)
            assert a.last_applied("c") == 3 and a.last_seq("c") == 4
            assert [m.seq for m in a.pending("c")] == [1, 2, 3, 4]
            _listening(a)
            heard, _ = _heard(a)
            b.enqueue("d", "ping")
            # (A late hint for "c", sent while the listener was reconnecting, may come too.)
            deadline = time.monotonic() + 2
            while "d" not in [cid for cid, _ in heard]:
                assert time.monotonic() < deadline, "no hint heard once the listener was back"
                time.sleep(0.01)
        finally:
            a.close()
            b.close()
    finally:
        cluster.stop()


# -- leases: one poller per connection across workers ----------------------------------


def test_a_lease_is_one_workers_until_it_runs_out_and_fences_the_last_holder(
    pg_url: str, streams: list[PgStreams]
) -> None:
    a, b = (
        PgStreams(pg_url, hints=False, lease_ttl=0.5),
        PgStreams(pg_url, hints=False, lease_ttl=0.5),
    )
    streams.extend([a, b])
    first = a.take_lease("c", "worker-a")
    assert first == 1
    assert b.take_lease("c", "worker-b") is None  # a's runs
    assert a.apply("c", [Message(1, "hello")], epoch=first) == 1
    time.sleep(0.7)  # a hangs past its lease (a GC pause, a stalled disk)
    second = b.take_lease("c", "worker-b")
    assert second == 2
    # The hung holder wakes up: its renewal and its apply are refused, nothing applied.
    assert not a.renew_lease("c", "worker-a", first)
    with pytest.raises(LeaseLost, match="another worker holds its lease"):
        a.apply("c", [Message(2, "ping")], epoch=first)
    assert b.last_applied("c") == 1
    assert b.apply("c", [Message(2, "ping")], epoch=second) == 2
    # Given up, the next holder's epoch is newer still (never reset).
    b.drop_lease("c", "worker-b", second)
    assert a.take_lease("c", "worker-a") == 3


def test_a_takeover_waits_for_an_apply_in_flight(pg_url: str, streams: list[PgStreams]) -> None:
    """The apply reads the lease FOR SHARE: a new holder cannot slip in mid-transaction."""
    a, b = PgStreams(pg_url, hints=False, lease_ttl=0.2), PgStreams(pg_url, hints=False)
    streams.extend([a, b])
    epoch = a.take_lease("c", "worker-a")
    assert epoch is not None
    inside = threading.Event()
    taken: list[int | None] = []

    def slow(message: Message) -> None:
        inside.set()
        time.sleep(0.6)  # past the lease, inside the transaction

    applier = threading.Thread(
        target=a.apply, args=("c", [Message(1, "hello")], slow), kwargs={"epoch": epoch}
    )
    applier.start()
    assert inside.wait(5)
    time.sleep(0.3)  # the lease has run out meanwhile
    started = time.monotonic()
    taker = threading.Thread(target=lambda: taken.append(b.take_lease("c", "worker-b")))
    taker.start()
    applier.join(10)
    taker.join(10)
    assert taken == [2] and a.last_applied("c") == 1
    assert time.monotonic() - started > 0.1  # it waited for the apply's commit


def test_a_user_without_the_right_to_make_the_schema_is_told_what_it_needs(
    pg_url: str,
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        (name,) = admin.execute("SELECT current_database()").fetchone() or ("",)
        admin.execute(f'CREATE ROLE "visitor_{name}" LOGIN')
        admin.execute(f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC')
    url = pg_url.replace("postgresql://postgres@", f"postgresql://visitor_{name}@")
    with pytest.raises(StateError, match="needs the right to create the schema") as refused:
        PgStreams(url)
    assert f"postgresql://visitor_{name}@" in str(refused.value)


def test_a_listener_that_hears_no_notify_is_refused_at_open(postgres: Cluster) -> None:
    """As through PgBouncer in transaction mode: here, the listener's URL names another
    database than the pool's (a NOTIFY reaches only its own database's listeners)."""
    url, elsewhere = postgres.database(), postgres.database()
    started = time.monotonic()
    with pytest.raises(StateError) as refused:
        PgStreams(url, listen_url=elsewhere)
    assert "did not arrive" in str(refused.value) and "EXALATE_TUI_DATABASE_LISTEN_URL" in str(
        refused.value
    )
    assert time.monotonic() - started < pg_wakeups.PROBE_TIMEOUT + 5
    PgStreams(url, listen_url=url).close()  # the same database: heard, opened


def test_a_listen_url_that_does_not_parse_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    from exalate_tui.transport import storage

    monkeypatch.setenv(storage.LISTEN_ENV, "postgresql://a b@/x")
    with pytest.raises(storage.DatabaseUrlError, match="EXALATE_TUI_DATABASE_LISTEN_URL") as bad:
        storage.listen_url()
    assert bad.value.bad_input
    monkeypatch.setenv(storage.LISTEN_ENV, " ")
    assert storage.listen_url() is None
