"""One sync engine across workers sharing PostgreSQL: the store's lease for the engine.

Two homes (two workers) on one database each run `run_engine`, as two nodes
would: one engine runs, the other waits; when the first stops, the second
takes over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status
from exalate_tui.domain.topology import Topology
from exalate_tui.home.store import Home
from exalate_tui.sync.engine import Engine
from exalate_tui.sync.pg_store import PgSyncStore
from exalate_tui.sync.service import ENGINE_LEASE, run_engine
from exalate_tui.sync.store import Link
from exalate_tui.trackers import open_tracker
from exalate_tui.transport.pg_streams import PgStreams


@pytest.fixture
def workers(tmp_path: Path, pg_url: str) -> Iterator[list[tuple[Home, PgStreams]]]:
    made = []
    for name in ("a", "b"):
        home = Home(tmp_path / name)
        home.save_instance(Instance(short_name="snow", database=pg_url))
        made.append((home, PgStreams(pg_url, hints=False, lease_ttl=0.6)))
    try:
        yield made
    finally:
        for _, streams in made:
            streams.close()


def _holder(url: str) -> str | None:
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT holder FROM exalate.leases WHERE cid = %s AND expires > "
            "extract(epoch from clock_timestamp())",
            (ENGINE_LEASE,),
        ).fetchone()
    return None if row is None else str(row[0])


def _engines() -> int:
    return sum(1 for task in asyncio.all_tasks() if task.get_name() == "sync-engine")


@pytest.mark.anyio
async def test_one_engine_runs_across_workers_and_another_takes_over(
    workers: list[tuple[Home, PgStreams]], pg_url: str
) -> None:
    (home_a, streams_a), (home_b, streams_b) = workers
    first_job = asyncio.create_task(run_engine(home_a, streams_a))
    jobs = [first_job]
    try:
        deadline = time.monotonic() + 10
        while _holder(pg_url) is None or _engines() != 1:
            assert time.monotonic() < deadline, "no engine started"
            await asyncio.sleep(0.05)
        first = _holder(pg_url)
        jobs.append(asyncio.create_task(run_engine(home_b, streams_b)))
        await asyncio.sleep(2.5)  # the second has looked (every 2 s) and waits: still one
        assert _engines() == 1 and _holder(pg_url) == first
        # The first worker stops (its node is stopped): the second takes over.
        first_job.cancel()
        await asyncio.gather(first_job, return_exceptions=True)
        stopped = time.monotonic()
        while _holder(pg_url) in (None, first) or _engines() != 1:
            assert time.monotonic() < stopped + 10, "the other worker never took over"
            await asyncio.sleep(0.05)
        print(f"the second worker's engine took over {time.monotonic() - stopped:.1f} s later")
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


def _connection(cid: str) -> Connection:
    return Connection(
        id=cid,
        name=f"snow_to_jira_{cid}",
        mode=Mode.BASIC,
        topology=Topology.PUBLIC_PRIVATE,
        role=Role.INITIATOR,
        local_name="snow",
        remote_name="jira",
        status=Status.ACTIVE,
        secret=SecretStr("s" * 43),
    )


@pytest.mark.anyio
async def test_a_worker_missing_a_connection_file_keeps_its_links_in_the_shared_store(
    workers: list[tuple[Home, PgStreams]], pg_url: str
) -> None:
    """The connection files are each worker's home's: an engine on a worker whose home
    lacks one drops none of its links; a connection deleted there (a tombstone) it does."""
    (home_a, streams), (home_b, _) = workers
    for cid in ("kept", "deleted"):
        home_a.save_connection(_connection(cid))
        home_b.save_connection(_connection(cid))
    home_a.save_connection(_connection("only-a"))  # made on A after B's files were copied
    home_b.bury_connection("deleted")
    store = PgSyncStore(pg_url)
    tracker = open_tracker(home_b)
    try:
        for cid in ("kept", "deleted", "only-a"):
            store.save_link(Link(cid, f"SNOW-{cid}", None, True, "local"))
        Engine(home_b, streams, tracker, store).tidy()
        assert store.cids() == {"kept", "only-a"}
    finally:
        store.close()
        await tracker.close()
