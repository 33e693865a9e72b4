"""Choose the configuration type: Basic or Script, with the seed's bullets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label, Static

from exalate_tui.domain.models import Mode
from exalate_tui.flows.initiate import Step

from .wizard_step import WizardStep

BULLETS = {
    Mode.BASIC: (
        "Automatic configuration of basic fields",
        "Sync rules cannot be edited",
        "Only issues can be synced",
        "Recommended for use cases of basic complexity",
    ),
    Mode.SCRIPT: (
        "Python-based sync rules",
        "Configure each side of the connection separately",
        "Recommended for use cases of basic to advanced complexity",
    ),
}
MODES = list(BULLETS)


class ModeChoice(Widget, can_focus=True):
    """Both types with their bullets; arrows and space choose (a radio group)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,left", "move(-1)", "Previous type", show=False),
        Binding("down,right", "move(1)", "Next type", show=False),
        Binding("space", "choose", "Choose", id="wizard.choose", tooltip="Choose this type"),
    ]

    @dataclass
    class Chosen(Message):
        mode: Mode

    def __init__(self, chosen: Mode | None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.chosen = chosen
        self.highlighted = MODES.index(chosen) if chosen else 0

    def render(self) -> Text:
        text = Text()
        for index, mode in enumerate(MODES):
            mark = "(•)" if mode is self.chosen else "( )"
            title = Text(f" {mark} {mode.value.capitalize()} ", style="bold")
            if index == self.highlighted and self.has_focus:
                title.stylize("reverse")
            text.append_text(title)
            for line in BULLETS[mode]:
                text.append(f"\n       - {line}")
            if index < len(MODES) - 1:
                text.append("\n\n")
        return text

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def action_move(self, step: int) -> None:
        self.highlighted = (self.highlighted + step) % len(MODES)
        self.action_choose()

    def action_choose(self) -> None:
        self.chosen = MODES[self.highlighted]
        self.refresh()
        self.post_message(self.Chosen(self.chosen))


class ConfigTypeScreen(WizardStep):
    CSS_PATH = ["wizard_step.tcss", "config_type.tcss"]
    STEP = Step.CONFIG_TYPE
    AUTO_FOCUS = "#mode"
    HEADING = "Choose the configuration type"

    def compose_body(self) -> Iterator[Widget]:
        yield ModeChoice(self.wizard.mode, id="mode")
        yield Label("", id="error-mode", classes="field-error")
        yield Static("Arrows or space choose; enter goes on once a type is chosen.", classes="hint")

    @on(ModeChoice.Chosen)
    def _chosen(self, event: ModeChoice.Chosen) -> None:
        self.wizard.set_mode(event.mode)
        self.show_errors()
