"""`w` on a code: the admin sees where the code goes and can change it (issue 11);
never the working directory unasked, never a file replaced unasked."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from conftest import pending_to_jira, snow_home
from pilots import settle
from test_app_console import Console
from textual.pilot import Pilot
from textual.widgets import Input, Static, TextArea

from exalate_tui.console.app import ExalateApp
from exalate_tui.home.store import Home
from screens.regenerated import RegeneratedScreen
from screens.write_code import WriteCodeScreen

pytestmark = pytest.mark.anyio
SIZE = (80, 24)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.chdir(tmp_path)  # where a careless write would land
    home = snow_home(tmp_path)
    pending_to_jira(home)
    return home


async def on_code(pilot: Pilot[None]) -> str:
    """A new code for the pending connection, then `w`: the dialog, and the code."""
    await settle(pilot, "enter", "g", "y")
    screen = pilot.app.screen
    assert isinstance(screen, RegeneratedScreen)
    code = screen.query_one("#code", TextArea).text
    await settle(pilot, "w")
    assert isinstance(pilot.app.screen, WriteCodeScreen)
    return code


def path_field(pilot: Pilot[None]) -> Input:
    return pilot.app.screen.query_one("#path", Input)


def problem(pilot: Pilot[None]) -> str:
    return str(pilot.app.screen.query_one("#problem", Static).render())


async def replace_path(pilot: Pilot[None], text: str) -> None:
    """Put `text` in the path field (as typing it would end), then let the dialog react."""
    path_field(pilot).value = text
    await settle(pilot)


async def test_the_default_is_in_the_home_and_shown(home: Home, tmp_path: Path) -> None:
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        code = await on_code(pilot)
        default = home.path / "invitations" / "snow_to_jira.invitation.txt"
        assert Path(path_field(pilot).value).expanduser() == default
        await settle(pilot, "enter")
        assert isinstance(app.screen, RegeneratedScreen)
    assert default.read_text() == code + "\n"
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.invitation.txt"))


async def test_a_changed_path_is_where_the_code_goes(home: Home, tmp_path: Path) -> None:
    chosen = tmp_path / "outbox" / "for-jira.txt"
    chosen.parent.mkdir()
    app = Console(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        code = await on_code(pilot)
        await replace_path(pilot, str(chosen))
        await settle(pilot, "enter")
        assert isinstance(app.screen, RegeneratedScreen)
        assert app.toasts == [f"Wrote the invitation code to {chosen}"]
    assert chosen.read_text() == code + "\n"
    assert stat.S_IMODE(chosen.stat().st_mode) == 0o600
    assert not (home.path / "invitations").exists()


async def test_a_folder_takes_the_default_file_name(home: Home, tmp_path: Path) -> None:
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        code = await on_code(pilot)
        await replace_path(pilot, str(tmp_path))
        await settle(pilot, "enter")
    assert (tmp_path / "snow_to_jira.invitation.txt").read_text() == code + "\n"


async def test_a_relative_path_is_refused_and_nothing_is_written(
    home: Home, tmp_path: Path
) -> None:
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_code(pilot)
        await replace_path(pilot, "code.txt")
        await settle(pilot, "enter")
        assert isinstance(app.screen, WriteCodeScreen)
        assert "Give a full path, starting with / or ~" in problem(pilot)
        await settle(pilot, "escape")
        assert isinstance(app.screen, RegeneratedScreen)
    assert not (tmp_path / "code.txt").exists()
    assert not (home.path / "invitations").exists()


async def test_a_missing_folder_is_named(home: Home, tmp_path: Path) -> None:
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_code(pilot)
        await replace_path(pilot, str(tmp_path / "nowhere" / "code.txt"))
        await settle(pilot, "enter")
        assert isinstance(app.screen, WriteCodeScreen)
        assert f"There is no folder {tmp_path / 'nowhere'}" in problem(pilot)


async def test_an_existing_file_is_replaced_only_when_asked_again(
    home: Home, tmp_path: Path
) -> None:
    chosen = tmp_path / "notes.txt"
    chosen.write_text("my notes\n")
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        code = await on_code(pilot)
        await replace_path(pilot, str(chosen))
        await settle(pilot, "enter")
        assert isinstance(app.screen, WriteCodeScreen)
        assert f"{chosen} exists: press Replace" in problem(pilot)
        assert chosen.read_text() == "my notes\n"
        await settle(pilot, "enter")
        assert isinstance(app.screen, RegeneratedScreen)
    assert chosen.read_text() == code + "\n"


async def test_a_folder_it_cannot_write_says_why(home: Home, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "code.txt").symlink_to(tmp_path / "elsewhere.txt")  # never written through
    app = ExalateApp(home, local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_code(pilot)
        await replace_path(pilot, str(locked / "code.txt"))
        await settle(pilot, "enter", "enter")  # exists: Replace, then the write refuses
        assert isinstance(app.screen, WriteCodeScreen)
        assert f"Could not write {locked / 'code.txt'}" in problem(pilot)
    assert not (tmp_path / "elsewhere.txt").exists()
