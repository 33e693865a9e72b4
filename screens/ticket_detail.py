"""One ticket in full: its fields, description, comments (work notes marked), attachments,
and its sync panel: each connection it syncs over, the remote key, state, last sync and
last error.

The ticket is read in a worker, again whenever the tracker says tickets may
have changed. The sync panel renders the link rows a `LinkSource` gives for
the ticket (`flows.tickets.LinkRow`); until the sync engine keeps links it is
handed one that has none. Edit and Comment open their forms; each writes
through the tracker itself and comes back with what it wrote.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
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

from exalate_tui.flows.tickets import (
    CommentForm,
    LinkRow,
    TicketForm,
    full_time,
    priority_label,
    size_words,
    status_label,
)
from exalate_tui.trackers.adapter import Comment, Ticket, Tracker, TrackerError

from .tickets import PRIORITY_STYLES, STATUS_STYLES
from .widgets import TitleBar

# The links of one ticket, by its key (read in a worker: they live in state.sqlite3).
LinkSource = Callable[[str], Awaitable[Sequence[LinkRow]]]

NOT_SYNCED = "Not synced over any connection."
SHORT_SHA = 12


async def no_links(key: str) -> Sequence[LinkRow]:
    """The link source while no sync engine keeps links."""
    del key
    return ()


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
    ]

    @dataclass
    class Loaded(Message):
        ticket: Ticket | None
        links: Sequence[LinkRow]
        problem: str = ""

    class TrackerChanged(Message):
        """The tracker says tickets may have changed."""

    def __init__(self, tracker: Tracker, key: str, links: LinkSource = no_links) -> None:
        super().__init__()
        self.tracker = tracker
        self.key = key
        self.links = links
        self.ticket: Ticket | None = None
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
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#problem").display = False
        self._unwatch = self.tracker.watch(self._wake)
        self.reload()

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

    @work(exclusive=True, exit_on_error=False, group="read")
    async def _load(self, tracker: Tracker, key: str) -> None:
        try:
            ticket = await tracker.get(key)
            links = await self.links(key)
        except TrackerError as error:
            self.post_message(self.Loaded(None, (), str(error)))
            return
        self.post_message(self.Loaded(ticket, links))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        self.ticket = event.ticket
        problem = self.query_one("#problem", Static)
        problem.display = bool(event.problem)
        problem.update(Text(event.problem))
        for part in self.query(".section, #summary, #fields, #description, #comments"):
            part.display = event.ticket is not None
        for part in self.query("#attachments, #sync"):
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
        self.query_one("#sync", Static).update(sync_panel(event.links))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("edit", "comment"):
            return self.ticket is not None
        return True

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
