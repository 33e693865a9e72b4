"""PgBouncer in transaction mode in front of PostgreSQL (pgbouncer.py starts one): the
streams and the sync store work through it, with the one listener connection of each
worker straight to PostgreSQL (`listen_url`, `EXALATE_TUI_DATABASE_LISTEN_URL`); a
listener through it is refused at open, saying so."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pgbouncer import Bouncer
from pgcluster import Cluster, Unavailable
from streams_contract import Store, StreamsContract
from sync.store_contract import Opener, SyncStoreContract

from exalate_tui.sync.pg_store import PgSyncStore
from exalate_tui.sync.store import SyncStore
from exalate_tui.transport.pg_streams import PgStreams
from exalate_tui.transport.streams import StateError


@pytest.fixture(scope="module")
def bouncer(postgres: Cluster) -> Iterator[Bouncer]:
    try:
        started = Bouncer(postgres).start()
    except Unavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"PgBouncer is required in CI: {error}", pytrace=False)
        pytest.skip(f"PGBOUNCER UNAVAILABLE, its tests did not run: {error}")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def pooled_url(bouncer: Bouncer, pg_url: str) -> str:
    """The test's database through PgBouncer."""
    return bouncer.url(urlsplit(pg_url).path.lstrip("/"))


class TestPgStreamsThroughPgBouncer(StreamsContract):
    @pytest.fixture
    def opener(self, pooled_url: str, pg_url: str) -> Iterator[Store]:
        store = Store(
            "postgresql", pooled_url, lambda: PgStreams(pooled_url, listen_url=pg_url), pg_url
        )
        try:
            yield store
        finally:
            store.close()


class TestPgSyncStoreThroughPgBouncer(SyncStoreContract):
    @pytest.fixture
    def opener(self, pooled_url: str) -> Iterator[Opener]:
        opened: list[SyncStore] = []

        def open_one() -> SyncStore:
            opened.append(PgSyncStore(pooled_url, pooled=True))
            return opened[-1]

        try:
            yield open_one
        finally:
            for store in opened:
                store.close()


def test_a_listener_through_pgbouncer_is_refused_saying_what_to_set(
    pooled_url: str, pg_url: str
) -> None:
    with pytest.raises(StateError) as refused:
        PgStreams(pooled_url)
    message = str(refused.value)
    assert "PgBouncer" in message and "EXALATE_TUI_DATABASE_LISTEN_URL" in message
    # A command that listens to nobody (hints=False) works through it, its statements
    # never prepared (the listen URL set says the other one goes through a pooler).
    command = PgStreams(pooled_url, hints=False, listen_url=pg_url)
    try:
        assert [command.enqueue("a", "ping") for _ in range(8)] == list(range(1, 9))
    finally:
        command.close()


def test_a_worker_behind_pgbouncer_hears_another_through_its_direct_listener(
    pooled_url: str, pg_url: str
) -> None:
    worker = PgStreams(pooled_url, listen_url=pg_url)
    other = PgStreams(pooled_url, hints=False, listen_url=pg_url)
    heard = threading.Event()
    worker.on_hint(lambda cid: heard.set() if cid == "a" else None)
    try:
        other.enqueue("a", "ping")
        assert heard.wait(5), "the enqueue through PgBouncer never woke the worker"
        assert worker.pending("a")[0].kind == "ping"
    finally:
        worker.close()
        other.close()


def test_a_node_whose_listener_would_go_through_pgbouncer_exits_saying_what_to_set(
    pooled_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "snow"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXALATE_TUI_")}
        return subprocess.run(
            [sys.executable, "-m", "exalate_tui.cli", "--home", str(home), *args],
            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    assert cli("init", "--short-name", "snow", "--database", pooled_url).returncode == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    node = cli("node", "--host", "127.0.0.1", "--port", str(port))
    assert node.returncode == 1
    assert "PgBouncer" in node.stderr and "EXALATE_TUI_DATABASE_LISTEN_URL" in node.stderr
    assert "Traceback" not in node.stderr
