"""The frame every Initiate-connection step shares: title, "Step N of M", fields, keys.

A step screen renders `InitiateWizard` state and forwards input to it; it
never decides anything itself. It tells the app to show the next screen with
`WizardStep.Moved` and to leave the wizard with `WizardStep.Closed`; the app
gets that screen from `StepScreens`, which builds the screens of the steps
around the current one before they are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult, CSSPathType
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Footer, Input, Label

from exalate_tui.flows.initiate import InitiateWizard, Step


def field_row(label: str, field: Input, *, required: bool = False) -> Widget:
    """A label on the left, the input on the right, its error right under it."""
    assert field.id is not None
    return Horizontal(
        Label(f"{label}*" if required else label, classes="field-label"),
        Vertical(
            field,
            Label("", id=f"error-{field.id}", classes="field-error"),
            classes="field-box",
        ),
        classes="field",
    )


# How long a screen being made ready waits for its widgets to handle their messages.
SETTLE_TIMEOUT = 1.0


class WizardStep(Screen[None]):
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
        # `styled_as()` when StepScreens built this screen ahead, until it is first shown.
        self.built_ahead: tuple[str, bool] | None = None
        self._count = ""

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
        steps = self.wizard.steps
        if self.STEP not in steps:
            # Built ahead for one of the destination's two ways out: `sync` counts it.
            return ""
        return f"Step {steps.index(self.STEP) + 1} of {len(steps)}"

    def compose(self) -> ComposeResult:
        with Horizontal(id="wizard-title"):
            yield Label("Initiate connection", id="wizard-name")
            self._count = self.count()
            yield Label(self._count, id="wizard-count")
        with VerticalScroll(id="wizard-body"):
            if self.HEADING:
                yield Label(self.HEADING, classes="step-heading")
            yield from self.compose_body()
        with Horizontal(id="wizard-buttons"):
            yield from self.compose_buttons()
        yield Footer()

    def compose_body(self) -> Iterator[Widget]:
        return iter(())

    def sync(self) -> None:
        """Catch up with what earlier steps decided since this screen was composed.

        Only the step count can change: each step's own fields change only on its
        screen (the invitation step adds its code).
        """
        count = self.count()
        if count != self._count:  # an update would lay the screen out again
            self._count = count
            self.query_one("#wizard-count", Label).update(count)

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

    def action_submit(self) -> None:
        if isinstance(self.focused, Button):
            self.focused.press()
        else:
            self.action_next()

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

    def styled_as(self) -> tuple[str, bool]:
        """What the app's styles depend on beyond the stylesheet: the theme, the app's focus."""
        return (self.app.theme, self.app.app_focus)

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        # Handlers run subclass first: this comes before Screen's own, which restyles every
        # widget, lays the screen out and draws it. A screen built ahead was styled then:
        # unless the theme or the app's focus changed since, restyling would change nothing.
        if self.built_ahead is not None:
            event.refresh_styles = self.built_ahead != self.styled_as()
            self.built_ahead = None
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


class StepScreens:
    """The wizard's step screens, each made ready before Next or Back needs it.

    A new Screen costs Textual a compose, a stylesheet match for every widget, a
    first layout and a first drawing of every line, 25–70 ms at 80×24, between
    Next and the next step's first frame (benchmarks/README.md). So once a step
    is on screen, the screens of the steps one Next or one Back away
    (`InitiateWizard.nearby`) are composed, laid out and drawn once in the
    background, and moving is a switch to a screen whose lines are cached. A
    screen made ahead shows what a new one would: a step's fields change only
    on its own screen, and `WizardStep.sync` brings in the rest.

    Textual has no public calls for preparing a screen that is not shown, so
    this uses what `App.push_screen` and the screen's own refresh use (Textual
    is pinned exactly, in pyproject.toml).
    """

    def __init__(
        self,
        app: App[None],
        wizard: InitiateWizard,
        screen_class: Callable[[Step], type[WizardStep]],
    ) -> None:
        self._app = app
        self._wizard = wizard
        self._screen_class = screen_class
        self._ahead: dict[Step, WizardStep] = {}
        self._closed = False

    def take(self) -> WizardStep:
        """The screen for the wizard's current step; the steps around it are built next."""
        step = self._wizard.step
        screen = self._ahead.pop(step, None)
        if screen is None:
            screen = self._screen_class(step)(self._wizard)
        else:
            screen.sync()
        screen.call_after_refresh(self._build_ahead)
        return screen

    def _build_ahead(self) -> None:
        if self._closed:
            return
        for step in self._wizard.nearby:
            if step not in self._ahead:
                screen = self._screen_class(step)(self._wizard)
                # As push_screen does: its stylesheet, then compose and mount.
                self._app._load_screen_css(screen)
                self._app._register(self._app, screen)
                screen.built_ahead = screen.styled_as()
                self._ahead[step] = screen
                self._app.run_worker(
                    self._prepare(screen), group="wizard-ahead", exit_on_error=False
                )

    def _waiting(self, screen: WizardStep) -> bool:
        return not self._closed and self._ahead.get(screen.STEP) is screen

    async def _prepare(self, screen: WizardStep) -> None:
        """Lay `screen` out and draw it once, off screen, so its lines are cached."""
        await _settled(screen)  # composed and mounted
        for _ in range(3):
            if not self._waiting(screen):
                return
            # The screen lays itself out like this when resized; not being shown, it does
            # not draw. Its widgets handle their new sizes next, which may ask for another.
            screen._layout_required = False
            screen._refresh_layout(self._app.size)
            await _settled(screen)
            if not screen._layout_required:
                break
        if self._waiting(screen):
            # Every widget's lines are now cached at their size; nothing is written.
            screen._compositor.render_update(full=True)
            # The screen's frame timer waits a whole frame after it first starts: start
            # it now (it stops at once), so the first frame shown does not wait.
            screen._update_timer.resume()

    def close(self) -> None:
        """The wizard is over: drop the screens built for steps not taken."""
        self._closed = True
        self._app.workers.cancel_group(self._app, "wizard-ahead")
        for screen in self._ahead.values():
            screen.remove()
        self._ahead.clear()


async def _settled(screen: Screen[None]) -> None:
    """Until the screen and each of its widgets have handled what they had been sent."""
    widgets = list(screen.walk_children(with_self=True))
    pending = len(widgets)
    done = asyncio.Event()

    def handled() -> None:
        nonlocal pending
        pending -= 1
        if not pending:
            done.set()

    for widget in widgets:
        if not widget.call_later(handled):  # closing
            handled()
    # A widget removed meanwhile never runs its callback: then it is not worth waiting for.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), SETTLE_TIMEOUT)
