"""The Textual console: screen routing, app-wide keys, the clipboard, codes printed on exit.

Screens are imported when they first open, so starting the console loads only
what the first screen needs (and never the node's FastAPI/uvicorn). The
network half (httpx: URL checks, accepting, the supervisor that runs this
home's pollers while the console is open) loads after the first screen shows.
The wizards are handed the connections the Connections tab last read, so
they judge names without reading the disk on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerCancelled, WorkerFailed, WorkerState

from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home, NotFound, StoreError

if TYPE_CHECKING:
    from exalate_tui.domain.live import NodeNeed
    from exalate_tui.domain.models import Connection, Instance
    from exalate_tui.flows.initiate import InitiateWizard, Issued, Step
    from exalate_tui.protocol.api import UrlCheck
    from exalate_tui.trackers.adapter import Ticket, Tracker
    from exalate_tui.transport.background import Status as NodeStatus
    from exalate_tui.transport.streams import Streams
    from exalate_tui.transport.supervisor import Supervisor
    from screens.connection_detail import ConnectionDetailScreen
    from screens.connections import ConnectionsScreen
    from screens.first_run import FirstRunScreen
    from screens.stores import Stores, SyncAccess
    from screens.tickets import TicketsScreen
    from screens.wizard_step import WizardStep

# Checks a destination URL (`GET {url}/api/v1/info`); never raises.
Verifier = Callable[[str], Awaitable["UrlCheck"]]

# A local clipboard helper (xclip, pbcopy...) that hangs must not hide the toast for long.
LOCAL_COPY_TIMEOUT = 3.0

# Work that loads more code once the first frame is drawn (the supervisor's network
# stack) waits this long: Textual's writer thread needs the GIL to get that frame to
# the terminal, and an import in another thread holds it 5 ms at a time.
SETTLE = 0.1

# How often the console looks at whether this home's node runs (node.pid, its lock, /info).
NODE_REFRESH = 3.0
NODE_PROBE_TIMEOUT = 0.5

# "module:Class" for each wizard `Step` (by its value: the wizard, and with it
# pydantic, loads once the first screen is up), imported when the step opens.
STEP_SCREENS: dict[str, str] = {
    "destination": "screens.destination:DestinationScreen",
    "public-url": "screens.public_url:PublicUrlScreen",
    "config-type": "screens.config_type:ConfigTypeScreen",
    "note": "screens.note:NoteScreen",
    "info": "screens.info:InfoScreen",
    "invitation": "screens.invitation:InvitationScreen",
}


def copy_locally(text: str) -> None:
    """The machine's own clipboard via pyperclip; raises where there is none (SSH, no display)."""
    import pyperclip

    pyperclip.copy(text)


async def verify_url(url: str) -> UrlCheck:
    """`client.verify_url` with its short timeout; httpx loads on the first check."""
    from exalate_tui.transport import client

    return await client.verify_url(url)


def _step_class(step: Step) -> type[WizardStep]:
    module, name = STEP_SCREENS[step].split(":")
    screen: type[WizardStep] = getattr(importlib.import_module(module), name)
    return screen


# The Tickets tab's list is installed under this name: it keeps its filter and place while
# the Connections tab shows (popping an installed screen keeps it).
TICKETS = "tickets"


class ExalateApp(App[None]):
    """Connections tab, first-run setup, the Initiate and Accept flows, connection details;
    the Tickets tab (list, ticket, create, edit, comment)."""

    CSS_PATH = "app.tcss"
    TITLE = "exalate-tui"
    # Ctrl+P: every key of the screen below, by name (`get_system_commands`).
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            priority=True,
            id="app.quit",
            tooltip="Leave exalate-tui; invitation codes issued are printed on exit",
        ),
        # Listed by `?` rather than in every Footer, where 80 columns have no room for it.
        Binding(
            "ctrl+p",
            "command_palette",
            "Commands",
            show=False,
            priority=True,
            id="app.commands",
            tooltip="Find any action of this screen by name",
        ),
        # Not a priority: in a text field `?` is typed, F1 still opens the keys.
        Binding(
            "question_mark,f1",
            "toggle_help",
            "Keys",
            key_display="?",
            id="app.help",
            tooltip="Show or hide every key of this screen",
        ),
    ]

    def __init__(
        self,
        home: Home,
        *,
        local_copy: Callable[[str], None] = copy_locally,
        now: Callable[[], float] = time.time,
        verify: Verifier = verify_url,
        supervise: bool = True,
        watch_node: bool | None = None,
    ) -> None:
        super().__init__()
        self.home = home
        self.local_copy = local_copy
        self.now = now
        self.verify = verify
        self.supervise = supervise
        self.instance: Instance | None = None
        # The Connections tab, once open: its last reading is what the wizards start from.
        self.connections_tab: ConnectionsScreen | None = None
        self.wizard: InitiateWizard | None = None
        # Every code issued while the console was open, printed on exit.
        self.issued: list[Issued] = []
        # state.sqlite3, opened with the Connections tab; None when it cannot be used.
        self.state: Streams | None = None
        self.state_problem: str | None = None
        self.supervisor: Supervisor | None = None
        # tracker.sqlite3, opened with the Tickets tab; None when it cannot be used.
        self.tracker: Tracker | None = None
        self.tracker_problem: str | None = None
        # The sync engine's tables in state.sqlite3, opened by the first sync view that reads.
        self.sync: SyncAccess | None = None
        # Whether this home's node runs, as last checked (`NodeBar` shows it).
        self.node_status: NodeStatus | None = None
        # Checked every few seconds unless told not to (tests where nothing may run).
        self.watch_node = supervise if watch_node is None else watch_node
        # Printed on exit (after the codes): what came of starting the node on quit.
        self.exit_notes: list[str] = []

    def on_mount(self) -> None:
        self._start()
        # After the first frame: the worker stats every file of the home, holding the GIL
        # the frame needs (benchmarks/README.md, start-up).
        self.call_after_refresh(self._warn_permissions)

    # -- the node: is it running, start it ------------------------------------

    @dataclass
    class NodeChecked(Message):
        status: NodeStatus

    def _watch_node(self, glanced: NodeStatus) -> None:
        """What the files said as the home was read (so the first frame says it), then a
        worker every few seconds."""
        if self.node_status is not None:
            return
        self._show_node(glanced)
        if self.watch_node:
            self.call_after_refresh(self._check_node)
            self.set_interval(NODE_REFRESH, self._check_node)

    @work(thread=True, exclusive=True, exit_on_error=False, group="node")
    def _check_node(self) -> None:
        from exalate_tui.transport import background

        status = background.status(self.home, clean=False, timeout=NODE_PROBE_TIMEOUT)
        self.post_message(self.NodeChecked(status))

    @on(NodeChecked)
    def _node_checked(self, event: NodeChecked) -> None:
        if event.status != self.node_status:
            self._show_node(event.status)

    def _show_node(self, status: NodeStatus) -> None:
        from screens.widgets import NodeBar

        self.node_status = status
        for screen in self.screen_stack:
            for bar in screen.query(NodeBar):
                bar.show_status(status)

    def action_start_node(self) -> None:
        """`n`: start this home's node in the background, as `exalate-tui node start` does."""
        status = self.node_status
        if status is not None and status.running and status.record is not None:
            self.notify(f"The node already runs on {status.record.url}.", title="Node")
            return
        self.notify("Starting the node in the background…", title="Node")
        self._start_node()

    @work(thread=True, exclusive=True, exit_on_error=False, group="node-start")
    def _start_node(self) -> None:
        from exalate_tui.transport import background

        try:
            started = background.start(self.home)
        except (ExalateError, OSError) as error:
            self.call_from_thread(
                partial(
                    self.notify,
                    f"The node did not start: {error}",
                    title="Node",
                    severity="error",
                    timeout=20,
                    markup=False,
                )
            )
            return
        self.post_message(self.NodeChecked(started.status))
        record = started.status.record
        where = f" on {record.url}" if record else ""
        self.call_from_thread(
            partial(
                self.notify,
                f"The node runs{where}, and keeps running when the console closes. "
                f"Its log: {self.home.node_log_path}; stop it with `exalate-tui node stop`.",
                title="Node",
                timeout=10,
                markup=False,
            )
        )

    def action_stop_node(self) -> None:
        """`N`: stop this home's node, once the admin has read what stops with it."""
        from exalate_tui.domain.live import node_need
        from exalate_tui.transport import background
        from screens.confirm import ConfirmStopNodeScreen

        status = background.glance(self.home)
        if not status.running:
            self._show_node(status)
            self.notify("No node runs for this home: nothing to stop.", title="Node")
            return

        def answered(stop: bool | None) -> None:
            if stop:
                self.notify("Stopping the node…", title="Node")
                self._stop_node()

        need = node_need(self.known_connections())
        self.push_screen(ConfirmStopNodeScreen(status.record, need), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="node-start")
    def _stop_node(self) -> None:
        from exalate_tui.transport import background

        try:
            background.stop(self.home)
        except (ExalateError, OSError) as error:
            self.call_from_thread(
                partial(
                    self.notify,
                    f"The node did not stop: {error}",
                    title="Node",
                    severity="error",
                    timeout=20,
                    markup=False,
                )
            )
            return
        self.post_message(self.NodeChecked(background.glance(self.home)))
        # The console's own supervisor takes over the polling the node did.
        self.call_from_thread(self.wake_supervisor)
        self.call_from_thread(
            partial(
                self.notify,
                "The node stopped. While the console is open it polls in its place; "
                "press n to start the node again.",
                title="Node",
                timeout=10,
            )
        )

    # -- quitting: what stops with the console -------------------------------

    async def action_quit(self) -> None:
        """Ctrl+Q: quit, unless a node this home needs is down: then ask once (start it
        first, quit anyway, or stay). Ctrl+Q on that question quits at once."""
        from screens.confirm import QuitWithoutNodeScreen

        if isinstance(self.screen, QuitWithoutNodeScreen) or self.exit_notes:
            self.exit()
            return
        need = self._need_on_quit()
        if not need:
            self.exit()
            return

        def answered(start: bool | None) -> None:
            if start is None:
                return
            if not start:
                self.exit()
                return
            # Said on exit if Ctrl+Q quits before the start is done.
            self.exit_notes.append(
                "The node was starting when the console closed: see `exalate-tui node status`."
            )
            self.notify("Starting the node, then quitting (Ctrl+Q quits now)…", title="Node")
            self._start_node_and_quit()

        self.push_screen(QuitWithoutNodeScreen(need), answered)

    def _need_on_quit(self) -> NodeNeed:
        """What stops when the console closes with no node running (nothing if one runs)."""
        from exalate_tui.domain.live import NodeNeed, node_need
        from exalate_tui.transport import background

        if self.instance is None or self.connections_tab is None:
            return NodeNeed()
        try:
            if background.glance(self.home).running:
                return NodeNeed()
        except OSError:
            pass  # cannot tell: better to ask than to say nothing
        return node_need(self.known_connections())

    @work(thread=True, exclusive=True, exit_on_error=False, group="node-start")
    def _start_node_and_quit(self) -> None:
        """Start the node, then quit whatever came of it: what did is printed on exit."""
        from exalate_tui.transport import background

        try:
            started = background.start(self.home)
        except (ExalateError, OSError) as error:
            note = f"The node did not start: {error}\nStart it with `exalate-tui node start`."
        else:
            record = started.status.record
            where = f" on {record.url}" if record else ""
            note = (
                f"The node runs{where} and keeps syncing now the console is closed. "
                f"Its log: {self.home.node_log_path}; stop it with `exalate-tui node stop`."
            )
        self.exit_notes[:] = [note]
        with contextlib.suppress(RuntimeError):  # the admin quit already (Ctrl+Q)
            self.call_from_thread(self.exit)

    @work(thread=True, exit_on_error=False, group="permissions")
    def _warn_permissions(self) -> None:
        """Files others can read though they hold secrets: said once, as the CLI does."""
        warnings = self.home.permission_warnings()
        if warnings:
            self.call_from_thread(
                partial(
                    self.notify,
                    "\n".join(warnings),
                    title="Readable by others",
                    severity="warning",
                    timeout=20,
                    markup=False,
                )
            )

    # -- finding keys: the help panel and the command palette ---------------

    def action_toggle_help(self) -> None:
        """`?`: Textual's keys panel for the current screen, or away with it."""
        from textual.widgets import HelpPanel

        if self.screen.query(HelpPanel):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's own (theme, keys, quit...), then each key the screen offers now, by name.

        From the screen's active bindings, so a command exists exactly where its key
        works (Deactivate only on an Active connection) and no list can drift.
        """
        yield from super().get_system_commands(screen)
        seen = {"quit", "toggle_help", "command_palette"}
        for active in screen.active_bindings.values():
            binding = active.binding
            if not active.enabled or not binding.description or binding.action in seen:
                continue
            seen.add(binding.action)
            help_text = binding.tooltip or f"Key: {binding.key_display or binding.key}"
            yield SystemCommand(
                binding.description,
                help_text,
                partial(self.run_action, binding.action, active.node),
            )

    async def on_unmount(self) -> None:
        """Stop the pollers (releasing their locks) before the state closes."""
        for worker in [w for w in self.workers if w.group == "supervisor"]:
            worker.cancel()
            with contextlib.suppress(WorkerCancelled, WorkerFailed):
                await worker.wait()
        if self.sync is not None:
            self.sync.close()
        if self.state is not None:
            self.state.close()
            self.state = None
        if self.tracker is not None:
            await self.tracker.close()
            self.tracker = None

    def _start(self) -> None:
        """The first screen: setup, a broken instance.toml, or the Connections tab,
        decided once instance.toml is read (in a thread: no file I/O on the loop)."""
        self._read_instance()

    @work(thread=True, exclusive=True, exit_on_error=False, group="state")
    def _read_instance(self) -> None:
        try:
            instance = self.home.load_instance()
        except StoreError as error:
            self.call_from_thread(self._show_instance_error, error)
            return
        if instance is None:
            self.call_from_thread(self._show_first_run)
            return
        self._open_state_once()
        self.call_from_thread(self._show_connections, instance, self._glance_node())

    def _show_instance_error(self, error: StoreError) -> None:
        from screens.instance_error import InstanceErrorScreen

        self.push_screen(InstanceErrorScreen(error))

    def _show_first_run(self) -> None:
        from screens.first_run import FirstRunScreen

        self.push_screen(FirstRunScreen(self.home))

    def _open_connections(self, instance: Instance) -> None:
        """After the first run: the streams open in a thread, then the Connections tab."""
        self._open_state_and_show(instance)

    @work(thread=True, exclusive=True, exit_on_error=False, group="state")
    def _open_state_and_show(self, instance: Instance) -> None:
        self._open_state_once()
        self.call_from_thread(self._show_connections, instance, self._glance_node())

    def _glance_node(self) -> NodeStatus:
        from exalate_tui.transport import background

        return background.glance(self.home)

    def _open_state_once(self) -> None:
        """Open the home's streams unless open (or known not to open); in a thread: a
        database may take up to its connect timeout to answer."""
        from exalate_tui.errors import ExalateError

        if self.state is None and self.state_problem is None:
            self._open_state()
        # The connections' store too (a database's pool opens here, not on the loop);
        # one that does not open (another key) is the tab's problem to show.
        with contextlib.suppress(ExalateError, OSError):
            self.home.connections.stamp()

    def _show_connections(self, instance: Instance, node: NodeStatus) -> None:
        from screens.connections import ConnectionsScreen

        self.instance = instance
        self._watch_node(node)
        self.connections_tab = ConnectionsScreen(self._stores(), self.now)
        self.push_screen(self.connections_tab)
        self._supervise_soon()

    def known_connections(self) -> Sequence[Connection]:
        """The connections as the Connections tab last read them (a wizard's snapshot)."""
        return self.connections_tab.connections if self.connections_tab else []

    def _supervise_soon(self) -> None:
        if self.supervise and self.state is not None and not self.supervisor:
            # After the first screen is out: the network stack loads off the critical path.
            self.call_after_refresh(self.set_timer, SETTLE, partial(self._supervise, self.state))

    def _stores(self) -> Stores:
        from screens.stores import Stores, SyncAccess

        if self.sync is None:
            self.sync = SyncAccess(self.home)
        return Stores(self.home, self.state, self.state_problem, self.sync)

    def _open_state(self) -> None:
        """Open the home's streams (in a thread: the file may be created, or a database
        take its connect timeout to answer)."""
        from exalate_tui.errors import ExalateError
        from exalate_tui.transport.storage import open_streams

        try:
            self.home.ensure()
            self.state = open_streams(self.home)
        except (ExalateError, OSError) as error:
            self.state_problem = str(error)

    # -- the Tickets tab ------------------------------------------------------

    def action_show_tickets(self) -> None:
        """`t` on the Connections tab: the Tickets tab, as it was left."""
        if self.instance is None or self.screen is not self.connections_tab:
            return
        if not self.is_screen_installed(TICKETS):
            self.install_screen(self._tickets_tab(), TICKETS)
        self.push_screen(TICKETS)

    def action_show_connections(self) -> None:
        """`c` (or Escape) on the Tickets tab: back to the Connections tab under it."""
        if self.is_screen_installed(TICKETS) and self.screen is self.get_screen(TICKETS):
            self.pop_screen()

    def _tickets_tab(self) -> TicketsScreen:
        """The Tickets tab's first screen, made when it first shows; the tracker opens then."""
        from screens.tickets import TicketsScreen

        if self.tracker is None and self.tracker_problem is None:
            self._open_tracker()
        kind = self.tracker.kind if self.tracker else "no"
        where = f"{self.instance.short_name} · {kind} tracker" if self.instance else ""
        return TicketsScreen(self.tracker, self.tracker_problem, self.now, where)

    def _open_tracker(self) -> None:
        from exalate_tui.trackers import open_tracker
        from exalate_tui.trackers.adapter import TrackerError

        try:
            self.tracker = open_tracker(self.home)
        except (TrackerError, StoreError, OSError) as error:
            self.tracker_problem = str(error)

    def on_tickets_screen_opened(self, event: TicketsScreen.Opened) -> None:
        from screens.ticket_detail import TicketDetailScreen

        if self.tracker is not None:
            self.push_screen(TicketDetailScreen(self.tracker, event.key, self._stores()))

    def on_tickets_screen_new_ticket(self, event: TicketsScreen.NewTicket) -> None:
        from exalate_tui.flows.tickets import TicketForm
        from screens.ticket_form import TicketFormScreen

        def created(ticket: Ticket | None) -> None:
            if ticket is not None:
                self.notify(f"Created {ticket.key}.", title="Ticket", markup=False)

        if self.tracker is not None:
            self.push_screen(TicketFormScreen(TicketForm(), self.tracker), created)

    # -- the supervisor: this home's pollers and pushers --------------------

    @work(exclusive=True, exit_on_error=False, group="supervisor")
    async def _supervise(self, state: Streams) -> None:
        """Run `runtime.Supervisor` for as long as the console is open (docs/architecture.md).

        Its per-connection locks make it skip connections that a running
        `exalate-tui node` already polls.
        """
        from exalate_tui.lifecycle.runtime import Supervisor
        from exalate_tui.sync.service import run_engine

        self.supervisor = Supervisor(self.home, state)
        # The sync engine beside it, unless a node already syncs this home's tickets.
        await asyncio.gather(self.supervisor.run(), run_engine(self.home, state))

    @on(Worker.StateChanged)
    def _supervisor_stopped(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "supervisor" and event.state is WorkerState.ERROR:
            self.supervisor = None
            self.notify(
                f"The pollers stopped: {event.worker.error}. Restart the console, or run "
                "`exalate-tui node`.",
                title="Pollers",
                severity="error",
                timeout=15,
            )

    def wake_supervisor(self) -> None:
        """Look at the home again now (a connection was added, activated or changed)."""
        if self.supervisor is not None:
            self.supervisor.wake()

    def action_reload_home(self) -> None:
        """Read instance.toml again (after the admin fixed it in another terminal)."""
        self.pop_screen()
        self._start()

    def on_first_run_screen_saved(self, event: FirstRunScreen.Saved) -> None:
        """The instance is named: next, which tracker it fronts (Escape keeps the
        embedded one), then the Connections tab."""
        from exalate_tui.domain.models import TrackerConfig
        from exalate_tui.flows.tracker import TrackerForm
        from screens.tracker_setup import TrackerSetupScreen

        self.pop_screen()
        form = TrackerForm(TrackerConfig())
        screen = TrackerSetupScreen(self.home, form, first_run=True)
        self.push_screen(screen, lambda _: self._open_connections(event.instance))

    # -- the tracker's settings -----------------------------------------------

    def action_tracker_settings(self) -> None:
        """`s` on the Connections tab: the tracker this instance fronts, and its settings."""
        from exalate_tui.flows.tracker import TrackerForm
        from screens.tracker_setup import TrackerSetupScreen

        if self.instance is None or self.screen is not self.connections_tab:
            return
        try:
            config = self.home.load_tracker_config()
        except StoreError as error:
            self.notify(str(error), title="tracker.toml", severity="error", markup=False)
            return
        screen = TrackerSetupScreen(self.home, TrackerForm(config))
        self.push_screen(screen, self._tracker_changed)

    def _tracker_changed(self, saved: bool | None) -> None:
        """New settings: the Tickets tab and the sync views open the tracker again."""
        if not saved:
            return
        old, self.tracker, self.tracker_problem = self.tracker, None, None
        if self.is_screen_installed(TICKETS):
            self.uninstall_screen(TICKETS)
        if old is not None:
            self.run_worker(old.close(), exit_on_error=False, group="tracker")
        self.notify(
            "A node running now keeps syncing the tracker it started with: restart it "
            "(N, then n) to sync this one.",
            title="Tracker",
            timeout=10,
        )

    # -- the Initiate-connection wizard -------------------------------------

    def action_initiate(self) -> None:
        """Open the wizard on its first step (bound to `i` on the Connections tab)."""
        from exalate_tui.flows.initiate import InitiateWizard

        if self.instance is None:
            return
        # The destination step verifies a URL in a worker and hands the result to
        # `wizard.record_check`; Next goes on only with a verified URL.
        self.wizard = InitiateWizard(
            self.instance, self.known_connections(), require_verified=True, now=self.now
        )
        self.push_screen(_step_class(self.wizard.step)(self.wizard))

    def on_wizard_step_moved(self, event: WizardStep.Moved) -> None:
        """Replace the wizard screen with a new one for the wizard's current step."""
        wizard = self.wizard
        if wizard is None:
            return
        if wizard.issued is not None and wizard.issued not in self.issued:
            self.issued.append(wizard.issued)
        if wizard.refused in self.issued:  # shown, then not saved: the code is void
            self.issued.remove(wizard.refused)
        self.switch_screen(_step_class(wizard.step)(wizard))

    def on_wizard_step_closed(self, event: WizardStep.Closed) -> None:
        """Back to the Connections tab, which reloads and shows any new connection."""
        if self.wizard is not None:
            self.instance = self.wizard.instance
        self.wizard = None
        self.pop_screen()
        self.wake_supervisor()  # a private initiator's handshake starts at once

    # -- Accept invitation, connection details ------------------------------

    def action_accept_invitation(self) -> None:
        """Open the Accept-invitation screen (bound to `a` on the Connections tab)."""
        from exalate_tui.flows.accept import AcceptWizard
        from screens.accept import AcceptScreen

        if self.instance is None:
            return
        wizard = AcceptWizard(self.instance, self.known_connections(), now=self.now)
        self.push_screen(AcceptScreen(wizard, self._stores()))

    def on_connections_screen_opened(self, event: ConnectionsScreen.Opened) -> None:
        from screens.connection_detail import ConnectionDetailScreen

        self.push_screen(ConnectionDetailScreen(self._stores(), event.cid, self.now))

    def on_connection_detail_screen_open_sync(self, event: ConnectionDetailScreen.OpenSync) -> None:
        """A connection's sync views; the tracker opens with them (trigger checks, bulk)."""
        from screens.connection_sync import ConnectionSyncScreen

        if self.tracker is None and self.tracker_problem is None:
            self._open_tracker()
        self.push_screen(
            ConnectionSyncScreen(
                self._stores(), event.cid, self.tracker, self.tracker_problem, self.now
            )
        )

    def on_connection_detail_screen_open_rules(
        self, event: ConnectionDetailScreen.OpenRules
    ) -> None:
        """A Script connection's Rules editor; the tracker opens with it (Test run)."""
        from screens.rules_editor import RulesEditorScreen

        if self.tracker is None and self.tracker_problem is None:
            self._open_tracker()
        self.push_screen(
            RulesEditorScreen(
                self._stores(), event.cid, self.tracker, self.tracker_problem, self.now
            )
        )

    def on_connection_detail_screen_regenerated(
        self, event: ConnectionDetailScreen.Regenerated
    ) -> None:
        from screens.regenerated import RegeneratedScreen

        self.issued.append(event.issued)
        self.wake_supervisor()  # a private initiator presents the new token at once
        self.push_screen(RegeneratedScreen(event.issued))

    # -- clipboard ----------------------------------------------------------

    def action_copy_code(self) -> None:
        """OSC 52 to the admin's terminal, then the local clipboard, then say what happened."""
        from screens.invitation import ShowsCode

        screen = self.screen
        if not isinstance(screen, ShowsCode):
            return
        code = screen.issued.code
        self.copy_to_clipboard(code)
        self._copy_locally(code)

    @work(exclusive=True, group="clipboard", exit_on_error=False)
    async def _copy_locally(self, text: str) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self.local_copy, text), LOCAL_COPY_TIMEOUT)
        # pyperclip raises its own error without a display; helpers fail with OSError or hang.
        except Exception:
            self.notify(
                "Sent with OSC 52 (terminal clipboard); no local clipboard here: "
                "if it did not arrive, select it on screen or press w to write it to a file.",
                title="Invitation code",
                severity="warning",
                timeout=8,
            )
        else:
            self.notify(
                "Copied with OSC 52 (terminal clipboard) and to the local clipboard.",
                title="Invitation code",
            )


def make_app(
    home: Home,
    *,
    local_copy: Callable[[str], None] = copy_locally,
    now: Callable[[], float] = time.time,
    verify: Verifier = verify_url,
    supervise: bool = True,
    watch_node: bool | None = None,
) -> ExalateApp:
    """The console for `home`.

    Tests pass a stand-in clipboard, a fixed clock, a verifier bound to their own
    servers, and `supervise=False` where no poller may run (nor the node's check,
    unless `watch_node`).
    """
    return ExalateApp(
        home,
        local_copy=local_copy,
        now=now,
        verify=verify,
        supervise=supervise,
        watch_node=watch_node,
    )


def run_console(home: Home) -> int:
    """Run the console; print every invitation code issued, so none is lost with the screen."""
    app = make_app(home)
    app.run()
    for note in app.exit_notes:
        print(note)
    valid = still_valid(home, app.issued, app.now())
    if valid:
        print("Invitation codes issued in this session, still waiting to be accepted:")
        for issued in valid:
            print(f"\n{issued.connection.name}:\n{issued.code}")
    return app.return_code or 0


def still_valid(home: Home, issued: Sequence[Issued], now: float) -> list[Issued]:
    """The codes worth printing on exit: their connection still Pending, with that very code
    (not accepted, deleted, discarded or replaced by a newer one) and not expired."""
    from exalate_tui.domain import invitation as codes
    from exalate_tui.domain.models import Status

    valid = []
    for item in issued:
        try:
            connection = home.get_connection(item.connection.id)
        except NotFound:  # deleted, or discarded on leaving the wizard
            continue
        except (StoreError, OSError):  # unreadable now: print it rather than lose it
            valid.append(item)
            continue
        if (
            connection.status is Status.PENDING
            and connection.token_hash is not None
            and codes.token_matches(item.invitation.tok, connection.token_hash)
            and item.invitation.exp > now
        ):
            valid.append(item)
    return valid
