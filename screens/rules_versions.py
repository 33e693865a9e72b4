"""Every saved version of a Script connection's rules: number, direction, time, note,
the ones in force marked; under the table, the highlighted version's diff against the
one in force of its direction (for one in force: what it changed from the one before),
`-` lines red and `+` lines green. `r` reverts to the highlighted version, asking first
(`sync.script.revert_rule`: saved again as the newest version, checked first).

Versions and their sources are read in a thread worker, the revert runs in one;
the rows and the diff come from `flows.rules.Versions`. Dismisses with True when a
version was reverted (the editor reads the rules again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from exalate_tui.domain.models import Connection
from exalate_tui.flows.rules import Versions

from .confirm import ConfirmRevertScreen
from .stores import Stores, VersionsReading, ask_engine, read_versions
from .widgets import TitleBar, set_rows


def diff_text(lines: list[str]) -> Text:
    """A unified diff with its colours: headers bold, hunks cyan, - red, + green."""
    text = Text()
    for n, line in enumerate(lines):
        if n:
            text.append("\n")
        if line.startswith(("---", "+++")):
            style = "bold"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("+"):
            style = "green"
        else:
            style = "dim"
        text.append(line, style)
    return text


class RulesVersionsScreen(Screen[bool]):
    CSS_PATH = "rules_versions.tcss"
    AUTO_FOCUS = "#versions"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="versions.back", tooltip="Back to the editor"),
        Binding(
            "r",
            "revert",
            "Revert to it",
            id="versions.revert",
            tooltip="Bring the highlighted version back in force (asks first)",
        ),
    ]

    @dataclass
    class Read(Message):
        reading: VersionsReading

    @dataclass
    class Reverted(Message):
        direction: str
        number: int
        version: int | None
        problem: str = ""

    def __init__(self, stores: Stores, connection: Connection) -> None:
        super().__init__()
        self.stores = stores
        self.connection = connection
        self.versions = Versions()
        self.reverted = False

    def compose(self) -> ComposeResult:
        yield TitleBar(Text(f"Rule versions · {self.connection.name}"), id="title")
        yield DataTable(id="versions", cursor_type="row", zebra_stripes=True)
        yield Static("", id="heading")
        with VerticalScroll(id="diff-box"):
            yield Static("", id="diff")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#versions", DataTable)
        table.add_columns(*[Text(c) for c in ("Version", "Rule", "Saved (UTC)", "Note")])
        self._read()

    @work(thread=True, exclusive=True, exit_on_error=False, group="read")
    def _read(self) -> None:
        self.post_message(self.Read(read_versions(self.stores, self.connection)))

    @on(Read)
    def _got(self, event: Read) -> None:
        reading = event.reading
        if reading.problem:
            self.query_one("#heading", Static).update(Text(reading.problem, "bold red"))
            return
        place = self.versions.selected
        self.versions = Versions.of(reading.versions, reading.sources)
        rows = [
            (
                str(row.number),
                (
                    Text(
                        f"v{row.number}{' *' if row.in_force else ''}",
                        "bold" if row.in_force else "",
                    ),
                    Text(row.direction),
                    Text(row.when),
                    Text(row.note),
                ),
            )
            for row in self.versions.rows
        ]
        table = self.query_one("#versions", DataTable)
        set_rows(table, rows)
        if rows:
            table.move_cursor(row=min(place, len(rows) - 1))
        self._show_diff()

    @on(DataTable.RowHighlighted, "#versions")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.versions.select(event.cursor_row)
        self._show_diff()

    def _show_diff(self) -> None:
        heading, lines = self.versions.diff()
        self.query_one("#heading", Static).update(Text(heading))
        self.query_one("#diff", Static).update(diff_text(lines))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "revert":
            return self.versions.can_revert()
        return True

    def action_revert(self) -> None:
        row = self.versions.row
        if row is None or row.in_force:
            return
        current = self.versions.in_force(row.direction)

        def answered(yes: bool | None) -> None:
            if yes:
                self._revert(row.direction, row.number)

        self.app.push_screen(
            ConfirmRevertScreen(row.direction, row.number, current.number if current else None),
            answered,
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="revert")
    def _revert(self, direction: str, number: int) -> None:
        from exalate_tui.errors import ExalateError
        from exalate_tui.sync.script import revert_rule

        try:
            version = revert_rule(self.stores.home, self.connection, number)
        except (ExalateError, OSError) as error:
            self.post_message(self.Reverted(direction, number, None, str(error)))
            return
        problem = ""
        if direction == "outgoing":
            problem = ask_engine(self.stores, "rules", self.connection.id)
        self.post_message(self.Reverted(direction, number, version.number, problem))

    @on(Reverted)
    def _reverted(self, event: Reverted) -> None:
        if event.version is None:
            self.notify(
                f"Not reverted: {event.problem}", title="Rules", severity="error", markup=False
            )
            return
        self.reverted = True
        said = f"{event.direction} v{event.number} is in force again, as v{event.version}."
        if event.problem:
            said += f" The engine could not be asked to re-send synced tickets: {event.problem}"
        self.notify(said, title="Rules", markup=False, timeout=8)
        self.versions.selected = 0
        self._read()

    def action_back(self) -> None:
        self.dismiss(self.reverted)
