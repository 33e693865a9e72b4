"""The Connections tab: every connection of this home, files that did not load, what to do next."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static

from exalate_tui.models import Connection
from exalate_tui.store import Home, StoreError

# Name and "local → remote" share a column, on two lines: six facts fit 80 columns.
COLUMNS = ("Name / local → remote", "Topology", "Mode", "Status", "Created")

EMPTY = (
    "No connections yet.\n\n"
    "Press [b]i[/b] to initiate a connection: you choose the destination, the "
    "configuration type and the names, and get an invitation code to send to your partner."
)


def row(connection: Connection) -> tuple[Text, ...]:
    # Text, not str: a name like "[b]" must show as typed, not as markup.
    names = Text(connection.name)
    names.append(f"\n{connection.local_name} → {connection.remote_name or 'unknown'}", "dim")
    return (
        names,
        Text(connection.topology.value),
        Text(connection.mode.value.capitalize()),
        Text(connection.status.value.capitalize()),
        Text(connection.created.strftime("%Y-%m-%d")),
    )


class ConnectionsScreen(Screen[None]):
    CSS_PATH = "connections.tcss"
    AUTO_FOCUS = "#connections"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "i",
            "app.initiate",
            "Initiate connection",
            id="connections.initiate",
            tooltip="Set up a connection and get an invitation code for your partner",
        ),
        Binding(
            "r",
            "reload",
            "Reload",
            id="connections.reload",
            tooltip="Read the home folder again (the node or the CLI may have changed it)",
        ),
    ]

    def __init__(self, home: Home) -> None:
        super().__init__()
        self.home = home

    def compose(self) -> ComposeResult:
        with Horizontal(id="tabs"):
            yield Label(" Connections ", id="tab")
            yield Label("", id="instance")
        yield Static("", id="problems")
        yield DataTable(id="connections", cursor_type="row", zebra_stripes=True)
        yield Static(EMPTY, id="empty")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)

    def on_screen_resume(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        """Show the home as it is on disk now."""
        problems: list[StoreError] = []
        try:
            instance = self.home.load_instance()
        except StoreError as error:
            instance = None
            problems.append(error)
        if instance is not None:
            where = instance.public_url or "no public URL"
            self.query_one("#instance", Label).update(f"{instance.short_name} · {where}")
        loaded = self.home.load_connections()
        problems += loaded.problems

        table = self.query_one(DataTable)
        table.clear()
        for connection in loaded.connections:
            table.add_row(*row(connection), height=2, key=connection.id)
        table.display = bool(loaded.connections)
        self.query_one("#empty").display = not loaded.connections

        box = self.query_one("#problems", Static)
        box.display = bool(problems)
        if problems:
            count = len(problems)
            box.update(
                f"[b]{count} file{'s' if count > 1 else ''} could not be read[/b] "
                "(fix or remove it; it is never overwritten):\n"
                + "\n".join(escape(str(problem)) for problem in problems)
            )
