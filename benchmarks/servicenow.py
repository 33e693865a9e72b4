"""ServiceNow on the public side: a change's latency to the partner, an initial bulk, and
what each synced change costs in Table API calls.

Three processes on 127.0.0.1 besides this one: the ServiceNow Table API emulator
(`tests/servicenow/emulator.py`, the test double: no ServiceNow instance is reachable
here), the public node fronting it (`tracker set servicenow --poll 2`) and the private
node (its embedded tracker), public–private, Basic, trigger `type=incident`.

- **Latency**: 10 incidents synced; then this process changes one incident's
  short_description at a time through the Table API as another user (a person in
  ServiceNow) and stops the clock when the private side's committed tracker holds it
  (inotify on its WAL, then a read). The adapter finds changes by polling, so a change
  waits for the next poll: half the interval on average. The changes fall at evenly
  spread moments of the poll's cycle (in a shuffled order), timed against the polls
  the emulator saw (`/emulator/looks`), so the median is that of changes made at any
  moment, without the ±150 ms a median of 40 random moments would carry. The target:
  median ≤ half the interval + 100 ms (1.1 s).
- **Table API calls per synced change**: the emulator counts the integration user's
  requests during the latency run, divided by the changes; and while nothing changes,
  the requests per poll (what idling costs an instance with a rate limit).
- **Bulk**: 5,000 incidents with 3 comments each in the emulator (setup), then
  `triggers add` and `sync bulk` through the CLI; the clock runs until every incident
  and comment is committed on the private side.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from .harness import Check, Figure, percentile, summarize
from .nodes import HOST, WalWatch, cli, env, free_port, init_public, initiate, node, reader, rss_kb

EMULATOR = Path(__file__).resolve().parent.parent / "tests" / "servicenow" / "emulator.py"
EDITS = int(os.environ.get("BENCH_SNOW_EDITS", "40"))
BULK = int(os.environ.get("BENCH_SNOW_BULK", "5000"))
COMMENTS = 3
LINKED = 10
POLL = 2.0
PASSWORD = "bench-pw"
TIMEOUT = 30.0
BULK_TIMEOUT = 600.0
IDLE = 10.0  # seconds of no change, to count what polling alone costs
SETTLE = 0.005  # a commit is visible once its fsync ends: look finely this long after a write


@dataclass
class Setup:
    public: Path
    private: Path
    cid: str
    api: httpx.Client  # the Table API as `admin`, a person in ServiceNow
    public_pid: int
    private_pid: int

    def calls(self) -> int:
        """The integration user's requests so far, as the emulator counted them."""
        answer = self.api.get("/emulator/calls", params={"user": "sync"})
        return int(answer.json()["calls"])


@contextlib.contextmanager
def emulator() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EMULATOR), "--port", str(port), "--user", f"sync:{PASSWORD}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(),
    )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/emulator/calls", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the ServiceNow emulator did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.kill()
        process.wait()


@contextlib.contextmanager
def setup(prefix: str) -> Iterator[Setup]:
    """The emulator, a public home fronting it and a private one, both nodes running,
    one Active public–private Basic connection."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    public, private = root / "public", root / "private"
    public_port, private_port = free_port(), free_port()
    with emulator() as url, httpx.Client(base_url=url, auth=("admin", "admin")) as api:
        init_public(public, public_port)
        _set_tracker(public, url)
        cli(private, "init", "--short-name", "priv")
        with node(public, public_port) as public_node:
            cid, code = initiate(public, "priv")
            cli(private, "accept", code, "--json")
            with node(private, private_port) as private_node:
                db = reader(private)
                try:
                    _until(lambda: _applied(db, cid) >= 1, "the private node's hello")
                finally:
                    db.close()
                yield Setup(public, private, cid, api, public_node.pid, private_node.pid)


def _set_tracker(home: Path, url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", "--home", str(home), "tracker", "set"]
        + ["servicenow", "--url", url, "--user", "sync", "--poll", str(POLL)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"tracker set servicenow failed: {done.stderr.strip()}")


def _applied(db: sqlite3.Connection, cid: str) -> int:
    row = db.execute("SELECT last_applied FROM streams WHERE cid = ?", (cid,)).fetchone()
    return int(row[0]) if row else 0


def _until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def _tracker_db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{home / 'tracker.sqlite3'}?mode=ro", uri=True, timeout=30)


def _count(home: Path, table: str) -> int:
    if not (home / "tracker.sqlite3").exists():
        return 0
    db = _tracker_db(home)
    try:
        (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(count)
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def _latency() -> tuple[list[float], float, float, list[str]]:
    """(samples in ms, Table API calls per change, calls per idle poll, notes)."""
    with setup("snow-latency") as nodes:
        cli(nodes.public, "triggers", "add", "--connection", nodes.cid, "type=incident")
        made = [
            nodes.api.post(
                "/api/now/v2/table/incident",
                json={"short_description": f"Latency {n}", "description": "d" * 200},
            ).json()["result"]
            for n in range(LINKED)
        ]
        _until(lambda: _count(nodes.private, "tickets") == LINKED, "the linked copies", 60)
        see = _tracker_db(nodes.private)
        watch = WalWatch(nodes.private, "tracker.sqlite3")
        samples: list[float] = []
        try:
            time.sleep(POLL)  # the creations' own polls are over
            before = nodes.calls()
            time.sleep(IDLE)
            idle = (nodes.calls() - before) / (IDLE / POLL)
            before = nodes.calls()
            began = time.perf_counter()
            phases = [(k + 0.5) / EDITS * POLL for k in range(EDITS)]
            random.Random(14).shuffle(phases)
            for n in range(EDITS):
                _at_phase(nodes, phases[n])
                record = made[n % LINKED]
                summary = f"Edit {n}"
                answer = nodes.api.patch(
                    f"/api/now/v2/table/incident/{record['sys_id']}",
                    json={"short_description": summary},
                )
                start = time.perf_counter()  # ServiceNow holds the change
                answer.raise_for_status()
                correlation = f"{nodes.cid}/{record['number']}"
                deadline = start + TIMEOUT
                written = -1.0
                while True:
                    found = see.execute(
                        "SELECT summary FROM tickets WHERE correlation = ?", (correlation,)
                    ).fetchone()
                    if found is not None and found[0] == summary:
                        break
                    now = time.perf_counter()
                    if now > deadline:
                        raise RuntimeError(f"edit {n} not on the partner within {TIMEOUT} s")
                    if now - written < SETTLE:
                        time.sleep(0.0002)
                    elif watch.wait(0.01):
                        written = time.perf_counter()
                samples.append((time.perf_counter() - start) * 1000)
            time.sleep(POLL)  # the last change's polls are counted too
            calls = nodes.calls() - before
            polls = (time.perf_counter() - began) / POLL
            per_change = calls / EDITS
        finally:
            watch.close()
            see.close()
    notes = [
        f"{EDITS} changes, {min(samples):.0f}–{max(samples):.0f} ms; poll every {POLL:g} s",
        f"idle: {idle:.1f} Table API calls per poll (the watcher's look)",
        f"{calls} calls over {polls:.0f} polls: {(calls - idle * polls) / EDITS:.1f} per "
        "change above what polling costs anyway",
    ]
    return samples, per_change, idle, notes


def _at_phase(nodes: Setup, phase: float) -> None:
    """Sleep until `phase` seconds after a poll of the watcher (the first look of a burst:
    the engine's own look follows the watcher's when it found something)."""
    looks = nodes.api.get("/emulator/looks", params={"user": "sync"}).json()["looks"]
    starts = [t for n, t in enumerate(looks) if n == 0 or t - looks[n - 1] > POLL / 4]
    last = starts[-1] if starts else time.time()
    when = last + phase
    while when < time.time() + 0.05:
        when += POLL
    time.sleep(when - time.time())


def _bulk() -> tuple[float, int, list[str]]:
    """(seconds, the larger node's peak RSS in KB, notes)."""
    notes = []
    with setup("snow-bulk") as nodes:
        start = time.perf_counter()
        filled = nodes.api.post(
            "/emulator/bulk", json={"count": BULK, "comments": COMMENTS}, timeout=600
        )
        filled.raise_for_status()
        notes.append(f"setup: {BULK:,} incidents in the emulator in "
                     f"{time.perf_counter() - start:.1f} s (before the clock)")  # fmt: skip
        cli(nodes.public, "triggers", "add", "--connection", nodes.cid, "type=incident")
        before = nodes.calls()
        start = time.perf_counter()
        cli(nodes.public, "sync", "bulk", "--connection", nodes.cid)
        notes.append(f"`sync bulk` returned after {time.perf_counter() - start:.2f} s")
        watch = WalWatch(nodes.private, "tracker.sqlite3")
        halfway = None
        try:
            deadline = start + BULK_TIMEOUT
            while True:
                tickets = _count(nodes.private, "tickets")
                if halfway is None and tickets >= BULK // 2:
                    halfway = time.perf_counter() - start
                if tickets >= BULK and _count(nodes.private, "comments") >= BULK * COMMENTS:
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"bulk not done within {BULK_TIMEOUT} s ({tickets})")
                watch.wait(0.2)
            elapsed = time.perf_counter() - start
        finally:
            watch.close()
        calls = nodes.calls() - before
        notes.append(f"half the incidents there after {halfway or 0:.1f} s")
        notes.append(f"{calls:,} Table API calls ({calls / BULK:.2f} per incident)")
        peak = max(rss_kb(nodes.public_pid, "VmHWM"), rss_kb(nodes.private_pid, "VmHWM"))
    return elapsed, peak, notes


def measure() -> list[Figure]:
    samples, per_change, idle, notes = _latency()
    median, spread = summarize(samples)
    elapsed, peak_kb, bulk_notes = _bulk()
    return [
        Figure(
            name="ServiceNow change → partner's tracker, median (2 s poll)",
            unit="ms",
            value=median,
            reference=POLL * 1000 / 2,
            reference_name="half the poll interval",
            checks=[Check("median", median, "≤", POLL * 1000 / 2 + 100, "ms")],
            method=(
                "a short_description PATCHed through the emulator's Table API by another "
                "user at evenly spread moments of the poll's cycle, clock from its answer "
                "until the "
                "private side's committed tracker holds it (inotify on its WAL); the "
                "emulator and two exalate-tui node processes on 127.0.0.1"
            ),
            runs=len(samples),
            spread=spread,
            notes=[*notes, f"p90 {percentile(samples, 0.9):.0f} ms"],
        ),
        Figure(
            name="ServiceNow: Table API calls per synced change",
            unit="calls",
            value=per_change,
            method=(
                "the integration user's requests the emulator counted during the latency "
                "run (its polls included), divided by the changes"
            ),
            runs=EDITS,
            spread=f"idle {idle:.1f} per poll",
            notes=notes[2:],
        ),
        Figure(
            name=f"ServiceNow initial bulk, {BULK:,} incidents × {COMMENTS} comments",
            unit="s",
            value=elapsed,
            checks=[Check("", elapsed, "≤", 120, "s")],
            method=(
                "`sync bulk` through the CLI on the ServiceNow side until every incident and "
                "comment is committed in the private tracker"
            ),
            runs=1,
            spread=f"node peak {peak_kb / 1024:.0f} MB",
            notes=bulk_notes,
        ),
    ]


if __name__ == "__main__":
    for figure in measure():
        print(json.dumps(figure.__dict__, default=str))
