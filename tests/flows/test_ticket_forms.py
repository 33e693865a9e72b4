"""The Tickets tab's forms (flows/tickets.py): per-field errors, what a create sends,
and that an edit sends only what changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exalate_tui.flows.tickets import (
    CommentForm,
    TicketForm,
    full_time,
    parse_labels,
    priority_label,
    short_time,
    size_words,
    status_label,
)
from exalate_tui.trackers.adapter import Ticket

WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ticket(**changes: object) -> Ticket:
    fields: dict[str, object] = {
        "key": "INC0001001",
        "type": "incident",
        "summary": "Mail is down",
        "description": "Since 9:00.\n\nAll of floor 3.",
        "status": "new",
        "priority": 2,
        "assignee": "ana",
        "reporter": "bob",
        "labels": ("mail", "p1"),
        "created": WHEN,
        "updated": WHEN,
    }
    fields.update(changes)
    return Ticket(**fields)  # type: ignore[arg-type]


def test_a_new_ticket_starts_as_a_moderate_new_incident() -> None:
    form = TicketForm()
    assert not form.editing
    assert form.values["type"] == "incident"
    assert form.values["status"] == "new"
    assert form.values["priority"] == "3"


def test_the_summary_is_required() -> None:
    form = TicketForm()
    assert form.fields() is None
    assert form.errors == {"summary": "Summary is required."}
    assert form.set("summary", "   ") == "Summary is required."
    assert form.set("summary", "Printer on fire") is None
    assert form.errors == {}


def test_a_create_sends_every_field_converted() -> None:
    form = TicketForm()
    form.set("summary", "  Printer on fire ")
    form.set("description", "Smoke.\n")
    form.set("priority", "1")
    form.set("labels", "hw, urgent hw  floor-2")
    assert form.fields() == {
        "summary": "Printer on fire",
        "description": "Smoke.\n",
        "type": "incident",
        "status": "new",
        "priority": 1,
        "assignee": "",
        "labels": ("hw", "urgent", "floor-2"),
    }


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("type", "bug", "Type must be one of incident, problem, change, task."),
        (
            "status",
            "done",
            "Status must be one of new, in_progress, on_hold, resolved, closed.",
        ),
        ("priority", "0", "Priority must be a number from 1 to 5."),
        ("priority", "high", "Priority must be a number from 1 to 5."),
    ],
)
def test_values_outside_the_vocabulary_are_refused_with_the_words_allowed(
    field: str, value: str, error: str
) -> None:
    form = TicketForm()
    form.set("summary", "x")
    assert form.set(field, value) == error
    assert form.fields() is None
    assert form.errors == {field: error}


def test_an_edit_starts_from_the_ticket() -> None:
    form = TicketForm(ticket())
    assert form.editing
    assert form.values["priority"] == "2"
    assert form.values["labels"] == "mail, p1"
    assert form.values["description"] == "Since 9:00.\n\nAll of floor 3."


def test_an_edit_with_nothing_changed_sends_nothing() -> None:
    form = TicketForm(ticket())
    assert form.fields() == {}


def test_an_edit_sends_only_the_changed_fields() -> None:
    form = TicketForm(ticket())
    form.set("status", "in_progress")
    form.set("labels", "p1 mail")  # other order: a change
    form.set("assignee", " ana ")  # the same once trimmed: no change
    assert form.fields() == {"status": "in_progress", "labels": ("p1", "mail")}


def test_a_failure_is_kept_until_the_next_change() -> None:
    form = TicketForm(ticket())
    form.record_failure("INC0001001 was deleted")
    assert form.failure == "INC0001001 was deleted"
    form.set("summary", "Mail is down again")
    assert form.failure is None


def test_labels_are_split_on_commas_and_spaces_each_once() -> None:
    assert parse_labels(" a,b  c,,a ") == ("a", "b", "c")
    assert parse_labels("") == ()


def test_words_for_priorities_and_statuses() -> None:
    assert priority_label(1) == "1 Critical"
    assert priority_label(5) == "5 Planning"
    assert status_label("in_progress") == "In progress"
    assert status_label("on_hold") == "On hold"


def test_a_comment_needs_a_body() -> None:
    form = CommentForm()
    assert form.submit() is None
    assert form.errors == {"body": "The comment is empty."}
    form.set_body("  \n ")
    assert form.submit() is None
    form.set_body(" Called the user back. \n")
    assert form.submit() == ("Called the user back.", False)


def test_a_comment_can_be_a_work_note() -> None:
    form = CommentForm()
    form.set_body("Root cause: expired certificate")
    assert form.toggle_internal() is True
    assert form.submit() == ("Root cause: expired certificate", True)
    assert form.toggle_internal() is False
    assert form.submit() == ("Root cause: expired certificate", False)


def test_times_in_a_list_are_short() -> None:
    now = WHEN.timestamp()
    assert short_time(WHEN - timedelta(hours=3), now) == "09:00"
    assert short_time(WHEN - timedelta(days=2), now) == "2024-04-29"
    assert full_time(WHEN) == "2024-05-01 12:00 UTC"


def test_sizes_in_words() -> None:
    assert size_words(0) == "0 B"
    assert size_words(1023) == "1023 B"
    assert size_words(1536) == "1.5 KB"
    assert size_words(5 * 1024 * 1024) == "5.0 MB"
