"""Promise 6: faults on the wire and kill -9, with every message applied once, in order.

Two real `exalate-tui node` processes (separate homes, free ports) with a
FaultyProxy (proxy.py) between them: the public node's URL, and so the
code's and the private side's `remote_url`, is the proxy's. Messages stream
both ways (public → private by long-poll, private → public by push) while
the proxy drops, resets, stalls and cuts connections and either node is
killed with SIGKILL and restarted. After each fault the private side must
apply a new message within the poller's backoff cap (60 s, plus slack for a
shared CPU).

RELIABILITY_MESSAGES (total, split between the two directions), RELIABILITY_FAULTS
and RELIABILITY_KILLS set the size; CI runs 1,000 / 8 / 4, the full run
(docs/reliability.md) 10,000 / 40 / 20.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.supervisor import CAP

from .nodes import NodeProcess, cli, cli_json, free_port
from .proxy import MODES, FaultyProxy

pytestmark = pytest.mark.e2e

MESSAGES = int(os.environ.get("RELIABILITY_MESSAGES", "1000"))
FAULTS = int(os.environ.get("RELIABILITY_FAULTS", "8"))
KILLS = int(os.environ.get("RELIABILITY_KILLS", "4"))
# Back within the cap after a fault; the slack covers a node restart on a busy CPU.
BACK_WITHIN = CAP + 20


class Pair:
    """snow (public, behind the proxy) and jira (private, polls snow through the proxy)."""

    def __init__(self, root: Path) -> None:
        self.public = NodeProcess(root / "snow", free_port(), root / "snow.log")
        self.private = NodeProcess(root / "jira", free_port(), root / "jira.log")
        self.proxy = FaultyProxy(self.public.port, stall=1.5)
        self.proxy.start()
        cli(self.public.home, "init", "--short-name", "snow", "--public-url", self.proxy.url)
        cli(self.private.home, "init", "--short-name", "jira")
        issued = cli_json(
            self.public.home,
            "initiate",
            "--no-url",
            "--mode",
            "script",
            "--local-name",
            "snow",
            "--remote-name",
            "jira",
        )
        self.cid: str = issued["connection"]["id"]
        self.public.start()
        accepted = cli_json(self.private.home, "accept", issued["code"])
        assert accepted["connection"]["remote_url"] == self.proxy.url
        self.private.start()
        self.public_state = SqliteStreams(self.public.home / "state.sqlite3")
        self.private_state = SqliteStreams(self.private.home / "state.sqlite3")

    def close(self) -> None:
        for process in (self.public, self.private):
            process.stop()
        self.proxy.stop()
        self.public_state.close()
        self.private_state.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


def _inbox(home: Path, cid: str) -> list[tuple[int, str, str, float]]:
    db = sqlite3.connect(f"file:{home / 'state.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(
            "SELECT seq, kind, body, applied_at FROM inbox WHERE cid = ? ORDER BY seq", (cid,)
        ).fetchall()
    finally:
        db.close()


def _check_stream(rows: list[tuple[int, str, str, float]], count: int, who: str) -> None:
    """hello, then data 0..count-1: each seq once, applied in seq order."""
    assert [r[0] for r in rows] == list(range(1, count + 2)), f"{who}: seqs missing or extra"
    assert rows[0][1] == "hello"
    bodies = [json.loads(r[2]) for r in rows[1:]]
    assert bodies == [{"i": i} for i in range(count)], f"{who}: bodies out of order"
    applied = [r[3] for r in rows]
    assert applied == sorted(applied), f"{who}: applied out of order"


def test_messages_survive_faults_and_kill_9_exactly_once_in_order(pair: Pair) -> None:
    rng = random.Random(os.environ.get("RELIABILITY_SEED", "6"))
    each_way = MESSAGES // 2
    actions = ["fault"] * FAULTS + ["kill"] * KILLS
    rng.shuffle(actions)
    chunk = max(1, each_way // (len(actions) + 1))
    sent = 0
    recoveries: list[float] = []
    kills = {"public": 0, "private": 0}
    cid = pair.cid

    def enqueue(n: int) -> None:
        nonlocal sent
        n = min(n, each_way - sent)
        items = [("data", {"i": i}) for i in range(sent, sent + n)]
        pair.public_state.enqueue_many(cid, items)
        pair.private_state.enqueue_many(cid, items)
        sent += n

    def caught_up() -> bool:
        return (
            pair.private_state.last_applied(cid) > sent
            and pair.public_state.last_applied(cid) > sent
        )

    for action in actions:
        # The chunk is enqueued in slices across the fault, so traffic meets it.
        slices = [chunk // 4] * 3 + [chunk - 3 * (chunk // 4)]
        if action == "fault":
            pair.proxy.mode = rng.choice(MODES[1:])
            for part in slices:
                enqueue(part)
                time.sleep(rng.uniform(0.1, 0.5))
            pair.proxy.mode = "pass"
        else:
            side = rng.choice(["public", "private"])
            kills[side] += 1
            process = pair.public if side == "public" else pair.private
            enqueue(slices[0])
            time.sleep(rng.uniform(0.0, 0.3))  # mid-stream
            process.kill9()
            for part in slices[1:]:
                enqueue(part)
            time.sleep(rng.uniform(0.0, 1.0))
            process.start()
        ended = time.monotonic()
        while not caught_up():
            waited = time.monotonic() - ended
            assert waited < BACK_WITHIN, f"not back {waited:.0f} s after a {action}"
            time.sleep(0.02)
        recoveries.append(time.monotonic() - ended)
    enqueue(each_way)

    deadline = time.monotonic() + 120 + MESSAGES / 50
    total = each_way + 1  # the hello first
    while (
        pair.private_state.last_applied(cid) < total or pair.public_state.last_applied(cid) < total
    ):
        assert time.monotonic() < deadline, (
            f"not all delivered: private applied {pair.private_state.last_applied(cid)}, "
            f"public applied {pair.public_state.last_applied(cid)} of {total}"
        )
        time.sleep(0.1)
    _check_stream(_inbox(pair.private.home, cid), each_way, "public → private")
    _check_stream(_inbox(pair.public.home, cid), each_way, "private → public")
    print(
        f"\nwire faults: {2 * each_way} messages, {FAULTS} fault periods "
        f"{dict(pair.proxy.faults)}, kill -9 {kills}, {pair.proxy.connections} connections, "
        f"back after {max(recoveries):.1f} s at most (median "
        f"{sorted(recoveries)[len(recoveries) // 2]:.1f} s)"
    )
