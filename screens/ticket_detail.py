"""One ticket in full: its fields, description, comments (work notes marked), attachments,
its sync panel (each connection it syncs over, the remote key, state, last sync and
its open error) and its history (every change sync made to it, and why).

The ticket is read in a worker, again whenever the tracker says tickets may
have changed; its links, errors and history come from the sync store
(`stores.read_ticket_sync`, a thread worker every REFRESH seconds). Edit and
Comment open their forms; each writes through the tracker itself and comes
back with what it wrote. Exalate and Unexalate are requests to the sync engine
(`SyncStore.request`), which runs in the console or the node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from exalate_tui.domain.models import Connection
from exalate_tui.flows.sync import (
    HistoryEntry,
    exalate_choices,
    history_entries,
    link_rows,
    stamp,
    unexalate_choices,
)
from exalate_tui.flows.tickets import (
    CommentForm,
    LinkRow,
    TicketForm,
    full_time,
    priority_label,
    size_words,
    status_label,
)
from exalate_tui.sync.store import Link, SyncStoreError
from exalate_tui.trackers.adapter import Comment, Ticket, Tracker, TrackerError

from .stores import Stores, TicketSyncReading, read_ticket_sync
from .tickets import PRIORITY_STYLES, STATUS_STYLES
from .widgets import TitleBar

NOT_SYNCED = "Not synced over any connection."
NO_HISTORY = "No changes made by sync."
SHORT_SHA = 12
# How often the sync panel and the history are read again (the engine may run elsewhere).
REFRESH = 1.5


def field_grid(ticket: Ticket) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    rows: list[tuple[str, Text]] = [
        ("Type", Text(ticket.type)),
        ("Status", Text(status_label(ticket.status), STATUS_STYLES.get(ticket.status, ""))),
        (
            "Priority",
            Text(priority_label(ticket.priority), PRIORITY_STYLES.get(ticket.priority, "")),
        ),
        ("Assignee", Text(ticket.assignee or "-")),
        ("Reporter", Text(ticket.reporter or "-")),
        ("Labels", Text(", ".join(ticket.labels) or "-")),
        ("Created", Text(full_time(ticket.created))),
        ("Updated", Text(full_time(ticket.updated))),
    ]
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def comment_block(comment: Comment) -> Text:
    """Who, when, public or a work note, then the body as written (never markup)."""
    text = Text.assemble((comment.author or "unknown", "bold"), f" · {full_time(comment.created)}")
    if comment.internal:
        text.append(" · ")
        text.append("Work note", "bold yellow")
    text.append("\n")
    text.append(comment.body)
    return text


def comments(ticket: Ticket) -> RenderableType:
    if not ticket.comments:
        return Text("No comments.", "dim")
    blocks: list[RenderableType] = []
    for n, comment in enumerate(ticket.comments):
        if n:
            blocks.append(Text(""))
        blocks.append(comment_block(comment))
    return Group(*blocks)


def attachments(ticket: Ticket) -> RenderableType:
    if not ticket.attachments:
        return Text("No attachments.", "dim")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(overflow="fold", ratio=1)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(no_wrap=True, style="dim")
    for attachment in ticket.attachments:
        grid.add_row(
            Text(attachment.name),
            Text(size_words(attachment.size)),
            Text(f"sha256 {attachment.sha256[:SHORT_SHA]}"),
        )
    return grid


def history(entries: Sequence[HistoryEntry]) -> RenderableType:
    """Newest first: when and from where, then each field old → new, the note."""
    if not entries:
        return Text(NO_HISTORY, "dim")
    blocks: list[RenderableType] = []
    for n, entry in enumerate(entries):
        if n:
            blocks.append(Text(""))
        text = Text.assemble((stamp(entry.at), "bold"), f" · {entry.source}")
        for line in entry.lines:
            text.append(f"\n  {line}")
        if entry.note:
            text.append(f"\n  {entry.note}", "italic")
        blocks.append(text)
    return Group(*blocks)


def sync_panel(links: Sequence[LinkRow]) -> RenderableType:
    """A row per connection; each last error under the table, in full."""
    if not links:
        return Text(NOT_SYNCED, "dim")
    grid = Table(box=None, padding=(0, 2, 0, 0), show_edge=False, header_style="bold")
    grid.add_column("Connection", overflow="fold", ratio=2)
    grid.add_column("Remote key", no_wrap=True)
    grid.add_column("State", overflow="fold")
    grid.add_column("Last sync", no_wrap=True)
    errors: list[RenderableType] = []
    for link in links:
        grid.add_row(
            Text(link.connection),
            Text(link.remote_key or "-"),
            Text(link.state, "bold red" if link.last_error else ""),
            Text(full_time(link.last_synced) if link.last_synced else "never"),
        )
        if link.last_error:
            errors.append(
                Text.assemble((f"Last error on {link.connection}: ", "bold red"), link.last_error)
            )
    return Group(grid, *errors)


class TicketDetailScreen(Screen[None]):
    CSS_PATH = "ticket_detail.tcss"
    AUTO_FOCUS = "#body"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="ticket.back", tooltip="Back to the tickets"),
        Binding(
            "e",
            "edit",
            "Edit",
            id="ticket.edit",
            tooltip="Change the summary, description, type, status, priority, assignee, labels",
        ),
        Binding(
            "c",
            "comment",
            "Comment",
            id="ticket.comment",
            tooltip="Add a comment, public or an internal work note",
        ),
        Binding(
            "x",
            "exalate",
            "Exalate",
            id="ticket.exalate",
            tooltip="Sync this ticket over a connection now (asks which, if several)",
        ),
        Binding(
            "u",
            "unexalate",
            "Unexalate",
            id="ticket.unexalate",
            tooltip="Stop syncing this ticket over a connection (asks first); both copies kept",
        ),
    ]

    @dataclass
    class Loaded(Message):
        ticket: Ticket | None
        problem: str = ""

    @dataclass
    class SyncRead(Message):
        reading: TicketSyncReading

    @dataclass
    class Requested(Message):
        """A request reached the sync engine's queue, or why it did not."""

        said: str
        problem: bool = False

    class TrackerChanged(Message):
        """The tracker says tickets may have changed."""

    def __init__(self, tracker: Tracker, key: str, stores: Stores) -> None:
        super().__init__()
        self.tracker = tracker
        self.key = key
        self.stores = stores
        self.ticket: Ticket | None = None
        self.sync = TicketSyncReading()
        self._sync_shown = False
        self._unwatch: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        yield TitleBar(Text(f"Ticket · {self.key}"), id="title")
        with VerticalScroll(id="body"):
            yield Static("", id="problem")
            yield Static("", id="summary")
            yield Static("", id="fields")
            yield Label("Description", classes="section")
            yield Static("", id="description")
            yield Label("Comments", id="comments-title", classes="section")
            yield Static("", id="comments")
            yield Label("Attachments", id="attachments-title", classes="section")
            yield Static("", id="attachments")
            yield Label("Sync", classes="section")
            yield Static("", id="sync")
            yield Label("History", id="history-title", classes="section")
            yield Static("", id="history")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#problem").display = False
        self._unwatch = self.tracker.watch(self._wake)
        self.reload()
        self.set_interval(REFRESH, self._read_sync)

    def on_unmount(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _wake(self) -> None:
        self.post_message(self.TrackerChanged())

    @on(TrackerChanged)
    def _changed(self) -> None:
        self.reload()

    def reload(self) -> None:
        self._load(self.tracker, self.key)
        self._read_sync()

    @work(exclusive=True, exit_on_error=False, group="read")
    async def _load(self, tracker: Tracker, key: str) -> None:
        try:
            ticket = await tracker.get(key)
        except TrackerError as error:
            self.post_message(self.Loaded(None, str(error)))
            return
        self.post_message(self.Loaded(ticket))

    @work(thread=True, exclusive=True, exit_on_error=False, group="sync")
    def _read_sync(self) -> None:
        self.post_message(self.SyncRead(read_ticket_sync(self.stores, self.key)))

    @on(SyncRead)
    def _sync_read(self, event: SyncRead) -> None:
        if event.reading == self.sync and self._sync_shown:
            return
        self._sync_shown = True
        self.sync = reading = event.reading
        names = {c.id: c.name for c in reading.connections}
        panel = sync_panel(link_rows(self.key, reading.links, reading.errors, names))
        if reading.problem:
            panel = Group(panel, Text(f"The sync tables cannot be read: {reading.problem}", "red"))
        self.query_one("#sync", Static).update(panel)
        entries = history_entries(reading.history, names)
        self.query_one("#history-title", Label).update(Text(f"History ({len(entries)})"))
        self.query_one("#history", Static).update(history(entries))
        self.refresh_bindings()

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        self.ticket = event.ticket
        problem = self.query_one("#problem", Static)
        problem.display = bool(event.problem)
        problem.update(Text(event.problem))
        for part in self.query(".section, #summary, #fields, #description, #comments"):
            part.display = event.ticket is not None
        for part in self.query("#attachments, #sync, #history"):
            part.display = event.ticket is not None
        self.refresh_bindings()
        ticket = event.ticket
        if ticket is None:
            return
        self.query_one("#summary", Static).update(Text(ticket.summary, "bold"))
        self.query_one("#fields", Static).update(field_grid(ticket))
        self.query_one("#description", Static).update(
            Text(ticket.description) if ticket.description.strip() else Text("None.", "dim")
        )
        self.query_one("#comments-title", Label).update(Text(f"Comments ({len(ticket.comments)})"))
        self.query_one("#comments", Static).update(comments(ticket))
        self.query_one("#attachments-title", Label).update(
            Text(f"Attachments ({len(ticket.attachments)})")
        )
        self.query_one("#attachments", Static).update(attachments(ticket))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("edit", "comment"):
            return self.ticket is not None
        if action == "exalate":
            return self.ticket is not None and bool(self._exalate_choices())
        if action == "unexalate":
            return self.ticket is not None and bool(unexalate_choices(self.sync.links))
        return True

    # -- Exalate, Unexalate -------------------------------------------------

    def _exalate_choices(self) -> list[Connection]:
        from exalate_tui.sync.engine import syncs

        syncing = [c for c in self.sync.connections if syncs(c)]
        return exalate_choices(syncing, self.sync.links)

    def connection_name(self, cid: str) -> str:
        for connection in self.sync.connections:
            if connection.id == cid:
                return connection.name
        return cid[:8]

    def action_exalate(self) -> None:
        """Over the one connection that can take it, or the one the admin picks."""
        from .pick_connection import PickConnectionScreen

        choices = self._exalate_choices()
        if self.ticket is None or not choices:
            return
        if len(choices) == 1:
            self._request("exalate", choices[0].id)
            return

        def picked(cid: str | None) -> None:
            if cid is not None:
                self._request("exalate", cid)

        options = [(c.id, f"{c.name}  ({c.local_name} → {c.remote_name})") for c in choices]
        self.app.push_screen(
            PickConnectionScreen(f"Exalate {self.key} over which connection?", options), picked
        )

    def action_unexalate(self) -> None:
        """Asks first (both copies are kept); asks which connection when it syncs over several."""
        from .pick_connection import PickConnectionScreen

        links = unexalate_choices(self.sync.links)
        if self.ticket is None or not links:
            return
        if len(links) == 1:
            self._confirm_unexalate(links[0])
            return
        by_cid = {link.cid: link for link in links}

        def picked(cid: str | None) -> None:
            if cid is not None:
                self._confirm_unexalate(by_cid[cid])

        options = [
            (link.cid, f"{self.connection_name(link.cid)}  ↔ {link.remote_key or 'pending'}")
            for link in links
        ]
        self.app.push_screen(
            PickConnectionScreen(f"Stop syncing {self.key} over which connection?", options),
            picked,
        )

    def _confirm_unexalate(self, link: Link) -> None:
        from .confirm import ConfirmUnexalateScreen

        partner = "the partner"
        for connection in self.sync.connections:
            if connection.id == link.cid:
                partner = connection.remote_name or partner

        def answered(yes: bool | None) -> None:
            if yes:
                self._request("unexalate", link.cid)

        screen = ConfirmUnexalateScreen(
            self.key, self.connection_name(link.cid), link.remote_key, partner
        )
        self.app.push_screen(screen, answered)

    @work(thread=True, exit_on_error=False, group="request")
    def _request(self, action: str, cid: str) -> None:
        name = self.connection_name(cid)
        try:
            if self.stores.sync is None:
                raise SyncStoreError("the sync tables are not open")
            self.stores.sync.store().request(action, cid, self.key)
        except (SyncStoreError, OSError) as error:
            self.post_message(self.Requested(f"Could not {action} {self.key}: {error}", True))
            return
        said = (
            f"Exalating {self.key} over {name}: the sync engine sends it within a second."
            if action == "exalate"
            else f"{self.key} stops syncing over {name}; both copies are kept."
        )
        self.post_message(self.Requested(said))

    @on(Requested)
    def _requested(self, event: Requested) -> None:
        self.notify(
            event.said,
            title="Sync",
            severity="error" if event.problem else "information",
            markup=False,
        )
        self._read_sync()

    def action_back(self) -> None:
        self.dismiss()

    def action_edit(self) -> None:
        from .ticket_form import TicketFormScreen

        if self.ticket is None:
            return
        self.app.push_screen(TicketFormScreen(TicketForm(self.ticket), self.tracker), self._saved)

    def action_comment(self) -> None:
        from .comment import CommentScreen

        if self.ticket is None:
            return
        self.app.push_screen(
            CommentScreen(CommentForm(), self.tracker, self.ticket.key), self._commented
        )

    def _saved(self, ticket: Ticket | None) -> None:
        if ticket is not None:
            self.notify(f"Saved {ticket.key}.", title="Ticket", markup=False)
            self.reload()

    def _commented(self, comment: Comment | None) -> None:
        if comment is not None:
            kind = "Work note" if comment.internal else "Comment"
            self.notify(f"{kind} added to {self.key}.", title="Ticket", markup=False)
            self.reload()
