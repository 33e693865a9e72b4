"""Snapshots of the sync views at 80×24 and 120×36, on a home that really synced
(synced.py: two instances, their engines, the times pinned): a ticket's sync panel and
history, Exalate's choice of connection, Unexalate's question; a connection's detail
with its sync line, its four sync views, the trigger form refusing a filter, Bulk
exalate before and after sending; the Connections tab and a connection in Error while
the tracker cannot be used.

Baselines live in `snapshots/test_sync_snapshots/` (see conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import NOW, StillConsole
from pilots import quiet
from synced import story
from textual.pilot import Pilot

from exalate_tui.home.store import Home
from exalate_tui.sync.engine import TRACKER_ERROR, Engine
from exalate_tui.sync.store import SqliteSyncStore
from exalate_tui.trackers import open_tracker
from exalate_tui.transport.sqlite_streams import SqliteStreams

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]
Compare = Callable[..., bool]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return asyncio.run(story(tmp_path))


def app_for(home: Home) -> StillConsole:
    return StillConsole(home, now=lambda: NOW, supervise=False)


def steps(*keys: str, engine: Home | None = None) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Press `keys`; with `engine`, run that home's sync engine once they are pressed."""

    async def run(pilot: Pilot[None]) -> None:
        await quiet(pilot)
        for key in keys:  # not settled: Bulk's worker waits for the engine run below
            await pilot.press(key)
            await pilot.pause()
        # The engine takes the request once the screen's worker has queued it, and the
        # worker ends once it has seen every matched ticket go out.
        for _ in range(100):
            if engine is None:
                break
            await settle_engine(engine)
            await pilot.pause(0.1)
            if not any(w.is_running and w.group == "send" for w in pilot.app.workers):
                break
        await quiet(pilot)

    return run


async def settle_engine(home: Home) -> None:
    streams, tracker, store = SqliteStreams(home.state_path), open_tracker(home), None
    try:
        store = SqliteSyncStore(home.state_path)
        await Engine(home, streams, tracker, store).settle()
    finally:
        if store is not None:
            store.close()
        streams.close()
        await tracker.close()


def typed(text: str) -> list[str]:
    return ["space" if ch == " " else ch for ch in text]


def tracker_down(home: Home) -> None:
    store = SqliteSyncStore(home.state_path)
    try:
        store.set_meta(TRACKER_ERROR, "tracker.sqlite3: disk I/O error")
    finally:
        store.close()


# SNOW-1, the mail ticket, found with the list's filter and opened.
MAIL = ["t", "slash", *typed("summaryLIKEMail"), "enter", "enter"]


# -- a ticket -------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_ticket_synced(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    run = steps(*MAIL, "end")
    assert snap_compare(app_for(home), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_ticket_exalate_over_which(
    snap_compare: Compare, home: Home, size: tuple[int, int]
) -> None:
    # SNOW-3 (priority 4) syncs over neither connection: x asks which.
    run = steps("t", "slash", *typed("priority=4"), "enter", "enter", "x")
    assert snap_compare(app_for(home), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_ticket_unexalate_asks(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    run = steps(*MAIL, "u")
    assert snap_compare(app_for(home), terminal_size=size, run_before=run)


# -- a connection ------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_connection_syncing(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter"))


@pytest.mark.parametrize("size", SIZES)
def test_sync_synced_tickets(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter", "s"))


@pytest.mark.parametrize("size", SIZES)
def test_sync_queue(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter", "s", "2"))


@pytest.mark.parametrize("size", SIZES)
def test_sync_errors(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter", "s", "3"))


@pytest.mark.parametrize("size", SIZES)
def test_sync_triggers(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter", "s", "4"))


@pytest.mark.parametrize("size", SIZES)
def test_sync_trigger_refused(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    run = steps("enter", "s", "4", "n", *typed("priority<=2^colour=red"), "enter")
    assert snap_compare(app_for(home), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_bulk_counted(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter", "s", "b"))


@pytest.mark.parametrize("size", SIZES)
def test_bulk_sent(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    run = steps("enter", "s", "b", "enter", engine=home)
    assert snap_compare(app_for(home), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_connections_tracker_error(
    snap_compare: Compare, home: Home, size: tuple[int, int]
) -> None:
    tracker_down(home)
    # The first frame reads only the files; the tracker's Error comes with the next read.
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("r"))


@pytest.mark.parametrize("size", SIZES)
def test_connection_tracker_error(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    tracker_down(home)
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter"))
