"""The public URL step: a private partner will call this instance, so it needs its URL.

Shown only when `wizard.needs_public_url`; the URL is saved to instance.toml
when the invitation is issued, so the admin never leaves the flow to set it.
"""

from __future__ import annotations

from collections.abc import Iterator

from textual.widget import Widget
from textual.widgets import Input, Static

from exalate_tui.flows.initiate import Step

from .widgets import FieldRow
from .wizard_step import WizardStep


class PublicUrlScreen(WizardStep):
    CSS_PATH = ["wizard_step.tcss", "public_url.tcss"]
    STEP = Step.PUBLIC_URL
    HEADING = "This instance's public URL"

    def compose_body(self) -> Iterator[Widget]:
        yield Static(
            "The destination has no URL, so it will call this instance: every request "
            "of this connection goes from the private side to this one. The invitation "
            "must therefore carry this instance's public URL, the address where your "
            "partner's instance reaches it.",
            id="explain",
        )
        yield FieldRow(
            "Public URL",
            Input(
                self.wizard.public_url, placeholder="https://example.exalate.net", id="public_url"
            ),
            required=True,
        )
        yield Static("It is saved in instance.toml with the connection.", classes="hint")
