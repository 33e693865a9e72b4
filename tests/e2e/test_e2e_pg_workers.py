"""Two node workers on one PostgreSQL database: a long-poll parked on one is woken by an
enqueue made elsewhere within milliseconds (pg_wakeups: LISTEN/NOTIFY as a hint).

snow runs as two workers, A and B: two homes with the same instance.toml and the
same database.key, and no connection file in either (the connection, made on A,
lives in the database: B finds it there), two `exalate-tui node` processes on
127.0.0.1. jira (private) polls A. The
test, as the partner, parks signed long-polls on B and measures how soon each
answers after an enqueue by another process: this test's own handle on the
database, and then the CLI run on worker A's home.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time

import pytest

from exalate_tui.transport.client import Remote
from exalate_tui.transport.pg_streams import PgStreams

from .conftest import Instance, MakeInstance, wait_for

pytestmark = [pytest.mark.e2e]


def second_worker(
    first: Instance, make: MakeInstance, database: str, name: str | None = None
) -> Instance:
    """Another worker of `first`: a home of its own, another port, `first`'s instance.toml
    and database key (README: the key is copied, the connections are in the database)."""
    worker = make(
        first.short_name, public=True, database=database, name=name or f"{first.short_name}-b"
    )
    for path in ("instance.toml", "database.key"):
        shutil.copy2(first.home / path, worker.home / path)
    for home in (first.home, worker.home):
        assert not list(home.glob("connections/*.toml")), "connections are rows, not files"
    return worker


async def parked_poll(remote: Remote, cid: str, secret: object, after: int) -> float:
    """A long-poll after `after` (acknowledging nothing); time.time() when it answered."""
    started = time.monotonic()
    batch = await remote.fetch(cid, secret, after, wait=10, ack=0)  # type: ignore[arg-type]
    answered = time.time()
    # Woken, not timed out.
    assert time.monotonic() - started < 9
    assert batch.messages and batch.messages[0].seq == after + 1
    return answered


def test_a_poll_parked_on_one_worker_wakes_at_an_enqueue_elsewhere(
    instances: MakeInstance, pg_url: str
) -> None:
    a = instances("snow", public=True, database=pg_url)
    jira = instances("jira", public=False)
    a.start()
    jira.start()
    a.serving()
    jira.serving()
    code = a.ok(
        "initiate", "--no-url", "--mode", "script", "--local-name", "snow", "--remote-name", "jira"
    ).strip()
    cid = jira.json("accept", "-", stdin=code)["connection"]["id"]
    wait_for(lambda: a.show(cid)["status"] == "active", "snow Active")
    b = second_worker(a, instances, pg_url)
    b.start()
    b.serving()
    secret = a.stored(cid).secret
    assert secret is not None
    # B serves the connection A made from the database alone: no file of it anywhere.
    assert b.stored(cid).secret == secret
    assert not list(b.home.glob("connections/*.toml"))
    wait_for(lambda: jira.state.last_applied(cid) >= 1, "snow's hello at jira")
    # jira would apply and prune what the test's polls are to find: it waits meanwhile.
    assert jira.stop() == 0
    mine = PgStreams(pg_url, hints=False)  # another process's handle: no listener of its own

    async def measure(samples: int) -> list[float]:
        delays = []
        remote = Remote(b.url)
        try:
            for n in range(samples):
                after = await asyncio.to_thread(mine.last_seq, cid)
                poll = asyncio.ensure_future(parked_poll(remote, cid, secret, after))
                await asyncio.sleep(0.2)  # parked by now
                assert not poll.done()
                enqueued = time.time()
                await asyncio.to_thread(mine.enqueue, cid, "ping", {"n": n})
                delays.append(await poll - enqueued)
        finally:
            await remote.aclose()
        return delays

    try:
        delays = asyncio.run(measure(20))
        print(
            f"enqueue -> long-poll on the other worker answered: median "
            f"{statistics.median(delays) * 1000:.1f} ms, max {max(delays) * 1000:.1f} ms"
        )
        assert statistics.median(delays) < 0.1, delays
        pinged = mine.last_seq(cid)

        # An admin's action on worker A's home (another process, the CLI) wakes B's poll.
        async def by_the_cli() -> float:
            remote = Remote(b.url)
            try:
                after = await asyncio.to_thread(mine.last_seq, cid)
                poll = asyncio.ensure_future(parked_poll(remote, cid, secret, after))
                await asyncio.sleep(0.2)
                done = await asyncio.to_thread(a.cli, "connections", "deactivate", cid)
                exited = time.time()
                assert done.returncode == 0, done.stderr
                return await poll - exited
            finally:
                await remote.aclose()

        delay = asyncio.run(by_the_cli())
        print(f"B's long-poll answered {delay * 1000:.0f} ms after the CLI on A's home exited")
        assert delay < 0.5
        # Everything reaches jira too, through worker A, once resumed and running again.
        a.ok("connections", "activate", cid)
        jira.start()
        jira.serving()
        wait_for(lambda: jira.state.last_applied(cid) >= mine.last_seq(cid), "jira has them all")
        kinds = [m.kind for m in jira.state.inbox(cid, after=pinged)]
        assert kinds == ["connection.deactivated", "connection.activated"]
    finally:
        mine.close()
