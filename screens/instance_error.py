"""instance.toml does not parse: say where and what to do; never overwrite it."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Static

from exalate_tui.home.store import StoreError

from .widgets import TitleBar


class InstanceErrorScreen(Screen[None]):
    CSS_PATH = "instance_error.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "r",
            "app.reload_home",
            "Reload",
            id="instance_error.reload",
            tooltip="Read instance.toml again once you have fixed it",
        ),
    ]

    def __init__(self, error: StoreError) -> None:
        super().__init__()
        self.error = error

    def compose(self) -> ComposeResult:
        error = self.error
        where = f"{error.path}, line {error.line}" if error.line else str(error.path)
        yield TitleBar("This instance's settings cannot be read", id="title")
        with VerticalScroll(id="body"):
            yield Static(f"[b]File:[/b] {escape(where)}", id="where")
            yield Static(f"[b]Problem:[/b] {escape(error.message)}", id="problem")
            yield Static(
                "exalate-tui does not touch this file, so nothing in it is lost.\n\n"
                "What to do: open it in an editor and fix that line, or move it away to "
                "start afresh (you will be asked for the short name again). Then press "
                "[b]r[/b] to read it again.",
                id="todo",
            )
        yield Footer(show_command_palette=False)
