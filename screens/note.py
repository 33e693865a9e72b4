"""The Note step (public-private only), in the seed's words."""

from __future__ import annotations

from collections.abc import Iterator

from textual.widget import Widget
from textual.widgets import Static

from exalate_tui.flows.initiate import Step

from .wizard_step import WizardStep

NOTE = (
    "As this is a Public-Private connection and you don't have admin access to the "
    "other side, you can continue to configure on your end and then send an invitation "
    "to your partner."
)


class NoteScreen(WizardStep):
    CSS_PATH = ["wizard_step.tcss", "note.tcss"]
    STEP = Step.NOTE
    HEADING = "Note"

    def compose_body(self) -> Iterator[Widget]:
        yield Static(NOTE, id="note")
        yield Static(
            "The destination is private: every HTTP request of this connection will "
            "come from it, to this instance.",
            classes="hint",
        )
