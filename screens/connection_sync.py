"""A connection's sync, in four views (keys 1-4): Synced tickets, Sync queue, Errors
(Retry, Resolve) and Triggers (add, remove); `b` opens Bulk exalate.

Every REFRESH seconds a thread worker reads the connection's file and its
sync state (`stores.read_connection_sync`: links, errors, queue, the
tracker's health) and posts it; a table is rebuilt only when its rows
changed. Retry and Resolve are requests to the sync engine
(`SyncStore.request`); a trigger is checked by the tracker's own parser
(`flows.sync.TriggerForm`) before `sync.triggers.add_trigger` saves it, in a
worker. Which view shows and the trigger form's error live in
`flows.sync.SyncViews`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Input, Label, Static

from exalate_tui.domain.models import Connection
from exalate_tui.flows.sync import (
    VIEW_TITLES,
    VIEWS,
    ConnectionSync,
    ErrorRow,
    SyncViews,
    error_rows,
    synced_rows,
)
from exalate_tui.home.store import NotFound, StoreError
from exalate_tui.sync.store import SyncStoreError
from exalate_tui.trackers.adapter import QueryError, Tracker

from .stores import Stores, read_connection_sync
from .widgets import TitleBar, ViewBar, set_rows

REFRESH = 1.5
VIEW_KEYS = {view: str(n) for n, view in enumerate(VIEWS, 1)}
EMPTY_SYNCED = (
    "No ticket syncs over this connection yet. Tickets a trigger matches sync when they "
    "next change (4 Triggers); b sends every match now; Exalate on a ticket (Tickets tab) "
    "sends one."
)
EMPTY_ERRORS = "No errors: every ticket flows."
EMPTY_TRIGGERS = (
    "No triggers: tickets sync only when exalated one by one. n adds one, e.g. "
    "priority<=2^type=incident (ServiceNow's encoded query)."
)


def status_line(connection: Connection | None, sync: ConnectionSync) -> Text:
    if connection is None:
        return Text("This connection is gone.", "bold red")
    if sync.problem:
        return Text(f"The sync tables cannot be read: {sync.problem}", "bold red")
    if sync.tracker_error:
        return Text.assemble(
            ("Error", "bold red"),
            f" · the tracker cannot be used: {sync.tracker_error} (retried until it works)",
        )
    from exalate_tui.sync.engine import syncs

    if not syncs(connection):
        return Text.assemble((connection.status.value.capitalize(), "bold"), " · does not sync")
    word = connection.status.value.capitalize()
    style = "green" if word == "Active" else "yellow"
    return Text.assemble((word, style), f" · {sync.summary()}")


def error_detail(row: ErrorRow) -> Text:
    text = Text.assemble(
        (f"#{row.id} {row.ticket}", "bold"), f", {row.direction}: ", (row.message, "red")
    )
    attempts = f"{row.attempts} attempt{'s' if row.attempts != 1 else ''}"
    text.append(f"\nFirst {row.first} · last {row.last} · {attempts}", "dim")
    if row.holds:
        text.append(" · holds back this ticket's later changes", "dim")
    return text


class ConnectionSyncScreen(Screen[None]):
    CSS_PATH = "connection_sync.tcss"
    AUTO_FOCUS = "#synced-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="sync.back", tooltip="Back to the connection"),
        # The view bar shows these keys; the Footer has no room for four more.
        *[
            Binding(
                key,
                f"view('{view}')",
                VIEW_TITLES[view],
                show=False,
                id=f"sync.view_{view}",
                tooltip=f"Show {VIEW_TITLES[view]}",
            )
            for view, key in VIEW_KEYS.items()
        ],
        Binding(
            "b",
            "bulk",
            "Bulk exalate",
            id="sync.bulk",
            tooltip="Sync every ticket the triggers match now, with its progress",
        ),
        Binding(
            "r",
            "retry",
            "Retry",
            id="sync.retry",
            tooltip="Try this error's ticket again; what it held back follows in order",
        ),
        Binding(
            "x",
            "resolve",
            "Resolve",
            id="sync.resolve",
            tooltip="Drop this error; its ticket syncs again on its next change",
        ),
        Binding(
            "n", "add_trigger", "Add trigger", id="sync.add_trigger", tooltip="Type a new trigger"
        ),
        Binding(
            "d",
            "remove_trigger",
            "Remove trigger",
            id="sync.remove_trigger",
            tooltip="Remove the highlighted trigger (tickets syncing now go on syncing)",
        ),
    ]

    @dataclass
    class Read(Message):
        connection: Connection | None
        sync: ConnectionSync

    @dataclass
    class Done(Message):
        """A request queued or a trigger saved or removed: what to say, and whether it failed."""

        said: str
        problem: bool = False
        saved: bool = False

    def __init__(
        self,
        stores: Stores,
        cid: str,
        tracker: Tracker | None,
        tracker_problem: str | None,
        now: Callable[[], float],
        view: str = "synced",
    ) -> None:
        super().__init__()
        self.stores = stores
        self.cid = cid
        self.tracker = tracker
        self.tracker_problem = tracker_problem
        self.now = now
        self.views = SyncViews(view)
        self.connection: Connection | None = None
        self.sync = ConnectionSync()
        self.errors: list[ErrorRow] = []
        self._shown_rows: dict[str, list[tuple[str, tuple[str, ...]]]] = {}

    def compose(self) -> ComposeResult:
        yield TitleBar("Sync", id="title")
        yield ViewBar(
            [(view, VIEW_TITLES[view], key) for view, key in VIEW_KEYS.items()], self.views.view
        )
        yield Static("", id="status")
        with ContentSwitcher(initial=self.views.view, id="switcher"):
            with Vertical(id="synced"):
                yield DataTable(id="synced-table", cursor_type="row", zebra_stripes=True)
                yield Static(Text(EMPTY_SYNCED, "dim"), id="synced-empty")
            with Vertical(id="queue"):
                yield Static("", id="queue-text")
            with Vertical(id="errors"):
                yield DataTable(id="errors-table", cursor_type="row", zebra_stripes=True)
                yield Static(Text(EMPTY_ERRORS, "dim"), id="errors-empty")
                yield Static("", id="error-detail")
            with Vertical(id="triggers"):
                yield DataTable(id="triggers-table", cursor_type="row", zebra_stripes=True)
                yield Static(Text(EMPTY_TRIGGERS, "dim"), id="triggers-empty")
                yield Input(
                    placeholder="A new trigger, e.g. priority<=2^type=incident",
                    id="trigger-input",
                )
                yield Label("", id="trigger-error", classes="field-error")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        for table, columns in (
            ("synced-table", ("Local key", "Remote key", "State", "Last sync")),
            ("errors-table", ("#", "Ticket", "Direction", "Attempts", "Last")),
            ("triggers-table", ("#", "Trigger")),
        ):
            self.query_one(f"#{table}", DataTable).add_columns(*[Text(c) for c in columns])
        for part in ("#synced-empty", "#errors-empty", "#triggers-empty", "#error-detail"):
            self.query_one(part).display = False
        self._show_form()
        self._reload()
        self.set_interval(REFRESH, self._reload)

    # -- reading ------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="read")
    def _reload(self) -> None:
        try:
            connection: Connection | None = self.stores.home.get_connection(self.cid)
        except (NotFound, StoreError):
            connection = None
        self.post_message(self.Read(connection, read_connection_sync(self.stores, self.cid)))

    @on(Read)
    def _read(self, event: Read) -> None:
        self.connection, self.sync = event.connection, event.sync
        connection = event.connection
        name = connection.name if connection else "gone"
        self.query_one("#title", Label).update(Text(f"Sync · {name}"))
        self.query_one("#status", Static).update(status_line(connection, event.sync))
        bar = self.query_one(ViewBar)
        bar.retitle("errors", f"Errors ({len(event.sync.errors)})")
        triggers = connection.triggers if connection else []
        bar.retitle("triggers", f"Triggers ({len(triggers)})")
        self._fill("synced-table", self._synced_cells(), "#synced-empty")
        self.errors = error_rows(event.sync.errors, self._partner(), self.now())
        self._fill(
            "errors-table",
            [
                (
                    str(e.id),
                    (
                        Text(str(e.id)),
                        Text(e.ticket),
                        Text(e.direction),
                        Text(str(e.attempts)),
                        Text(e.last),
                    ),
                )
                for e in self.errors
            ],
            "#errors-empty",
        )
        self._fill(
            "triggers-table",
            [(str(n), (Text(str(n)), Text(t))) for n, t in enumerate(triggers, 1)],
            "#triggers-empty",
        )
        self.query_one("#queue-text", Static).update(self._queue_text())
        self._show_error_detail()
        self.refresh_bindings()

    def _partner(self) -> str:
        connection = self.connection
        return (connection.remote_name if connection else None) or "the partner"

    def _synced_cells(self) -> list[tuple[str, tuple[Text, ...]]]:
        cells: list[tuple[str, tuple[Text, ...]]] = []
        for row in synced_rows(self.sync.links, self.sync.errors):
            style = {"error": "bold red", "stopped": "dim"}.get(row.state, "green")
            cells.append(
                (
                    row.local_key,
                    (
                        Text(row.local_key),
                        Text(row.remote_key),
                        Text(row.state, style),
                        Text(row.last_synced),
                    ),
                )
            )
        return cells

    def _fill(
        self, table_id: str, rows: Sequence[tuple[str, tuple[Text, ...]]], empty: str
    ) -> None:
        """Rebuild a table when its rows changed, keeping the cursor's place."""
        shown = [(key, tuple(cell.plain for cell in cells)) for key, cells in rows]
        table = self.query_one(f"#{table_id}", DataTable)
        self.query_one(empty).display = not rows
        table.display = bool(rows)
        if shown == self._shown_rows.get(table_id):
            return
        self._shown_rows[table_id] = list(shown)
        set_rows(table, rows)

    def _queue_text(self) -> Text:
        sync, now, partner = self.sync, self.now(), self._partner()
        text = Text.assemble(
            ("Outgoing", "bold"),
            f" (to {partner}): {sync.outgoing.words(now, f'waiting for {partner}')}\n",
            ("Incoming", "bold"),
            f" (from {partner}): {sync.incoming.words(now, 'waiting for the sync engine')}",
        )
        held = sorted({e.ticket for e in self.errors if e.holds})
        if held:
            text.append("\n\n")
            text.append("Held back by an error", "bold red")
            text.append(f" (3 Errors): {', '.join(held)}")
        text.append(
            "\n\nOutgoing messages leave when the partner polls this side or this side "
            "pushes to it (the node, or the console while open); a deactivated connection "
            "keeps them until it is activated.",
            "dim",
        )
        return text

    def _highlighted_error(self) -> ErrorRow | None:
        table = self.query_one("#errors-table", DataTable)
        if not self.errors or not table.display:
            return None
        return self.errors[min(max(table.cursor_row, 0), len(self.errors) - 1)]

    @on(DataTable.RowHighlighted, "#errors-table")
    def _show_error_detail(self) -> None:
        detail = self.query_one("#error-detail", Static)
        row = self._highlighted_error()
        detail.display = row is not None
        if row is not None:
            detail.update(error_detail(row))

    # -- views ----------------------------------------------------------------

    def action_view(self, view: str) -> None:
        self.views.show(view)
        self.query_one(ContentSwitcher).current = view
        self.query_one(ViewBar).show(view)
        self._show_form()
        table = {"synced": "#synced-table", "errors": "#errors-table"}.get(view)
        if view == "triggers":
            table = "#triggers-table"
        if table:
            self.query_one(table).focus()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        view = self.views.view
        if action == "bulk":
            return self.connection is not None and bool(self.connection.triggers)
        if action in ("retry", "resolve"):
            return view == "errors" and self._highlighted_error() is not None
        if action == "add_trigger":
            return view == "triggers" and self.views.form is None
        if action == "remove_trigger":
            return (
                view == "triggers"
                and self.views.form is None
                and self.connection is not None
                and bool(self.connection.triggers)
            )
        return True

    def action_back(self) -> None:
        if self.views.form is not None:
            self.views.close_form()
            self._show_form()
            self.query_one("#triggers-table").focus()
            self.refresh_bindings()
            return
        self.dismiss()

    # -- errors: Retry, Resolve -------------------------------------------------

    def action_retry(self) -> None:
        row = self._highlighted_error()
        if row is not None:
            self._request("retry", row, f"Retrying error #{row.id} on {row.ticket}.")

    def action_resolve(self) -> None:
        row = self._highlighted_error()
        if row is not None:
            self._request(
                "resolve",
                row,
                f"Resolved error #{row.id}: {row.ticket} syncs again on its next change.",
            )

    @work(thread=True, exit_on_error=False, group="request")
    def _request(self, action: str, row: ErrorRow, said: str) -> None:
        try:
            if self.stores.sync is None:
                raise SyncStoreError("the sync tables are not open")
            self.stores.sync.store().request(action, None, None, str(row.id))
        except (SyncStoreError, OSError) as error:
            self.post_message(self.Done(f"Could not {action} error #{row.id}: {error}", True))
            return
        self.post_message(self.Done(said))

    @on(Done)
    def _done(self, event: Done) -> None:
        self.notify(
            event.said,
            title="Sync",
            severity="error" if event.problem else "information",
            markup=False,
        )
        if event.saved:
            self.views.close_form()
            self._show_form()
            self.query_one("#triggers-table").focus()
        self._reload()

    # -- triggers: add, remove -----------------------------------------------------

    def _show_form(self) -> None:
        form = self.views.form
        field = self.query_one("#trigger-input", Input)
        error = self.query_one("#trigger-error", Label)
        field.display = form is not None
        error.display = form is not None and form.error is not None
        error.update(Text(form.error if form and form.error else ""))

    def action_add_trigger(self) -> None:
        if self.tracker is None:
            self.notify(
                f"Triggers are checked by the tracker, which cannot be opened: "
                f"{self.tracker_problem}",
                severity="error",
                markup=False,
            )
            return
        self.views.open_form(self.tracker.check_query)
        field = self.query_one("#trigger-input", Input)
        field.value = ""
        self._show_form()
        field.focus()
        self.refresh_bindings()

    @on(Input.Changed, "#trigger-input")
    def _typed(self, event: Input.Changed) -> None:
        if self.views.form is not None:
            self.views.form.set_text(event.value)
            self._show_form()

    @on(Input.Submitted, "#trigger-input")
    def _submitted(self) -> None:
        form = self.views.form
        if form is None or self.tracker is None:
            return
        text = form.submit()
        self._show_form()
        if text is not None:
            self._save_trigger(self.tracker, text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="trigger")
    def _save_trigger(self, tracker: Tracker, text: str) -> None:
        from exalate_tui.sync.triggers import add_trigger

        try:
            updated = add_trigger(self.stores.home, tracker.check_query, self.cid, text)
        except (QueryError, StoreError, NotFound, OSError) as error:
            self.post_message(self.Done(f"Trigger not saved: {error}", True))
            return
        number = updated.triggers.index(text) + 1 if text in updated.triggers else 0
        self.post_message(
            self.Done(
                f"Trigger {number}: {text}. Tickets that match sync when they next change; "
                "b sends every match now.",
                saved=True,
            )
        )

    def action_remove_trigger(self) -> None:
        connection = self.connection
        if connection is None or not connection.triggers:
            return
        table = self.query_one("#triggers-table", DataTable)
        number = min(max(table.cursor_row, 0), len(connection.triggers) - 1) + 1
        self._remove_trigger(number)

    @work(thread=True, exclusive=True, exit_on_error=False, group="trigger")
    def _remove_trigger(self, number: int) -> None:
        from exalate_tui.sync.triggers import TriggerError, remove_trigger

        try:
            text = remove_trigger(self.stores.home, self.cid, number)
        except (TriggerError, StoreError, NotFound, OSError) as error:
            self.post_message(self.Done(f"Trigger not removed: {error}", True))
            return
        self.post_message(
            self.Done(f"Removed trigger {number}: {text}. Tickets syncing now go on syncing.")
        )

    # -- bulk exalate ------------------------------------------------------------------

    def action_bulk(self) -> None:
        from .bulk_exalate import BulkExalateScreen

        if self.connection is None or not self.connection.triggers:
            return
        if self.tracker is None:
            self.notify(
                f"Bulk exalate searches the tracker, which cannot be opened: "
                f"{self.tracker_problem}",
                severity="error",
                markup=False,
            )
            return
        self.app.push_screen(
            BulkExalateScreen(self.stores, self.connection, self.tracker), self._back_from_bulk
        )

    def _back_from_bulk(self, _: None) -> None:
        self._reload()
