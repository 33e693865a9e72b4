"""Step 1, Destination instance URL: a URL, or "I don't have a URL" for a private partner.

Next with a URL verifies it first (`GET {url}/api/v1/info`, a few seconds'
timeout) in a worker; the screen stays responsive and shows "Checking…",
then ✓ with the remote node's name and version (Next again goes on) or the
reason inline (Next again retries; the URL can be fixed, or ^n chosen).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol, cast

from textual import on, work
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static

from exalate_tui.flows.initiate import Step
from exalate_tui.protocol.api import UrlCheck

from .widgets import FieldRow
from .wizard_step import WizardStep


class Verifies(Protocol):
    """What this screen needs of the app: a check of a destination URL (never raises)."""

    verify: Callable[[str], Awaitable[UrlCheck]]


class DestinationScreen(WizardStep):
    CSS_PATH = ["wizard_step.tcss", "destination.tcss"]
    STEP = Step.DESTINATION
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

    @dataclass
    class Checked(Message):
        """A verification finished (its URL may no longer be the one typed)."""

        check: UrlCheck

    def compose_body(self) -> Iterator[Widget]:
        yield FieldRow(
            "Destination instance URL",
            Input(
                self.wizard.dest_url,
                placeholder="https://example.exalate.net",
                id="dest_url",
            ),
        )
        yield Label("", id="url-check")
        yield Static(
            "If the destination instance is in a private network, choose "
            "[b]I don't have a URL[/b] (ctrl+n): it will call this instance instead.",
            classes="hint",
        )

    def compose_buttons(self) -> Iterator[Widget]:
        yield Button("I don't have a URL", id="no-url", compact=True)
        yield Button("Next >", id="next", variant="primary", compact=True)

    def on_mount(self) -> None:
        self._show_check()

    @on(Button.Pressed, "#no-url")
    def action_no_url(self) -> None:
        self.workers.cancel_group(self, "verify")
        self.wizard.choose_no_url()
        self.post_message(self.Moved())

    def after_change(self, field: str) -> None:
        # A new URL drops the old result (the wizard forgets it); a check running for the
        # old URL still finishes, and the wizard ignores its result.
        self._show_check()

    def action_next(self) -> None:
        if not self.wizard.needs_check:
            super().action_next()
            return
        url = self.wizard.dest_url
        self.wizard.errors.pop("dest_url", None)
        self.show_errors()
        label = self.query_one("#url-check", Label)
        label.display = True
        label.update(f"Checking {escape(url)} …")
        self._verify(url)

    @work(exclusive=True, exit_on_error=False, group="verify")
    async def _verify(self, url: str) -> None:
        """Ask the node at `url` who it is; the result goes to the wizard by message."""
        check = await cast(Verifies, self.app).verify(url)
        self.post_message(self.Checked(check))

    @on(Checked)
    def _checked(self, event: Checked) -> None:
        self.wizard.record_check(event.check)
        self.show_errors()
        self._show_check()
        if self.wizard.url_check is not None and self.wizard.url_check.ok:
            self.query_one("#next", Button).focus()

    def _show_check(self) -> None:
        """✓ with who answered, or the retry hint after a failure; empty otherwise."""
        label = self.query_one("#url-check", Label)
        check = self.wizard.url_check
        label.set_class(check is not None and check.ok, "verified")
        label.display = check is not None
        if check is None:
            label.update("")
        elif check.ok:
            name = escape(check.remote_name or "unnamed")
            label.update(
                f"✓ {escape(check.url)} is exalate-tui {escape(check.version or '?')}, "
                f'instance "{name}". Enter goes on.'
            )
        else:
            label.update("Enter checks again; or fix the URL, or ^n if you have none.")
