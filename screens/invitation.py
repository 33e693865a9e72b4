"""The last step: the invitation code, to copy, write to a file, and send to the partner.

The code is issued when the admin leaves the information step; this screen
shows it at once and saves the connection (pending) in a worker as soon as it
is drawn; the outcome comes back by message, and Done waits for it. The
code's widgets, keys, buttons and file writing are shared with the
regenerated-code screen (`CodeScreen`, `code_bindings`, `compose_code`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from textual import events, on, work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Static

from exalate_tui.domain.live import node_need
from exalate_tui.domain.models import Connection, Instance
from exalate_tui.errors import ExalateError
from exalate_tui.flows.initiate import InitiateWizard, Issued, Step
from exalate_tui.home.store import Home, StoreError
from exalate_tui.lifecycle.initiate import save_issued

from .widgets import CodeBox, NodeBar, SubmitScreen
from .wizard_step import WizardStep


@runtime_checkable
class ShowsCode(Protocol):
    """A screen showing an invitation code: `app.copy_code` copies `issued.code`."""

    @property
    def issued(self) -> Issued: ...


# The screen showing a code binds these and defines `action_write_file` with `write_code`.
CODE_BINDINGS: list[BindingType] = [
    Binding(
        "c",
        "app.copy_code",
        "Copy invitation code",
        id="invitation.copy",
        tooltip="Copy with OSC 52 (reaches your terminal over SSH) and to a local clipboard",
    ),
    Binding(
        "w",
        "write_file",
        "Write to file",
        id="invitation.write",
        tooltip="Write the code to a file you choose (0600; default: the home's invitations/)",
    ),
]


def code_bindings(screen: str, tooltip: str, escape: Binding | None = None) -> list[BindingType]:
    """A code screen's keys: copy, write, Done (`enter`) with `tooltip`, and `escape`:
    Done too, unless the screen gives its own."""
    return [
        *CODE_BINDINGS,
        Binding("enter", "submit", "Done", priority=True, id=f"{screen}.done", tooltip=tooltip),
        escape or Binding("escape", "done", "Done", show=False, id=f"{screen}.close"),
    ]


class CodeScreen(SubmitScreen):
    """A screen showing an invitation code: its Copy and Write buttons do what `c` and `w` do."""

    ENTER_ACTION = "done"

    @property
    def issued(self) -> Issued:
        raise NotImplementedError

    @on(Button.Pressed, "#copy")
    async def _copy_pressed(self) -> None:
        await self.run_action("app.copy_code")

    @on(Button.Pressed, "#write")
    def action_write_file(self) -> None:
        write_code(self, self.issued)


def _expiry(issued: Issued) -> str:
    expires = datetime.fromtimestamp(issued.invitation.exp, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"It works once, until {expires}."


def compose_code(issued: Issued) -> Iterator[Widget]:
    """The code, selectable, and until when it works."""
    yield CodeBox(issued.code)
    yield Static(_expiry(issued), classes="hint")


def compose_code_buttons() -> Iterator[Widget]:
    yield Button("Copy invitation code", id="copy", variant="primary", compact=True)
    yield Button("Write to file", id="write", compact=True)
    yield Button("Done", id="done", variant="success", compact=True)


@runtime_checkable
class HasHome(Protocol):
    """The app a code screen runs in: it has a home (the console's `ExalateApp`)."""

    home: Home


def write_code(screen: Screen[None], issued: Issued) -> None:
    """Ask where to write the code (`WriteCodeScreen`: the home's `invitations/` unless
    changed) and write it; the toast says where."""
    from .write_code import WriteCodeScreen

    app = screen.app
    if not isinstance(app, HasHome):
        screen.notify("This console has no home folder to write into.", severity="error")
        return

    def written(path: Path | None) -> None:
        if path is not None:
            message = f"Wrote the invitation code to {path}"
            screen.notify(message, title="Invitation code", timeout=10, markup=False)

    name = issued.connection.name
    app.push_screen(WriteCodeScreen(app.home.path, name, issued.code), written)


def _installed(side: str) -> str:
    return f'Ensure that the app is [b]installed[/b] on the destination side "{side}"'


def _accept(side: str) -> str:
    return (
        f'On the "{side}" side, you (or their application administrator) need to '
        "[b]Accept the Invitation[/b]."
    )


class InvitationScreen(WizardStep, CodeScreen):
    CSS_PATH = ["wizard_step.tcss", "invitation.tcss"]
    STEP = Step.INVITATION
    AUTO_FOCUS = "#code"
    BINDINGS: ClassVar[list[BindingType]] = [
        *code_bindings(
            "invitation",
            "Back to Connections",
            escape=Binding(
                "escape",
                "leave",
                "Leave",
                show=False,
                id="invitation.leave",
                tooltip="Leave the wizard: keep the pending connection or discard it (asks)",
            ),
        ),
        Binding(
            "n",
            "app.start_node",
            "Start node",
            show=False,
            id="invitation.start_node",
            tooltip="Start this home's node in the background (exalate-tui node start)",
        ),
        Binding(
            "N",
            "app.stop_node",
            "Stop node",
            show=False,
            id="invitation.stop_node",
            tooltip="Stop this home's node (asks first; exalate-tui node stop)",
        ),
    ]

    @dataclass
    class Stored(Message):
        """The save worker wrote the connection (`ok`), or its name was taken meanwhile."""

        ok: bool

    @dataclass
    class NotStored(Message):
        """The save worker could not write the connection."""

        reason: str

    def __init__(self, wizard: InitiateWizard) -> None:
        super().__init__(wizard)
        self._saving = False
        self._saved = False
        # Done was pressed: leave once the connection is saved.
        self._leaving = False
        # Discard was chosen: delete the connection once it is saved.
        self._discarding = False

    @property
    def issued(self) -> Issued:
        assert self.wizard.issued is not None  # this step comes after the code is issued
        return self.wizard.issued

    def compose_body(self) -> Iterator[Widget]:
        side = self.wizard.destination_label
        yield Static(_installed(side), id="installed")
        yield Static(_accept(side), id="accept")
        yield Static("Use the following invitation code:", id="use")
        yield from compose_code(self.issued)
        # What happens next needs this instance's node (the partner calls it, or it polls).
        bar = NodeBar(getattr(self.app, "now", time.time))
        bar.need = node_need([self.issued.connection])
        yield bar

    def compose_buttons(self) -> Iterator[Widget]:
        yield from compose_code_buttons()

    @on(Button.Pressed, "#done")
    def action_done(self) -> None:
        """Done: back to Connections, once the connection is saved (pending)."""
        self._leaving = True
        if self._saved:
            self.post_message(self.Closed())
        else:
            self._start_saving()

    def action_leave(self) -> None:
        """Escape: the connection is (being) saved as Pending; ask whether to keep it."""
        from .confirm import LeavePendingScreen

        def answered(discard: bool | None) -> None:
            if discard is None:
                return  # changed their mind: stay on the code
            if not discard:
                self.action_done()
                return
            self._discarding = True
            if self._saved:
                self._discard()
            else:
                self._start_saving()

        expires = datetime.fromtimestamp(self.issued.invitation.exp, UTC)
        self.app.push_screen(
            LeavePendingScreen(self.issued.connection, expires.strftime("%Y-%m-%d %H:%M UTC")),
            answered,
        )

    @work(exclusive=True, exit_on_error=False, group="save")
    async def _discard(self) -> None:
        """Delete the pending connection (`actions.delete`: nobody to tell yet)."""
        from exalate_tui.lifecycle import actions

        state = getattr(self.app, "state", None)
        home = getattr(self.app, "home", None)
        assert isinstance(home, Home)  # the console's app holds the home
        connection = self.issued.connection
        try:
            if state is None:
                raise OSError(getattr(self.app, "state_problem", "no state file"))
            await actions.delete(home, state, connection.id)
        except (ExalateError, OSError) as error:
            self.post_message(self.NotDiscarded(str(error)))
            return
        self.post_message(self.Discarded())

    class Discarded(Message):
        """The pending connection was deleted: its code no longer works."""

    class NotDiscarded(Message):
        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    @on(Discarded)
    def _discarded(self) -> None:
        self.notify(
            f"Discarded {self.issued.connection.name}: its invitation code no longer works.",
            title="Invitation code",
            markup=False,
        )
        self.post_message(self.Closed())

    @on(NotDiscarded)
    def _not_discarded(self, event: NotDiscarded) -> None:
        self._discarding = False
        self.notify(
            f"Could not discard the connection, it stays Pending: {event.reason}",
            severity="error",
            timeout=10,
            markup=False,
        )

    @on(events.ScreenResume)
    def _shown(self) -> None:
        # The code shows at once; the save (an fsync) starts once it is drawn.
        self.call_after_refresh(self._start_saving)

    def _start_saving(self) -> None:
        if self._saving or self.wizard.issued is None:
            return
        self._saving = True
        home = getattr(self.app, "home", None)
        assert isinstance(home, Home)  # the console's app holds the home
        self._save(home, self.issued.connection, self.wizard.new_instance)

    @work(thread=True, exclusive=True, exit_on_error=False, group="save")
    def _save(self, home: Home, connection: Connection, instance: Instance | None) -> None:
        """Write the connection (`save_issued`); the outcome comes back by message."""
        try:
            ok = save_issued(home, connection, instance)
        except (OSError, StoreError) as error:
            self.post_message(self.NotStored(str(error)))
            return
        self.post_message(self.Stored(ok))

    @on(Stored)
    def _stored(self, event: Stored) -> None:
        if self.wizard.saved(event.ok):
            self._saved = True
            if self._discarding:
                self._discard()
            elif self._leaving:
                self.post_message(self.Closed())
        else:
            self.post_message(self.Moved())  # back to the information step, saying why

    @on(NotStored)
    def _not_stored(self, event: NotStored) -> None:
        """The code is void: back to the information step, with the reason in a toast."""
        self.wizard.not_saved()
        self.notify(f"Could not save the connection: {event.reason}", severity="error", timeout=15)
        self.post_message(self.Moved())
