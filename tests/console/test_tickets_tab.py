"""The Tickets tab at 80×24, against the real embedded tracker in a temporary home:
switching tabs, the list and its filter, opening a ticket, create, edit, comment, and
the list following changes made elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import NOW, snow_home
from pilots import settle
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Footer, Input, Label, Static

from exalate_tui.console.app import ExalateApp
from exalate_tui.home.store import Home
from exalate_tui.trackers import open_tracker
from exalate_tui.trackers.adapter import Tracker
from screens.comment import CommentScreen
from screens.connections import ConnectionsScreen
from screens.ticket_detail import NOT_SYNCED, TicketDetailScreen
from screens.ticket_form import TicketFormScreen
from screens.tickets import TicketsScreen

pytestmark = pytest.mark.anyio
SIZE = (80, 24)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return snow_home(tmp_path)


@pytest.fixture
async def tracker(home: Home) -> AsyncIterator[Tracker]:
    """The home's tracker as another process (the CLI, the node) would open it."""
    opened = open_tracker(home)
    yield opened
    await opened.close()


async def typed(pilot: Pilot[None], text: str) -> None:
    await settle(pilot, *["space" if ch == " " else ch for ch in text])


def keys_of(pilot: Pilot[None], table: str = "#tickets") -> list[str]:
    rows = pilot.app.screen.query_one(table, DataTable)
    return [str(key.value) for key in rows.rows]


def footer_keys(app: ExalateApp) -> dict[str, str]:
    assert app.screen.query_one(Footer)
    return {
        key: active.binding.description
        for key, active in app.screen.active_bindings.items()
        if active.binding.show and active.enabled
    }


def text_of(app: ExalateApp, selector: str) -> str:
    """What a Static or Label shows, as plain text (Rich tables and groups rendered)."""
    widget = app.screen.query_one(selector)
    assert isinstance(widget, Static | Label)
    console = Console(width=200, color_system=None)
    with console.capture() as captured:
        console.print(widget.content)
    return captured.get().strip()


async def three(tracker: Tracker) -> list[Any]:
    """A critical new incident, a moderate problem in progress, a low task on hold."""
    return [
        await tracker.create(
            {"summary": "Mail is down", "type": "incident", "priority": 1, "status": "new"}
        ),
        await tracker.create(
            {
                "summary": "Printer queue stuck",
                "type": "problem",
                "priority": 3,
                "status": "in_progress",
            }
        ),
        await tracker.create(
            {"summary": "Order toner", "type": "task", "priority": 4, "status": "on_hold"}
        ),
    ]


def app_for(home: Home) -> ExalateApp:
    return ExalateApp(home, now=lambda: NOW, supervise=False)


async def test_t_shows_the_tickets_tab_and_c_the_connections_tab(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ConnectionsScreen)
        await settle(pilot, "t")
        assert isinstance(app.screen, TicketsScreen)
        assert "No tickets yet" in text_of(app, "#empty")
        assert footer_keys(app) == {
            "slash": "Filter",
            "n": "New ticket",
            "c": "Connections",
            "ctrl+q": "Quit",
            "question_mark": "Keys",
            "f1": "Keys",
        }
        await settle(pilot, "c")
        assert isinstance(app.screen, ConnectionsScreen)
        await settle(pilot, "t", "escape")
        assert isinstance(app.screen, ConnectionsScreen)


async def test_the_list_shows_every_ticket_newest_first(home: Home, tracker: Tracker) -> None:
    made = await three(tracker)
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "t")
        assert set(keys_of(pilot)) == {t.key for t in made}
        assert text_of(app, "#count") == "3 tickets"


async def test_the_filter_narrows_the_list_and_explains_what_it_cannot_read(
    home: Home, tracker: Tracker
) -> None:
    mail, printer, toner = await three(tracker)
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "t", "slash")
        assert isinstance(app.screen.focused, Input)
        await typed(pilot, "priority<=3^status!=closed")
        assert set(keys_of(pilot)) == {mail.key, printer.key}
        assert not app.screen.query_one("#filter-error").display
        assert text_of(app, "#count") == "2 tickets matching priority<=3^status!=closed"
        # A field the tracker does not have: refused with the reason, the list kept.
        await typed(pilot, "^colour=red")
        error = app.screen.query_one("#filter-error")
        assert error.display
        assert "colour" in text_of(app, "#filter-error")
        assert set(keys_of(pilot)) == {mail.key, printer.key}
        # Emptied: every ticket again. Escape leaves the field for the list.
        app.screen.query_one("#filter", Input).value = ""
        await settle(pilot)
        assert set(keys_of(pilot)) == {mail.key, printer.key, toner.key}
        await settle(pilot, "escape")
        assert isinstance(app.screen.focused, DataTable)


async def test_a_filter_that_matches_nothing_says_so(home: Home, tracker: Tracker) -> None:
    await three(tracker)
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "t", "slash")
        await typed(pilot, "type=change")
        assert "No ticket matches" in text_of(app, "#empty")


async def test_enter_opens_a_ticket_with_comments_attachments_and_sync(
    home: Home, tracker: Tracker
) -> None:
    ticket = await tracker.create(
        {"summary": "Mail is down", "description": "Since 9:00", "priority": 2}
    )
    await tracker.comment(ticket.key, "Looking into it")
    await tracker.comment(ticket.key, "Certificate expired", internal=True)
    await tracker.attach(ticket.key, "mail.log", b"x" * 2048)
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "t", "enter")
        assert isinstance(app.screen, TicketDetailScreen)
        assert app.screen.key == ticket.key
        assert "Mail is down" in text_of(app, "#summary")
        comments = text_of(app, "#comments")
        assert "Looking into it" in comments
        assert comments.count("Work note") == 1
        assert "Certificate expired" in comments
        attachments = text_of(app, "#attachments")
        assert "mail.log" in attachments and "2.0 KB" in attachments
        assert text_of(app, "#sync") == NOT_SYNCED
        assert footer_keys(app)["e"] == "Edit"
        assert footer_keys(app)["c"] == "Comment"
        await settle(pilot, "escape")
        assert isinstance(app.screen, TicketsScreen)


async def test_create_a_ticket(home: Home, tracker: Tracker) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "t", "n")
        assert isinstance(app.screen, TicketFormScreen)
        # Save with no summary: the error under the field, nothing created.
        await settle(pilot, "ctrl+s")
        assert isinstance(app.screen, TicketFormScreen)
        assert "Summary is required" in text_of(app, "#error-summary")
        await typed(pilot, "Printer on fire")
        await settle(pilot, "enter")
        assert isinstance(app.screen, TicketsScreen)
        [created] = await tracker.search()
        assert created.summary == "Printer on fire"
        assert (created.type, created.status, created.priority) == ("incident", "new", 3)
        assert keys_of(pilot) == [created.key]


async def test_edit_sends_only_what_changed(home: Home, tracker: Tracker) -> None:
    ticket = await tracker.create({"summary": "Mail is down", "priority": 2})
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "t", "enter", "e")
        assert isinstance(app.screen, TicketFormScreen)
        # Meanwhile the sync engine (say) changes the description.
        await tracker.update(ticket.key, {"description": "From the partner"})
        # Summary, Description, Type, then Status: open it, one down, choose.
        await settle(pilot, "tab", "tab", "tab", "enter", "down", "enter")
        await settle(pilot, "ctrl+s")
        assert isinstance(app.screen, TicketDetailScreen)
        after = await tracker.get(ticket.key)
        assert after.status == "in_progress"
        assert after.description == "From the partner"  # not overwritten with the old value
        assert "In progress" in text_of(app, "#fields")


async def test_comment_and_work_note(home: Home, tracker: Tracker) -> None:
    ticket = await tracker.create({"summary": "Mail is down"})
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "t", "enter", "c")
        assert isinstance(app.screen, CommentScreen)
        await settle(pilot, "ctrl+s")
        assert "empty" in text_of(app, "#error-body")
        await typed(pilot, "Called the user")
        await settle(pilot, "ctrl+s")
        assert isinstance(app.screen, TicketDetailScreen)
        await settle(pilot, "c")
        await typed(pilot, "Root cause found")
        await settle(pilot, "ctrl+t", "ctrl+s")
        assert isinstance(app.screen, TicketDetailScreen)
        got = await tracker.get(ticket.key)
        assert [(c.body, c.internal) for c in got.comments] == [
            ("Called the user", False),
            ("Root cause found", True),
        ]
        assert text_of(app, "#comments").count("Work note") == 1


async def test_the_list_follows_tickets_made_elsewhere(home: Home, tracker: Tracker) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "t")
        assert keys_of(pilot) == []
        made = await tracker.create({"summary": "From the CLI"})
        for _ in range(100):
            await settle(pilot)
            if keys_of(pilot):
                break
        assert keys_of(pilot) == [made.key]
