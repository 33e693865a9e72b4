"""Where `w` writes an invitation code: a path the admin sees and can change.

It starts as `<home>/invitations/<connection name>.invitation.txt` (the folder made
0700 on first use), never the working directory: under `make run` that is a git
checkout, which would offer the secret for commit. A relative path is refused for
the same reason; a folder takes the default file name; a file already there is
replaced only when Write is pressed again (the default file, which holds an earlier
code of the same connection, without asking). The file is written 0600 in a thread,
and an error keeps the dialog open, saying what to change.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static

from .widgets import ButtonBar

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def code_file_name(name: str) -> str:
    """`<name>.invitation.txt`: a connection name may hold '/', spaces or a leading dot;
    a file name may not."""
    stem = _UNSAFE.sub("_", name).strip("._") or "connection"
    return f"{stem}.invitation.txt"


def default_code_path(home: Path, name: str) -> Path:
    return home / "invitations" / code_file_name(name)


def shown(path: Path) -> str:
    """A path as the admin types it: under their home folder, with `~`."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except ValueError:
        return str(path)


def write_code_file(path: Path, code: str) -> None:
    """Write the code to `path`, readable by its owner only; never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)  # an older file may have been readable by others
        file.write(code + "\n")


class PathRefused(ValueError):
    """The path typed cannot take the code; the message says what to change."""


def target(text: str, name: str) -> Path:
    """The file the text names: `~` expanded, a folder given the default file name."""
    text = text.strip()
    if not text:
        raise PathRefused("Type where to write the code, e.g. ~/snow_to_jira.invitation.txt.")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise PathRefused(
            "Give a full path, starting with / or ~: a relative one would land in "
            "whatever folder the console was started from."
        )
    if path.is_dir():
        path = path / code_file_name(name)
    if not path.parent.is_dir():
        raise PathRefused(f"There is no folder {path.parent}: create it, or choose another.")
    return path


class PathField(Input):
    """The path: Enter writes, and the Footer says so (Input's own Enter is hidden)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "Write", id="write_code.write", tooltip="Write the file"),
    ]


class WriteCodeScreen(ModalScreen[Path | None]):
    """Asks where to write the code and writes it; dismisses with the path written, or
    None (Escape)."""

    CSS_PATH = "write_code.tcss"
    AUTO_FOCUS = "#path"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="write_code.cancel", tooltip="Write nothing"),
    ]

    class Written(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    class Exists(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    class Failed(Message):
        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    def __init__(self, home: Path, name: str, code: str) -> None:
        super().__init__()
        # The console's home may have been given relative (`--home DIR`); what is offered
        # must not depend on the working directory.
        self.home = home.absolute()
        self.connection_name = name
        self.code = code
        # The file Write was pressed for while it existed: pressed again, it is replaced.
        self._replace: Path | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Write the invitation code to a file", id="question")
            yield Static(
                "Readable by you only (0600). A folder takes the file name shown.",
                id="consequence",
            )
            yield PathField(shown(default_code_path(self.home, self.connection_name)), id="path")
            yield Static("", id="problem")
            with ButtonBar(id="answers"):
                yield Button("Write", id="write", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer(show_command_palette=False)

    def _say(self, problem: str) -> None:
        self.query_one("#problem", Static).update(Text(problem))

    @on(Input.Changed, "#path")
    def _edited(self) -> None:
        self._replace = None
        self._say("")
        self.query_one("#write", Button).label = "Write"

    @on(Input.Submitted, "#path")
    @on(Button.Pressed, "#write")
    def action_write(self) -> None:
        text = self.query_one("#path", Input).value
        self._write(text, self._replace)

    @work(thread=True, exclusive=True, exit_on_error=False, group="write-code")
    def _write(self, text: str, replace: Path | None) -> None:
        """Check the path and write (the checks touch the disk: in a thread)."""
        try:
            default = default_code_path(self.home, self.connection_name)
            if Path(text.strip()).expanduser() in (default, default.parent):
                default.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                default.parent.chmod(0o700)
            path = target(text, self.connection_name)
            if path.exists() and path != replace and path != default:
                self.post_message(self.Exists(path))
                return
            write_code_file(path, self.code)
        except PathRefused as refused:
            self.post_message(self.Failed(str(refused)))
        except OSError as error:
            reason = error.strerror or str(error)
            self.post_message(self.Failed(f"Could not write {text.strip()}: {reason}."))
        else:
            self.post_message(self.Written(path))

    @on(Exists)
    def _exists(self, event: Exists) -> None:
        self._replace = event.path
        self._say(f"{event.path} exists: press Replace to write over it.")
        self.query_one("#write", Button).label = "Replace"

    @on(Written)
    def _written(self, event: Written) -> None:
        self.dismiss(event.path)

    @on(Failed)
    def _failed(self, event: Failed) -> None:
        self._say(event.reason)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
