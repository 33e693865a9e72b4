"""Pick one of several connections (Exalate over which? Unexalate from which?).

Dismisses with the chosen connection's id, or None on Escape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, OptionList
from textual.widgets.option_list import Option


class Choices(OptionList):
    """The connections; Enter picks one, and the Footer says so."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Pick", id="pick.pick", tooltip="Take this connection"),
    ]


class PickConnectionScreen(ModalScreen[str | None]):
    CSS_PATH = "pick_connection.tcss"
    AUTO_FOCUS = "#choices"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="pick.cancel", tooltip="Do nothing"),
    ]

    def __init__(self, question: str, choices: Sequence[tuple[str, str]]) -> None:
        """`choices`: (connection id, what to show), in the order shown."""
        super().__init__()
        self.question = question
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.question), id="question")
            # Text prompts: a connection's name is never markup.
            yield Choices(
                *[Option(Text(label), id=cid) for cid, label in self.choices], id="choices"
            )
        yield Footer(show_command_palette=False)

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
