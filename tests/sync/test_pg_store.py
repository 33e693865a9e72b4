"""`PgSyncStore`: the sync store's contract (store_contract.py) on a real PostgreSQL, and what
is PostgreSQL's own: opened where the home's streams are, fenced by the engine's lease,
a batch in one transaction, a database out of reach."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home
from exalate_tui.sync.pg_store import PgSyncStore, SyncDatabaseError
from exalate_tui.sync.storage import open_sync_store
from exalate_tui.sync.store import (
    Link,
    SqliteSyncStore,
    SyncStore,
    SyncStoreError,
)
from exalate_tui.transport.pg_streams import SCHEMA, SCHEMA_VERSION, PgStreams
from exalate_tui.transport.streams import LeaseLost, StateError

from .store_contract import CID, Opener, SyncStoreContract


class TestPgSyncStore(SyncStoreContract):
    @pytest.fixture
    def opener(self, pg_url: str) -> Iterator[Opener]:
        opened: list[SyncStore] = []

        def open_one() -> SyncStore:
            opened.append(PgSyncStore(pg_url))
            return opened[-1]

        try:
            yield open_one
        finally:
            for store in opened:
                store.close()


@pytest.fixture
def store(pg_url: str) -> Iterator[PgSyncStore]:
    opened = PgSyncStore(pg_url)
    try:
        yield opened
    finally:
        opened.close()


def test_a_home_on_postgresql_keeps_its_sync_tables_in_the_database(
    tmp_path: Path, pg_url: str
) -> None:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow", database=pg_url))
    store = open_sync_store(home)
    try:
        assert isinstance(store, PgSyncStore) and "postgresql://" in store.where
        store.save_link(Link(CID, "SNOW-1", None, True, "local"))
    finally:
        store.close()
    assert not home.state_path.exists()  # no file of the home holds them
    with psycopg.connect(pg_url) as db:
        assert db.execute(f"SELECT local_key FROM {SCHEMA}.sync_links").fetchall() == [("SNOW-1",)]
        version = db.execute(f"SELECT version FROM {SCHEMA}.schema_version").fetchone()
    assert version == (SCHEMA_VERSION,)


def test_a_fenced_store_writes_nothing_once_another_worker_took_the_lease(
    store: PgSyncStore, pg_url: str
) -> None:
    streams = PgStreams(pg_url, hints=False, lease_ttl=0.2)
    try:
        epoch = streams.take_lease("(sync engine)", "worker-a")
        assert epoch is not None
        store.fence("(sync engine)", epoch)
        store.processed(CID, 1, link=Link(CID, "SNOW-1", "JIRA-1", True, "remote"))
        time.sleep(0.3)  # worker-a hangs past its lease; worker-b takes it
        assert streams.take_lease("(sync engine)", "worker-b") == epoch + 1
        with pytest.raises(LeaseLost, match="nothing was written"):
            store.processed(CID, 2, link=Link(CID, "SNOW-2", "JIRA-2", True, "remote"))
        with pytest.raises(LeaseLost), store.deferred():
            store.save_link(Link(CID, "SNOW-3", None, True, "local"))
        with pytest.raises(LeaseLost):
            store.fail(CID, "out", "refused", local_key="SNOW-1")
        # Reads go on; only what came before the takeover is there.
        assert store.cursor(CID) == 1 and [k.local_key for k in store.links(CID)] == ["SNOW-1"]
        assert store.errors() == []
    finally:
        streams.close()


def _writers(url: str, cid: str) -> int:
    """How many transactions wrote a connection's links and cursor: each row version
    carries its writer's id (`xmin`), whatever else the cluster is doing meanwhile."""
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            f"SELECT count(DISTINCT xmin::text) FROM (SELECT xmin FROM {SCHEMA}.sync_links"
            f" WHERE cid = %s UNION ALL SELECT xmin FROM {SCHEMA}.sync_cursors WHERE cid = %s) w",
            (cid, cid),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_deferred_batch_is_one_transaction(
    store: PgSyncStore, pg_url: str, tmp_path: Path
) -> None:
    """Bulk exalate's shape: a link and a cursor per message. Deferred, the batch's
    statements are pipelined in one transaction; one by one, each is a commit of its own
    (both timed, and SQLite's, for benchmarks/README.md: printed, not asserted)."""
    count = 500

    def batch(cid: str) -> None:
        for n in range(1, count + 1):
            store.processed(cid, n, link=Link(cid, f"SNOW-{n}", f"JIRA-{n}", True, "remote"))

    started = time.perf_counter()
    batch("one-by-one")
    each = time.perf_counter() - started
    started = time.perf_counter()
    with store.deferred():
        batch("deferred")
    deferred = time.perf_counter() - started
    with store.deferred():
        batch("counted")
    commits = _writers(pg_url, "counted")
    print(
        f"{count} messages: one by one {each * 1000:.0f} ms, deferred {deferred * 1000:.0f} ms; "
        f"a deferred batch: {commits} transaction(s)"
    )
    assert store.cursor("counted") == count and len(store.links("counted")) == count
    assert commits == 1
    sqlite = SqliteSyncStore(tmp_path / "state.sqlite3")
    try:
        started = time.perf_counter()
        with sqlite.deferred():
            for n in range(1, count + 1):
                sqlite.processed(CID, n, link=Link(CID, f"SNOW-{n}", f"JIRA-{n}", True, "remote"))
        print(f"the same deferred batch on SQLite: {(time.perf_counter() - started) * 1000:.0f} ms")
    finally:
        sqlite.close()


def test_a_database_out_of_reach_is_named_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://exalate:hunter2@/nothing?host={tmp_path}"
    with pytest.raises(SyncDatabaseError) as raised:
        PgSyncStore(url)
    assert isinstance(raised.value, SyncStoreError) and isinstance(raised.value, StateError)
    assert "cannot be reached" in str(raised.value) and "hunter2" not in str(raised.value)
