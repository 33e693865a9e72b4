"""The frame every Initiate-connection step shares: title, "Step N: name", fields, keys.

A step screen renders `InitiateWizard` state and forwards input to it; it
never decides anything itself. It tells the app to show the next screen with
`WizardStep.Moved` and to leave the wizard with `WizardStep.Closed`; the app
then makes a new screen for the wizard's current step (`App.switch_screen`),
composed from that state, so a step always shows what the wizard holds now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult, CSSPathType
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Footer, Input, Label

from exalate_tui.flows.initiate import InitiateWizard, Step

from .widgets import ButtonBar, FieldRow, StepTitle, SubmitScreen


class WizardStep(SubmitScreen):
    """Base of the step screens; subclasses set STEP and HEADING and compose their body."""

    CSS_PATH: ClassVar[CSSPathType | None] = "wizard_step.tcss"
    AUTO_FOCUS = "Input, Button#next"
    STEP: ClassVar[Step]
    HEADING: ClassVar[str] = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "back",
            "Back",
            id="wizard.back",
            tooltip="Go back one step; everything entered is kept",
        ),
        # Priority, so Enter means Next even inside an Input; on a button it presses it.
        Binding(
            "enter",
            "submit",
            "Next",
            priority=True,
            id="wizard.next",
            tooltip="Check this step and go on",
        ),
    ]

    class Moved(Message):
        """The wizard changed step: the app shows the screen for its current step."""

    class Closed(Message):
        """Leave the wizard for the Connections tab."""

    def __init__(self, wizard: InitiateWizard) -> None:
        super().__init__()
        self.wizard = wizard
        self.resumed_once = False

    @property
    def setters(self) -> dict[str, Callable[[str], str | None]]:
        """Which wizard method takes each Input's value (the Input's id is the field)."""
        wizard = self.wizard
        return {
            "dest_url": wizard.set_dest_url,
            "public_url": wizard.set_public_url,
            "local_name": wizard.set_local_name,
            "remote_name": wizard.set_remote_name,
            "name": wizard.set_name,
            "description": wizard.set_description,
        }

    def count(self) -> str:
        return self.wizard.step_title(self.STEP)

    def compose(self) -> ComposeResult:
        yield StepTitle("Initiate connection", self.count())
        with VerticalScroll(id="wizard-body"):
            if self.HEADING:
                yield Label(self.HEADING, classes="step-heading")
            yield from self.compose_body()
        with ButtonBar(id="wizard-buttons"):
            yield from self.compose_buttons()
        yield Footer(show_command_palette=False)

    def compose_body(self) -> Iterator[Widget]:
        return iter(())

    def compose_buttons(self) -> Iterator[Widget]:
        yield Button("< Previous", id="previous", compact=True)
        yield Button("Next >", id="next", variant="primary", compact=True)

    # -- input --------------------------------------------------------------

    @on(Input.Changed)
    def _forward(self, event: Input.Changed) -> None:
        setter = self.setters.get(event.input.id or "")
        if setter is not None:
            setter(event.value)
            self.after_change(event.input.id or "")
            self.show_errors()

    def after_change(self, field: str) -> None:
        """Hook: a field changed and the wizard has taken it."""

    @on(Button.Pressed, "#next")
    def _next_pressed(self) -> None:
        self.action_next()

    @on(Button.Pressed, "#previous")
    def _previous_pressed(self) -> None:
        self.action_back()

    def show_errors(self) -> None:
        """Each error Label shows the wizard's current problem with its field."""
        for label in self.query(".field-error").results(Label):
            field = (label.id or "").removeprefix("error-")
            # Text: a reason may quote what a remote node said, never to be read as markup.
            label.update(Text(self.wizard.errors.get(field, "")))

    # -- moving -------------------------------------------------------------

    def action_next(self) -> None:
        # The code is saved by the invitation step, once it is on screen.
        if self.wizard.next():
            self.post_message(self.Moved())
            return
        self.show_errors()
        self.focus_error()

    def focus_error(self) -> None:
        """Focus the first field this step has a problem with."""
        for field in self.wizard.FIELDS[self.wizard.step]:
            if field in self.wizard.errors:
                for widget in self.query(f"#{field}"):
                    widget.focus()
                    return

    def on_mount(self) -> None:
        # The first required field still empty, not the first field: on the information
        # step the local name comes filled in, and a first keystroke there would replace it.
        for row in self.query(FieldRow):
            if row.required and isinstance(row.field, Input) and not row.field.value:
                row.field.focus()
                return

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        # Handlers run subclass first: this comes before Screen's own, which restyles
        # every widget. Each step is a new screen whose widgets were styled as they
        # mounted, a moment ago; the first time, restyling them all again changes nothing.
        if not self.resumed_once:
            self.resumed_once = True
            event.refresh_styles = False
        # Steps open with no errors, but for one: the information step, when the
        # connection's name was taken while its code was being saved.
        if self.wizard.errors and self.wizard.step is self.STEP:
            self.show_errors()
            self.focus_error()

    def action_back(self) -> None:
        if self.wizard.back():
            self.post_message(self.Moved())
        else:
            self.post_message(self.Closed())
