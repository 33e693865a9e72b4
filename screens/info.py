"""Connection information: the two short names, the connection name, a description."""

from __future__ import annotations

from collections.abc import Iterator

from textual.widget import Widget
from textual.widgets import Input

from exalate_tui.flows.initiate import Step

from .widgets import FieldRow
from .wizard_step import WizardStep

# The input's id, its label, placeholder, and whether it is required; the wizard's
# attribute of the same name as the id holds its value.
_FIELDS = (
    ("local_name", "Local instance short name", "A short name for your instance", True),
    (
        "remote_name",
        "Remote instance short name",
        "A short name for the destination instance",
        True,
    ),
    ("name", "Connection name", "Name of the connection", True),
    ("description", "Description", "Description of the connection", False),
)


class InfoScreen(WizardStep):
    CSS_PATH = ["wizard_step.tcss", "info.tcss"]
    STEP = Step.INFO
    HEADING = "Connection information"

    def compose_body(self) -> Iterator[Widget]:
        for field, label, placeholder, required in _FIELDS:
            value = getattr(self.wizard, field)
            yield FieldRow(
                label, Input(value, placeholder=placeholder, id=field), required=required
            )

    def after_change(self, field: str) -> None:
        # The wizard suggests Local_to_Remote until the admin edits the name.
        if field in ("local_name", "remote_name"):
            name = self.query_one("#name", Input)
            if name.value != self.wizard.name:
                with name.prevent(Input.Changed):
                    name.value = self.wizard.name
