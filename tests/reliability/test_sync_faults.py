"""Promise 17 with real nodes: tickets sync exactly once through kill -9, and never loop.

Two real `exalate-tui node` processes (separate homes, free ports, a Basic
public–private connection, the trigger `type=incident`). This process
writes to each home's `tracker.sqlite3` through the embedded tracker, as
`exalate-tui tickets` does from a process of its own.

- Faults: RELIABILITY_SYNC_TICKETS tickets (CI 300, the full run 2,000) are
  created with a comment each on the public side in chunks, some edited
  there and commented on the private side, while the private node is killed
  with SIGKILL RELIABILITY_SYNC_KILLS times (CI 4, full 10) and the public
  node is restarted once. At the end every ticket exists exactly once on the
  other side with equal fields and the same comment bodies, each once.
- No loops: both sides edit the same 100 tickets for RELIABILITY_SYNC_SECONDS
  (CI 15 s, full 60 s); once edits stop both converge on equal fields, and
  then for QUIET seconds no message moves on either stream.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from exalate_tui.trackers.adapter import STATUSES, Ticket
from exalate_tui.trackers.embedded import EmbeddedTracker

from .nodes import NodeProcess, cli, cli_json, free_port

pytestmark = pytest.mark.e2e

TICKETS = int(os.environ.get("RELIABILITY_SYNC_TICKETS", "300"))
KILLS = int(os.environ.get("RELIABILITY_SYNC_KILLS", "4"))
SECONDS = float(os.environ.get("RELIABILITY_SYNC_SECONDS", "15"))
EDITED = 100
QUIET = 10.0
CONVERGE = 180.0
SEED = os.environ.get("RELIABILITY_SEED", "17")

R = TypeVar("R")


class Desk:
    """An admin's writes to one home's embedded tracker, from this process."""

    def __init__(self, home: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.tracker = self.run(self._open(home))

    @staticmethod
    async def _open(home: Path) -> EmbeddedTracker:
        return EmbeddedTracker(home / "tracker.sqlite3", home / "attachments", user="admin")

    def run(self, work: Coroutine[Any, Any, R]) -> R:
        return self.loop.run_until_complete(work)

    def tickets(self) -> list[Ticket]:
        return self.run(self.tracker.search())

    def close(self) -> None:
        self.run(self.tracker.close())
        self.loop.close()


class Pair:
    """snow (public) and jira (private, polls snow), one Basic connection, a trigger."""

    def __init__(self, root: Path) -> None:
        self.public = NodeProcess(root / "snow", free_port(), root / "snow.log")
        self.private = NodeProcess(root / "jira", free_port(), root / "jira.log")
        cli(self.public.home, "init", "--short-name", "snow", "--public-url", self.public.url)
        cli(self.private.home, "init", "--short-name", "jira")
        issued = cli_json(
            self.public.home, "initiate", "--no-url", "--mode", "basic",
            "--local-name", "snow", "--remote-name", "jira",
        )  # fmt: skip
        self.cid: str = issued["connection"]["id"]
        cli(self.public.home, "triggers", "add", "--connection", self.cid, "type=incident")
        self.public.start()
        cli_json(self.private.home, "accept", issued["code"])
        self.private.start()
        self.snow = Desk(self.public.home)
        self.jira = Desk(self.private.home)

    def copies(self) -> dict[str, Ticket]:
        """The private side's tickets by the public key they were made for."""
        prefix = f"{self.cid}/"
        found: dict[str, Ticket] = {}
        for ticket in self.jira.tickets():
            assert ticket.correlation and ticket.correlation.startswith(prefix), ticket
            key = ticket.correlation[len(prefix) :]
            assert key not in found, f"two copies of {key}"
            found[key] = ticket
        return found

    def differences(self) -> list[str]:
        """What still differs between the two sides ([] once they agree)."""
        originals = {t.key: t for t in self.snow.tickets()}
        copies = self.copies()
        problems = [f"{key}: no copy" for key in originals.keys() - copies.keys()]
        problems += [f"{key}: a copy of nothing" for key in copies.keys() - originals.keys()]
        for key in originals.keys() & copies.keys():
            a, b = originals[key], copies[key]
            for name in ("summary", "description", "status", "priority"):
                if getattr(a, name) != getattr(b, name):
                    problems.append(f"{key}.{name}: {getattr(a, name)!r} ≠ {getattr(b, name)!r}")
            bodies = Counter(c.body for c in a.comments), Counter(c.body for c in b.comments)
            if bodies[0] != bodies[1]:
                problems.append(f"{key} comments: {sorted(bodies[0])} ≠ {sorted(bodies[1])}")
        return problems

    def converge(self, what: str) -> float:
        """Wait until both sides agree; how long it took."""
        start = time.monotonic()
        while problems := self.differences():
            assert time.monotonic() - start < CONVERGE, (
                f"{what}: not equal within {CONVERGE:g} s ({len(problems)} differences): "
                + "; ".join(problems[:10])
            )
            time.sleep(0.5)
        return time.monotonic() - start

    def seqs(self) -> tuple[int, ...]:
        """Each side's outbox and inbox positions on the connection."""
        positions: list[int] = []
        for home in (self.public.home, self.private.home):
            db = sqlite3.connect(f"file:{home / 'state.sqlite3'}?mode=ro", uri=True, timeout=30)
            try:
                row = db.execute(
                    "SELECT last_seq, last_applied FROM streams WHERE cid = ?", (self.cid,)
                ).fetchone()
            finally:
                db.close()
            positions += [int(row[0]), int(row[1])]
        return tuple(positions)

    def close(self) -> None:
        for process in (self.public, self.private):
            process.stop()
        self.snow.close()
        self.jira.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Pair]:
    made = Pair(tmp_path)
    try:
        yield made
    finally:
        made.close()
        for log in (made.public.log, made.private.log):
            text = log.read_text()
            print(f"--- {log.name} ---\n{text[-4000:]}")
            assert "Traceback" not in text, f"a node logged a traceback: see {log.name}"


def test_tickets_sync_exactly_once_through_kill_9(nodes: Pair) -> None:
    rng = random.Random(SEED)
    faults: list[str] = []
    failed: list[BaseException] = []

    def strike() -> None:
        """Kill -9 the private node at random moments, restart the public one midway."""
        try:
            for kill in range(KILLS):
                time.sleep(rng.uniform(0.3, 1.5))
                nodes.private.kill9()
                time.sleep(rng.uniform(0.0, 0.3))
                nodes.private.start()
                faults.append("private kill -9")
                if kill == KILLS // 2:
                    nodes.public.stop()
                    nodes.public.start()
                    faults.append("public restart")
        except BaseException as error:  # noqa: BLE001 - failed the test below
            failed.append(error)

    striker = threading.Thread(target=strike)
    started = time.monotonic()
    striker.start()
    # Spread over about as long as the faults take, so they land while tickets flow.
    pause = KILLS * 1.5 / TICKETS
    keys: list[str] = []
    for n in range(TICKETS):
        ticket = nodes.snow.run(
            nodes.snow.tracker.create(
                {"summary": f"Incident {n}", "description": f"case {n}", "priority": 1 + n % 5}
            )
        )
        nodes.snow.run(nodes.snow.tracker.comment(ticket.key, f"first look at {n}"))
        keys.append(ticket.key)
        if n % 7 == 3:  # edited on the public side soon after, maybe before it crossed
            nodes.snow.run(
                nodes.snow.tracker.update(rng.choice(keys), {"status": rng.choice(STATUSES)})
            )
        if n % 50 == 49:  # the private side comments on copies it has, its node up or not
            for copy in rng.sample(list(nodes.copies().values()), k=3):
                nodes.jira.run(nodes.jira.tracker.comment(copy.key, f"jira saw {copy.key}"))
        time.sleep(pause)
    striker.join()
    assert not failed, failed
    took = nodes.converge("after the kills")
    copies = nodes.copies()
    assert len(copies) == len(keys) == TICKETS
    assert len(nodes.snow.tickets()) == TICKETS  # nothing came back as a new ticket
    comments = sum(len(t.comments) for t in copies.values())
    print(
        f"{TICKETS} tickets while {faults.count('private kill -9')} kill -9 of the private "
        f"node and {faults.count('public restart')} public restart struck: equal {took:.1f} s "
        f"after the last ticket, {time.monotonic() - started:.1f} s in all; {comments} "
        "comments on the copies, each once"
    )


def test_both_sides_editing_the_same_tickets_converge_and_fall_silent(nodes: Pair) -> None:
    rng = random.Random(SEED)
    keys = [
        nodes.snow.run(nodes.snow.tracker.create({"summary": f"Shared {n}"})).key
        for n in range(EDITED)
    ]
    nodes.converge("the first sync")
    theirs = {key: copy.key for key, copy in nodes.copies().items()}
    edits = 0
    sides: list[tuple[Desk, Callable[[str], str]]] = [
        (nodes.snow, lambda key: key),
        (nodes.jira, lambda key: theirs[key]),
    ]
    stop = time.monotonic() + SECONDS
    while time.monotonic() < stop:
        desk, local = rng.choice(sides)
        key = local(rng.choice(keys))
        roll = rng.random()
        if roll < 0.1:
            desk.run(desk.tracker.comment(key, f"note {edits}"))
        else:
            name, value = rng.choice(
                [
                    ("summary", f"Shared, edit {edits}"),
                    ("description", f"edited {edits} times"),
                    ("status", rng.choice(STATUSES)),
                    ("priority", rng.randint(1, 5)),
                ]
            )
            desk.run(desk.tracker.update(key, {name: value}))
        edits += 1
        time.sleep(rng.uniform(0, 0.01))
    took = nodes.converge("after the edits")
    # Equal is not enough: an echo would keep both sides busy sending what they agree on.
    time.sleep(1.0)
    before = nodes.seqs()
    time.sleep(QUIET)
    after = nodes.seqs()
    assert after == before, f"messages kept flowing after convergence: {before} → {after}"
    assert not nodes.differences()
    print(
        f"{edits} edits on {EDITED} tickets from both sides in {SECONDS:g} s: equal "
        f"{took:.1f} s after the last; outbox/inbox seqs {after} still after {QUIET:g} s"
    )
