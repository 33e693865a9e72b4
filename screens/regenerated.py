"""A regenerated invitation code for a Pending connection: copy it, write it, send it.

Shows the code with the same widgets and keys as the wizard's invitation step.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.widgets import Button, Footer, Static

from exalate_tui.flows.initiate import Issued

from .invitation import CodeScreen, code_bindings, compose_code, compose_code_buttons
from .widgets import ButtonBar, TitleBar


class RegeneratedScreen(CodeScreen):
    CSS_PATH = "regenerated.tcss"
    AUTO_FOCUS = "#code"
    BINDINGS: ClassVar[list[BindingType]] = code_bindings("regenerated", "Back to the connection")

    def __init__(self, issued: Issued) -> None:
        super().__init__()
        self._issued = issued

    @property
    def issued(self) -> Issued:
        return self._issued

    def compose(self) -> ComposeResult:
        connection = self.issued.connection
        partner = escape(connection.remote_name or "your partner")
        yield TitleBar(f"New invitation code · {connection.name}", id="title", markup=False)
        with VerticalScroll(id="body"):
            yield Static(
                "The previous code no longer works. Send this one to "
                f"[b]{partner}[/b], who accepts it on their side:",
                id="explain",
            )
            yield from compose_code(self.issued)
        with ButtonBar(id="buttons"):
            yield from compose_code_buttons()
        yield Footer(show_command_palette=False)

    @on(Button.Pressed, "#done")
    def action_done(self) -> None:
        self.dismiss()
