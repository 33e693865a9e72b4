"""Keys you can find (issue 11): Enter = Open in the Footer of the Connections tab, `?`
shows every key of the screen, the command palette offers each action by name, and Tab
goes through a screen in reading order."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import pending_to_jira, snow_home
from pilots import settle
from textual.command import CommandPalette
from textual.widgets import Footer, HelpPanel, Input

from exalate_tui.console.app import ExalateApp
from exalate_tui.home.store import Home
from screens.connection_detail import ConnectionDetailScreen
from screens.connections import ConnectionsScreen
from screens.destination import DestinationScreen
from screens.info import InfoScreen

pytestmark = pytest.mark.anyio
SIZE = (80, 24)
WHEN = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def home_with_one(tmp_path: Path) -> Home:
    home = snow_home(tmp_path)
    pending_to_jira(home)
    return home


def footer_keys(app: ExalateApp) -> dict[str, str]:
    """What the Footer shows: key → description, of the bindings it lists."""
    assert app.screen.query_one(Footer)
    return {
        key: active.binding.description
        for key, active in app.screen.active_bindings.items()
        if active.binding.show and active.enabled
    }


async def test_the_footer_says_enter_opens_a_connection(tmp_path: Path) -> None:
    app = ExalateApp(home_with_one(tmp_path), supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ConnectionsScreen)
        assert footer_keys(app)["enter"] == "Open"
        await settle(pilot, "enter")
        assert isinstance(app.screen, ConnectionDetailScreen)


async def test_question_mark_shows_and_hides_the_keys_of_the_screen(tmp_path: Path) -> None:
    app = ExalateApp(home_with_one(tmp_path), supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert footer_keys(app)["question_mark"] == "Keys"
        # The palette's key is not in the Footer (no room at 80 columns) but in the panel.
        assert app.screen.active_bindings["ctrl+p"].binding.description == "Commands"
        await settle(pilot, "question_mark")
        assert app.screen.query(HelpPanel)
        await settle(pilot, "question_mark")
        assert not app.screen.query(HelpPanel)
        await settle(pilot, "f1")
        assert app.screen.query(HelpPanel)


async def test_question_mark_in_a_field_is_typed(tmp_path: Path) -> None:
    app = ExalateApp(home_with_one(tmp_path), supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "i", "question_mark")
        assert isinstance(app.screen, DestinationScreen)
        assert app.screen.query_one("#dest_url", Input).value == "?"
        assert not app.screen.query(HelpPanel)


async def test_the_palette_offers_each_action_of_the_screen(tmp_path: Path) -> None:
    app = ExalateApp(home_with_one(tmp_path), supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Initiate connection", "Accept invitation", "Reload", "Open"):
            assert title in titles
        await settle(pilot, "enter")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        # A pending connection: a new code and delete, not deactivate.
        assert "New invitation code" in titles and "Delete" in titles
        assert "Deactivate" not in titles
        await settle(pilot, "escape", "ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await settle(pilot, *"initiate", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DestinationScreen)


async def test_tab_follows_reading_order_on_the_information_step(tmp_path: Path) -> None:
    app = ExalateApp(home_with_one(tmp_path), supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "i", "ctrl+n", "down", "enter", "enter")
        assert isinstance(app.screen, InfoScreen)
        await settle(pilot, "shift+tab")  # back to the top: the local name
        order = []
        for _ in range(6):
            assert app.screen.focused is not None
            order.append(app.screen.focused.id)
            await settle(pilot, "tab")
        assert order == ["local_name", "remote_name", "name", "description", "previous", "next"]
