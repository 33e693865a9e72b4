"""The Rules editor of a Script connection: outgoing.py and incoming.py as two tabs (F2,
F3), each a Python code editor with line numbers; ctrl+s checks and saves the tab's
rule, F4 opens the Test run, F5 the versions.

Reading and saving run in thread workers (`stores.read_rules`, `sync.script.save_rule`:
the sandbox's policy checks the rule first, the same check `rules set` makes). A
refused rule is not saved: the refusal shows under the editor and the cursor goes to
its line, and the version in force stays. A new outgoing version asks the engine to
re-send the synced tickets whose replica it changes (a `rules` request). What is
unsaved, which tab shows and the refusal live in `flows.rules.RulesEditor`; leaving
with unsaved changes asks first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Label, Static, TextArea

from exalate_tui.domain.models import Connection
from exalate_tui.flows.rules import DIRECTIONS, TITLES, RulesEditor
from exalate_tui.trackers.adapter import Tracker

from .confirm import ConfirmLeaveRulesScreen
from .stores import RulesReading, Stores, ask_engine, read_rules
from .widgets import TitleBar, ViewBar

TAB_KEYS = {"outgoing": "F2", "incoming": "F3"}


class RulesEditorScreen(Screen[None]):
    CSS_PATH = "rules_editor.tcss"
    AUTO_FOCUS = "#outgoing"
    # Priority: the code editor takes every other key, and Escape would only move focus.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "back",
            "Back",
            priority=True,
            id="rules.back",
            tooltip="Back to the connection (asks first when a rule is unsaved)",
        ),
        Binding(
            "ctrl+s",
            "save",
            "Save",
            priority=True,
            id="rules.save",
            tooltip="Check this rule and save it as a new version, in force at once",
        ),
        *[
            Binding(
                key.lower(),
                f"tab('{direction}')",
                TITLES[direction],
                key_display=key,
                show=False,
                priority=True,
                id=f"rules.{direction}",
                tooltip=f"Edit {direction}.py",
            )
            for direction, key in TAB_KEYS.items()
        ],
        Binding(
            "f4",
            "test_run",
            "Test run",
            key_display="F4",
            priority=True,
            id="rules.test_run",
            tooltip="What these rules (unsaved changes included) would do to one ticket",
        ),
        Binding(
            "f5",
            "versions",
            "Versions",
            key_display="F5",
            priority=True,
            id="rules.versions",
            tooltip="Every saved version, its diff against the one in force, revert",
        ),
    ]

    @dataclass
    class Read(Message):
        reading: RulesReading

    @dataclass
    class Saved(Message):
        direction: str
        version: int
        text: str
        problem: str = ""  # the save happened; the engine could not be asked

    @dataclass
    class Refused(Message):
        direction: str
        message: str
        line: int | None
        failed: bool = False  # not the rule's fault: the disk, the connection

    def __init__(
        self,
        stores: Stores,
        cid: str,
        tracker: Tracker | None,
        tracker_problem: str | None,
        now: Callable[[], float],
    ) -> None:
        super().__init__()
        self.stores = stores
        self.cid = cid
        self.tracker = tracker
        self.tracker_problem = tracker_problem
        self.now = now
        self.editor = RulesEditor()
        self.connection: Connection | None = None

    def compose(self) -> ComposeResult:
        yield TitleBar("Rules", id="title")
        yield ViewBar(
            [(d, self.editor.title(d), TAB_KEYS[d]) for d in DIRECTIONS], self.editor.direction
        )
        yield Static("", id="status")
        with ContentSwitcher(initial=self.editor.direction, id="switcher"):
            for direction in DIRECTIONS:
                # Wrapped: at 80 columns a long comment stays in sight.
                yield TextArea.code_editor(
                    "", language="python", id=direction, read_only=True, soft_wrap=True
                )
        yield Static("", id="refusal")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#refusal").display = False
        self._show()
        self._read()

    # -- reading --------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="read")
    def _read(self) -> None:
        self.post_message(self.Read(read_rules(self.stores, self.cid)))

    @on(Read)
    def _got(self, event: Read) -> None:
        reading = event.reading
        self.connection = reading.connection
        name = reading.connection.name if reading.connection else "gone"
        self.query_one("#title", Label).update(Text(f"Rules · {name}"))
        if reading.problem:
            self.query_one("#status", Static).update(Text(reading.problem, "bold red"))
            return
        for direction, (version, source) in reading.current.items():
            if self.editor.load(direction, version, source):
                area = self.query_one(f"#{direction}", TextArea)
                area.load_text(source)
                area.read_only = False
        self.editor.loaded_all()
        self._show()

    # -- what shows -----------------------------------------------------------------

    def _area(self, direction: str | None = None) -> TextArea:
        return self.query_one(f"#{direction or self.editor.direction}", TextArea)

    def _show(self) -> None:
        bar = self.query_one(ViewBar)
        for direction in DIRECTIONS:
            bar.retitle(direction, self.editor.title(direction))
        self.query_one("#status", Static).update(Text(self.editor.status(), "dim"))
        refusal = self.editor.current.refusal
        box = self.query_one("#refusal", Static)
        box.display = refusal is not None
        if refusal is not None:
            keep = self.editor.current.version
            box.update(
                Text.assemble(
                    ("Not saved: ", "bold"),
                    (refusal.message, "red"),
                    f"\nv{keep} stays in force." if keep is not None else "",
                )
            )
        self.refresh_bindings()

    @on(TextArea.Changed)
    def _edited(self, event: TextArea.Changed) -> None:
        direction = event.text_area.id
        if direction in DIRECTIONS and self.editor.loaded:
            self.editor.edit(event.text_area.text, direction)
            self._show()

    def action_tab(self, direction: str) -> None:
        self.editor.show(direction)
        self.query_one(ContentSwitcher).current = direction
        self.query_one(ViewBar).show(direction)
        self._area().focus()
        self._show()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("save", "test_run", "versions"):
            return self.editor.loaded
        return True

    # -- saving ---------------------------------------------------------------------

    def action_save(self) -> None:
        if self.connection is None or not self.editor.loaded:
            return
        if self.editor.saving is not None:
            return
        job = self.editor.to_save()
        if job is None:
            self.notify(
                f"{self.editor.direction}.py has no unsaved changes.", title="Rules", markup=False
            )
            return
        self._show()
        self._save(self.connection, *job)

    @work(thread=True, exit_on_error=False, group="save")
    def _save(self, connection: Connection, direction: str, text: str) -> None:
        from exalate_tui.home.store import StoreError
        from exalate_tui.sync.script import RuleRefused, save_rule

        try:
            version = save_rule(self.stores.home, connection, direction, text, "saved")
        except RuleRefused as error:
            self.post_message(self.Refused(direction, str(error), error.line))
            return
        except (StoreError, OSError) as error:
            self.post_message(self.Refused(direction, str(error), None, failed=True))
            return
        problem = ask_engine(self.stores, "rules", connection.id) if direction == "outgoing" else ""
        self.post_message(self.Saved(direction, version.number, text, problem))

    @on(Saved)
    def _saved(self, event: Saved) -> None:
        self.editor.saved(event.direction, event.version, event.text)
        if event.direction == "outgoing":
            said = "Synced tickets whose replica it changes are re-sent."
            if event.problem:
                said = f"The engine could not be asked to re-send synced tickets: {event.problem}"
        else:
            said = (
                "It applies to each ticket's next replica; p on the connection applies it "
                "to every synced ticket now."
            )
        self.notify(
            f"Saved {event.direction} v{event.version}: in force. {said}",
            title="Rules",
            severity="warning" if event.problem else "information",
            timeout=8,
            markup=False,
        )
        self._show()

    @on(Refused)
    def _refused(self, event: Refused) -> None:
        if event.failed:
            self.editor.failed()
            self.notify(
                f"Not saved: {event.message}", title="Rules", severity="error", markup=False
            )
            self._show()
            return
        self.editor.refused(event.direction, event.message, event.line)
        if event.direction != self.editor.direction:
            self.action_tab(event.direction)
        area = self._area(event.direction)
        if event.line is not None:
            area.select_line(max(event.line - 1, 0))
            area.scroll_cursor_visible(center=True)
        area.focus()
        self._show()

    # -- leaving, Test run, versions ------------------------------------------------

    def action_back(self) -> None:
        if not self.editor.dirty:
            self.dismiss()
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss()

        self.app.push_screen(ConfirmLeaveRulesScreen(self.editor.unsaved_words()), answered)

    def action_test_run(self) -> None:
        from .rules_test import RulesTestScreen

        if self.connection is None or not self.editor.loaded:
            return
        if self.tracker is None:
            self.notify(
                f"A Test run reads the ticket from the tracker, which cannot be opened: "
                f"{self.tracker_problem}",
                severity="error",
                markup=False,
            )
            return
        self.app.push_screen(
            RulesTestScreen(self.stores, self.connection, self.tracker, self.editor.drafts())
        )

    def action_versions(self) -> None:
        from .rules_versions import RulesVersionsScreen

        if self.connection is None or not self.editor.loaded:
            return

        def back(reverted: bool | None) -> None:
            if reverted:
                self._read()

        self.app.push_screen(RulesVersionsScreen(self.stores, self.connection), back)
