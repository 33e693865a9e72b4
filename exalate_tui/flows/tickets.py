"""The Tickets tab's state: the list's filter, the create/edit form, the comment form,
and the words a ticket's fields are shown with.

Pure Python, no I/O: the filter is handed the tracker's `check_query` (parsing
is the tracker's, so the console and the CLI refuse the same filters for the
same reasons); the forms turn what was typed into the `fields` that
`Tracker.create` / `Tracker.update` take, and the caller runs those calls and
hands a refusal back (`record_failure`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exalate_tui.flows.form import Form
from exalate_tui.trackers.adapter import (
    PRIORITIES,
    STATUSES,
    TYPES,
    Query,
    QueryError,
    Ticket,
)

__all__ = [
    "PRIORITY_WORDS",
    "STATUS_WORDS",
    "CommentForm",
    "LinkRow",
    "TicketFilter",
    "TicketForm",
    "full_time",
    "parse_labels",
    "priority_label",
    "short_time",
    "size_words",
    "status_label",
]

# ServiceNow's words for the priorities (adapter.py).
PRIORITY_WORDS = {1: "Critical", 2: "High", 3: "Moderate", 4: "Low", 5: "Planning"}
STATUS_WORDS = {
    "new": "New",
    "in_progress": "In progress",
    "on_hold": "On hold",
    "resolved": "Resolved",
    "closed": "Closed",
}


def priority_label(priority: int) -> str:
    return f"{priority} {PRIORITY_WORDS.get(priority, '')}".strip()


def status_label(status: str) -> str:
    return STATUS_WORDS.get(status, status)


def short_time(moment: datetime, now: float) -> str:
    """For a list: the time alone when less than a day old, else the date (UTC)."""
    moment = moment.astimezone(UTC)
    if 0 <= now - moment.timestamp() < 86400:
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d")


def full_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def size_words(size: int) -> str:
    """An attachment's size: bytes, KB or MB (powers of 1024), one decimal above bytes."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def parse_labels(text: str) -> tuple[str, ...]:
    """Labels as typed: separated by commas or spaces, each once, in the order given."""
    seen: dict[str, None] = {}
    for part in text.replace(",", " ").split():
        seen.setdefault(part, None)
    return tuple(seen)


@dataclass(frozen=True)
class LinkRow:
    """One connection a ticket syncs over, as the ticket's sync panel shows it."""

    connection: str  # the connection's name
    remote_key: str | None  # None until the partner has created its copy
    state: str
    last_synced: datetime | None = None
    last_error: str | None = None


class TicketFilter:
    """The list's filter: ServiceNow's encoded query (`priority<=2^status=new`).

    `set_text` re-parses what was typed; `query` is the last filter that parsed
    (None: every ticket), so a half-typed filter leaves the list as it was while
    `error` says what is wrong with it.
    """

    def __init__(self, check_query: Callable[[str], Query]) -> None:
        self.check_query = check_query
        self.text = ""
        self.query: Query | None = None
        self.error: str | None = None

    def set_text(self, text: str) -> bool:
        """Parse `text`; True when the query the list shows changed."""
        self.text = text.strip()
        if not self.text:
            self.error = None
            changed = self.query is not None
            self.query = None
            return changed
        try:
            query = self.check_query(self.text)
        except QueryError as error:
            self.error = f"Filter not applied: {error}"
            return False
        self.error = None
        changed = self.query is None or self.query.text != query.text
        self.query = query
        return changed

    @property
    def applied(self) -> str:
        """The filter the list shows, in words."""
        return self.query.text if self.query is not None else "all tickets"


# The fields of the form in the order they are shown; `*` marks the required one.
FIELDS = ("summary", "description", "type", "status", "priority", "assignee", "labels")
LABELS = {
    "summary": "Summary",
    "description": "Description",
    "type": "Type",
    "status": "Status",
    "priority": "Priority",
    "assignee": "Assignee",
    "labels": "Labels",
}
# What a new ticket starts as.
DEFAULTS = {"type": "incident", "status": "new", "priority": "3"}


class TicketForm(Form):
    """Create a ticket, or edit one: what was typed, per-field errors, what to send.

    Values are kept as typed (strings); `fields()` converts them to what the
    tracker takes. Editing sends only the fields that differ from the ticket it
    was opened on, so a concurrent change to another field (by the sync engine,
    say) is not overwritten with the old value.
    """

    def __init__(self, ticket: Ticket | None = None) -> None:
        self.ticket = ticket
        self.errors: dict[str, str] = {}
        self.failure: str | None = None
        if ticket is None:
            self.values = {name: DEFAULTS.get(name, "") for name in FIELDS}
        else:
            self.values = {
                "summary": ticket.summary,
                "description": ticket.description,
                "type": ticket.type,
                "status": ticket.status,
                "priority": str(ticket.priority),
                "assignee": ticket.assignee,
                "labels": ", ".join(ticket.labels),
            }

    @property
    def editing(self) -> bool:
        return self.ticket is not None

    def set(self, name: str, value: str) -> str | None:
        """Record what was typed in field `name`; returns its error, if any."""
        if name not in self.values:
            raise KeyError(name)
        self.values[name] = value
        self.failure = None
        return self.revalidate(name)

    def validate(self, field: str) -> str | None:
        value = self.values[field].strip()
        match field:
            case "summary":
                if not value:
                    return "Summary is required."
                if "\n" in value:
                    return "Summary must be one line."
            case "type":
                if value not in TYPES:
                    return f"Type must be one of {', '.join(TYPES)}."
            case "status":
                if value not in STATUSES:
                    return f"Status must be one of {', '.join(STATUSES)}."
            case "priority":
                if value not in {str(p) for p in PRIORITIES}:
                    return f"Priority must be a number from {PRIORITIES[0]} to {PRIORITIES[-1]}."
        return None

    def _converted(self) -> dict[str, Any]:
        values = self.values
        return {
            "summary": values["summary"].strip(),
            # As typed: its lines and spacing are the author's.
            "description": values["description"],
            "type": values["type"].strip(),
            "status": values["status"].strip(),
            "priority": int(values["priority"]),
            "assignee": values["assignee"].strip(),
            "labels": parse_labels(values["labels"]),
        }

    def fields(self) -> Mapping[str, Any] | None:
        """What to send: every field for a new ticket, only the changed ones for an edit.
        None while a field is wrong (every field re-checked, its error in `errors`)."""
        for name in FIELDS:
            self.revalidate(name)
        if self.errors:
            return None
        converted = self._converted()
        ticket = self.ticket
        if ticket is None:
            return converted
        current: dict[str, Any] = {
            "summary": ticket.summary,
            "description": ticket.description,
            "type": ticket.type,
            "status": ticket.status,
            "priority": ticket.priority,
            "assignee": ticket.assignee,
            "labels": tuple(ticket.labels),
        }
        return {name: value for name, value in converted.items() if value != current[name]}

    def record_failure(self, reason: str) -> None:
        """The tracker refused the ticket: shown over the form, which keeps what was typed."""
        self.failure = reason


class CommentForm(Form):
    """A comment on a ticket: its body (required), public or internal (a work note)."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.body = ""
        self.internal = False
        self.failure: str | None = None

    def set_body(self, body: str) -> str | None:
        self.body = body
        self.failure = None
        return self.revalidate("body")

    def toggle_internal(self) -> bool:
        self.internal = not self.internal
        return self.internal

    def validate(self, field: str) -> str | None:
        if field == "body" and not self.body.strip():
            return "The comment is empty."
        return None

    def submit(self) -> tuple[str, bool] | None:
        """(body, internal) to send, or None with the error in `errors`."""
        if self.revalidate("body"):
            return None
        return self.body.strip(), self.internal

    def record_failure(self, reason: str) -> None:
        self.failure = reason
