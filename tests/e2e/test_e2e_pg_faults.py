"""Three node workers on one PostgreSQL behind a balancer, killed one at a time with
SIGKILL while the partner polls and pushes, and PostgreSQL restarted once: nothing
lost, nothing applied twice, nothing reordered, the partner back each time.

snow runs as three workers (homes with the same instance.toml and connection
file, until connections live in the database) behind `balancer.Balancer`, whose
URL is snow's public URL, so jira (private, state.sqlite3) polls and pushes
through it and reaches whichever worker is up. The test enqueues on both sides
in slices; between slices one worker is killed with SIGKILL (every other time
the one jira's connection is open on) and started again,
and halfway PostgreSQL itself is stopped (`immediate`, as a crash) and started.
Sizes: RELIABILITY_PG_MESSAGES (each way, default 600), RELIABILITY_PG_KILLS
(default 4).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import pytest
from pgcluster import Cluster

from exalate_tui.transport.pg_streams import PgStreams

from .balancer import Balancer
from .conftest import MakeInstance, wait_for
from .test_e2e_pg_workers import second_worker

pytestmark = [pytest.mark.e2e]

MESSAGES = int(os.environ.get("RELIABILITY_PG_MESSAGES", "600"))
KILLS = int(os.environ.get("RELIABILITY_PG_KILLS", "4"))
# Back within: the poller's backoff cap (60 s) is the bound; these come back far sooner.
BACK_WITHIN = 60.0


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL of this test's own: it is restarted mid-test."""
    own = Cluster().start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def balancer() -> Iterator[Balancer]:
    front = Balancer().start()
    try:
        yield front
    finally:
        front.stop()


def test_workers_killed_and_postgresql_restarted_lose_and_repeat_nothing(
    instances: MakeInstance, cluster: Cluster, balancer: Balancer
) -> None:
    url = cluster.database()
    a = instances("snow", public=True, database=url)
    a.ok("init", "--short-name", "snow", "--public-url", balancer.url)
    jira = instances("jira", public=False)
    balancer.targets = [a.port]
    a.start()
    jira.start()
    a.serving()
    jira.serving()
    code = a.ok(
        "initiate", "--no-url", "--mode", "script", "--local-name", "snow", "--remote-name", "jira"
    ).strip()
    cid = jira.json("accept", "-", stdin=code)["connection"]["id"]
    wait_for(lambda: a.show(cid)["status"] == "active", "snow Active")
    workers = [a] + [second_worker(a, instances, url, f"snow-{n}") for n in "bc"]
    for worker in workers[1:]:
        worker.start()
        worker.serving()
    balancer.targets = [w.port for w in workers]
    snow = PgStreams(url, hints=False)  # the admin's process on snow's side: enqueues
    rng = random.Random(int(os.environ.get("RELIABILITY_SEED", "15")))
    slices = max(KILLS + 2, 6)
    per_slice = max(1, MESSAGES // slices)
    sent = 0
    backs: list[float] = []
    restarted_postgres = False
    try:
        wait_for(
            lambda: snow.last_applied(cid) >= 1 and jira.state.last_applied(cid) >= 1, "hellos"
        )
        for number in range(slices):
            count = per_slice if number < slices - 1 else MESSAGES - sent
            body = [("ping", {"n": n}) for n in range(sent, sent + count)]
            snow.enqueue_many(cid, body)
            jira.state.enqueue_many(cid, body)
            sent += count
            if number == slices // 2 and not restarted_postgres:
                cluster.restart()
                restarted_postgres = True
            elif number < KILLS:
                # The worker jira's poll is open on, every other time: its partner must
                # find another; else any worker.
                serving = [w for w in workers if balancer.open[w.port] > 0]
                victim = serving[0] if serving and number % 2 == 0 else rng.choice(workers)
                time.sleep(rng.uniform(0.05, 0.5))  # mid-stream
                victim.kill()
                time.sleep(rng.uniform(0.2, 1.0))
                victim.start()
                victim.serving()
            started = time.monotonic()
            wait_for(
                lambda: (
                    jira.state.last_applied(cid) >= snow.last_seq(cid)
                    and snow.last_applied(cid) >= jira.state.last_seq(cid)
                ),
                f"both sides applied slice {number}",
                timeout=BACK_WITHIN,
            )
            backs.append(time.monotonic() - started)
        # Every message once, in order, on each side: hello, then pings 0..N-1.
        for inbox in (
            snow.inbox(cid, limit=MESSAGES + 10),
            jira.state.inbox(cid, limit=MESSAGES + 10),
        ):
            assert [m.seq for m in inbox] == list(range(1, MESSAGES + 2))
            assert inbox[0].kind == "hello"
            assert [m.body["n"] for m in inbox[1:]] == list(range(MESSAGES))
        print(
            f"{MESSAGES} messages each way through 3 workers, {KILLS} SIGKILLs, PostgreSQL "
            f"restarted once: 0 lost, 0 twice, 0 out of order; back after "
            f"{max(backs):.1f} s at most, median {sorted(backs)[len(backs) // 2]:.1f} s; "
            f"connections per worker {dict(balancer.sent)}"
        )
    finally:
        snow.close()
