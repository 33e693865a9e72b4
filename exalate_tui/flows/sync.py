"""The console's sync views, as state: a ticket's links and history, a connection's
Synced tickets, Sync queue, Errors and Triggers, the trigger form, Exalate's and
Unexalate's choices, and Bulk exalate's progress.

Pure Python, no I/O: the caller reads `SyncStore` and the streams (in a worker)
and hands the rows in; the words each row is shown with are made here, so the
screens only lay them out. The trigger form is handed the tracker's
`check_query`, so the console refuses a trigger for the reason the CLI gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exalate_tui.domain.live import ago
from exalate_tui.domain.models import Connection
from exalate_tui.flows.tickets import LinkRow
from exalate_tui.sync.store import Change, Link, SyncError
from exalate_tui.trackers.adapter import Query, QueryError

__all__ = [
    "VIEWS",
    "BulkProgress",
    "ConnectionSync",
    "ErrorRow",
    "HistoryEntry",
    "QueueSide",
    "SyncViews",
    "SyncedRow",
    "TriggerForm",
    "error_rows",
    "exalate_choices",
    "history_entries",
    "link_rows",
    "synced_rows",
    "unexalate_choices",
]

SYNCING = "syncing"
STOPPED = "stopped"


def state_word(link: Link) -> str:
    return SYNCING if link.active else STOPPED


def moment(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def stamp(timestamp: float | None, never: str = "never") -> str:
    """A UTC moment in full, as the ticket views show times."""
    if timestamp is None:
        return never
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- a ticket: its links, history, Exalate and Unexalate --------------------------------


def _ticket_errors(errors: Iterable[SyncError], key: str) -> dict[str, SyncError]:
    """The open error of ticket `key` on each connection (the latest, if several)."""
    found: dict[str, SyncError] = {}
    for error in errors:
        if error.local_key == key:
            found[error.cid] = error
    return found


def link_rows(
    key: str, links: Sequence[Link], errors: Iterable[SyncError], names: Mapping[str, str]
) -> list[LinkRow]:
    """The ticket's sync panel: a row per connection it syncs (or synced) over."""
    open_errors = _ticket_errors(errors, key)
    rows = []
    for link in links:
        error = open_errors.get(link.cid)
        rows.append(
            LinkRow(
                names.get(link.cid, link.cid[:8]),
                link.remote_key,
                "error" if error else state_word(link),
                moment(link.last_synced),
                error.message if error else None,
            )
        )
    return rows


def exalate_choices(connections: Iterable[Connection], links: Sequence[Link]) -> list[Connection]:
    """Connections that sync (`engine.syncs`, filtered by the caller) over which the
    ticket does not sync now: Exalate offers these."""
    active = {link.cid for link in links if link.active}
    return [c for c in connections if c.id not in active]


def unexalate_choices(links: Sequence[Link]) -> list[Link]:
    """The links Unexalate can stop: those syncing now."""
    return [link for link in links if link.active]


@dataclass(frozen=True)
class HistoryEntry:
    """One change sync made to a ticket, in words: when, from where, what, and why."""

    at: float
    source: str  # "from snow_to_jira, JIRA-3 · v4 · basic"; no "from" for an admin's action
    lines: tuple[str, ...]  # "summary: Old → New", "2 comments added", ...
    note: str


def _value(value: Any) -> str:
    if value is None or value == "":
        return "(empty)"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:59] + "…"


def history_entries(changes: Sequence[Change], names: Mapping[str, str]) -> list[HistoryEntry]:
    """The ticket's history, newest first."""
    entries = []
    for change in reversed(changes):
        where = names.get(change.cid, change.cid[:8])
        source = f"{where}, {change.remote_key}" if change.remote_key else where
        if change.version:  # made from the partner's replica of that version
            source = f"from {source} · v{change.version}"
        source += f" · {change.rules}"
        lines = [
            f"{name}: {_value(old)} → {_value(new)}"
            for name, (old, new) in change.changes.get("fields", {}).items()
        ]
        comments = int(change.changes.get("comments", 0) or 0)
        if comments:
            lines.append(f"{comments} comment{'s' if comments > 1 else ''} added")
        lines += [f"attachment added: {name}" for name in change.changes.get("attachments", [])]
        entries.append(HistoryEntry(change.at, source, tuple(lines), change.note))
    return entries


# -- a connection: which view, and what each shows ---------------------------------------

VIEWS = ("synced", "queue", "errors", "triggers")
VIEW_TITLES = {
    "synced": "Synced tickets",
    "queue": "Sync queue",
    "errors": "Errors",
    "triggers": "Triggers",
}


class SyncViews:
    """Which of a connection's sync views shows; the trigger form, while it is open."""

    def __init__(self, view: str = "synced") -> None:
        if view not in VIEWS:
            raise ValueError(view)
        self.view = view
        self.form: TriggerForm | None = None

    def show(self, view: str) -> bool:
        """Switch to `view` (closing the trigger form); True when it changed."""
        if view not in VIEWS:
            raise ValueError(view)
        changed = view != self.view
        self.view = view
        if changed:
            self.form = None
        return changed

    @property
    def title(self) -> str:
        return VIEW_TITLES[self.view]

    def open_form(self, check_query: Callable[[str], Query]) -> TriggerForm:
        self.view = "triggers"
        self.form = TriggerForm(check_query)
        return self.form

    def close_form(self) -> None:
        self.form = None


@dataclass(frozen=True)
class SyncedRow:
    local_key: str
    remote_key: str  # "pending" until the partner made its copy
    state: str  # syncing, stopped, error
    last_synced: str


def synced_rows(links: Sequence[Link], errors: Iterable[SyncError]) -> list[SyncedRow]:
    failing = {e.local_key for e in errors if e.local_key}
    return [
        SyncedRow(
            link.local_key,
            link.remote_key or "pending",
            "error" if link.local_key in failing else state_word(link),
            stamp(link.last_synced),
        )
        for link in links
    ]


@dataclass(frozen=True)
class QueueSide:
    """One direction of the queue: messages waiting and when the oldest was queued."""

    count: int
    oldest: float | None

    def words(self, now: float, waiting_for: str) -> str:
        if not self.count:
            return "nothing waiting"
        plural = "s" if self.count > 1 else ""
        age = f", the oldest {ago(now - self.oldest)}" if self.oldest is not None else ""
        return f"{self.count} message{plural} {waiting_for}{age}"


@dataclass(frozen=True)
class ErrorRow:
    id: int
    ticket: str  # the local key, or the partner's key before it exists here
    direction: str  # outgoing, incoming
    message: str
    first: str
    last: str
    attempts: int
    holds: bool


def error_rows(errors: Sequence[SyncError], remote_name: str, now: float) -> list[ErrorRow]:
    rows = []
    for error in errors:
        ticket = error.local_key or f"{remote_name}'s {error.remote_key or '?'}"
        rows.append(
            ErrorRow(
                error.id,
                ticket,
                "outgoing" if error.direction == "out" else "incoming",
                error.message,
                stamp(error.first_at),
                ago(now - error.last_at),
                error.attempts,
                error.holds,
            )
        )
    return rows


@dataclass(frozen=True)
class ConnectionSync:
    """A connection's sync state as read at one moment (by a worker)."""

    links: Sequence[Link] = ()
    errors: Sequence[SyncError] = ()
    outgoing: QueueSide = QueueSide(0, None)
    incoming: QueueSide = QueueSide(0, None)
    tracker_error: str | None = None
    problem: str | None = None  # the store could not be read

    def summary(self) -> str:
        """One line for the connection's detail."""
        synced = sum(1 for link in self.links if link.active)
        waiting = self.outgoing.count + self.incoming.count
        errors = len(self.errors)
        return (
            f"{synced} ticket{'s' if synced != 1 else ''} syncing · {waiting} queued · "
            f"{errors} error{'s' if errors != 1 else ''}"
        )


# -- the trigger form, Bulk exalate --------------------------------------------------------


class TriggerForm:
    """A new trigger as it is typed; checked with the tracker's own parser on submit."""

    def __init__(self, check_query: Callable[[str], Query]) -> None:
        self.check_query = check_query
        self.text = ""
        self.error: str | None = None

    def set_text(self, text: str) -> None:
        self.text = text
        self.error = None

    def submit(self) -> str | None:
        """The filter to save (as the tracker spells it), or None with `error` set."""
        text = self.text.strip()
        if not text:
            self.error = "Type a filter, e.g. priority<=2^type=incident"
            return None
        try:
            query = self.check_query(text)
        except QueryError as error:
            self.error = f"Not saved: {error}"
            return None
        self.error = None
        return query.text

    def record_refusal(self, reason: str) -> None:
        """Saving failed after the check (the connection file, say): shown under the field."""
        self.error = f"Not saved: {reason}"


@dataclass
class BulkProgress:
    """Bulk exalate: the tickets the triggers matched, and how many have gone out.

    A ticket is done once its first replica is queued for the partner, or once an
    error holds it (e.g. Basic syncs incidents only): Errors says why."""

    matched: frozenset[str]
    started: bool = False
    sent: frozenset[str] = field(default_factory=frozenset)
    failed: frozenset[str] = field(default_factory=frozenset)
    problem: str | None = None

    def update(self, sent_keys: Iterable[str], failed_keys: Iterable[str] = ()) -> bool:
        """Record the keys sent so far and those an error holds; True when it moved."""
        sent = self.matched & frozenset(sent_keys)
        failed = (self.matched & frozenset(failed_keys)) - sent
        moved = (sent, failed) != (self.sent, self.failed)
        self.sent, self.failed = sent, failed
        return moved

    @property
    def total(self) -> int:
        return len(self.matched)

    @property
    def finished(self) -> int:
        return len(self.sent) + len(self.failed)

    @property
    def done(self) -> bool:
        return self.started and self.problem is None and self.finished >= self.total

    def words(self) -> str:
        if self.problem:
            return self.problem
        count = f"{self.total} ticket{'s' if self.total != 1 else ''}"
        if not self.total:
            return "No ticket matches the triggers now: nothing to send."
        if not self.started:
            return f"{count} match the triggers. Enter sends them all."
        failed = f"; {len(self.failed)} held by an error (see Errors)" if self.failed else ""
        if self.done:
            return f"Done: {len(self.sent)} of {count} sent to the partner's queue{failed}."
        return f"{len(self.sent)} of {count} sent{failed}…"
