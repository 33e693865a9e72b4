"""Reference for the console: a minimal Textual app (Header, Input, 2 Buttons, Footer).

`python benchmarks/minimal_app.py` runs it (start-up's reference, benchmarks/startup.py);
`MinimalScreen` is the same widgets as a screen, which the wizard benchmark
(benchmarks/wizard.py) switches to on every Next, as the console makes each step's screen.
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input


def minimal_widgets() -> ComposeResult:
    yield Header()
    yield Input(placeholder="https://example.exalate.net")
    yield Button("Next")
    yield Button("Cancel")
    yield Footer()


class MinimalApp(App[None]):
    BINDINGS = [("ctrl+q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield from minimal_widgets()


class MinimalScreen(Screen[None]):
    def compose(self) -> ComposeResult:
        yield from minimal_widgets()


if __name__ == "__main__":
    MinimalApp().run()
