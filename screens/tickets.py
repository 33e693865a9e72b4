"""The Tickets tab: this instance's tickets, filtered with ServiceNow's encoded query.

The filter is `flows.tickets.TicketFilter` (the tracker parses it; what does
not parse is said under the field and the list stays as it was). The tracker
is read in a worker that posts what it found; the tracker's `watch` posts a
message whenever tickets may have changed (here, in the node, in the CLI), and
the list reads them again. Enter on a row asks the app to open that ticket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.events import Resize
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from exalate_tui.flows.tickets import TicketFilter, short_time, status_label
from exalate_tui.trackers.adapter import Query, Ticket, Tracker, TrackerError

from .widgets import TabBar, content_widths, set_rows

COLUMNS = (
    ("key", "Key"),
    ("type", "Type"),
    ("status", "Status"),
    ("priority", "Pri"),
    ("summary", "Summary"),
    ("updated", "Updated"),
)
SUMMARY = 4
# DataTable's cell padding (one column each side) and room for its vertical scrollbar.
PADDING = 2
SCROLLBAR = 2
# The summary column is never narrower than this, even on a very narrow terminal.
MIN_SUMMARY = 12

PRIORITY_STYLES = {1: "bold red", 2: "red", 3: "yellow", 4: "", 5: "dim"}
STATUS_STYLES = {
    "new": "bold",
    "in_progress": "cyan",
    "on_hold": "yellow",
    "resolved": "green",
    "closed": "dim",
}

EMPTY = (
    "No tickets yet.\n\n"
    "Press [b]n[/b] to create one. Tickets the sync engine receives from a partner "
    "show here too."
)
NONE_MATCH = "No ticket matches this filter."


def row(ticket: Ticket, now: float) -> tuple[Text, ...]:
    """A ticket's cells; Text, never markup: a summary like "[b]" shows as typed."""
    return (
        Text(ticket.key, style="bold"),
        Text(ticket.type),
        Text(status_label(ticket.status), style=STATUS_STYLES.get(ticket.status, "")),
        Text(str(ticket.priority), style=PRIORITY_STYLES.get(ticket.priority, "")),
        Text(ticket.summary, no_wrap=True, overflow="ellipsis"),
        Text(short_time(ticket.updated, now)),
    )


def column_widths(rows: Sequence[tuple[Text, ...]], screen_width: int) -> tuple[int, ...]:
    """Each column as wide as its content; the summary takes what is left of the screen."""
    widths = content_widths([label for _, label in COLUMNS], rows)
    others = sum(w + PADDING for i, w in enumerate(widths) if i != SUMMARY)
    widths[SUMMARY] = max(MIN_SUMMARY, screen_width - others - PADDING - SCROLLBAR)
    return tuple(widths)


def newest_first(tickets: Sequence[Ticket]) -> list[Ticket]:
    """Last updated on top; ties (one bulk import) by key."""
    return sorted(tickets, key=lambda t: (-t.updated.timestamp(), t.key))


class TicketTable(DataTable[Text]):
    """The tickets, one per row; Enter opens one, and the Footer says so."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter",
            "select_cursor",
            "Open",
            id="tickets.open",
            tooltip="Open this ticket: its fields, comments, attachments and sync",
        ),
    ]


class TicketsScreen(Screen[None]):
    CSS_PATH = "tickets.tcss"
    AUTO_FOCUS = "#tickets"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "slash",
            "filter",
            "Filter",
            key_display="/",
            id="tickets.filter",
            tooltip="Filter the list with an encoded query, e.g. priority<=2^status=new",
        ),
        Binding(
            "n",
            "new",
            "New ticket",
            id="tickets.new",
            tooltip="Create a ticket in this instance's tracker",
        ),
        Binding(
            "c",
            "app.show_connections",
            "Connections",
            id="tickets.connections",
            tooltip="The Connections tab",
        ),
        # In the filter: back to the list. On the list: back to the Connections tab.
        Binding("escape", "back", "Back", show=False, id="tickets.back"),
    ]

    @dataclass
    class Opened(Message):
        """Enter on a row: show that ticket."""

        key: str

    @dataclass
    class NewTicket(Message):
        """`n`: the app opens the create form."""

    @dataclass
    class Loaded(Message):
        tickets: list[Ticket]
        query: Query | None
        problem: str = ""

    class TrackerChanged(Message):
        """The tracker says tickets may have changed."""

    def __init__(
        self,
        tracker: Tracker | None,
        problem: str | None,
        now: Callable[[], float],
        instance: str = "",
    ) -> None:
        super().__init__()
        self.tracker = tracker
        self.problem = problem
        self.now = now
        self.instance = instance
        self.filter = TicketFilter(tracker.check_query) if tracker else None
        self.tickets: list[Ticket] = []
        self._rows: list[tuple[str, tuple[Text, ...]]] = []
        self._widths: tuple[int, ...] | None = None
        self._unwatch: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        yield TabBar("tickets")
        with Horizontal(id="filter-row"):
            yield Label("Filter", id="filter-label")
            yield Input(
                placeholder="encoded query, e.g. priority<=2^status=new",
                id="filter",
                compact=True,
            )
        yield Label("", id="filter-error", classes="field-error")
        yield Static("", id="problem")
        yield Label("", id="count", classes="hint")
        yield TicketTable(id="tickets", cursor_type="row", zebra_stripes=True)
        yield Static(EMPTY, id="empty")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#instance", Label).update(Text(self.instance))
        self.query_one("#filter-error").display = False
        problem = self.query_one("#problem", Static)
        problem.display = self.problem is not None
        if self.problem is not None:
            problem.update(Text.assemble(("No tickets: ", "bold"), self.problem))
        table = self.query_one(TicketTable)
        for key, label in COLUMNS:
            table.add_column(Text(label), key=key)
        if self.tracker is None:
            self.query_one("#empty").display = False
            self.query_one(TicketTable).display = False
            return
        self._unwatch = self.tracker.watch(self._wake)
        self._search(self.tracker, None)

    def on_unmount(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _wake(self) -> None:
        # Called by the tracker, maybe from another thread: post, never touch widgets.
        self.post_message(self.TrackerChanged())

    @on(TrackerChanged)
    def _changed(self) -> None:
        self.reload()

    def reload(self) -> None:
        if self.tracker is not None and self.filter is not None:
            self._search(self.tracker, self.filter.query)

    @work(exclusive=True, exit_on_error=False, group="read")
    async def _search(self, tracker: Tracker, query: Query | None) -> None:
        try:
            tickets = await tracker.search(query)
        except TrackerError as error:
            self.post_message(self.Loaded([], query, str(error)))
            return
        self.post_message(self.Loaded(tickets, query))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        problem = self.query_one("#problem", Static)
        problem.display = bool(event.problem)
        if event.problem:
            problem.update(Text.assemble(("Cannot read the tickets: ", "bold"), event.problem))
            return
        self._show(newest_first(event.tickets), event.query)

    def _show(self, tickets: list[Ticket], query: Query | None) -> None:
        self.tickets = tickets
        now = self.now()
        rows = [(t.key, row(t, now)) for t in tickets]
        table = self.query_one(TicketTable)
        widths = column_widths([cells for _, cells in rows], self.size.width or self.app.size.width)
        if rows != self._rows or widths != self._widths:
            set_rows(table, rows, widths)
            self._widths = widths
        self._rows = rows
        count = len(tickets)
        shown = f"{count} ticket{'s' if count != 1 else ''}"
        if query is not None:
            shown += f" matching {query.text}"
        self.query_one("#count", Label).update(Text(shown))
        filtered = query is not None
        table.display = bool(tickets)
        empty = self.query_one("#empty", Static)
        empty.display = not tickets
        empty.update(NONE_MATCH if filtered else EMPTY)

    def on_resize(self, event: Resize) -> None:
        if self._rows:
            self._show(self.tickets, self.filter.query if self.filter else None)

    def on_screen_resume(self) -> None:
        # Back from a ticket or a form: show what changed even if no wake-up came yet.
        self.reload()

    # -- the filter ---------------------------------------------------------

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self.filter is None:
            return
        changed = self.filter.set_text(event.value)
        error = self.query_one("#filter-error", Label)
        error.display = self.filter.error is not None
        error.update(Text(self.filter.error or ""))
        if changed:
            self.reload()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.query_one(TicketTable).focus()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    async def action_back(self) -> None:
        if self.focused is self.query_one("#filter", Input):
            self.query_one(TicketTable).focus()
        else:
            await self.app.run_action("show_connections")

    def action_new(self) -> None:
        if self.tracker is not None:
            self.post_message(self.NewTicket())

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(self.Opened(event.row_key.value))
