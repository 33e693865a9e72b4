"""Add a comment to a ticket, public or internal (a work note): a thin view of
`flows.tickets.CommentForm`.

Ctrl+S (or the Add button) runs `Tracker.comment` in a worker; the screen
closes with the comment written, or stays with the tracker's refusal.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Label, Static, TextArea

from exalate_tui.flows.tickets import CommentForm
from exalate_tui.trackers.adapter import Comment, Tracker, TrackerError

from .widgets import ButtonBar, TitleBar

INTERNAL = "Internal: a work note (stays on this instance under the Basic mapping)"


class CommentScreen(Screen[Comment | None]):
    CSS_PATH = "comment.tcss"
    AUTO_FOCUS = "#body"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="comment.cancel", tooltip="Leave unsaved"),
        Binding(
            "ctrl+s",
            "add",
            "Add comment",
            priority=True,
            id="comment.add",
            tooltip="Add the comment to the ticket",
        ),
        Binding(
            "ctrl+t",
            "toggle_internal",
            "Work note",
            priority=True,
            id="comment.internal",
            tooltip="Switch between a public comment and an internal work note",
        ),
    ]

    class Added(Message):
        """The tracker answered (the comment, or a refusal now in `form.failure`)."""

        def __init__(self, comment: Comment | None) -> None:
            super().__init__()
            self.comment = comment

    def __init__(self, form: CommentForm, tracker: Tracker, key: str) -> None:
        super().__init__()
        self.form = form
        self.tracker = tracker
        self.key = key
        self.saving = False

    def compose(self) -> ComposeResult:
        yield TitleBar(Text(f"Comment · {self.key}"), id="title")
        with Vertical(id="form"):
            yield Static("", id="failure")
            yield Label("Comment*", classes="form-label")
            yield TextArea(self.form.body, id="body", compact=True)
            yield Label("", id="error-body", classes="field-error")
            yield Checkbox(INTERNAL, self.form.internal, id="internal", compact=True)
        with ButtonBar(id="buttons"):
            yield Button("Add comment", id="add", variant="primary", compact=True)
            yield Button("Cancel", id="cancel", compact=True)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self._show()

    def _show(self) -> None:
        error = self.query_one("#error-body", Label)
        message = self.form.errors.get("body")
        error.display = message is not None
        error.update(Text(message or ""))
        failure = self.query_one("#failure", Static)
        failure.display = self.form.failure is not None
        failure.update(Text.assemble(("Not added: ", "bold"), self.form.failure or ""))
        self.query_one("#internal", Checkbox).value = self.form.internal
        self.query_one("#add", Button).label = (
            "Add work note" if self.form.internal else "Add comment"
        )

    @on(TextArea.Changed, "#body")
    def _typed(self, event: TextArea.Changed) -> None:
        if event.text_area.text != self.form.body:
            self.form.set_body(event.text_area.text)
            self._show()

    @on(Checkbox.Changed, "#internal")
    def _internal_changed(self, event: Checkbox.Changed) -> None:
        if event.value != self.form.internal:
            self.form.toggle_internal()
            self._show()

    def action_toggle_internal(self) -> None:
        self.form.toggle_internal()
        self._show()

    @on(Button.Pressed, "#add")
    def _add_pressed(self) -> None:
        self.action_add()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_add(self) -> None:
        if self.saving:
            return
        submitted = self.form.submit()
        self._show()
        if submitted is None:
            self.query_one("#body").focus()
            return
        self.saving = True
        self._write(*submitted)

    @work(exclusive=True, exit_on_error=False, group="write")
    async def _write(self, body: str, internal: bool) -> None:
        try:
            comment = await self.tracker.comment(self.key, body, internal=internal)
        except TrackerError as error:
            self.form.record_failure(str(error))
            self.post_message(self.Added(None))
            return
        self.post_message(self.Added(comment))

    @on(Added)
    def _added(self, event: Added) -> None:
        self.saving = False
        if event.comment is not None:
            self.dismiss(event.comment)
        else:
            self._show()
