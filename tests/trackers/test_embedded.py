"""The embedded tracker: the adapter contract, then what only it promises (its files)."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from contract import TrackerContract, Wakes

from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home
from exalate_tui.trackers import open_tracker
from exalate_tui.trackers.adapter import TrackerError, TrackerUnavailable
from exalate_tui.trackers.embedded import EmbeddedTracker, prefix_for
from exalate_tui.transport.doorbell import doorbell_address

# Another process writing to the same file, as the CLI does while the node watches.
_WRITER = """
import asyncio, sys
from pathlib import Path
from exalate_tui.trackers.embedded import EmbeddedTracker

async def main():
    tracker = EmbeddedTracker(Path(sys.argv[1]), Path(sys.argv[2]), short_name="snow")
    ticket = await tracker.create({"summary": sys.argv[3]})
    await tracker.close()
    print(ticket.key)

asyncio.run(main())
"""


def _open(home: Path, short_name: str | None = "snow") -> EmbeddedTracker:
    return EmbeddedTracker(home / "tracker.sqlite3", home / "attachments", short_name=short_name)


async def _write_elsewhere(home: Path, summary: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        str(home / "tracker.sqlite3"),
        str(home / "attachments"),
        summary,
        stdout=subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode().strip()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


class TestEmbeddedTracker(TrackerContract):
    @pytest.fixture
    async def tracker(self, home: Path) -> AsyncIterator[EmbeddedTracker]:
        tracker = _open(home)
        yield tracker
        await tracker.close()

    @pytest.fixture
    def elsewhere(self, home: Path) -> Callable[[str], Awaitable[str]]:
        return lambda summary: _write_elsewhere(home, summary)


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def tracker(home: Path) -> AsyncIterator[EmbeddedTracker]:
    tracker = _open(home)
    yield tracker
    await tracker.close()


# -- keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("short_name", "prefix"),
    [("snow", "SNOW"), ("jsm-2", "JSM2"), ("Über_ops", "BEROPS"), ("---", "T"), (None, "T")],
)
def test_the_key_prefix_is_the_short_name_in_capitals_and_digits(
    short_name: str | None, prefix: str
) -> None:
    assert prefix_for(short_name) == prefix


async def test_keys_count_up_under_a_prefix_fixed_at_creation(home: Path) -> None:
    first = _open(home, "jsm-2")
    assert [(await first.create({"summary": s})).key for s in "ab"] == ["JSM2-1", "JSM2-2"]
    await first.close()
    renamed = _open(home, "other")  # the instance was renamed: the keys stay
    assert (await renamed.create({"summary": "c"})).key == "JSM2-3"
    assert (await renamed.get("jsm2-3")).summary == "c"  # keys are read in any case
    await renamed.close()


async def test_open_tracker_fronts_the_homes_instance(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow"))
    tracker = open_tracker(home)
    try:
        made = await tracker.create({"summary": "x"})
        assert made.key == "SNOW-1" and made.reporter == "snow"
        assert tracker.kind == "embedded"
    finally:
        await tracker.close()
    assert home.tracker_path.exists()


# -- files ----------------------------------------------------------------------------


async def test_files_are_private_to_their_owner(home: Path, tracker: EmbeddedTracker) -> None:
    made = await tracker.create({"summary": "x"})
    attachment = await tracker.attach(made.key, "a.txt", b"secret")
    for name in ("tracker.sqlite3", "tracker.sqlite3-wal", "tracker.sqlite3-shm"):
        assert (home / name).stat().st_mode & 0o777 == 0o600, name
    assert (home / "attachments").stat().st_mode & 0o777 == 0o700
    blob = home / "attachments" / attachment.sha256
    assert blob.read_bytes() == b"secret"
    assert blob.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (home / "attachments").iterdir()] == [attachment.sha256]


async def test_the_file_is_durable_and_versioned(home: Path, tracker: EmbeddedTracker) -> None:
    db = sqlite3.connect(home / "tracker.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA user_version").fetchone() == (1,)
    db.close()
    assert tracker._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_a_file_from_a_newer_version_is_refused(home: Path) -> None:
    tracker = _open(home)
    asyncio.run(tracker.close())
    db = sqlite3.connect(home / "tracker.sqlite3")
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(TrackerUnavailable, match="newer exalate-tui .schema version 7"):
        _open(home)


def test_a_damaged_file_is_reported_with_its_path_and_the_way_out(home: Path) -> None:
    home.mkdir()
    (home / "tracker.sqlite3").write_bytes(b"this is not a database, " * 100)
    with pytest.raises(TrackerUnavailable) as refused:
        _open(home)
    message = str(refused.value)
    assert str(home / "tracker.sqlite3") in message and "move it aside" in message
    assert refused.value.unavailable


def test_another_sqlite_file_is_not_taken_for_a_tracker(home: Path) -> None:
    home.mkdir()
    db = sqlite3.connect(home / "tracker.sqlite3")
    db.execute("CREATE TABLE outbox (seq INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(TrackerUnavailable, match="not an embedded tracker"):
        _open(home)


async def test_a_watermark_of_another_file_starts_over(home: Path, tmp_path: Path) -> None:
    other = _open(tmp_path / "other")
    await other.create({"summary": "elsewhere"})
    foreign = (await other.changed(None)).watermark
    await other.close()
    tracker = _open(home)
    made = await tracker.create({"summary": "here"})
    assert (await tracker.changed(foreign)).keys == (made.key,)
    assert (await tracker.changed("garbage")).keys == (made.key,)
    await tracker.close()


async def test_missing_or_damaged_attachment_bytes_are_reported(
    home: Path, tracker: EmbeddedTracker
) -> None:
    made = await tracker.create({"summary": "x"})
    attachment = await tracker.attach(made.key, "a.txt", b"abc")
    blob = home / "attachments" / attachment.sha256
    blob.write_bytes(b"abd")
    with pytest.raises(TrackerError, match="damaged"):
        await tracker.attachment_bytes(made.key, attachment.sha256)
    blob.unlink()
    with pytest.raises(TrackerError, match="missing"):
        await tracker.attachment_bytes(made.key, attachment.sha256)


async def test_times_are_utc_to_the_microsecond(home: Path) -> None:
    when = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    tracker = EmbeddedTracker(home / "t.sqlite3", home / "a", short_name="s", now=lambda: when)
    made = await tracker.create({"summary": "x"})
    comment = await tracker.comment(made.key, "y")
    assert made.created == when and comment.created == when
    assert (await tracker.get(made.key)).comments[0].created == when
    await tracker.close()


# -- watching --------------------------------------------------------------------------


async def test_a_second_watcher_polls_and_still_hears_other_processes(home: Path) -> None:
    address = doorbell_address(home.resolve() / "tracker.sqlite3")
    if address is None:
        pytest.skip("no doorbell off Linux: every watcher polls")
    taken = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tracker = _open(home)
    taken.bind(address)  # another process watches already
    wakes = Wakes()
    stop = tracker.watch(wakes)
    try:
        await _write_elsewhere(home, "heard by polling")
        assert await wakes.next(within=2.0) < 2.0
    finally:
        stop()
        taken.close()
        await tracker.close()


async def test_the_doorbell_wakes_within_a_poll(home: Path) -> None:
    tracker = _open(home)
    writer = _open(home)  # another connection to the same file, ringing as a process would
    wakes = Wakes()
    stop = tracker.watch(wakes)
    try:
        await writer.create({"summary": "x"})
        assert await wakes.next(within=1.0) < 0.15  # the poll would take up to 0.2 s
    finally:
        stop()
        await writer.close()
        await tracker.close()


# -- speed -----------------------------------------------------------------------------


async def test_listing_ten_thousand_tickets_is_quick(home: Path, tracker: EmbeddedTracker) -> None:
    await tracker.create({"summary": "the first, through the front door"})
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    db = sqlite3.connect(home / "tracker.sqlite3")
    with db:
        db.executemany(
            "INSERT INTO tickets (n, key, type, summary, description, status, priority, "
            "assignee, reporter, labels, created, updated, rev) "
            "VALUES (?, ?, 'incident', ?, '', 'new', 3, '', 'snow', ?, ?, ?, ?)",
            [
                (
                    n,
                    f"SNOW-{n}",
                    f"ticket {n}",
                    json.dumps(["vip"] if n % 7 else []),
                    stamp,
                    stamp,
                    n,
                )
                for n in range(2, 10_001)
            ],
        )
    db.close()
    started = time.perf_counter()
    everything = await tracker.search()
    listed = time.perf_counter() - started
    started = time.perf_counter()
    filtered = await tracker.search(tracker.check_query("labelsISEMPTY^ORDERBYDESCkey"))
    queried = time.perf_counter() - started
    assert len(everything) == 10_000 and len(filtered) == 1 + 9999 // 7
    assert listed < 1.0 and queried < 1.0, (listed, queried)
