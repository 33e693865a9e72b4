"""Reference for console start-up: a minimal Textual app (Header, Input, 2 Buttons, Footer)."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Button, Footer, Header, Input


class MinimalApp(App[None]):
    BINDINGS = [("ctrl+q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="https://example.exalate.net")
        yield Button("Next")
        yield Button("Cancel")
        yield Footer()


if __name__ == "__main__":
    MinimalApp().run()
