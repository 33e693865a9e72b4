"""First run: name this instance (and give its public URL, if it has one); saves instance.toml.

The fields are judged by `check_instance`, as `exalate-tui init` judges its
flags; the save runs in a worker, whose outcome comes back by message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Static

from exalate_tui.domain.models import Instance, check_instance
from exalate_tui.home.store import Home, StoreError

from .widgets import ButtonBar, FieldRow, TitleBar

# Each field's label, which starts its error ("Short name is required.").
FIELDS = {"short_name": "Short name", "public_url": "Public URL"}


class FirstRunScreen(Screen[None]):
    CSS_PATH = "first_run.tcss"
    AUTO_FOCUS = "#short_name"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter",
            "save",
            "Save",
            priority=True,
            id="first_run.save",
            tooltip="Save instance.toml",
        ),
    ]

    @dataclass
    class Saved(Message):
        instance: Instance

    @dataclass
    class NotSaved(Message):
        reason: str

    def __init__(self, home: Home) -> None:
        super().__init__()
        self.home = home

    def compose(self) -> ComposeResult:
        yield TitleBar("Set up this instance", id="title")
        with VerticalScroll(id="body"):
            yield Static(
                "Welcome to exalate-tui. Name this instance once; partners see the name "
                "in invitations.",
                id="intro",
            )
            yield FieldRow(
                "Short name",
                Input(placeholder="e.g. servicenow-prod", id="short_name"),
                required=True,
            )
            yield FieldRow(
                "Public URL", Input(placeholder="https://example.exalate.net", id="public_url")
            )
            yield Static(
                "Short name: 1-32 letters, digits, '-', '_' or '.'. Public URL: where "
                "partners reach this instance; leave it empty if it sits in a private "
                "network (you can give it later, when an invitation needs it).",
                classes="hint",
            )
            yield Static("", id="save-error", classes="field-error")
        with ButtonBar(id="buttons"):
            yield Button("Save", id="save", variant="primary", compact=True)
        yield Footer(show_command_palette=False)

    def _read(self) -> tuple[str, str | None, dict[str, str]]:
        """The short name, the public URL as stored, and each field's problem."""
        short_name = self.query_one("#short_name", Input).value.strip()
        url, reasons = check_instance(short_name, self.query_one("#public_url", Input).value)
        problems = {field: f"{FIELDS[field]} {reason}." for field, reason in reasons.items()}
        return short_name, url, problems

    def _show(self, problems: dict[str, str]) -> None:
        for field in FIELDS:
            self.query_one(f"#error-{field}", Label).update(problems.get(field, ""))

    @on(Input.Changed)
    def _changed(self) -> None:
        self._show(self._read()[2])

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        short_name, url, problems = self._read()
        self._show(problems)
        if problems:
            self.query_one(f"#{next(iter(problems))}", Input).focus()
            return
        self._save(Instance(short_name=short_name, public_url=url or None))

    @work(thread=True, exclusive=True, exit_on_error=False, group="save")
    def _save(self, instance: Instance) -> None:
        try:
            self.home.save_instance(instance)
        except (StoreError, OSError) as error:
            self.post_message(self.NotSaved(f"Could not save: {error}"))
            return
        self.post_message(self.Saved(instance))

    @on(NotSaved)
    def _not_saved(self, event: NotSaved) -> None:
        self.query_one("#save-error", Static).update(event.reason)
