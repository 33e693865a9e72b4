"""The Connections tab: every connection of this home with its live state, whether the
node runs and what needs it to, files that did not load, what to do next.

Every second or two a thread worker looks at the home: the connection files
are parsed again only when their names, sizes or mtimes changed; the last
contact of each comes from `state.sqlite3`. The worker is handed what it
compares with and posts what it read; the handler then rebuilds the table
(the files changed) or updates the Status cells that read differently.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static

from exalate_tui.domain.live import Contact, Live, LiveState, live_state, node_need
from exalate_tui.domain.models import Connection, Instance
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home, StoreError
from exalate_tui.transport.streams import StateError, Streams

from .stores import Stores, read_tracker_error
from .widgets import NodeBar, TabBar, content_widths, set_rows

# Every cell holds two lines, so four columns carry seven facts within 80 columns.
COLUMNS = (
    ("names", "Name / local → remote"),
    ("kind", "Topology / mode"),
    ("status", "Status"),
    ("created", "Created"),
)
REFRESH = 1.5
# Kept free for the table's vertical scrollbar when the names column is narrowed.
SCROLLBAR = 2
# DataTable's cell padding: one column on each side of every cell.
PADDING = 2

EMPTY = (
    "No connections yet.\n\n"
    "Press [b]i[/b] to initiate a connection: you choose the destination, the "
    "configuration type and the names, and get an invitation code to send to your partner.\n\n"
    "Press [b]a[/b] to accept an invitation code your partner sent you."
)

STYLES = {
    Live.PENDING: "yellow",
    Live.ACTIVE: "green",
    Live.PAUSED: "yellow",
    Live.UNREACHABLE: "bold red",
    Live.DEACTIVATED: "dim",
}


def status_cell(live: LiveState) -> Text:
    return Text.assemble((live.label, STYLES[live.live]), (f"\n{live.detail}", "dim"))


TRACKER_DOWN = Text.assemble(("Error", "bold red"), ("\ntracker unusable", "dim"))


def status_of(connection: Connection, live: LiveState, tracker_error: str | None) -> Text:
    """The Status cell: the sync engine's Error while the tracker cannot be used (the
    connection's detail says why), else the live state."""
    if tracker_error:
        from exalate_tui.sync.engine import syncs

        if syncs(connection):
            return TRACKER_DOWN
    return status_cell(live)


def row(
    connection: Connection, live: LiveState, tracker_error: str | None = None
) -> tuple[Text, ...]:
    # Text, not str: a name like "[b]" must show as typed, not as markup.
    # One line each, cut with an ellipsis where the column is narrowed (`column_widths`):
    # a long name must not wrap over the local → remote line below it.
    names = Text(connection.name, no_wrap=True, overflow="ellipsis")
    names.append(f"\n{connection.local_name} → {connection.remote_name or 'unknown'}", "dim")
    return (
        names,
        Text(f"{connection.topology.value}\n{connection.mode.value.capitalize()}"),
        status_of(connection, live, tracker_error),
        Text(connection.created.strftime("%Y-%m-%d")),
    )


# A row's key (the connection id) and cells.
Row = tuple[str, tuple[Text, ...]]


def column_widths(rows: Sequence[Row], screen_width: int) -> tuple[int, ...]:
    """Each column as wide as its content, except the names column where that would push
    the others, Status above all, off the screen: it gets what is left.

    A partner's long connection name must not hide whether the connection works.
    """
    widths = content_widths([label for _, label in COLUMNS], (cells for _, cells in rows))
    room = screen_width - sum(w + PADDING for w in widths[1:]) - PADDING - SCROLLBAR
    widths[0] = min(widths[0], max(room, len("Name")))
    return tuple(widths)


def _without_status(rows: list[Row]) -> list[tuple[object, ...]]:
    return [(key, *cells[:2], *cells[3:]) for key, cells in rows]


# instance.toml's (name, mtime in ns, size), and the connection store's signature
# (its files' stats, or a database's change counter).
Signature = tuple[tuple[str, int, int] | None, Hashable]


def signature(home: Home) -> Signature:
    """What changes when instance.toml or any connection changes; cheap: a stat per
    file (or one query)."""
    try:
        st = home.instance_path.stat()
        instance: tuple[str, int, int] | None = (
            home.instance_path.name,
            st.st_mtime_ns,
            st.st_size,
        )
    except FileNotFoundError:
        instance = None
    return instance, home.connections.signature()


@dataclass(frozen=True)
class Reading:
    """The home as read at one moment: files (unless unchanged) and last contacts."""

    signature: Signature
    files_changed: bool
    instance: Instance | None = None
    connections: Sequence[Connection] = field(default_factory=list)
    # Files that could not be read (instance.toml, a connection's file).
    problems: list[StoreError] = field(default_factory=list)
    # Stores that cannot be read now (a database out of reach, a damaged message store).
    unreachable: list[str] = field(default_factory=list)
    contacts: dict[str, Contact] = field(default_factory=dict)
    # Why the tracker cannot be used (the sync engine's Error), read by the worker only.
    tracker_error: str | None = None


def read_home(
    home: Home,
    state: Streams | None,
    previous: Signature | None,
    known: Sequence[Connection],
) -> Reading:
    """Parse the files again only when `previous` no longer matches; contacts always.

    A connection store that cannot be read now (a database out of reach, a database
    key that is not the other workers') is a problem shown above what was read last,
    looked at again on the next tick."""
    problems: list[StoreError] = []
    unreachable: list[str] = []
    try:
        current = signature(home)
        if current == previous:
            contacts = _contacts(state, known, unreachable)
            return Reading(
                current, False, connections=known, unreachable=unreachable, contacts=contacts
            )
        try:
            instance = home.load_instance()
        except StoreError as error:
            instance = None
            problems.append(error)
        loaded = home.load_connections()
    except StoreError:
        raise
    except ExalateError as error:
        # Shown as a change (so the problem is), with what was read last.
        return Reading((None, None), True, connections=known, unreachable=[str(error)])
    contacts = _contacts(state, loaded.connections, unreachable)
    return Reading(
        current,
        True,
        instance,
        loaded.connections,
        problems + loaded.problems,
        unreachable,
        contacts,
    )


def _contacts(
    state: Streams | None, connections: Sequence[Connection], unreachable: list[str]
) -> dict[str, Contact]:
    """Each connection's last contact; a store that opened but is damaged inside is a
    problem shown above the table, not the end of the console."""
    if state is None:
        return {}
    try:
        return {c.id: state.contact(c.id) for c in connections}
    except StateError as error:  # a database that cannot be reached now
        unreachable.append(f"{state.where}: {str(error).removeprefix(f'{state.where}: ')}")
        return {}
    except sqlite3.DatabaseError as error:
        unreachable.append(
            f"{state.where}: the message store is damaged ({error}); move it aside and "
            "restart the console (undelivered messages in it would be lost)"
        )
        return {}


class ConnectionTable(DataTable[Text]):
    """The connections, one per two-line row; Enter opens one, and the Footer says so."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter",
            "select_cursor",
            "Open",
            id="connections.open",
            tooltip="Open this connection: its details, deactivate, activate, delete",
        ),
    ]


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
            "a",
            "app.accept_invitation",
            "Accept invitation",
            id="connections.accept",
            tooltip="Paste an invitation code your partner sent and connect",
        ),
        # The tab bar shows this key beside the tab's name; the Footer has no room left.
        Binding(
            "t",
            "app.show_tickets",
            "Tickets",
            show=False,
            id="connections.tickets",
            tooltip="The Tickets tab: this instance's tickets, their comments and sync",
        ),
        # Not in the Footer either (80 columns are full); README and `?` list it.
        Binding(
            "s",
            "app.tracker_settings",
            "Tracker settings",
            show=False,
            id="connections.tracker",
            tooltip="The ticket system this instance syncs: embedded, or ServiceNow",
        ),
        # Not in the Footer (80 columns are full): the node bar says "press n".
        Binding(
            "n",
            "app.start_node",
            "Start node",
            show=False,
            id="connections.start_node",
            tooltip="Start this home's node in the background (exalate-tui node start)",
        ),
        Binding(
            "N",
            "app.stop_node",
            "Stop node",
            show=False,
            id="connections.stop_node",
            tooltip="Stop this home's node (asks first; exalate-tui node stop)",
        ),
        Binding(
            "r",
            "reload",
            "Reload",
            id="connections.reload",
            tooltip="Read the home folder again (the node or the CLI may have changed it)",
        ),
    ]

    @dataclass
    class Opened(Message):
        """Enter on a row: show that connection's details."""

        cid: str

    @dataclass
    class Read(Message):
        reading: Reading

    def __init__(
        self,
        stores: Stores,
        now: Callable[[], float],
    ) -> None:
        super().__init__()
        self.stores = stores
        self.now = now
        self._signature: Signature | None = None
        # The connections as last read: the app hands them to the wizards.
        self.connections: Sequence[Connection] = []
        # The rows as last shown, to leave the table alone when a reading shows the same.
        self._rows: list[Row] = []
        self._widths: tuple[int, ...] | None = None
        # The files the last reading of them could not read, and what the box last said.
        self._unread: list[StoreError] = []
        self._problems_text = ""
        self._shown = False

    def compose(self) -> ComposeResult:
        yield TabBar("connections")
        yield NodeBar(self.now)
        yield Static("", id="problems")
        yield ConnectionTable(id="connections", cursor_type="row", zebra_stripes=True)
        yield Static(EMPTY, id="empty")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            # A Text, not a str: a str label is parsed as markup, and Rich's emoji
            # lookup that comes with it loads a 5 ms table before the first frame.
            table.add_column(Text(label), key=key)
        # The files are read in a worker once the first frame is out (the table's
        # header, no rows yet): a thread started now would hold the GIL that frame needs.
        self.query_one("#empty").display = False
        self.call_after_refresh(self.action_reload)
        self.set_interval(REFRESH, self._tick)

    def on_screen_resume(self) -> None:
        # Not when first shown: on_mount has asked for the first reading.
        if self._shown:
            self.action_reload()
        self._shown = True

    def action_reload(self) -> None:
        """Show the home as it is on disk now."""
        self._read(None, self.connections)

    def _tick(self) -> None:
        self._read(self._signature, self.connections)

    @work(thread=True, exclusive=True, exit_on_error=False, group="read")
    def _read(self, previous: Signature | None, known: Sequence[Connection]) -> None:
        reading = read_home(self.stores.home, self.stores.state, previous, known)
        # Not before the first frame (on_mount): opening the sync tables may create them.
        tracker_error = read_tracker_error(self.stores)
        self.post_message(self.Read(replace(reading, tracker_error=tracker_error)))

    @on(Read)
    def _read_done(self, event: Read) -> None:
        self._show(event.reading)

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(self.Opened(event.row_key.value))

    def _show(self, reading: Reading) -> None:
        now = self.now()

        def live(c: Connection) -> LiveState:
            return live_state(c, reading.contacts.get(c.id, Contact()), now)

        if not reading.files_changed:
            statuses = {
                c.id: status_of(c, live(c), reading.tracker_error) for c in reading.connections
            }
            self._fill(
                [
                    (key, (*cells[:2], statuses.get(key, cells[2]), *cells[3:]))
                    for key, cells in self._rows
                ]
            )
            self._show_problems(self._unread, reading.unreachable)
            return
        self._signature = reading.signature
        self.connections = reading.connections
        self.query_one(NodeBar).show_need(node_need(reading.connections))
        if reading.instance is not None:
            where = reading.instance.public_url or "no public URL"
            self.query_one("#instance", Label).update(
                Text(f"{reading.instance.short_name} · {where}")
            )
        self._fill([(c.id, row(c, live(c), reading.tracker_error)) for c in reading.connections])
        table = self.query_one(DataTable)
        table.display = bool(reading.connections)
        if table.display and self.focused is None:  # hidden while the home had none
            table.focus()
        self.query_one("#empty").display = not reading.connections
        self._unread = reading.problems
        self._show_problems(reading.problems, reading.unreachable)

    def _fill(self, rows: list[Row]) -> None:
        """Put `rows` in the table: only the status cells that moved when nothing else
        did, else every row again (and the columns, if their widths changed)."""
        table = self.query_one(DataTable)
        widths = column_widths(rows, self.app.size.width)
        if widths == self._widths and _without_status(rows) == _without_status(self._rows):
            # The same connections (a file rewritten as it was, say): only statuses move.
            for (key, cells), (_, shown) in zip(rows, self._rows, strict=True):
                if cells[2] != shown[2]:
                    table.update_cell(key, "status", cells[2])
        else:
            set_rows(table, rows, widths, height=2)
        self._rows = rows
        self._widths = widths

    def _show_problems(self, unread: list[StoreError], unreachable: list[str]) -> None:
        """Above the table: the files that could not be read (as of the last reading of
        them), the stores that cannot be read now, and a console with no live state."""
        parts = []
        if unread:
            count = len(unread)
            parts.append(
                f"[b]{count} file{'s' if count > 1 else ''} could not be read[/b] "
                "(fix or remove it; it is never overwritten):\n"
                + "\n".join(escape(str(problem)) for problem in unread)
            )
        if unreachable:
            parts.append(
                f"[b]Cannot be read now[/b] (looked at again every {REFRESH:g} s):\n"
                + "\n".join(escape(problem) for problem in unreachable)
            )
        if self.stores.state_problem:
            parts.append(f"[b]No live state, no pollers:[/b] {escape(self.stores.state_problem)}")
        text = "\n".join(parts)
        box = self.query_one("#problems", Static)
        box.display = bool(text)
        if text != self._problems_text:
            self._problems_text = text
            box.update(text)
