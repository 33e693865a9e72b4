"""Accept invitation: paste the code, see what it is (or why it cannot be accepted), name
this side, accept, and watch each stage.

`AcceptWizard` judges the code and the names; `accept.accept` does the work
in a worker and reports its stages and its outcome, which arrive here as
messages: the handlers hand them to the wizard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Button, Footer, Input, Label, Static, TextArea

from exalate_tui.domain.models import Connection, shown
from exalate_tui.flows.accept import AcceptStep, AcceptWizard, Stage
from exalate_tui.lifecycle.accept import AcceptError, accept
from exalate_tui.transport.streams import Streams

from .stores import Stores
from .widgets import ButtonBar, FieldRow, SubmitScreen, TitleBar


class CodeArea(TextArea):
    """The code field: a paste arrives whole, its line breaks and spaces dropped."""

    def on_paste(self, event: events.Paste) -> None:
        # Handlers run subclass first; prevent_default keeps TextArea's own paste, which
        # would insert the text as it came, from running after this one.
        event.prevent_default()
        event.stop()
        self.replace("".join(event.text.split()), *self.selection)


def preview_table(wizard: AcceptWizard) -> Table | str:
    """What the code says: from whom, the connection, mode, topology, expiry.

    Every part a partner wrote is shown escaped (`shown`), never raw, though the
    code's checks already refuse what would need it."""
    preview = wizard.preview
    if preview is None:
        return ""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    source = preview.from_name
    if preview.initiator_url:
        source += f" at {preview.initiator_url}"
    connection = preview.name + (f": {preview.description}" if preview.description else "")
    expires = f"{preview.expires.strftime('%Y-%m-%d %H:%M UTC')} ({preview.expires_in})"
    for label, value in (
        ("From", source),
        ("Connection", connection),
        ("Mode", preview.mode.value.capitalize()),
        ("Topology", preview.topology_text),
        ("Expires", expires),
    ):
        grid.add_row(label, Text(shown(value)))
    return grid


def stages_text(wizard: AcceptWizard, connection: Connection | None) -> Text:
    """Each stage reached so far, in words; the last line says what comes next."""
    invite = wizard.invitation
    partner = shown(invite.from_) if invite else "the initiator"
    text = Text()
    for stage in wizard.stages:
        match stage:
            case Stage.CONTACTING:
                url = shown(invite.url) if invite else ""
                text.append(f"… Contacting {partner} at {url}\n")
            case Stage.ACCEPTED:
                text.append("✓ Accepted: the connection secret is stored.\n", "green")
            case Stage.CONNECTED:
                text.append("✓ Connected: the first message was delivered.\n", "green")
            case Stage.WAITING:
                text.append(
                    f"✓ Accepted. Waiting for {partner} to connect to this instance: "
                    "keep `exalate-tui node` running, it receives the call.\n",
                    "green",
                )
    if connection is not None and wizard.stages and wizard.stages[-1] is Stage.ACCEPTED:
        text.append("Not connected yet: the poller keeps trying; see the Connections tab.\n")
    if connection is not None:
        text.append("Enter goes back to Connections.", "bold")
    return text


class AcceptScreen(SubmitScreen):
    CSS_PATH = "accept.tcss"
    AUTO_FOCUS = "#code"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="accept.close", tooltip="Back to Connections"),
        # Priority, so Enter goes on even inside the code field; on a button it presses it.
        Binding(
            "enter",
            "submit",
            "Next",
            priority=True,
            id="accept.next",
            tooltip="Check the code, then accept it",
        ),
    ]

    @dataclass
    class Staged(Message):
        """`accept.accept` reached a stage."""

        stage: Stage

    @dataclass
    class Finished(Message):
        """`accept.accept` ended: the connection, or the one-line reason it did not happen."""

        connection: Connection | None
        reason: str = ""

    def __init__(
        self,
        wizard: AcceptWizard,
        stores: Stores,
    ) -> None:
        super().__init__()
        self.wizard = wizard
        self.stores = stores
        # Until the first Enter an empty code field is no error, just empty.
        self._tried = False

    def compose(self) -> ComposeResult:
        yield TitleBar("Accept invitation", id="title")
        with VerticalScroll(id="body"):
            yield Static(
                "Paste the invitation code your partner sent (line breaks are fine):",
                id="intro",
            )
            yield CodeArea("", soft_wrap=True, compact=True, id="code")
            yield Label("", id="error-code", classes="field-error")
            yield Static("", id="preview")
            yield FieldRow(
                "Local instance short name",
                Input(self.wizard.local_name, compact=True, id="local_name"),
                required=True,
            )
            yield FieldRow(
                "Connection name", Input(self.wizard.name, compact=True, id="name"), required=True
            )
            yield Static("", id="stages")
            yield Label("", id="error-accept", classes="field-error")
        with ButtonBar(id="buttons"):
            yield Button("Accept", id="accept", variant="primary", compact=True)
            yield Button("Close", id="close", compact=True)
        yield Footer(show_command_palette=False)

    # -- input --------------------------------------------------------------

    @on(TextArea.Changed, "#code")
    def _code_changed(self, event: TextArea.Changed) -> None:
        self.wizard.set_code(event.text_area.text)
        name = self.query_one("#name", Input)
        if name.value != self.wizard.name:
            # The name follows the code until the admin edits it; not an edit itself.
            with name.prevent(Input.Changed):
                name.value = self.wizard.name
        self._show()

    @on(Input.Changed, "#local_name")
    def _local_name_changed(self, event: Input.Changed) -> None:
        self.wizard.set_local_name(event.value)
        self._show()

    @on(Input.Changed, "#name")
    def _name_changed(self, event: Input.Changed) -> None:
        self.wizard.set_name(event.value)
        self._show()

    def _show(self, connection: Connection | None = None) -> None:
        wizard = self.wizard
        errors = dict(wizard.errors)
        if not wizard.code.strip() and not self._tried:
            errors.pop("code", None)  # nothing pasted yet: nothing wrong yet
        # An empty line takes a row: at 80×24 the code, the preview, both names and the
        # buttons fit only if what says nothing takes no room.
        for field in ("code", "local_name", "name", "accept"):
            label = self.query_one(f"#error-{field}", Label)
            label.update(Text(errors.get(field, "")))
            label.display = bool(errors.get(field))
        self.query_one("#preview", Static).update(preview_table(wizard))
        stages = stages_text(wizard, connection)
        self.query_one("#stages", Static).update(stages)
        self.query_one("#stages", Static).display = bool(stages)
        accepting = wizard.step in (AcceptStep.ACCEPTING, AcceptStep.DONE)
        for widget in ("#code", "#local_name", "#name", "#accept"):
            self.query_one(widget).disabled = accepting

    def _reveal(self) -> None:
        """The stages and the outcome sit below the fold at 80×24: bring them up."""
        self.call_after_refresh(self.query_one("#body", VerticalScroll).scroll_end, animate=False)

    # -- moving -------------------------------------------------------------

    @on(Button.Pressed, "#accept")
    def action_next(self) -> None:
        """CODE: check it, go to the names; DETAILS: accept; DONE: back to Connections."""
        wizard = self.wizard
        self._tried = True
        if wizard.step is AcceptStep.DONE:
            self.dismiss()
            return
        if wizard.step is AcceptStep.ACCEPTING:
            return
        if wizard.step is AcceptStep.CODE:
            if wizard.next():
                self.query_one("#local_name", Input).focus()
            else:
                self.query_one("#code").focus()
            self._show()
            return
        if self.stores.state is None:
            wizard.record_failure(
                f"No state to store the connection in: {self.stores.state_problem}"
            )
            self._show()
            return
        if not wizard.next():
            self._show()
            for field in ("code", "local_name", "name"):
                if field in wizard.errors:
                    self.query_one(f"#{field}").focus()
                    break
            return
        self._show()
        self._accept(self.stores.state)

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        if self.wizard.step is AcceptStep.ACCEPTING:
            # The token may be spent already: leaving now could lose the connection's secret.
            self.notify("Accepting: wait a moment for the result.", severity="warning")
            return
        self.dismiss()

    @work(exclusive=True, exit_on_error=False, group="accept")
    async def _accept(self, state: Streams) -> None:
        """`accept.accept`: the handshake (or the wait for the initiator), stage by stage."""
        wizard = self.wizard
        assert wizard.invitation is not None  # ACCEPTING is reached with a code
        try:
            connection = await accept(
                self.stores.home,
                state,
                wizard.invitation,
                wizard.local_name,
                lambda stage: self.post_message(self.Staged(stage)),
                name=wizard.name,
            )
        except AcceptError as error:
            self.post_message(self.Finished(None, str(error)))
        except OSError as error:
            self.post_message(self.Finished(None, f"Could not store the connection: {error}"))
        else:
            self.post_message(self.Finished(connection))

    @on(Staged)
    def _staged(self, event: Staged) -> None:
        self.wizard.record_stage(event.stage)
        self._show()
        self._reveal()

    @on(Finished)
    def _finished(self, event: Finished) -> None:
        if event.connection is None:
            self.wizard.record_failure(event.reason)
        else:
            self.wizard.record_done(event.connection)
        self._show(event.connection)
        self._reveal()
        if event.connection is None:
            self.query_one("#accept", Button).focus()
        else:
            self.query_one("#close", Button).focus()
