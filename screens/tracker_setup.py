"""The tracker this instance fronts: the embedded one, or ServiceNow with its URL, how to
sign in (user and password, or OAuth client credentials), the secret, the tables and how
often to look for changes. A thin view of `flows.tracker.TrackerForm`.

Shown once after the first run (Escape keeps the embedded tracker) and from the
Connections tab (`s`). Save checks ServiceNow exactly as `exalate-tui tracker set` does
(`trackers.setup.check_and_save`), in a thread worker with its own event loop; the screen
closes once saved, or stays with ServiceNow's refusal above the fields. The secret is a
password field and never shown; left empty it keeps the one stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Footer, Input, Label, Select, Static

from exalate_tui.domain.models import TrackerConfig, shown
from exalate_tui.flows.tracker import AUTHS, FIELDS, KINDS, TrackerForm, labels
from exalate_tui.home.store import Home, StoreError
from exalate_tui.trackers.adapter import TrackerError

from .widgets import ButtonBar, FormScreen, TitleBar

INTRO = (
    "Which ticket system does this instance sync? The embedded tracker needs nothing "
    "more; ServiceNow is checked before anything is saved."
)


class SettingRow(Horizontal):
    """A one-line setting: its label on the left, the widget and its error on the right."""

    def __init__(self, name: str, label: str, field: Widget) -> None:
        super().__init__(classes="form-row", id=f"row-{name}")
        self.label_text = label
        self.field_name = name
        self.field = field

    def compose(self) -> ComposeResult:
        yield Label(self.label_text, classes="form-label", id=f"label-{self.field_name}")
        with Vertical(classes="form-box"):
            yield self.field
            yield Label("", id=f"error-{self.field_name}", classes="field-error")


class TrackerSetupScreen(FormScreen[bool]):
    """Dismissed with True once settings were saved, False when left unchanged."""

    form: TrackerForm
    CSS_PATH = "tracker_setup.tcss"
    AUTO_FOCUS = "#field-kind"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "cancel",
            "Keep as it is",
            id="tracker.cancel",
            tooltip="Leave the tracker as it is (on a first run: the embedded tracker)",
        ),
        Binding(
            "ctrl+s",
            "save",
            "Save",
            priority=True,
            id="tracker.save",
            tooltip="Check the settings (ServiceNow: the instance) and save them",
        ),
    ]

    @dataclass
    class Checked(Message):
        """The check and save ended: what passed, or the reason nothing was saved."""

        lines: list[str]
        reason: str | None = None

    def __init__(self, home: Home, form: TrackerForm, *, first_run: bool = False) -> None:
        super().__init__()
        self.home = home
        self.form = form
        self.first_run = first_run
        self.saving = False

    def compose(self) -> ComposeResult:
        values = self.form.values
        words = labels(values["auth"])
        yield TitleBar(Text("Tracker: the ticket system this instance syncs"), id="title")
        with VerticalScroll(id="body"):
            if self.first_run:
                yield Static(INTRO, id="intro")
            yield Static("", id="failure")
            yield SettingRow("kind", words["kind"], self._select("kind", KINDS))
            yield SettingRow(
                "url",
                words["url"],
                Input(
                    values["url"],
                    placeholder="https://acme.service-now.com",
                    id="field-url",
                    compact=True,
                ),
            )
            yield SettingRow("auth", words["auth"], self._select("auth", AUTHS))
            yield SettingRow(
                "user", words["user"], Input(values["user"], id="field-user", compact=True)
            )
            kept = self.form.kept_secret() is not None
            yield SettingRow(
                "secret",
                words["secret"],
                Input(
                    "",
                    password=True,
                    placeholder="(stored: leave empty to keep it)" if kept else "",
                    id="field-secret",
                    compact=True,
                ),
            )
            yield SettingRow(
                "tables",
                words["tables"],
                Input(
                    values["tables"],
                    placeholder="incident, problem, change_request, sc_req_item",
                    id="field-tables",
                    compact=True,
                ),
            )
            yield SettingRow(
                "poll", words["poll"], Input(values["poll"], id="field-poll", compact=True)
            )
            yield Static("", id="checked")
        with ButtonBar(id="buttons"):
            yield Button("Save", id="save", variant="primary", compact=True)
            yield Button("Keep embedded" if self.first_run else "Cancel", id="cancel", compact=True)
        yield Footer(show_command_palette=False)

    def _select(self, name: str, options: dict[str, str]) -> Select[str]:
        return self.form_select(name, [(label, value) for value, label in options.items()])

    def on_mount(self) -> None:
        self._show()

    # -- forwarding input to the form ---------------------------------------

    def form_changed(self) -> None:
        self._show()

    def _show(self) -> None:
        words = labels(self.form.values["auth"])
        showing = self.form.shown()
        for name in FIELDS:
            self.query_one(f"#row-{name}").display = name in showing
            self.query_one(f"#label-{name}", Label).update(words[name])
            label = self.query_one(f"#error-{name}", Label)
            error = self.form.errors.get(name)
            label.display = error is not None
            label.update(Text(error or ""))
        failure = self.query_one("#failure", Static)
        failure.display = self.form.failure is not None
        # ServiceNow's own words are in it: shown as text, every control escaped.
        failure.update(Text.assemble(("Not saved: ", "bold"), shown(self.form.failure or "")))
        checked = self.query_one("#checked", Static)
        checked.display = self.saving or bool(self.form.checked)
        if self.saving:
            where = "ServiceNow" if self.form.servicenow else "the settings"
            checked.update(Text(f"Checking {where}…"))
        else:
            checked.update(Text("\n".join(f"✓ {line}" for line in self.form.checked)))

    # -- saving --------------------------------------------------------------

    def action_cancel(self) -> None:
        if not self.saving:
            self.dismiss(False)

    def action_save(self) -> None:
        if self.saving:
            return
        config = self.form.config()
        if config is None:
            self._show()
            first = next((n for n in self.form.shown() if n in self.form.errors), None)
            if first is not None:
                self.query_one(f"#field-{first}").focus()
            return
        self.saving = True
        self._show()
        self._check(config)

    @work(thread=True, exclusive=True, exit_on_error=False, group="tracker")
    def _check(self, config: TrackerConfig) -> None:
        from exalate_tui.trackers.setup import check_and_save, save_local

        try:
            if config.kind == "embedded":
                save_local(self.home)
                lines: list[str] = []
            else:
                # Its own event loop: the console's runs the screen meanwhile.
                lines = asyncio.run(check_and_save(self.home, config))
        except (TrackerError, StoreError, OSError) as error:
            self.post_message(self.Checked([], str(error)))
            return
        self.post_message(self.Checked(lines))

    @on(Checked)
    def _checked(self, event: Checked) -> None:
        self.saving = False
        if event.reason is not None:
            self.form.refused(event.reason)
            self._show()
            return
        self.form.saved(event.lines)
        kind = "ServiceNow" if self.form.servicenow else "the embedded tracker"
        self.notify(
            Text("\n".join([f"This instance fronts {kind}.", *event.lines])).plain,
            title="Tracker saved",
            markup=False,
        )
        self.dismiss(True)
