"""What the sync engine asks of a ticket system: the `Tracker` interface.

An instance fronts one tracker: the embedded one (`embedded.py`,
`tracker.sqlite3` in the home) unless configured otherwise. Every
implementation passes the contract suite in `tests/trackers/contract.py`.

Tickets are plain frozen values in the embedded tracker's vocabulary (types,
statuses, priorities 1–5 below); an adapter for another system maps its own
fields to these. Times are aware UTC datetimes.

Two things make the engine's writes safe to repeat after a crash:
- `create(..., correlation=...)` records what a ticket was created for, and
  `find_created(correlation)` finds it again, so a retry never makes a second;
- comments and attachments written with an `origin` can be found by it
  (`Ticket.comments[i].origin`), so a retry never adds one twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from exalate_tui.errors import ExalateError

TYPES = ("incident", "problem", "change", "task")
STATUSES = ("new", "in_progress", "on_hold", "resolved", "closed")
# 1 critical, 2 high, 3 moderate, 4 low, 5 planning (ServiceNow's words).
PRIORITIES = (1, 2, 3, 4, 5)

# What `create` and `update` accept in `fields`.
EDITABLE = ("type", "summary", "description", "status", "priority", "assignee", "labels")


class TrackerError(ExalateError):
    """The tracker refused or could not do something; str() says what and how to fix.

    `unavailable` is True when the tracker cannot be used at all right now
    (unreachable, credentials refused, disk full): the engine then puts the
    connection in Error and retries by itself. Otherwise the refusal is about
    one ticket (a value out of range, an attachment too large) and holds only it.
    """

    unavailable: bool = False


class TicketNotFound(TrackerError, LookupError):
    """No ticket has that key."""

    bad_input = True


class TrackerUnavailable(TrackerError):
    unavailable = True


class TicketRefused(TrackerError, ValueError):
    """A value the tracker does not take (a status it lacks, a priority out of range, an
    attachment too large); str() names the field and what is allowed. Holds only that ticket.

    `field` is what was refused: a name in `EDITABLE`, or "reporter", "author", "body",
    "name" (an attachment's), "data" (its bytes).
    """

    bad_input = True

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class QueryError(ExalateError, ValueError):
    """A filter that does not parse, or names a field the tracker lacks; str() says which."""

    bad_input = True


@dataclass(frozen=True)
class Comment:
    id: str
    author: str
    body: str
    internal: bool  # a work note: never leaves the instance under the Basic mapping
    created: datetime
    # Set on comments the sync engine wrote: "<connection id>/<remote comment id>".
    origin: str | None = None


@dataclass(frozen=True)
class NewComment:
    """A comment to create with its ticket (`Tracker.create(..., comments=...)`)."""

    body: str
    internal: bool = False
    author: str | None = None  # None: whoever the tracker writes as
    origin: str | None = None


@dataclass(frozen=True)
class Attachment:
    sha256: str
    name: str
    size: int
    created: datetime
    origin: str | None = None


@dataclass(frozen=True)
class Ticket:
    key: str
    type: str
    summary: str
    description: str
    status: str
    priority: int
    assignee: str
    reporter: str
    labels: tuple[str, ...]
    created: datetime
    updated: datetime
    comments: tuple[Comment, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    # What the sync engine created it for: "<connection id>/<remote key>"; None otherwise.
    correlation: str | None = None


def ticket_data(ticket: Ticket) -> dict[str, Any]:
    """A ticket's own fields as JSON data (times in ISO 8601, labels a list), as
    `tickets show --json` prints them and a Script rule reads them."""
    return {
        "key": ticket.key,
        "type": ticket.type,
        "summary": ticket.summary,
        "description": ticket.description,
        "status": ticket.status,
        "priority": ticket.priority,
        "assignee": ticket.assignee,
        "reporter": ticket.reporter,
        "labels": list(ticket.labels),
        "created": ticket.created.isoformat(),
        "updated": ticket.updated.isoformat(),
    }


@dataclass(frozen=True)
class Changed:
    """What `Tracker.changed` found: ticket keys, oldest change first, and where to go on."""

    keys: tuple[str, ...]
    watermark: str  # opaque: pass it back to hear only of later changes


class Query(Protocol):
    """A parsed filter (`Tracker.check_query`): ServiceNow's encoded-query syntax."""

    @property
    def text(self) -> str:
        """The filter as written."""
        ...

    def matches(self, ticket: Ticket) -> bool: ...


class Tracker(Protocol):
    """One ticket system, as the engine, the CLI and the console use it."""

    kind: str  # "embedded", "servicenow"
    # True when `watch` finds changes by looking every few seconds and each `changed` is a
    # request (ServiceNow): the engine then asks `changed` when `watch` rang, not on its own.
    polls: bool
    # The largest attachment it takes, in bytes: larger ones need not be fetched at all.
    max_attachment: int

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake()` whenever tickets may have changed, from this process or any other,
        as soon as the tracker can tell; returns what stops it. Needs a running loop."""
        ...

    async def changed(self, watermark: str | None, limit: int = 500) -> Changed:
        """Tickets changed after `watermark` (None: since the beginning)."""
        ...

    async def get(self, key: str) -> Ticket:
        """The ticket with its comments and attachments; `TicketNotFound` if none."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[Ticket]:
        """The tickets of `keys` that exist, in that order, each whole as `get` reads it;
        in as few reads as the tracker can (the engine reads a step's tickets so)."""
        ...

    def check_query(self, text: str) -> Query:
        """`text` parsed against this tracker's fields; `QueryError` with the reason."""
        ...

    async def search(self, query: Query | None = None, limit: int | None = None) -> list[Ticket]:
        """Tickets matching `query` (every ticket when None), oldest first."""
        ...

    async def create(
        self,
        fields: Mapping[str, Any],
        *,
        reporter: str | None = None,
        correlation: str | None = None,
        comments: Sequence[NewComment] = (),
    ) -> Ticket:
        """A new ticket with `comments`, as one write where the tracker can; with a
        `correlation` already used, that ticket, unchanged (its comments not added)."""
        ...

    async def update(self, key: str, fields: Mapping[str, Any]) -> Ticket:
        """Set `fields` (names in `EDITABLE`); returns the ticket after. A value equal to
        the current one writes nothing, so a repeated update is no change at all."""
        ...

    async def comment(
        self,
        key: str,
        body: str,
        *,
        internal: bool = False,
        author: str | None = None,
        origin: str | None = None,
    ) -> Comment:
        """Add a comment; with an `origin` already on the ticket, returns that one instead."""
        ...

    async def attach(
        self, key: str, name: str, data: bytes, *, origin: str | None = None
    ) -> Attachment:
        """Add an attachment; one with the same SHA-256 already on the ticket is returned
        instead. Too large for the tracker: `TrackerError` saying the limit."""
        ...

    async def attachment_bytes(self, key: str, sha256: str) -> bytes: ...

    async def find_created(self, correlation: str) -> Ticket | None:
        """The ticket `create` made with this `correlation`, if any."""
        ...

    def deferred(self) -> AbstractAsyncContextManager[None]:
        """A block whose writes through this object need be durable only once it ends
        (the sync engine records what it wrote only after): a tracker may then commit
        them with one wait for the disk instead of one each. Ends durable even when the
        block raises; a tracker whose every write is durable at once does nothing."""
        ...

    async def close(self) -> None: ...
