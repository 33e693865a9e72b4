"""The last step: the invitation code, to copy, write to a file, and send to the partner.

The code is issued when the admin leaves the information step; this screen
shows it at once and saves the connection (pending) in a worker as soon as it
is drawn; Done waits for that. The code's widgets, keys and file writing are
shared with the regenerated-code screen (`CODE_BINDINGS`, `compose_code`,
`write_code`).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from textual import events, on, work
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Static
from textual.worker import Worker

from exalate_tui.flows.wizard import InitiateWizard, Issued, Step
from exalate_tui.home.store import StoreError

from .widgets import CodeBox
from .wizard_step import WizardStep

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def write_code_file(directory: Path, name: str, code: str) -> Path:
    """Write `<directory>/<name>.invitation.txt`, readable by its owner only."""
    # A connection name may hold '/', spaces or a leading dot; the file name may not.
    stem = _UNSAFE.sub("_", name).strip("._") or "connection"
    path = directory / f"{stem}.invitation.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)  # an older file may have been readable by others
        file.write(code + "\n")
    return path


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
        tooltip="Write the code to <connection name>.invitation.txt here (0600)",
    ),
]


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


def write_code(screen: Screen[None], issued: Issued) -> None:
    """Write the code to a file in the working directory; the toast says where."""
    try:
        path = write_code_file(Path.cwd(), issued.connection.name, issued.code)
    except OSError as error:
        screen.notify(f"Could not write the code: {error}", severity="error", timeout=10)
        return
    screen.notify(f"Wrote the invitation code to {path}", title="Invitation code", timeout=10)


def _installed(side: str) -> str:
    return f'Ensure that the app is [b]installed[/b] on the destination side "{side}"'


def _accept(side: str) -> str:
    return (
        f'On the "{side}" side, you (or their application administrator) need to '
        "[b]Accept the Invitation[/b]."
    )


class InvitationScreen(WizardStep):
    CSS_PATH = ["wizard_step.tcss", "invitation.tcss"]
    STEP = Step.INVITATION
    AUTO_FOCUS = "#code"
    ENTER_ACTION = "done"
    BINDINGS: ClassVar[list[BindingType]] = [
        *CODE_BINDINGS,
        Binding(
            "enter",
            "submit",
            "Done",
            priority=True,
            id="invitation.done",
            tooltip="Back to Connections",
        ),
        Binding("escape", "done", "Done", show=False, id="invitation.close"),
    ]

    def __init__(self, wizard: InitiateWizard) -> None:
        super().__init__(wizard)
        self._saving: Worker[object] | None = None
        self._saved = False

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

    def compose_buttons(self) -> Iterator[Widget]:
        yield from compose_code_buttons()
        yield Button("Done", id="done", variant="success", compact=True)

    @on(Button.Pressed, "#copy")
    async def _copy_pressed(self) -> None:
        await self.run_action("app.copy_code")

    @on(Button.Pressed, "#write")
    def action_write_file(self) -> None:
        write_code(self, self.issued)

    @on(Button.Pressed, "#done")
    async def action_done(self) -> None:
        """Done: back to Connections, once the connection is saved (pending)."""
        await self._start_saving().wait()
        if self._saved:
            self.post_message(self.Closed())

    @on(events.ScreenResume)
    def _shown(self) -> None:
        # The code shows at once; the save (an fsync) starts once it is drawn.
        self.call_after_refresh(self._start_saving)

    def _start_saving(self) -> Worker[object]:
        saving = self._saving
        if saving is None:
            saving = self._saving = self._save()
        return saving

    @work(exclusive=True, exit_on_error=False, group="save")
    async def _save(self) -> None:
        """Write the connection (`InitiateWizard.save`) in a thread; a failure goes back a step."""
        wizard = self.wizard
        try:
            ok = await asyncio.to_thread(wizard.save)
        except (OSError, StoreError) as error:
            wizard.not_saved()
            self.notify(f"Could not save the connection: {error}", severity="error", timeout=15)
            self.post_message(self.Moved())
            return
        if wizard.saved(ok):
            self._saved = True
        else:
            self.post_message(self.Moved())
