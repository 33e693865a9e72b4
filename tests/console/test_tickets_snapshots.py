"""Snapshots of the Tickets tab's screens at 80×24 and 120×36: the list (with tickets,
empty, a filter refused), a ticket, the create and edit forms, and the comment form
(a ticket that syncs: test_sync_snapshots.py).

Baselines live in `snapshots/test_tickets_snapshots/` (see conftest.py). The
tickets are written before the console opens, by the real embedded tracker on
a fixed clock, so every time on screen is the same each run; the console's own
clock is fixed too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import NOW, StillConsole
from pilots import settle
from textual.pilot import Pilot

from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home
from exalate_tui.trackers.embedded import EmbeddedTracker

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]
Compare = Callable[..., bool]
# Tickets are stamped from 09:00 on the console's day, 7 minutes apart.
START = datetime.fromtimestamp(NOW, UTC) - timedelta(hours=3)


@pytest.fixture(autouse=True)
def here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The home is `home`, relative to a temporary working directory."""
    monkeypatch.chdir(tmp_path)


def clock(start: datetime = START) -> Callable[[], datetime]:
    moments: Iterator[datetime] = (start + timedelta(minutes=7 * n) for n in range(10_000))
    return lambda: next(moments)


def home_with_tickets(fill: Callable[[EmbeddedTracker], Awaitable[None]] | None) -> Home:
    home = Home(Path("home"))
    home.save_instance(Instance(short_name="snow", public_url="https://snow.example.com"))
    home.ensure()
    tracker = EmbeddedTracker(
        home.tracker_path, home.attachments_dir, short_name="snow", now=clock()
    )

    async def run() -> None:
        try:
            if fill is not None:
                await fill(tracker)
        finally:
            await tracker.close()

    asyncio.run(run())
    return home


async def several(tracker: EmbeddedTracker) -> None:
    rows = [
        ("incident", "Mail is down for the whole of floor 3", "new", 1),
        ("problem", "Printer queue stuck after the driver update of last week", "in_progress", 3),
        ("task", "Order toner", "on_hold", 4),
        ("change", "Rotate the VPN certificate before it expires", "resolved", 2),
        ("incident", "Laptop will not boot", "closed", 5),
    ]
    for kind, summary, status, priority in rows:
        await tracker.create(
            {"type": kind, "summary": summary, "status": status, "priority": priority}
        )


async def one_with_everything(tracker: EmbeddedTracker) -> None:
    ticket = await tracker.create(
        {
            "summary": "Mail is down for the whole of floor 3",
            "description": "Since 9:00 nobody on floor 3 receives mail.\nOutgoing mail works.",
            "priority": 1,
            "assignee": "ana",
            "labels": ("mail", "floor-3"),
        },
        reporter="bob",
    )
    await tracker.comment(ticket.key, "Looking into it.", author="ana")
    await tracker.comment(
        ticket.key, "The relay's certificate expired at 08:58.", internal=True, author="ana"
    )
    await tracker.attach(ticket.key, "relay.log", b"550 certificate expired\n" * 200)


def app_for(home: Home) -> StillConsole:
    return StillConsole(home, now=lambda: NOW, supervise=False)


def steps(*keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot, *keys)

    return run


def typed(text: str) -> list[str]:
    return ["space" if ch == " " else ch for ch in text]


@pytest.mark.parametrize("size", SIZES)
def test_tickets_empty(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = app_for(home_with_tickets(None))
    assert snap_compare(app, terminal_size=size, run_before=steps("t"))


@pytest.mark.parametrize("size", SIZES)
def test_tickets_several(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = app_for(home_with_tickets(several))
    assert snap_compare(app, terminal_size=size, run_before=steps("t"))


@pytest.mark.parametrize("size", SIZES)
def test_tickets_filtered(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = app_for(home_with_tickets(several))
    run = steps("t", "slash", *typed("priority<=2^ORtype=problem"))
    assert snap_compare(app, terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_tickets_filter_refused(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = app_for(home_with_tickets(several))
    run = steps("t", "slash", *typed("priority<=2^colour=red"))
    assert snap_compare(app, terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_ticket_detail(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = app_for(home_with_tickets(one_with_everything))
    assert snap_compare(app, terminal_size=size, run_before=steps("t", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_ticket_create(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = app_for(home_with_tickets(None))
    assert snap_compare(app, terminal_size=size, run_before=steps("t", "n"))


@pytest.mark.parametrize("size", SIZES)
def test_ticket_create_errors(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = app_for(home_with_tickets(None))
    assert snap_compare(app, terminal_size=size, run_before=steps("t", "n", "ctrl+s"))


@pytest.mark.parametrize("size", SIZES)
def test_ticket_edit(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = app_for(home_with_tickets(one_with_everything))
    assert snap_compare(app, terminal_size=size, run_before=steps("t", "enter", "e"))


@pytest.mark.parametrize("size", SIZES)
def test_ticket_comment(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = app_for(home_with_tickets(one_with_everything))
    run = steps("t", "enter", "c", *typed("Relay certificate renewed"), "ctrl+t")
    assert snap_compare(app, terminal_size=size, run_before=run)
