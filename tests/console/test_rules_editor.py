"""The Rules editor at 80×24, on a home that really synced and then switched to Script
(scripted.py): edit and save (kept as a new version, the engine asked to re-send), a
refused save (its line shown and selected, nothing saved), leaving unsaved asks, the
Test run (of the version in force and of a draft) writing nothing, versions with their
diff and a revert, Apply rules and Switch to Script from the connection's detail.

Everything is real: the home, the sandbox's worker, the tracker, the sync tables.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import NOW
from pilots import settle, typed
from rich.console import Console
from scripted import LABELLED, MARKED, screen_lines, scripted
from synced import CID, story
from textual.pilot import Pilot
from textual.widgets import DataTable, Label, Static, TextArea

from exalate_tui.console.app import ExalateApp
from exalate_tui.domain.models import Mode
from exalate_tui.home.rules import RuleFiles
from exalate_tui.home.store import Home
from exalate_tui.protocol.kinds import MODE
from exalate_tui.trackers import open_tracker
from exalate_tui.transport.sqlite_streams import SqliteStreams
from screens.confirm import ConfirmLeaveRulesScreen, ConfirmRevertScreen, ConfirmSwitchScreen
from screens.connection_detail import ConnectionDetailScreen
from screens.rules_editor import RulesEditorScreen
from screens.rules_test import RulesTestScreen
from screens.rules_versions import RulesVersionsScreen

pytestmark = pytest.mark.anyio
SIZE = (80, 24)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def home(tmp_path: Path) -> Home:
    return await scripted(tmp_path)


def app_for(home: Home) -> ExalateApp:
    return ExalateApp(home, now=lambda: NOW, supervise=False)


def text_of(app: ExalateApp, selector: str) -> str:
    widget = app.screen.query_one(selector)
    assert isinstance(widget, Static | Label)
    console = Console(width=200, color_system=None)
    with console.capture() as captured:
        console.print(widget.content)
    return captured.get().strip()


def screen_text(app: ExalateApp) -> list[str]:
    return screen_lines(app.export_screenshot())


def requests(home: Home) -> list[tuple[str, str | None]]:
    db = sqlite3.connect(home.state_path)
    try:
        return [tuple(r) for r in db.execute("SELECT action, cid FROM sync_requests")]
    finally:
        db.close()


async def open_editor(pilot: Pilot[None]) -> RulesEditorScreen:
    await settle(pilot, "enter", "e")
    screen = pilot.app.screen
    assert isinstance(screen, RulesEditorScreen)
    assert screen.editor.loaded
    return screen


def area(app: ExalateApp, direction: str = "outgoing") -> TextArea:
    return app.screen.query_one(f"#{direction}", TextArea)


# -- edit and save ----------------------------------------------------------------------


async def test_the_editor_shows_both_rules_in_force_as_tabs(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_editor(pilot)
        assert area(app).text == MARKED
        assert area(app).language == "python" and area(app).show_line_numbers
        assert "F2 Outgoing v3" in text_of(app, "#view-outgoing")
        assert "v3 in force" in text_of(app, "#status")
        await settle(pilot, "f3")
        assert app.screen.query_one("#switcher").current == "incoming"  # type: ignore[attr-defined]
        assert area(app, "incoming").text == LABELLED
        assert app.focused is area(app, "incoming")
        lines = screen_text(app)
        assert lines[-1].startswith(" esc Back  ^s Save  F4 Test run  F5 Versions")


async def test_ctrl_s_saves_a_new_version_in_force_and_asks_the_engine_to_resend(
    home: Home,
) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_editor(pilot)
        area(app).move_cursor((area(app).document.line_count - 1, 0))
        await settle(pilot, *typed('replica.status = "new"\n'))
        assert "Outgoing v3 ●" in text_of(app, "#view-outgoing")
        assert "unsaved" in text_of(app, "#status")
        await settle(pilot, "ctrl+s")
        assert not screen.editor.dirty
        assert "Outgoing v5" in text_of(app, "#view-outgoing")
        files = RuleFiles(home, CID)
        in_force = files.current()["outgoing"]
        assert in_force.number == 5
        assert files.source(in_force) == MARKED + 'replica.status = "new"\n'
        assert ("rules", CID) in requests(home)
        # Nothing more to save: said, nothing written.
        await settle(pilot, "ctrl+s")
        assert len(files.versions()) == 5


async def test_a_refused_save_shows_its_line_selects_it_and_keeps_the_version_in_force(
    home: Home,
) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_editor(pilot)
        before = RuleFiles(home, CID).versions()
        area(app).move_cursor((4, 0))
        await settle(pilot, *typed("import os\n"))
        await settle(pilot, "ctrl+s")
        refusal = text_of(app, "#refusal")
        assert "Not saved: outgoing.py line 5: import is not allowed" in refusal
        assert "v3 stays in force." in refusal
        assert area(app).selection.start[0] == 4 and area(app).selected_text.startswith("import")
        assert app.focused is area(app)
        assert screen.editor.dirty
        assert RuleFiles(home, CID).versions() == before
        assert RuleFiles(home, CID).current_path("outgoing").read_text() == MARKED
        assert "line 5: import is not allowed" in "\n".join(screen_text(app))


async def test_leaving_with_unsaved_changes_asks_and_keep_editing_keeps_them(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_editor(pilot)
        await settle(pilot, "f3", *typed("# draft\n"))
        await settle(pilot, "escape")
        assert isinstance(app.screen, ConfirmLeaveRulesScreen)
        assert "incoming.py unsaved" in text_of(app, "#question")
        await settle(pilot, "k")
        assert isinstance(app.screen, RulesEditorScreen)
        assert area(app, "incoming").text.startswith("# draft\n")
        await settle(pilot, "escape", "d")
        assert isinstance(app.screen, ConnectionDetailScreen)
        assert len(RuleFiles(home, CID).versions()) == 4


# -- Test run -----------------------------------------------------------------------------


def _state(home: Home) -> tuple[object, ...]:
    db = sqlite3.connect(home.state_path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return tuple(
            (name, db.execute(f"SELECT * FROM {name} ORDER BY 1").fetchall())
            for name in sorted(tables)
        )
    finally:
        db.close()


async def _tickets(home: Home) -> list[object]:
    tracker = open_tracker(home)
    try:
        return [await tracker.get(t.key) for t in await tracker.search()]
    finally:
        await tracker.close()


def _files(path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


async def test_a_test_run_shows_both_directions_of_a_picked_ticket_and_writes_nothing(
    home: Home,
) -> None:
    tickets, state, rules = await _tickets(home), _state(home), _files(home.path / "rules")
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_editor(pilot)
        await settle(pilot, "f4")
        assert isinstance(app.screen, RulesTestScreen)
        table = app.screen.query_one("#synced", DataTable)
        assert [str(table.get_row_at(n)[0]) for n in range(table.row_count)][0] == "SNOW-1"
        await settle(pilot, "tab", "enter")  # SNOW-1 from the list
        report = text_of(app, "#report")
        assert "SNOW-1 · script (outgoing v3, incoming v4)" in report
        assert "summary = '[snow] Mail is down for the whole of floor 3'" in report
        assert "Incoming: what the last replica received would change" in report
        assert "labels: [] → ['from-jira']" in report
        # Back to the choice: a key typed.
        await settle(pilot, "escape", *typed("SNOW-3"), "enter")
        report = text_of(app, "#report")
        assert "summary = '[snow] Order toner'" in report
        assert "nothing received for SNOW-3 yet" in report
    assert await _tickets(home) == tickets
    assert _state(home) == state
    assert _files(home.path / "rules") == rules


async def test_a_test_run_runs_the_unsaved_draft_and_says_so(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await open_editor(pilot)
        area(app).move_cursor((area(app).document.line_count - 1, 0))
        await settle(pilot, *typed('replica.summary = "draft"\n'), "f4")
        assert "Your unsaved outgoing.py runs" in text_of(app, "#about")
        await settle(pilot, *typed("SNOW-1"), "enter")
        report = text_of(app, "#report")
        assert "script (outgoing draft, incoming v4)" in report
        assert "summary = 'draft'" in report
        await settle(pilot, *typed("x"))  # the report's keys: typing does nothing there
        await settle(pilot, "escape", *typed("NOPE-9"), "enter")
        assert "NOPE-9: no Test run" in text_of(app, "#report")
    assert len(RuleFiles(home, CID).versions()) == 4


# -- versions -------------------------------------------------------------------------------


async def test_versions_show_each_with_its_diff_and_revert_asks_then_saves_it_again(
    home: Home,
) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        editor = await open_editor(pilot)
        await settle(pilot, "f5")
        assert isinstance(app.screen, RulesVersionsScreen)
        table = app.screen.query_one("#versions", DataTable)
        assert [str(table.get_row_at(n)[0]) for n in range(table.row_count)] == [
            "v4 *",
            "v3 *",
            "v2",
            "v1",
        ]
        assert "v4 is in force: what it changed from v2" in text_of(app, "#heading")
        assert '+ticket.labels = ["from-" + connection.remote_name]' in text_of(app, "#diff")
        await settle(pilot, "r")  # v4 is in force: nothing to revert to
        assert isinstance(app.screen, RulesVersionsScreen)
        await settle(pilot, "down", "down", "down")  # v1, the Basic outgoing mapping
        assert "Reverting brings v1 back: - v3 in force, + v1" in text_of(app, "#heading")
        diff = text_of(app, "#diff")
        assert '-replica.summary = "[snow] " + ticket.summary' in diff
        assert "+replica.summary = ticket.summary" in diff
        await settle(pilot, "r")
        assert isinstance(app.screen, ConfirmRevertScreen)
        assert "Bring outgoing v1 back in force in place of v3?" in text_of(app, "#question")
        await settle(pilot, "y")
        assert isinstance(app.screen, RulesVersionsScreen)
        assert str(table.get_row_at(0)[0]) == "v5 *"
        files = RuleFiles(home, CID)
        assert files.versions()[-1].note == "revert to v1"
        assert files.source(files.current()["outgoing"]) == files.source(files.version(1))
        assert ("rules", CID) in requests(home)
        await settle(pilot, "escape")
        assert app.screen is editor
        assert "Outgoing v5" in text_of(app, "#view-outgoing")
        assert area(app).text == files.source(files.version(1))


# -- from the connection's detail: Apply rules, Switch to Script ------------------------------


async def test_apply_asks_the_engine_to_reapply_the_incoming_rules(home: Home) -> None:
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "enter")
        assert isinstance(app.screen, ConnectionDetailScreen)
        assert screen_text(app)[-1].rstrip().endswith("? Keys")
        await settle(pilot, "p")
        assert ("reapply", CID) in requests(home)


async def test_switch_to_script_asks_tells_the_partner_and_offers_the_rules(
    tmp_path: Path,
) -> None:
    home = await story(tmp_path)
    app = app_for(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "enter")
        assert "e" not in app.screen.active_bindings or not app.screen.active_bindings["e"].enabled
        await settle(pilot, "m")
        assert isinstance(app.screen, ConfirmSwitchScreen)
        assert "jira is told and keeps its own rules" in text_of(app, "#consequence")
        await settle(pilot, "n")
        assert home.get_connection(CID).mode is Mode.BASIC
        await settle(pilot, "m", "y")
        await settle(pilot)
        assert home.get_connection(CID).mode is Mode.SCRIPT
        streams = SqliteStreams(home.state_path)
        try:
            kinds = [m.kind for m in streams.pending(CID)]
        finally:
            streams.close()
        assert kinds[-1] == MODE
        assert [v.number for v in RuleFiles(home, CID).versions()] == [1, 2]
        await settle(pilot)
        assert isinstance(app.screen, ConnectionDetailScreen)
        await settle(pilot, "e")
        assert isinstance(app.screen, RulesEditorScreen)
