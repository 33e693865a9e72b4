"""The console driven by keyboard alone at 80×24: first run, the Connections tab, the
whole Initiate-connection wizard (both the seed's "I don't have a URL" path and a URL),
Escape at every step, inline errors, copy, write to file, Done.
"""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import Servers, pending_to_jira
from pilots import settle
from textual.notifications import SeverityLevel
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, Static, TextArea

from exalate_tui.console import app as app_module
from exalate_tui.console.app import ExalateApp
from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Connection, Instance, Mode, Status, Topology
from exalate_tui.flows.initiate import InitiateWizard
from exalate_tui.home.store import Home
from exalate_tui.lifecycle.initiate import save_issued
from screens.config_type import ConfigTypeScreen, ModeChoice
from screens.connections import ConnectionsScreen
from screens.destination import DestinationScreen
from screens.first_run import FirstRunScreen
from screens.info import InfoScreen
from screens.instance_error import InstanceErrorScreen
from screens.invitation import InvitationScreen
from screens.note import NoteScreen
from screens.public_url import PublicUrlScreen
from screens.tracker_setup import TrackerSetupScreen
from screens.wizard_step import WizardStep
from screens.write_code import WriteCodeScreen

SIZE = (80, 24)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clipboards:
    """Stand-ins for both copy paths: OSC 52 (the app's method) and pyperclip."""

    def __init__(self, *, local: bool = True) -> None:
        self.osc52: list[str] = []
        self.local: list[str] = []
        self.has_local = local

    def local_copy(self, text: str) -> None:
        if not self.has_local:
            raise RuntimeError("Pyperclip could not find a copy/paste mechanism")
        self.local.append(text)


class Console(ExalateApp):
    """The console, keeping the message of every toast it shows."""

    # Textual reads CSS_PATH beside the module of the class that sets it: the console's.
    CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.toasts: list[str] = []

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        self.toasts.append(message)
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


def console(home: Home, frozen: float, clipboards: Clipboards | None = None) -> Console:
    clipboards = clipboards or Clipboards()
    # No pollers here: these tests are about the screens (tests/test_app_live.py runs them).
    app = Console(home, local_copy=clipboards.local_copy, now=lambda: frozen, supervise=False)
    app.copy_to_clipboard = clipboards.osc52.append  # type: ignore[method-assign, assignment]
    return app


def home_with(tmp_path: Path, public_url: str | None = "https://snow.example.com") -> Home:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow", public_url=public_url))
    return home


async def press(pilot: Pilot[None], *keys: str) -> None:
    await settle(pilot, *keys)


async def type_text(pilot: Pilot[None], text: str) -> None:
    await press(pilot, *("space" if ch == " " else ch for ch in text))


def value(app: ExalateApp, field: str) -> str:
    return app.screen.query_one(f"#{field}", Input).value


def error(app: ExalateApp, field: str) -> str:
    return str(app.screen.query_one(f"#error-{field}", Label).render())


def messages(app: Console) -> list[str]:
    return app.toasts


def table_rows(app: ExalateApp) -> list[list[str]]:
    table = app.screen.query_one(DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


# -- first start -------------------------------------------------------------


async def test_first_run_saves_instance_toml(tmp_path: Path, frozen: float) -> None:
    home = Home(tmp_path / "home")
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, FirstRunScreen)
        await type_text(pilot, "snow")
        await press(pilot, "tab")
        await type_text(pilot, "https://snow.example.com/")
        await press(pilot, "enter")
        assert isinstance(app.screen, TrackerSetupScreen)  # which tracker: Escape keeps it
        await press(pilot, "escape")
        assert isinstance(app.screen, ConnectionsScreen)
        assert "Press i to initiate a connection" in str(app.screen.query_one("#empty").render())
    assert home.load_instance() == Instance(
        short_name="snow", public_url="https://snow.example.com"
    )


async def test_first_run_refuses_bad_input_inline(tmp_path: Path, frozen: float) -> None:
    home = Home(tmp_path / "home")
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "enter")
        assert error(app, "short_name") == "Short name is required."
        await type_text(pilot, "snow prod")
        assert "may only contain letters" in error(app, "short_name")
        await press(pilot, "tab")
        await type_text(pilot, "ftp://x")
        await press(pilot, "enter")
        assert "must start with http:// or https://" in error(app, "public_url")
        assert isinstance(app.screen, FirstRunScreen)
    assert not home.instance_path.exists()


async def test_broken_instance_toml_is_shown_and_never_overwritten(
    tmp_path: Path, frozen: float
) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    broken = 'short_name = "snow"\npublic_url = \n'
    home.instance_path.write_text(broken)
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, InstanceErrorScreen)
        where = str(app.screen.query_one("#where", Static).render())
        assert f"{home.instance_path}, line 2" in where
        assert "not valid TOML" in str(app.screen.query_one("#problem", Static).render())
        await press(pilot, "r")  # still broken: still explained
        assert isinstance(app.screen, InstanceErrorScreen)
        assert home.instance_path.read_text() == broken
        home.instance_path.write_text('short_name = "snow"\n')
        await press(pilot, "r")
        assert isinstance(app.screen, ConnectionsScreen)


# -- Connections tab -----------------------------------------------------------


async def test_the_first_screen_is_out_before_the_files_are_read(
    tmp_path: Path, frozen: float
) -> None:
    """Issue 9: no file I/O on the loop. The Connections tab is drawn (header, no rows),
    then its worker reads the files and the rows come; a first connection made behind
    an empty tab's back takes the focus, so Enter opens it."""
    home = home_with(tmp_path)
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ConnectionsScreen)
        assert not app.screen.query_one(DataTable).display  # none yet: the empty text
        pending_to_jira(home)
        await settle(pilot, "r")
        table = app.screen.query_one(DataTable)
        assert table.display and table.row_count == 1 and app.screen.focused is table
        await settle(pilot, "enter")
        assert type(app.screen).__name__ == "ConnectionDetailScreen"
    # The reading is the tab's worker's, not on_mount's: a tab made and mounted with
    # no worker run yet shows the table's header and no row.
    app = console(home_with(tmp_path / "other"), frozen)
    pending_to_jira(app.home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tab = app.screen
        assert isinstance(tab, ConnectionsScreen)
        fresh = ConnectionsScreen(tab.stores, tab.now)
        await app.push_screen(fresh)
        assert fresh.query_one(DataTable).row_count == 0  # header only, this frame
        await settle(pilot)
        assert fresh.query_one(DataTable).row_count == 1


async def test_broken_connection_file_is_reported_while_others_list(
    tmp_path: Path, frozen: float
) -> None:
    home = home_with(tmp_path)
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i", "ctrl+n", "down", "enter", "enter")
        await type_text(pilot, "jira")
        await press(pilot, "enter", "enter")
        broken = home.connection_path("broken")
        broken.write_text('name = "x"\n[[oops\n')
        await press(pilot, "r")
        problems = str(app.screen.query_one("#problems", Static).render())
        assert f"{broken}:2:" in problems
        assert "1 file could not be read" in problems
        assert [row[0].splitlines()[0] for row in table_rows(app)] == ["snow_to_jira"]
    assert broken.read_text() == 'name = "x"\n[[oops\n'


# -- the seed's flow ---------------------------------------------------------------


async def test_seed_flow_without_url_asks_for_public_url(
    tmp_path: Path, frozen: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed: I don't have a URL, Script, the Note, the names, copy, write, Done."""
    monkeypatch.chdir(tmp_path)
    home = home_with(tmp_path, public_url=None)
    clipboards = Clipboards()
    app = console(home, frozen, clipboards)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ConnectionsScreen)
        await press(pilot, "i")
        assert isinstance(app.screen, DestinationScreen)
        assert app.screen.query_one("#dest_url", Input).placeholder == (
            "https://example.exalate.net"
        )
        await press(pilot, "ctrl+n")
        assert isinstance(app.screen, PublicUrlScreen)
        assert str(app.screen.query_one("#wizard-count", Label).render()) == "Step 2: Public URL"
        await type_text(pilot, "https://snow.example.com")
        await press(pilot, "enter")
        assert isinstance(app.screen, ConfigTypeScreen)
        await press(pilot, "down")  # arrows choose: Script
        assert app.wizard is not None and app.wizard.mode is Mode.SCRIPT
        await press(pilot, "enter")
        assert isinstance(app.screen, NoteScreen)
        note = str(app.screen.query_one("#note", Static).render())
        assert note.startswith("As this is a Public-Private connection")
        await press(pilot, "enter")
        assert isinstance(app.screen, InfoScreen)
        assert value(app, "local_name") == "snow"
        # The local name comes filled in: focus is on the first empty required field.
        assert app.screen.focused is app.screen.query_one("#remote_name")
        await type_text(pilot, "jira")
        assert value(app, "name") == "snow_to_jira"
        await press(pilot, "tab", "tab")
        await type_text(pilot, "Incidents to bugs")
        await press(pilot, "enter")

        assert isinstance(app.screen, InvitationScreen)
        text = " ".join(str(s.render()) for s in app.screen.query(Static))
        assert 'Ensure that the app is installed on the destination side "jira"' in text
        assert (
            'On the "jira" side, you (or their application administrator) need to '
            "Accept the Invitation." in text
        )
        assert "Use the following invitation code:" in text
        code = app.screen.query_one("#code", TextArea).text
        assert app.issued and app.issued[0].code == code

        await press(pilot, "c")
        assert clipboards.osc52 == [code]
        assert clipboards.local == [code]
        assert any("and to the local clipboard" in m for m in messages(app))

        await press(pilot, "w")  # asks where, offering the home's invitations/
        assert isinstance(app.screen, WriteCodeScreen)
        await press(pilot, "enter")
        written = home.path / "invitations" / "snow_to_jira.invitation.txt"
        assert written.read_text() == code + "\n"
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
        assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700
        assert not list(Path.cwd().glob("*.invitation.txt"))  # never the working directory
        assert any(str(written) in m for m in messages(app))

        await press(pilot, "enter")
        assert isinstance(app.screen, ConnectionsScreen)
        [row] = table_rows(app)
        assert row[0].splitlines() == ["snow_to_jira", "snow → jira"]
        assert row[1:3] == ["public-private\nScript", "Pending\nwaiting for jira"]

    invite = codes.decode(code)
    assert (invite.url, invite.dest_url, invite.from_, invite.to) == (
        "https://snow.example.com",
        None,
        "snow",
        "jira",
    )
    assert (invite.name, invite.desc, invite.mode) == (
        "snow_to_jira",
        "Incidents to bugs",
        "script",
    )
    assert home.load_instance() == Instance(
        short_name="snow", public_url="https://snow.example.com"
    )
    [saved] = home.load_connections().connections
    assert saved.status is Status.PENDING and saved.topology is Topology.PUBLIC_PRIVATE


async def test_flow_with_destination_url(tmp_path: Path, frozen: float, servers: Servers) -> None:
    jira = Home(tmp_path / "jira")
    jira.save_instance(Instance(short_name="jira"))
    url = servers.node(jira)
    home = home_with(tmp_path)
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i")
        await type_text(pilot, url + "/")
        await press(pilot, "enter")  # verifies: ✓, and Enter again goes on
        assert isinstance(app.screen, DestinationScreen)
        await press(pilot, "enter")
        assert isinstance(app.screen, ConfigTypeScreen)  # public-public: no note
        title = str(app.screen.query_one("#wizard-count", Label).render())
        assert title == "Step 2: Configuration type"
        await press(pilot, "space", "enter")  # Basic is highlighted first
        assert isinstance(app.screen, InfoScreen)
        await type_text(pilot, "jira")
        await press(pilot, "enter")
        assert isinstance(app.screen, InvitationScreen)
        code = app.screen.query_one("#code", TextArea).text
        await press(pilot, "enter")
        assert isinstance(app.screen, ConnectionsScreen)
    invite = codes.decode(code)
    assert invite.dest_url == url
    assert invite.topology is Topology.PUBLIC_PUBLIC
    assert invite.mode is Mode.BASIC


async def test_invalid_url_is_refused_inline(tmp_path: Path, frozen: float) -> None:
    app = console(home_with(tmp_path), frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i")
        await press(pilot, "enter")
        assert error(app, "dest_url") == "Destination instance URL is required."
        await type_text(pilot, "ftp://jira")
        await press(pilot, "enter")
        assert isinstance(app.screen, DestinationScreen)
        assert "must start with http:// or https://" in error(app, "dest_url")
        await press(pilot, "ctrl+u")
        await type_text(pilot, "https://jira")
        assert error(app, "dest_url") == ""  # live, as you type


async def test_type_step_has_no_choice_until_the_admin_makes_one(
    tmp_path: Path, frozen: float
) -> None:
    app = console(home_with(tmp_path), frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i", "ctrl+n", "tab", "tab", "enter")  # the Next button, no choice
        assert isinstance(app.screen, ConfigTypeScreen)
        assert error(app, "mode") == "Choose Basic or Script."
        app.screen.query_one(ModeChoice).focus()
        await press(pilot, "enter")  # on the list, Enter without a choice picks nothing
        assert isinstance(app.screen, ConfigTypeScreen)
        assert app.wizard is not None and app.wizard.mode is None
        assert error(app, "mode") == "Choose Basic or Script."
        await press(pilot, "space")  # the highlighted type, chosen
        assert app.wizard.mode is Mode.BASIC and error(app, "mode") == ""
        await press(pilot, "enter")
        assert isinstance(app.screen, NoteScreen)


async def test_info_errors_inline_and_next_refused(tmp_path: Path, frozen: float) -> None:
    home = home_with(tmp_path)
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i", "ctrl+n", "down", "enter", "enter")
        assert isinstance(app.screen, InfoScreen)
        await press(pilot, "shift+tab", "end")
        await type_text(pilot, " x")
        assert "may only contain letters" in error(app, "local_name")  # live
        await press(pilot, "enter")
        assert isinstance(app.screen, InfoScreen)
        assert error(app, "remote_name") == "Remote instance short name is required."
        assert error(app, "name") == "Connection name is required."
        assert app.screen.focused is app.screen.query_one("#local_name")
        await press(pilot, "backspace", "backspace", "tab")
        await type_text(pilot, "jira")
        assert (error(app, "local_name"), error(app, "name")) == ("", "")
        await press(pilot, "tab", "end")
        await type_text(pilot, "_2")  # edited: no longer follows the short names
        await press(pilot, "shift+tab", "end")
        await type_text(pilot, "x")
        assert value(app, "name") == "snow_to_jira_2"
        await press(pilot, "enter")
        assert isinstance(app.screen, InvitationScreen)
    assert [c.name for c in home.load_connections().connections] == ["snow_to_jira_2"]


async def test_escape_at_every_step_goes_back_keeping_everything(
    tmp_path: Path, frozen: float
) -> None:
    home = home_with(tmp_path, public_url=None)
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i", "ctrl+n")
        await type_text(pilot, "https://snow.example.com")
        await press(pilot, "enter", "down", "enter", "enter")
        await type_text(pilot, "jira")
        await press(pilot, "tab", "tab")
        await type_text(pilot, "Desc")
        assert isinstance(app.screen, InfoScreen)

        await press(pilot, "escape")
        assert isinstance(app.screen, NoteScreen)
        await press(pilot, "escape")
        assert isinstance(app.screen, ConfigTypeScreen)
        assert app.screen.query_one(ModeChoice).chosen is Mode.SCRIPT
        await press(pilot, "escape")
        assert isinstance(app.screen, PublicUrlScreen)
        assert value(app, "public_url") == "https://snow.example.com"
        await press(pilot, "escape")
        assert isinstance(app.screen, DestinationScreen)

        # ...and forward again: everything is still there.
        await press(pilot, "ctrl+n", "enter", "enter", "enter")
        assert isinstance(app.screen, InfoScreen)
        assert [value(app, f) for f in ("local_name", "remote_name", "name", "description")] == [
            "snow",
            "jira",
            "snow_to_jira",
            "Desc",
        ]
        await press(pilot, "escape", "escape", "escape", "escape")
        assert isinstance(app.screen, DestinationScreen)
        await press(pilot, "escape")  # the first step closes the wizard
        assert isinstance(app.screen, ConnectionsScreen)
        assert app.wizard is None
    assert home.load_connections().connections == []
    assert home.load_instance() == Instance(short_name="snow")


async def test_previous_button_goes_back(tmp_path: Path, frozen: float) -> None:
    app = console(home_with(tmp_path), frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i", "ctrl+n", "down", "enter")
        assert isinstance(app.screen, NoteScreen)
        await pilot.click("#previous")
        await pilot.pause()
        assert isinstance(app.screen, ConfigTypeScreen)


async def test_each_step_is_a_new_screen_and_closing_leaves_none(
    tmp_path: Path, frozen: float
) -> None:
    app = console(home_with(tmp_path, public_url=None), frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i")
        destination = app.screen
        assert isinstance(destination, DestinationScreen)
        await press(pilot, "ctrl+n")
        # Each step is numbered by the steps before it, with no total that could change
        # once the destination step is answered ("Step 1 of 4", then "Step 2 of 5").
        assert isinstance(app.screen, PublicUrlScreen)
        assert str(app.screen.query_one("#wizard-count", Label).render()) == "Step 2: Public URL"
        await press(pilot, "escape")
        assert isinstance(app.screen, DestinationScreen) and app.screen is not destination
        assert [type(s) for s in app.screen_stack].count(DestinationScreen) == 1
        await press(pilot, "escape")
        assert isinstance(app.screen, ConnectionsScreen)
        assert not [s for s in app.screen_stack if isinstance(s, WizardStep)]


async def test_a_name_taken_while_the_code_was_saved_goes_back_with_the_reason(
    tmp_path: Path, frozen: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = home_with(tmp_path)
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i", "ctrl+n", "down", "enter", "enter")
        await type_text(pilot, "jira")
        save = Home.save_connection

        def taken_meanwhile(self: Home, connection: Connection) -> None:
            # The code is on screen; another process saves the same name first.
            monkeypatch.setattr(Home, "save_connection", save)
            save(self, connection.model_copy(update={"id": "other"}))
            save(self, connection)

        monkeypatch.setattr(Home, "save_connection", taken_meanwhile)
        await press(pilot, "enter")
        await press(pilot)  # the save's outcome comes by message, then the step moves
        assert isinstance(app.screen, InfoScreen)
        assert error(app, "name") == (
            "A connection named 'snow_to_jira' already exists: choose another name."
        )
        assert app.screen.focused is app.screen.query_one("#name")
        assert value(app, "remote_name") == "jira"
        assert app.issued == []
    assert [c.id for c in home.load_connections().connections] == ["other"]


async def test_a_connection_that_cannot_be_written_goes_back_and_says_why(
    tmp_path: Path, frozen: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unwritable(self: Home, connection: Connection) -> None:
        raise PermissionError(13, "Permission denied")

    app = console(home_with(tmp_path), frozen)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i", "ctrl+n", "down", "enter", "enter")
        await type_text(pilot, "jira")
        monkeypatch.setattr(Home, "save_connection", unwritable)
        await press(pilot, "enter")
        await press(pilot)  # the save's outcome comes by message, then the step moves
        assert isinstance(app.screen, InfoScreen)
        assert any("Could not save the connection" in m for m in messages(app))
        assert app.issued == []


async def test_done_while_the_code_is_being_saved_waits_for_it(
    tmp_path: Path, frozen: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = home_with(tmp_path)
    app = console(home, frozen)
    slow = threading.Event()
    saving = threading.Event()
    save = Home.save_connection

    def slow_save(self: Home, connection: Connection) -> None:
        saving.set()
        slow.wait(10)
        save(self, connection)

    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i", "ctrl+n", "down", "enter", "enter")
        await type_text(pilot, "jira")
        monkeypatch.setattr(Home, "save_connection", slow_save)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, InvitationScreen)
        assert await asyncio.to_thread(saving.wait, 5)  # the save is under way, held
        # Done is handled (its key and every message it posts) before the save ends.
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, InvitationScreen)
        assert home.load_connections().connections == []
        slow.set()
        await press(pilot)
        assert isinstance(app.screen, ConnectionsScreen)
        assert [row[0].splitlines()[0] for row in table_rows(app)] == ["snow_to_jira"]


async def test_copy_without_a_local_clipboard_says_so(tmp_path: Path, frozen: float) -> None:
    clipboards = Clipboards(local=False)
    app = console(home_with(tmp_path), frozen, clipboards)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i", "ctrl+n", "down", "enter", "enter")
        await type_text(pilot, "jira")
        await press(pilot, "enter", "c")
        code = app.screen.query_one("#code", TextArea).text
        assert clipboards.osc52 == [code]
        assert any(
            "no local clipboard here" in m and "press w to write it to a file" in m
            for m in messages(app)
        )
        await press(pilot, "escape", "k")  # leave, keeping the pending connection
        assert isinstance(app.screen, ConnectionsScreen)


def test_run_console_prints_the_codes_still_waiting_to_be_accepted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Printed on exit: a code whose connection is still Pending with it; not one whose
    connection was deleted, nor one a newer code replaced (issue 11)."""
    import time

    from exalate_tui.lifecycle import actions

    home = home_with(tmp_path)
    made: dict[str, str] = {}

    def issue(self: ExalateApp, remote: str) -> str:
        instance = home.load_instance()
        assert instance is not None
        wizard = InitiateWizard(instance, home.load_connections().connections)
        wizard.choose_no_url()
        wizard.set_mode("script")
        wizard.next()
        wizard.next()
        wizard.set_remote_name(remote)
        assert wizard.next() and wizard.issued
        assert save_issued(home, wizard.issued.connection, wizard.new_instance)
        self.issued.append(wizard.issued)
        made[remote] = wizard.issued.code
        return wizard.issued.connection.id

    def run(self: ExalateApp) -> None:
        # What a session leaves behind, done headless with the same wizard and actions.
        assert self.instance is None
        issue(self, "jira")
        home.delete_connection(issue(self, "ado"))
        replaced = issue(self, "gitlab")
        made["gitlab, new"] = actions.regenerate_invitation(home, replaced, now=time.time)

    monkeypatch.setattr(app_module.ExalateApp, "run", run)
    assert app_module.run_console(home) == 0
    out = capsys.readouterr().out
    assert "snow_to_jira:" in out and made["jira"] in out
    assert "snow_to_ado" not in out and made["ado"] not in out
    # The regenerated code was not issued through the app here: neither gitlab code prints.
    assert made["gitlab"] not in out and "snow_to_gitlab" not in out


def test_console_start_does_not_load_the_node() -> None:
    probe = (
        "import sys, exalate_tui.console.app, screens.connections, screens.first_run;"
        "bad = [m for m in ('fastapi', 'uvicorn', 'httpx') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_column_is_as_wide_as_its_widest_line_and_names_give_way() -> None:
    """The widths are set on the columns, not left to DataTable's auto width: that is
    measured once the table is idle, and rows drawn before it kept narrower cells (a
    snapshot caught "waiting for servicedesk" wrapped onto a line nobody sees)."""
    from rich.text import Text

    from screens.connections import column_widths

    cells = (Text("a_long_connection_name\nsnow → jira"), Text("public-private\nScript"))
    status = Text("Pending\nwaiting for servicedesk")
    rows = [("c1", (*cells, status, Text("2024-05-01")))]
    assert column_widths(rows, 120) == (22, 15, 23, 10)  # "Topology / mode" is 15
    # On 70 columns Status stays whole and the names give way, to what is left.
    narrow = column_widths(rows, 70)
    assert narrow == (12, 15, 23, 10) and sum(w + 2 for w in narrow) + 2 == 70
