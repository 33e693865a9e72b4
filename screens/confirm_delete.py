"""Asks before a connection is deleted; dismisses with True to delete."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static

from exalate_tui.domain.models import Connection

from .widgets import ButtonBar


class ConfirmDeleteScreen(ModalScreen[bool]):
    CSS_PATH = "confirm_delete.tcss"
    AUTO_FOCUS = "#cancel"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Delete", id="confirm_delete.yes", tooltip="Delete it"),
        Binding("n,escape", "answer(False)", "Keep", id="confirm_delete.no", tooltip="Keep it"),
    ]

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self.connection = connection

    def compose(self) -> ComposeResult:
        connection = self.connection
        partner = connection.remote_name or "the partner"
        with Vertical(id="dialog"):
            yield Label(Text(f"Delete {connection.name}?"), id="question")
            yield Static(
                Text(
                    f"Its messages and state here are removed, and {partner} is told "
                    "(now, or when it next connects). This cannot be undone."
                ),
                id="consequence",
            )
            with ButtonBar(id="answers"):
                yield Button("Delete (y)", id="yes", variant="error", compact=True)
                yield Button("Keep (n)", id="cancel", compact=True)
        yield Footer(show_command_palette=False)

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
