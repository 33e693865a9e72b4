"""The sync views at 80×24, on a home that really synced with a partner (synced.py):
a ticket's links and history, Exalate and Unexalate from the ticket; a connection's
sync line, Synced tickets, Sync queue, Errors with Retry and Resolve, Triggers added
(checked first) and removed, Bulk exalate to the end; the tracker's Error.

The console runs no engine here (`supervise=False`): each test runs snow's engine
itself once a request is queued, as a node would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NOW
from pilots import settle, typed
from rich.console import Console
from synced import CID, TRIGGER, ZENDESK, story
from textual.pilot import Pilot
from textual.widgets import DataTable, Footer, Label, ProgressBar, Static

from exalate_tui.console.app import ExalateApp
from exalate_tui.home.store import Home
from exalate_tui.sync.engine import TRACKER_ERROR, Engine
from exalate_tui.sync.store import SqliteSyncStore, SyncStore
from exalate_tui.trackers import open_tracker
from exalate_tui.transport.sqlite_streams import SqliteStreams
from screens.bulk_exalate import BulkExalateScreen
from screens.confirm import ConfirmUnexalateScreen
from screens.connection_detail import ConnectionDetailScreen
from screens.connection_sync import ConnectionSyncScreen
from screens.pick_connection import PickConnectionScreen
from screens.ticket_detail import TicketDetailScreen

pytestmark = pytest.mark.anyio
SIZE = (80, 24)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def home(tmp_path: Path) -> Home:
    return await story(tmp_path)


def app_for(home: Home) -> ExalateApp:
    return ExalateApp(home, now=lambda: NOW, supervise=False)


async def engine(home: Home) -> None:
    """snow's sync engine, once through what is waiting (requests first)."""
    streams, tracker = SqliteStreams(home.state_path), open_tracker(home)
    store = SqliteSyncStore(home.state_path)
    try:
        await Engine(home, streams, tracker, store).settle()
    finally:
        store.close()
        streams.close()
        await tracker.close()


def store_of(home: Home) -> SyncStore:
    return SqliteSyncStore(home.state_path)


def text_of(app: ExalateApp, selector: str) -> str:
    widget = app.screen.query_one(selector)
    assert isinstance(widget, Static | Label)
    console = Console(width=200, color_system=None)
    with console.capture() as captured:
        console.print(widget.content)
    return captured.get().strip()


def footer_keys(app: ExalateApp) -> dict[str, str]:
    assert app.screen.query_one(Footer)
    return {
        key: active.binding.description
        for key, active in app.screen.active_bindings.items()
        if active.binding.show and active.enabled
    }


def rows(app: ExalateApp, table: str) -> list[list[str]]:
    data = app.screen.query_one(table, DataTable)
    return [
        [str(getattr(c, "plain", c)) for c in data.get_row_at(n)] for n in range(data.row_count)
    ]


async def open_ticket(pilot: Pilot[None], query: str) -> None:
    await settle(pilot, "t", "slash", *typed(query), "enter", "enter")
    assert isinstance(pilot.app.screen, TicketDetailScreen)


async def open_sync(pilot: Pilot[None]) -> None:
    await settle(pilot, "enter", "s")
    assert isinstance(pilot.app.screen, ConnectionSyncScreen)


async def wait_for(pilot: Pilot[None], check: object, tries: int = 60) -> None:
    assert callable(check)
    for _ in range(tries):
        await settle(pilot)
        if check():
            return
        await pilot.pause(0.1)
    raise AssertionError("never happened")


# -- a ticket ---------------------------------------------------------------------------


async def test_a_ticket_shows_its_links_and_history(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_ticket(pilot, "summaryLIKEMail")
        sync = text_of(app, "#sync")
        assert "snow_to_jira" in sync and "JIRA-1" in sync and "syncing" in sync
        history = text_of(app, "#history")
        assert "from snow_to_jira, JIRA-1 · v3 · basic" in history
        assert "status: new → in_progress" in history and "1 comment added" in history
        assert footer_keys(app)["x"] == "Exalate"
        assert footer_keys(app)["u"] == "Unexalate"


async def test_a_failing_ticket_shows_its_error_and_a_copy_says_where_it_came_from(
    home: Home,
) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_ticket(pilot, "type=problem")
        sync = text_of(app, "#sync")
        assert "error" in sync and "Only issues can be synced" in sync
        await settle(pilot, "escape", "escape")
        await open_ticket(pilot, "summaryLIKELaptop")
        assert "Created from jira's JIRA-3" in text_of(app, "#history")


async def test_exalate_asks_which_connection_and_the_engine_sends_it(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_ticket(pilot, "priority=4")
        assert isinstance(app.screen, TicketDetailScreen)
        key = app.screen.key
        await settle(pilot, "x")
        assert isinstance(app.screen, PickConnectionScreen)
        assert footer_keys(app)["enter"] == "Pick"
        await settle(pilot, "down", "enter")  # the second: snow_to_zendesk
        assert isinstance(app.screen, TicketDetailScreen)
        store = store_of(home)
        try:
            assert [(a, c, k) for _, a, c, k, _ in store.requests()] == [("exalate", ZENDESK, key)]
            await engine(home)
            assert store.link(ZENDESK, key) is not None
        finally:
            store.close()
        await wait_for(pilot, lambda: "snow_to_zendesk" in text_of(app, "#sync"))


async def test_unexalate_asks_first_and_keeps_both_copies(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_ticket(pilot, "summaryLIKEMail")
        await settle(pilot, "u")
        assert isinstance(app.screen, ConfirmUnexalateScreen)
        assert "Both copies are kept" in text_of(app, "#consequence")
        await settle(pilot, "n")  # changed their mind: nothing asked
        store = store_of(home)
        try:
            assert store.requests() == []
            await settle(pilot, "u", "y")
            await engine(home)
            link = store.link(CID, "SNOW-1")
            assert link is not None and not link.active
        finally:
            store.close()
        await wait_for(pilot, lambda: "stopped" in text_of(app, "#sync"))
        assert "Unexalated here" in text_of(app, "#history")
        tracker = open_tracker(home)
        try:
            assert (await tracker.get("SNOW-1")).summary.startswith("Mail")
        finally:
            await tracker.close()


# -- a connection -----------------------------------------------------------------------


async def test_the_connection_says_how_it_syncs_and_s_opens_its_views(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "enter")
        assert isinstance(app.screen, ConnectionDetailScreen)
        assert "3 tickets syncing · 1 queued · 2 errors" in text_of(app, "#fields")
        assert footer_keys(app)["s"] == "Sync"
        await settle(pilot, "s")
        assert isinstance(app.screen, ConnectionSyncScreen)
        assert rows(app, "#synced-table") == [
            ["SNOW-1", "JIRA-1", "syncing", "2024-05-01 11:12 UTC"],
            ["SNOW-2", "JIRA-2", "stopped", "2024-05-01 11:11 UTC"],
            ["SNOW-4", "JIRA-3", "syncing", "2024-05-01 11:09 UTC"],
            ["SNOW-5", "pending", "error", "never"],
        ]
        await settle(pilot, "2")
        queue = text_of(app, "#queue-text")
        assert "Outgoing (to jira): 1 message waiting for jira, the oldest 1 min ago" in queue
        assert "Incoming (from jira): nothing waiting" in queue
        await settle(pilot, "escape")
        assert isinstance(app.screen, ConnectionDetailScreen)


async def test_errors_retry_and_resolve(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_sync(pilot)
        assert "r" not in footer_keys(app)  # not on Synced tickets
        await settle(pilot, "3")
        assert [r[:3] for r in rows(app, "#errors-table")] == [
            ["1", "SNOW-5", "outgoing"],
            ["2", "jira's JIRA-99", "incoming"],
        ]
        assert "Only issues can be synced" in text_of(app, "#error-detail")
        assert footer_keys(app)["r"] == "Retry" and footer_keys(app)["x"] == "Resolve"
        await settle(pilot, "r")
        await engine(home)  # still a problem on Basic: counted again
        await wait_for(pilot, lambda: int(rows(app, "#errors-table")[0][3]) > 1)
        await settle(pilot, "down", "x")
        await engine(home)
        await wait_for(pilot, lambda: len(rows(app, "#errors-table")) == 1)
        assert "Errors (1)" in str(app.screen.query_one("#view-errors", Label).content)


async def test_a_trigger_is_checked_before_it_is_saved_and_can_be_removed(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_sync(pilot)
        await settle(pilot, "4", "n", *typed("priority<=2^colour=red"), "enter")
        assert "colour" in text_of(app, "#trigger-error")
        assert home.get_connection(CID).triggers == [TRIGGER, "priority=4"]
        # Fixed: saved as the tracker spells it, and the list shows it.
        for _ in "^colour=red":
            await pilot.press("backspace")
        await settle(pilot, *typed("^type=change"), "enter")
        assert home.get_connection(CID).triggers == [
            TRIGGER,
            "priority=4",
            "priority<=2^type=change",
        ]
        await wait_for(pilot, lambda: len(rows(app, "#triggers-table")) == 3)
        assert not app.screen.query_one("#trigger-input").display
        # The highlighted one goes; the others stay.
        await settle(pilot, "down", "d")
        assert home.get_connection(CID).triggers == [TRIGGER, "priority<=2^type=change"]


async def test_bulk_exalate_counts_sends_and_shows_progress_to_the_end(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_sync(pilot)
        await settle(pilot, "b")
        assert isinstance(app.screen, BulkExalateScreen)
        assert "4 tickets match the triggers" in text_of(app, "#words")
        await pilot.press("enter")
        await pilot.pause()
        for _ in range(50):
            await engine(home)
            await pilot.pause(0.1)
            if "Done" in text_of(app, "#words"):
                break
        assert "Done: 4 of 4 tickets sent" in text_of(app, "#words")
        bar = app.screen.query_one(ProgressBar)
        assert bar.percentage == 1
        store = store_of(home)
        try:
            assert {"SNOW-1", "SNOW-2", "SNOW-3", "SNOW-4"} <= store.sent_keys(CID)
        finally:
            store.close()
        await settle(pilot, "escape")
        assert isinstance(app.screen, ConnectionSyncScreen)


async def test_a_tracker_that_cannot_be_used_shows_as_error(home: Home) -> None:
    store = store_of(home)
    try:
        store.set_meta(TRACKER_ERROR, "tracker.sqlite3: disk I/O error")
    finally:
        store.close()
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "r")
        table = app.screen.query_one("#connections", DataTable)
        assert str(table.get_cell(CID, "status").plain).startswith("Error")
        await settle(pilot, "enter")
        assert "the tracker cannot be used: tracker.sqlite3: disk I/O error" in text_of(
            app, "#fields"
        )
        await settle(pilot, "s")
        assert text_of(app, "#status").startswith("Error")
