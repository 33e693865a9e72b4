"""One connection in full (never its secret), its last error, and what can be done to it.

Deactivate / Activate / Delete go through `lifecycle.actions` in a worker
(they may tell the partner over the network, for up to a few seconds);
Regenerate invitation code asks the app to show the new code; Sync asks it to
open the connection's sync views, Rules the Rules editor of a Script connection.
Apply rules asks the sync engine to run the incoming rules on every synced
ticket's last replica (a `reapply` request, as `rules apply` makes); Switch to
Script turns a Basic connection into a Script one after asking
(`sync.script.switch_to_script`, in a worker: the partner is told). The view
re-reads the connection, its last contact and, for a connection that syncs, its
sync state (links, queue, errors, the tracker's health) every second or two.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, Static

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.live import Contact, ago, live_state, when
from exalate_tui.domain.models import Connection, Mode, PeerState, Role, Status
from exalate_tui.domain.topology import side
from exalate_tui.errors import ExalateError
from exalate_tui.flows.initiate import Issued
from exalate_tui.flows.sync import ConnectionSync
from exalate_tui.home.store import NotFound, StoreError
from exalate_tui.lifecycle import actions
from exalate_tui.lifecycle.actions import Outcome
from exalate_tui.transport.streams import Streams

from .confirm_delete import ConfirmDeleteScreen
from .connections import REFRESH, STYLES
from .stores import Stores, read_connection_sync
from .widgets import ButtonBar, TitleBar

DOING = {"deactivate": "Deactivating", "activate": "Activating", "delete": "Deleting"}
DONE = {"deactivate": "Deactivated", "activate": "Activated", "delete": "Deleted"}


def fields(
    connection: Connection, contact: Contact, now: float, sync: ConnectionSync | None = None
) -> Table:
    """Every field worth knowing, label and value, in a grid that wraps long values;
    `sync` for a connection that syncs tickets."""
    live = live_state(connection, contact, now)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    status = Text.assemble((live.label, STYLES[live.live]), f" · {live.detail}")
    if sync is not None and sync.tracker_error:
        status = Text.assemble(
            ("Error", "bold red"),
            f" · the tracker cannot be used: {sync.tracker_error} (retried until it works)",
        )
    remote_url = connection.remote_url or (
        "none: the partner is private and calls this instance"
        if not side(connection.topology, connection.role).peer_has_url
        else "none"
    )
    rows: list[tuple[str, Text | str]] = [
        ("Status", status),
        ("Name", connection.name),
        ("Description", connection.description or "-"),
        ("Local → remote", f"{connection.local_name} → {connection.remote_name or 'unknown'}"),
        ("Remote URL", remote_url),
        ("Topology", f"{connection.topology.value}, this side {connection.role.value}"),
        ("Mode", connection.mode.value.capitalize()),
        ("Created", connection.created.strftime("%Y-%m-%d %H:%M UTC")),
        ("Id", connection.id),
    ]
    if connection.peer_state is not None:
        rows.append(("Partner says", f"{connection.peer_state.value} on its side"))
    if connection.status is Status.PENDING and connection.token_expires is not None:
        expires = connection.token_expires
        rows.append(("Invitation", f"works until {expires.strftime('%Y-%m-%d %H:%M UTC')}"))
    if contact.last_ok is not None:
        rows.append(
            ("Last contact", f"{when(contact.last_ok, now)} ({ago(now - contact.last_ok)})")
        )
    else:
        rows.append(("Last contact", "never"))
    if sync is not None:
        rows.append(("Sync", sync.problem or sync.summary()))
    for label, value in rows:
        grid.add_row(label, value if isinstance(value, Text) else Text(value))
    return grid


class ConnectionDetailScreen(Screen[None]):
    CSS_PATH = "connection_detail.tcss"
    AUTO_FOCUS = "#body"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="detail.back", tooltip="Back to Connections"),
        Binding(
            "d",
            "run('deactivate')",
            "Deactivate",
            id="detail.deactivate",
            tooltip="Stop the flow both ways; messages wait until it is activated",
        ),
        Binding(
            "a",
            "run('activate')",
            "Activate",
            id="detail.activate",
            tooltip="Let messages flow again, the ones queued meanwhile first",
        ),
        Binding(
            "x",
            "delete",
            "Delete",
            id="detail.delete",
            tooltip="Delete this connection (asks first); the partner is told when possible",
        ),
        Binding(
            "s",
            "sync",
            "Sync",
            id="detail.sync",
            tooltip="Synced tickets, the sync queue, errors, triggers and bulk exalate",
        ),
        Binding(
            "e",
            "rules",
            "Rules",
            id="detail.rules",
            tooltip="Edit this side's outgoing and incoming rules, Test run, versions",
        ),
        Binding(
            "p",
            "apply_rules",
            # Short: the Footer of a syncing Script connection fills 80 columns.
            "Apply",
            id="detail.apply_rules",
            tooltip="Apply the incoming rules to every synced ticket's last replica now",
        ),
        Binding(
            "m",
            "switch",
            "Switch to Script",
            id="detail.switch",
            tooltip="Use editable Script rules on this side (asks first; the partner is told)",
        ),
        Binding(
            "g",
            "regenerate",
            "New invitation code",
            id="detail.regenerate",
            tooltip="Issue a new code for this pending connection (asks first: the old one stops)",
        ),
    ]

    @dataclass
    class Regenerated(Message):
        """A new invitation code was issued: the app shows it."""

        issued: Issued

    @dataclass
    class OpenSync(Message):
        """Show the connection's sync views: the app opens them (with the tracker)."""

        cid: str

    @dataclass
    class OpenRules(Message):
        """Show the Rules editor of this Script connection: the app opens it."""

        cid: str

    @dataclass
    class Loaded(Message):
        connection: Connection | None
        contact: Contact
        problem: str
        sync: ConnectionSync | None = None

    @dataclass
    class Finished(Message):
        """An action ended: its outcome, or why it did not happen."""

        name: str
        outcome: Outcome | None
        problem: str = ""

    def __init__(
        self,
        stores: Stores,
        cid: str,
        now: Callable[[], float],
    ) -> None:
        super().__init__()
        self.stores = stores
        self.cid = cid
        self.now = now
        self.connection: Connection | None = None
        self.contact = Contact()
        self.sync: ConnectionSync | None = None
        self.busy = ""

    def compose(self) -> ComposeResult:
        yield TitleBar("Connection", id="title")
        with VerticalScroll(id="body"):
            yield Static("", id="fields")
            yield Static("", id="error")
            yield Static("", id="busy")
        with ButtonBar(id="buttons"):
            yield Button("Sync", id="sync", compact=True)
            yield Button("Rules", id="rules", compact=True)
            yield Button("Switch to Script", id="switch", compact=True)
            yield Button("Deactivate", id="deactivate", compact=True)
            yield Button("Activate", id="activate", compact=True)
            yield Button("New invitation code", id="regenerate", compact=True)
            yield Button("Delete", id="delete", variant="error", compact=True)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self._reload()
        self.set_interval(REFRESH, self._reload)

    # -- reading ------------------------------------------------------------

    def _load(self) -> Loaded:
        from exalate_tui.sync.engine import syncs

        try:
            connection = self.stores.home.get_connection(self.cid)
        except (NotFound, StoreError) as error:
            return self.Loaded(None, Contact(), str(error))
        try:
            contact = self.stores.state.contact(connection.id) if self.stores.state else Contact()
        except sqlite3.DatabaseError:
            contact = Contact()  # a damaged store: the Connections tab says so, actions refuse
        sync = read_connection_sync(self.stores, connection.id) if syncs(connection) else None
        return self.Loaded(connection, contact, "", sync)

    @work(thread=True, exclusive=True, exit_on_error=False, group="read")
    def _reload(self) -> None:
        self.post_message(self._load())

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        self.sync = event.sync
        self._show(event.connection, event.contact, event.problem)

    def _show(self, connection: Connection | None, contact: Contact, problem: str) -> None:
        self.connection, self.contact = connection, contact
        title = self.query_one("#title", Label)
        if connection is None:
            title.update("Connection")
            self.query_one("#fields", Static).update(Text(problem or "This connection is gone."))
            self.query_one("#error", Static).display = False
        else:
            title.update(Text(f"Connection · {connection.name}"))
            self.query_one("#fields", Static).update(
                fields(connection, contact, self.now(), self.sync)
            )
            box = self.query_one("#error", Static)
            box.display = contact.last_error is not None
            if contact.last_error is not None:
                since = contact.error_since
                heading = "Last error"
                if since is not None:
                    heading += f", failing since {when(since, self.now())}"
                text = Text.assemble((heading, "bold"), f"\n{contact.last_error}")
                box.update(text)
        busy = self.query_one("#busy", Static)
        busy.display = bool(self.busy)
        busy.update(Text(self.busy))  # names from the partner: never markup
        for action in ("sync", "rules", "switch", "deactivate", "activate", "regenerate", "delete"):
            self.query_one(f"#{action}", Button).display = self._allowed(action)
        self.refresh_bindings()

    def _allowed(self, action: str) -> bool:
        """Which actions to offer; the actions themselves refuse what does not apply."""
        connection = self.connection
        if connection is None or self.busy:
            return False
        match action:
            case "deactivate":
                return connection.status is Status.ACTIVE
            case "activate":
                return (
                    connection.status is Status.DEACTIVATED
                    and connection.peer_state is not PeerState.DELETED
                )
            case "regenerate":
                return connection.status is Status.PENDING and connection.role is Role.INITIATOR
            case "sync":
                return self.sync is not None
            case "rules":
                return connection.mode is Mode.SCRIPT
            case "apply_rules":
                return connection.mode is Mode.SCRIPT and self.sync is not None
            case "switch":
                return connection.mode is Mode.BASIC and connection.status is not Status.PENDING
        return True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "run":
            return self._allowed(str(parameters[0]))
        if action in ("delete", "regenerate", "sync", "rules", "apply_rules", "switch"):
            return self._allowed(action)
        return True

    # -- acting -------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    @on(Button.Pressed, "#deactivate, #activate")
    def _run_pressed(self, event: Button.Pressed) -> None:
        self.action_run(event.button.id or "")

    @on(Button.Pressed, "#sync")
    def _sync_pressed(self) -> None:
        self.action_sync()

    def action_sync(self) -> None:
        if self._allowed("sync"):
            self.post_message(self.OpenSync(self.cid))

    @on(Button.Pressed, "#rules")
    def _rules_pressed(self) -> None:
        self.action_rules()

    @on(Button.Pressed, "#switch")
    def _switch_pressed(self) -> None:
        self.action_switch()

    def action_rules(self) -> None:
        if self._allowed("rules"):
            self.post_message(self.OpenRules(self.cid))

    def action_apply_rules(self) -> None:
        if self._allowed("apply_rules"):
            self._apply_rules()

    @work(thread=True, exclusive=True, exit_on_error=False, group="apply")
    def _apply_rules(self) -> None:
        from .stores import ask_engine

        problem = ask_engine(self.stores, "reapply", self.cid)
        name = self.connection.name if self.connection else "this connection"
        said = (
            f"Could not ask the sync engine to apply the rules: {problem}"
            if problem
            else f"The incoming rules of {name} are applied to the last replica of every "
            "synced ticket now."
        )
        self.app.call_from_thread(
            self.notify,
            said,
            title="Rules",
            severity="error" if problem else "information",
            timeout=8,
            markup=False,
        )

    def action_switch(self) -> None:
        from .confirm import ConfirmSwitchScreen

        connection = self.connection
        if connection is None or not self._allowed("switch"):
            return
        if self.stores.state is None:
            self.notify(
                f"Cannot change connections: {self.stores.state_problem}",
                severity="error",
                markup=False,
            )
            return
        state = self.stores.state

        def answered(yes: bool | None) -> None:
            if yes:
                self._switch(state)

        self.app.push_screen(ConfirmSwitchScreen(connection), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="action")
    def _switch(self, state: Streams) -> None:
        from exalate_tui.errors import ExalateError
        from exalate_tui.sync.script import switch_to_script

        try:
            updated, _ = switch_to_script(self.stores.home, self.cid, state)
        except (ExalateError, OSError) as error:
            said, problem = f"Not switched: {error}", True
        else:
            partner = updated.remote_name or "The partner"
            said = (
                f"{updated.name} uses Script rules now, starting as the Basic mapping "
                f"(e edits them). {partner} is told and keeps its own rules."
            )
            problem = False
        self.app.call_from_thread(
            self.notify,
            said,
            title="Connection",
            severity="error" if problem else "information",
            timeout=10,
            markup=False,
        )
        self.app.call_from_thread(self._reload)

    @on(Button.Pressed, "#delete")
    def _delete_pressed(self) -> None:
        self.action_delete()

    @on(Button.Pressed, "#regenerate")
    def _regenerate_pressed(self) -> None:
        self.action_regenerate()

    def action_delete(self) -> None:
        connection = self.connection
        if connection is None or not self._allowed("delete"):
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.action_run("delete")

        self.app.push_screen(ConfirmDeleteScreen(connection), confirmed)

    def action_run(self, name: str) -> None:
        if self.connection is None or not self._allowed(name):
            return
        if self.stores.state is None:
            self.notify(
                f"Cannot change connections: {self.stores.state_problem}",
                severity="error",
                markup=False,
            )
            return
        partner = self.connection.remote_name or "the partner"
        self.busy = f"{DOING[name]} {self.connection.name} and telling {partner} …"
        self._show(self.connection, self.contact, "")
        self._act(name, self.stores.state)

    @work(exclusive=True, exit_on_error=False, group="action")
    async def _act(self, name: str, state: Streams) -> None:
        """Run one of `actions.deactivate/activate/delete`; the outcome comes by message."""
        run = {"deactivate": actions.deactivate, "activate": actions.activate}.get(
            name, actions.delete
        )
        try:
            outcome = await run(self.stores.home, state, self.cid)
        # ExalateError: a damaged store too (StateError), found before anything changed.
        except (ExalateError, OSError, sqlite3.DatabaseError) as error:
            self.post_message(self.Finished(name, None, str(error)))
            return
        self.post_message(self.Finished(name, outcome))

    @on(Finished)
    def _finished(self, event: Finished) -> None:
        self.busy = ""
        if event.outcome is None:
            self.notify(
                f"Could not {event.name}: {event.problem}",
                severity="error",
                timeout=10,
                markup=False,
            )
            self._reload()
            return
        outcome = event.outcome
        connection = outcome.connection
        partner = connection.remote_name or "the partner"
        told = {
            "delivered": f"{partner} was told.",
            "queued": f"{partner} learns of it when it next connects.",
            "unreachable": f"Could not tell {partner} now: {outcome.error}",
            "nobody": "",
        }[outcome.told.value]
        self.notify(
            f"{DONE[event.name]} {connection.name}. {told}".strip(),
            title="Connection",
            severity="warning" if outcome.told.value == "unreachable" else "information",
            timeout=8,
            markup=False,  # the name and the partner's words, shown as they are
        )
        if event.name == "delete":
            self.dismiss()
        else:
            self._reload()

    def action_regenerate(self) -> None:
        """Asks first: a new code makes the one the partner may hold stop working."""
        from .confirm import ConfirmNewCodeScreen

        connection = self.connection
        if connection is None or not self._allowed("regenerate"):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._regenerate()

        self.app.push_screen(ConfirmNewCodeScreen(connection), answered)

    @work(exclusive=True, exit_on_error=False, group="action")
    async def _regenerate(self) -> None:
        try:
            code = await asyncio.to_thread(
                actions.regenerate_invitation, self.stores.home, self.cid, now=self.now
            )
            connection = await asyncio.to_thread(self.stores.home.get_connection, self.cid)
        except (actions.ActionError, NotFound, StoreError, OSError) as error:
            self.post_message(self.Finished("regenerate", None, str(error)))
            return
        self.post_message(self.Regenerated(Issued(connection, codes.decode(code), code)))
