"""Connection information: the two short names, the connection name, a description."""

from __future__ import annotations

from collections.abc import Iterator

from textual.widget import Widget
from textual.widgets import Input

from exalate_tui.flows.initiate import Step

from .widgets import FieldRow
from .wizard_step import WizardStep


class InfoScreen(WizardStep):
    CSS_PATH = ["wizard_step.tcss", "info.tcss"]
    STEP = Step.INFO
    HEADING = "Connection information"

    def compose_body(self) -> Iterator[Widget]:
        wizard = self.wizard
        yield FieldRow(
            "Local instance short name",
            Input(wizard.local_name, placeholder="A short name for your instance", id="local_name"),
            required=True,
        )
        yield FieldRow(
            "Remote instance short name",
            Input(
                wizard.remote_name,
                placeholder="A short name for the destination instance",
                id="remote_name",
            ),
            required=True,
        )
        yield FieldRow(
            "Connection name",
            Input(wizard.name, placeholder="Name of the connection", id="name"),
            required=True,
        )
        yield FieldRow(
            "Description",
            Input(
                wizard.description, placeholder="Description of the connection", id="description"
            ),
        )

    def after_change(self, field: str) -> None:
        # The wizard suggests Local_to_Remote until the admin edits the name.
        if field in ("local_name", "remote_name"):
            name = self.query_one("#name", Input)
            if name.value != self.wizard.name:
                with name.prevent(Input.Changed):
                    name.value = self.wizard.name
