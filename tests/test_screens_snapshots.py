"""Snapshots of every console screen and its main error states, at 80×24 and 120×36.

Baselines live in `snapshots/test_screens_snapshots/` (see conftest.py). Each
test builds its home under `tmp_path` but names it by a relative path, so no
temporary path ever reaches the screen; ids, tokens and the clock are fixed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from exalate_tui.app import ExalateApp, make_app
from exalate_tui.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.store import Home

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]
Compare = Callable[..., bool]
WHEN = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def still(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, frozen: float) -> None:
    """No cursor blink; the home is `home`, relative to a temporary working directory."""
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)
    monkeypatch.setattr(TextArea, "_toggle_cursor_blink_visible", lambda self: None)
    monkeypatch.chdir(tmp_path)


def home_with(public_url: str | None = "https://snow.example.com") -> Home:
    home = Home(Path("home"))
    home.save_instance(Instance(short_name="snow", public_url=public_url))
    return home


def app_for(home: Home, frozen: float, *, clipboard: bool = True) -> ExalateApp:
    def local_copy(text: str) -> None:
        if not clipboard:
            raise RuntimeError("no clipboard")  # what pyperclip does over SSH
        del text

    return make_app(home, local_copy=local_copy, now=lambda: frozen)


def steps(*keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Press keys one at a time, letting each screen settle (and any copy finish)."""

    async def run(pilot: Pilot[None]) -> None:
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    return run


def typed(text: str) -> list[str]:
    return ["space" if ch == " " else ch for ch in text]


NO_URL_TO_INFO = ["i", "ctrl+n", "down", "enter", "enter"]
TO_INVITATION = [*NO_URL_TO_INFO, "tab", *typed("jira"), "enter"]


def several(home: Home) -> None:
    rows = [
        ("snow_to_jira", Topology.PUBLIC_PRIVATE, Mode.SCRIPT, Status.PENDING, "jira"),
        ("Support escalations", Topology.PUBLIC_PUBLIC, Mode.BASIC, Status.ACTIVE, "zendesk"),
        ("snow_to_ado", Topology.PRIVATE_PUBLIC, Mode.SCRIPT, Status.DEACTIVATED, "ado"),
    ]
    for n, (name, topology, mode, status, remote) in enumerate(rows):
        home.save_connection(
            Connection(
                name=name,
                mode=mode,
                topology=topology,
                role=Role.INITIATOR,
                local_name="snow",
                remote_name=remote,
                status=status,
                created=WHEN + timedelta(days=n),
            )
        )


# -- first start -------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_first_run(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(Home(Path("home")), frozen), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_first_run_errors(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*typed("snow prod"), "tab", *typed("ftp://x"), "enter")
    assert snap_compare(app_for(Home(Path("home")), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_broken_instance(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = Home(Path("home"))
    home.ensure()
    home.instance_path.write_text('short_name = "snow"\npublic_url = \n')
    assert snap_compare(app_for(home, frozen), terminal_size=size)


# -- Connections tab -----------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_connections_empty(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_connections_several(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = home_with()
    several(home)
    assert snap_compare(app_for(home, frozen), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_connections_broken_file(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    home = home_with()
    several(home)
    home.connection_path("broken").write_text('name = "x"\nmode = "fast"\n[[oops\n')
    assert snap_compare(app_for(home, frozen), terminal_size=size)


# -- the wizard, step by step ------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_destination(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=steps("i"))


@pytest.mark.parametrize("size", SIZES)
def test_destination_invalid_url(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    run = steps("i", *typed("ftp://jira.example.com"), "enter")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_public_url(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps("i", "ctrl+n")
    assert snap_compare(app_for(home_with(None), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_public_url_missing(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps("i", "ctrl+n", "enter")
    assert snap_compare(app_for(home_with(None), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_config_type(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps("i", "ctrl+n", "down", "space")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_config_type_unchosen(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    # Next without a choice: tab to the Next button and press it.
    run = steps("i", "ctrl+n", "tab", "tab", "enter")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_note(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps("i", "ctrl+n", "down", "enter")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_info(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*NO_URL_TO_INFO)
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_info_errors(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    # A bad local name, no remote name, hence no suggested connection name.
    run = steps(*NO_URL_TO_INFO, "end", *typed(" prod"), "enter")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_info_suggested_name(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*NO_URL_TO_INFO, "tab", *typed("jira"), "tab", "tab", *typed("Tickets"))
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_invitation(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*TO_INVITATION)
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_invitation_copied(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*TO_INVITATION, "c")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_invitation_copied_no_local_clipboard(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    run = steps(*TO_INVITATION, "c")
    app = app_for(home_with(), frozen, clipboard=False)
    assert snap_compare(app, terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_connections_after_done(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    home = home_with()
    several(home)
    run = steps(*TO_INVITATION, "enter")
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=run)
