"""What the console asks before something cannot be taken back: leaving the invitation
step (keep the pending connection, or discard it) and `g` (a new code voids the old)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import pending_to_jira, snow_home
from pilots import settle
from textual.pilot import Pilot
from textual.widgets import TextArea

from exalate_tui.console.app import ExalateApp
from exalate_tui.domain.models import Status
from exalate_tui.home.store import Home
from screens.confirm import ConfirmNewCodeScreen, LeavePendingScreen
from screens.connection_detail import ConnectionDetailScreen
from screens.connections import ConnectionsScreen
from screens.invitation import InvitationScreen
from screens.regenerated import RegeneratedScreen

pytestmark = pytest.mark.anyio
SIZE = (80, 24)
WHEN = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def press(pilot: Pilot[None], *keys: str) -> None:
    for key in keys:
        await settle(pilot, key)


async def to_invitation(pilot: Pilot[None]) -> None:
    await press(pilot, "i", "ctrl+n", "down", "enter", "enter", "j", "i", "r", "a", "enter")
    assert isinstance(pilot.app.screen, InvitationScreen)


def names(home: Home) -> list[str]:
    return [c.name for c in home.load_connections().connections]


async def test_escape_on_the_code_asks_and_keep_leaves_it_pending(tmp_path: Path) -> None:
    home = snow_home(tmp_path)
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await to_invitation(pilot)
        await press(pilot, "escape")
        assert isinstance(app.screen, LeavePendingScreen)
        assert "its code stays valid until" in str(app.screen.query_one("#consequence").render())
        await press(pilot, "k")
        assert isinstance(app.screen, ConnectionsScreen)
    [kept] = home.load_connections().connections
    assert (kept.name, kept.status) == ("snow_to_jira", Status.PENDING)


async def test_escape_then_discard_deletes_the_pending_connection(tmp_path: Path) -> None:
    home = snow_home(tmp_path)
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await to_invitation(pilot)
        await press(pilot, "escape", "d")
        assert isinstance(app.screen, ConnectionsScreen)
    assert names(home) == []


async def test_escape_twice_stays_on_the_code(tmp_path: Path) -> None:
    home = snow_home(tmp_path)
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await to_invitation(pilot)
        await press(pilot, "escape", "escape")
        assert isinstance(app.screen, InvitationScreen)
    assert names(home) == ["snow_to_jira"]


async def test_new_code_asks_first_and_no_keeps_the_old_one(tmp_path: Path) -> None:
    home = snow_home(tmp_path)
    connection = pending_to_jira(home)
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "enter", "g")
        assert isinstance(app.screen, ConfirmNewCodeScreen)
        await press(pilot, "n")
        assert isinstance(app.screen, ConnectionDetailScreen)
        assert home.get_connection(connection.id).token_hash == connection.token_hash
        await press(pilot, "g", "escape")
        assert isinstance(app.screen, ConnectionDetailScreen)
        assert home.get_connection(connection.id).token_hash == connection.token_hash
        await press(pilot, "g", "y")
        assert isinstance(app.screen, RegeneratedScreen)
        assert app.screen.query_one("#code", TextArea).text
    assert home.get_connection(connection.id).token_hash != connection.token_hash
