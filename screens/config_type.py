"""Choose the configuration type: Basic or Script, with the seed's bullets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label, RadioButton, RadioSet

from exalate_tui.models import Mode

from .wizard_step import WizardStep

BULLETS = {
    Mode.BASIC: (
        "Automatic configuration of basic fields",
        "Sync rules cannot be edited",
        "Only issues can be synced",
        "Recommended for use cases of basic complexity",
    ),
    Mode.SCRIPT: (
        "Groovy-based scripting",
        "Configure each side of the connection separately",
        "Recommended for use cases of basic to advanced complexity",
    ),
}


class ModeChoice(RadioSet):
    """Arrows move, space or enter choose; enter on the chosen one means Next."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_button", "Choose", id="wizard.choose", tooltip="Choose this type"),
        Binding(
            "enter",
            "choose_or_next",
            "Choose / Next",
            id="wizard.choose_next",
            tooltip="Choose this type; on the chosen one, go on",
        ),
    ]

    class Confirmed(Message):
        """Enter on the option that is already chosen."""

    def action_choose_or_next(self) -> None:
        if self._selected is not None and self._selected == self.pressed_index:
            self.post_message(self.Confirmed())
        else:
            self.action_toggle_button()


class ConfigTypeScreen(WizardStep):
    CSS_PATH = ["wizard_step.tcss", "config_type.tcss"]
    HEADING = "Choose the configuration type"

    def compose_body(self) -> Iterator[Widget]:
        with ModeChoice(id="mode"):
            for mode in Mode:
                label = mode.value.capitalize() + "".join(
                    f"\n  - {line}" for line in BULLETS[mode]
                )
                yield RadioButton(label, value=self.wizard.mode is mode, id=f"mode-{mode.value}")
        yield Label("", id="error-mode", classes="field-error")

    @on(RadioSet.Changed)
    def _chosen(self, event: RadioSet.Changed) -> None:
        self.wizard.set_mode((event.pressed.id or "").removeprefix("mode-"))
        self.show_errors()

    @on(ModeChoice.Confirmed)
    def _confirmed(self) -> None:
        self.action_next()
