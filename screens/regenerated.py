"""A regenerated invitation code for a Pending connection: copy it, write it, send it.

Shows the code with the same widgets and keys as the wizard's invitation step.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.widgets import Button, Footer, Static

from exalate_tui.flows.initiate import Issued

from .invitation import CODE_BINDINGS, compose_code, compose_code_buttons, write_code
from .widgets import ButtonBar, SubmitScreen, TitleBar


class RegeneratedScreen(SubmitScreen):
    CSS_PATH = "regenerated.tcss"
    AUTO_FOCUS = "#code"
    ENTER_ACTION = "done"
    BINDINGS: ClassVar[list[BindingType]] = [
        *CODE_BINDINGS,
        Binding(
            "enter",
            "submit",
            "Done",
            priority=True,
            id="regenerated.done",
            tooltip="Back to the connection",
        ),
        Binding("escape", "done", "Done", show=False, id="regenerated.close"),
    ]

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
            yield Button("Done", id="done", variant="success", compact=True)
        yield Footer(show_command_palette=False)

    @on(Button.Pressed, "#copy")
    async def _copy_pressed(self) -> None:
        await self.run_action("app.copy_code")

    @on(Button.Pressed, "#write")
    def action_write_file(self) -> None:
        write_code(self, self.issued)

    @on(Button.Pressed, "#done")
    def action_done(self) -> None:
        self.dismiss()
