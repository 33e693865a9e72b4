"""Create a ticket, or edit one: a thin view of `flows.tickets.TicketForm`.

Each field forwards what was typed or chosen to the form and shows its error
under it. Save (Ctrl+S, Enter in a one-line field, or the Save button) asks
the form for the fields to send (an edit sends only what changed) and runs
`Tracker.create` / `Tracker.update` in a worker; the screen closes with the
ticket written, or stays with the tracker's refusal above the fields.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Footer, Input, Label, Static, TextArea

from exalate_tui.flows.tickets import FIELDS, LABELS, TicketForm, priority_label, status_label
from exalate_tui.trackers.adapter import PRIORITIES, STATUSES, TYPES, Ticket, Tracker, TrackerError

from .widgets import ButtonBar, FormScreen, TitleBar


class FormRow(Horizontal):
    """A one-line field: its label on the left, the widget and its error (`#error-<name>`)
    on the right."""

    def __init__(self, name: str, field: Widget, *, required: bool = False) -> None:
        super().__init__(classes="form-row")
        self.label_text = f"{LABELS[name]}*" if required else LABELS[name]
        self.field_name = name
        self.field = field

    def compose(self) -> ComposeResult:
        yield Label(self.label_text, classes="form-label")
        with Vertical(classes="form-box"):
            yield self.field
            yield Label("", id=f"error-{self.field_name}", classes="field-error")


class TicketFormScreen(FormScreen[Ticket | None]):
    form: TicketForm
    CSS_PATH = "ticket_form.tcss"
    AUTO_FOCUS = "#field-summary"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="ticket-form.cancel", tooltip="Leave unsaved"),
        Binding(
            "ctrl+s",
            "save",
            "Save",
            priority=True,
            id="ticket-form.save",
            tooltip="Save the ticket (Enter in a one-line field does too)",
        ),
    ]

    class Saved(Message):
        """The tracker answered (the ticket, or a refusal now in `form.failure`)."""

        def __init__(self, ticket: Ticket | None) -> None:
            super().__init__()
            self.ticket = ticket

    def __init__(self, form: TicketForm, tracker: Tracker) -> None:
        super().__init__()
        self.form = form
        self.tracker = tracker
        self.saving = False

    def compose(self) -> ComposeResult:
        ticket = self.form.ticket
        title = "New ticket" if ticket is None else f"Edit · {ticket.key}"
        values = self.form.values
        yield TitleBar(Text(title), id="title")
        with VerticalScroll(id="body"):
            yield Static("", id="failure")
            yield FormRow(
                "summary",
                Input(values["summary"], id="field-summary", compact=True),
                required=True,
            )
            yield FormRow(
                "description",
                TextArea(values["description"], id="field-description", compact=True),
            )
            yield FormRow("type", self.form_select("type", [(t, t) for t in TYPES]))
            yield FormRow(
                "status", self.form_select("status", [(status_label(s), s) for s in STATUSES])
            )
            yield FormRow(
                "priority",
                self.form_select("priority", [(priority_label(p), str(p)) for p in PRIORITIES]),
            )
            yield FormRow("assignee", Input(values["assignee"], id="field-assignee", compact=True))
            yield FormRow(
                "labels",
                Input(
                    values["labels"],
                    placeholder="separated by commas or spaces",
                    id="field-labels",
                    compact=True,
                ),
            )
        with ButtonBar(id="buttons"):
            yield Button("Save", id="save", variant="primary", compact=True)
            yield Button("Cancel", id="cancel", compact=True)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self._show_errors()

    # -- forwarding input to the form ---------------------------------------

    @on(TextArea.Changed)
    def _described(self, event: TextArea.Changed) -> None:
        self.set_field(self.field_of(event.text_area), event.text_area.text)

    def form_changed(self) -> None:
        self._show_errors()

    def _show_errors(self) -> None:
        for name in FIELDS:
            label = self.query_one(f"#error-{name}", Label)
            error = self.form.errors.get(name)
            label.display = error is not None
            label.update(Text(error or ""))
        failure = self.query_one("#failure", Static)
        failure.display = self.form.failure is not None
        failure.update(Text.assemble(("Not saved: ", "bold"), self.form.failure or ""))

    # -- saving --------------------------------------------------------------

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        if self.saving:
            return
        fields = self.form.fields()
        self._show_errors()
        if fields is None:
            first = next(name for name in FIELDS if name in self.form.errors)
            self.query_one(f"#field-{first}").focus()
            return
        ticket = self.form.ticket
        if ticket is not None and not fields:
            self.notify("Nothing to save: no field changed.", title="Ticket")
            self.dismiss(None)
            return
        self.saving = True
        self._write(dict(fields))

    @work(exclusive=True, exit_on_error=False, group="write")
    async def _write(self, fields: dict[str, object]) -> None:
        ticket = self.form.ticket
        try:
            if ticket is None:
                written = await self.tracker.create(fields)
            else:
                written = await self.tracker.update(ticket.key, fields)
        except TrackerError as error:
            self.form.record_failure(str(error))
            self.post_message(self.Saved(None))
            return
        self.post_message(self.Saved(written))

    @on(Saved)
    def _saved(self, event: Saved) -> None:
        self.saving = False
        if event.ticket is not None:
            self.dismiss(event.ticket)
        else:
            self._show_errors()
            self.query_one("#body").scroll_home(animate=False)
