"""Test run: what a Script connection's rules would do to one ticket, nothing sent and
nothing written. Type a key, or pick one of the tickets that sync over the connection;
the report shows the replica the outgoing rule would send and the field changes and
comments the incoming rule would make from the last replica received.

The rules tried are those in force, with the editor's unsaved tabs in their place
(`try_rules(..., drafts)`: a draft the policy refuses is refused here as on save).
The synced tickets are read in a thread worker; the run is a thread worker with its
own event loop (the sandbox blocks while a rule runs), reading the ticket through
the App's loop (`stores.TrackerOnLoop`). State: `flows.rules.TestRun`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Input, Label, Static

from exalate_tui.domain.models import Connection
from exalate_tui.flows.rules import TestRun, report_lines
from exalate_tui.trackers.adapter import Tracker

from .stores import Stores, TrackerOnLoop
from .widgets import TitleBar, set_rows

STYLES = {"heading": "bold", "error": "red", "added": "green", "dim": "dim", "text": ""}


class RulesTestScreen(Screen[None]):
    CSS_PATH = "rules_test.tcss"
    AUTO_FOCUS = "#key"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "back",
            "Back",
            id="rules_test.back",
            tooltip="Back to the ticket's choice, then to the editor",
        ),
        Binding(
            "f4",
            "again",
            "Run again",
            key_display="F4",
            id="rules_test.again",
            tooltip="Run the rules on this ticket again",
        ),
    ]

    @dataclass
    class Synced(Message):
        keys: list[tuple[str, str]]
        problem: str | None = None

    @dataclass
    class Ran(Message):
        key: str
        report: dict[str, Any] | None
        problem: str = ""

    def __init__(
        self,
        stores: Stores,
        connection: Connection,
        tracker: Tracker,
        drafts: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.stores = stores
        self.connection = connection
        self.tracker = tracker
        self.drafts = dict(drafts or {})
        self.run = TestRun()

    def compose(self) -> ComposeResult:
        yield TitleBar(Text(f"Test run · {self.connection.name}"), id="title")
        with ContentSwitcher(initial="pick", id="switcher"):
            with Vertical(id="pick"):
                yield Static(self._about(), id="about")
                yield Input(placeholder="A ticket's key, e.g. SNOW-1; Enter runs", id="key")
                yield Label("", id="key-error")
                yield Label(
                    Text("Or pick a synced ticket (Enter runs):", "bold"), id="synced-title"
                )
                yield DataTable(id="synced", cursor_type="row", zebra_stripes=True)
                yield Static(Text("No ticket syncs over this connection yet.", "dim"), id="none")
            with VerticalScroll(id="result"):
                yield Static("", id="report")
        yield Footer(show_command_palette=False)

    def _about(self) -> Text:
        text = Text(
            "What the rules would do to one ticket: the replica outgoing would send, and "
            "what incoming would change from the last replica received. Nothing is sent, "
            "nothing is written."
        )
        if self.drafts:
            names = " and ".join(f"{d}.py" for d in self.drafts)
            runs = (
                "run in place of the versions"
                if len(self.drafts) > 1
                else "runs in place of the version"
            )
            text.append(f"\nYour unsaved {names} {runs} in force.", "yellow")
        return text

    def on_mount(self) -> None:
        self.query_one("#synced", DataTable).add_columns(Text("Local key"), Text("Remote key"))
        self.query_one("#key-error").display = False
        self.query_one("#none").display = False
        self._read()

    @work(thread=True, exclusive=True, exit_on_error=False, group="read")
    def _read(self) -> None:
        from exalate_tui.sync.store import SyncStoreError

        if self.stores.sync is None:
            self.post_message(self.Synced([], "the sync tables are not open"))
            return
        try:
            links = self.stores.sync.store().links(self.connection.id)
        except (SyncStoreError, OSError) as error:
            self.post_message(self.Synced([], str(error)))
            return
        keys = [(link.local_key, link.remote_key or "pending") for link in links if link.active]
        self.post_message(self.Synced(keys))

    @on(Synced)
    def _synced(self, event: Synced) -> None:
        self.run.synced = event.keys
        table = self.query_one("#synced", DataTable)
        set_rows(table, [(local, (Text(local), Text(remote))) for local, remote in event.keys])
        table.display = bool(event.keys)
        none = self.query_one("#none", Static)
        none.display = not event.keys
        if event.problem:
            none.update(Text(f"The synced tickets cannot be read: {event.problem}", "red"))

    # -- running --------------------------------------------------------------------

    @on(Input.Changed, "#key")
    def _typed(self, event: Input.Changed) -> None:
        self.run.set_key(event.value)
        self._show_error()

    @on(Input.Submitted, "#key")
    def _submitted(self) -> None:
        self._start(None)

    @on(DataTable.RowSelected, "#synced")
    def _picked(self, event: DataTable.RowSelected) -> None:
        self._start(str(event.row_key.value))

    def _start(self, key: str | None) -> None:
        if self.run.running is not None:
            return
        chosen = self.run.submit(key)
        self._show_error()
        if chosen is None:
            return
        self._show_report()
        self.query_one(ContentSwitcher).current = "result"
        self.query_one("#result").focus()
        self.refresh_bindings()
        self._try(chosen, asyncio.get_running_loop())

    @work(thread=True, exclusive=True, exit_on_error=False, group="try")
    def _try(self, key: str, loop: asyncio.AbstractEventLoop) -> None:
        from exalate_tui.errors import ExalateError
        from exalate_tui.sync.script import try_rules
        from exalate_tui.sync.store import SyncStoreError

        if self.stores.sync is None:
            self.post_message(self.Ran(key, None, "the sync tables are not open"))
            return
        tracker = TrackerOnLoop(self.tracker, loop)
        try:
            store = self.stores.sync.store()
            report = asyncio.run(
                try_rules(self.stores.home, self.connection, tracker, store, key, self.drafts)
            )
        except (ExalateError, SyncStoreError, OSError) as error:
            self.post_message(self.Ran(key, None, str(error)))
            return
        self.post_message(self.Ran(key, report))

    @on(Ran)
    def _ran(self, event: Ran) -> None:
        if event.report is None:
            self.run.refused(event.problem)
        else:
            self.run.finished(event.report)
        self._show_report()
        self.refresh_bindings()

    def _show_error(self) -> None:
        label = self.query_one("#key-error", Label)
        label.display = self.run.error is not None and self.run.report is None
        label.update(Text(self.run.error or "", "red"))

    def _show_report(self) -> None:
        report = self.query_one("#report", Static)
        if self.run.running is not None:
            report.update(Text(f"Running the rules on {self.run.running}…", "dim"))
        elif self.run.report is not None:
            text = Text()
            for n, line in enumerate(report_lines(self.run.report)):
                if n:
                    text.append("\n")
                text.append(line.text, STYLES[line.kind])
            report.update(text)
        else:
            report.update(
                Text.assemble(
                    (f"{self.run.key}: no Test run\n", "bold"), (self.run.error or "", "red")
                )
            )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "again":
            shown = self.query_one(ContentSwitcher).current == "result"
            return shown and self.run.running is None
        return True

    def action_again(self) -> None:
        if self.run.key:
            self._start(self.run.key)

    def action_back(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        if switcher.current == "result":
            switcher.current = "pick"
            self.query_one("#key", Input).focus()
            self.refresh_bindings()
            return
        self.dismiss()
