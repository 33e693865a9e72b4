"""Step 1, Destination instance URL: a URL, or "I don't have a URL" for a private partner."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import Button, Input, Static

from .wizard_step import WizardStep, field_row


class DestinationScreen(WizardStep):
    CSS_PATH = ["wizard_step.tcss", "destination.tcss"]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "back",
            "Close",
            id="wizard.close",
            tooltip="Close the wizard; nothing is saved",
        ),
        Binding(
            "ctrl+n",
            "no_url",
            "I don't have a URL",
            key_display="^n",
            id="wizard.no_url",
            tooltip="The destination is in a private network: it will call this instance",
        ),
    ]

    def compose_body(self) -> Iterator[Widget]:
        yield field_row(
            "Destination instance URL",
            Input(
                self.wizard.dest_url,
                placeholder="https://example.exalate.net",
                id="dest_url",
            ),
        )
        yield Static(
            "If the destination instance is in a private network, choose "
            "[b]I don't have a URL[/b] (ctrl+n): it will call this instance instead.",
            classes="hint",
        )

    def compose_buttons(self) -> Iterator[Widget]:
        yield Button("I don't have a URL", id="no-url", compact=True)
        yield Button("Next >", id="next", variant="primary", compact=True)

    @on(Button.Pressed, "#no-url")
    def action_no_url(self) -> None:
        self.wizard.choose_no_url()
        self.post_message(self.Moved())
