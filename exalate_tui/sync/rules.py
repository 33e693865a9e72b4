"""Sync rules, per side and direction: outgoing (local ticket → replica content) and
incoming (a partner's replica content → what the local ticket should hold).

`Rules` is the seam: `Basic` is the fixed mapping a Basic connection uses;
a Script connection runs its own Python rules (sync/script.py, in the
sandbox of sync/sandbox.py). The shared vocabulary is the embedded tracker's
(trackers/adapter.py: TYPES, STATUSES, PRIORITIES); an adapter for another
system maps its own values to it.

Rules say what a ticket *should* hold given a replica; the engine decides
what to change (only what changed on the remote side since the previous
replica), merges comments and attachments once, and writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from exalate_tui.domain.models import Connection, Mode
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home
from exalate_tui.sync.replica import Content, RemoteAttachment, RemoteComment
from exalate_tui.trackers.adapter import Ticket


class RuleError(ExalateError):
    """A rule failed on one ticket; str() says what (and where, for a Script rule)."""


class NotSyncable(RuleError):
    """The rules do not sync this ticket at all (e.g. Basic syncs incidents only)."""


@dataclass(frozen=True)
class Incoming:
    """What the incoming rules want for the local ticket."""

    fields: dict[str, Any] = field(default_factory=dict)
    # Remote comments to add here, each with whether it is added as internal.
    comments: tuple[tuple[RemoteComment, bool], ...] = ()
    attachments: tuple[RemoteAttachment, ...] = ()


class Rules(Protocol):
    name: str  # recorded in each replica and in history, e.g. "basic"
    # True when `incoming` names each local field after the replica's field it takes
    # (Basic): the engine then writes exactly the fields the partner changed. False
    # (Script): it also writes the local fields whose wanted value follows from them.
    by_name: bool

    def outgoing(self, ticket: Ticket) -> Content:
        """The replica content for `ticket`; `NotSyncable` or `RuleError` if none."""
        ...

    def incoming(
        self, replica: Content, first_sync: bool, previous: Content | None = None
    ) -> Incoming:
        """What the local ticket should hold, given the partner's replica content (and the
        one it sent before, when known)."""
        ...


# The fields the Basic mapping carries, in the shared vocabulary.
BASIC_FIELDS = ("summary", "description", "status", "priority")


class Basic:
    """The fixed mapping: summary, description, status, priority, public comments and
    attachments; incidents only unless `every_type`."""

    name = "basic"
    by_name = True

    def __init__(self, connection_id: str, *, every_type: bool = False) -> None:
        self._origin = f"{connection_id}/"
        self.every_type = every_type

    def outgoing(self, ticket: Ticket) -> Content:
        if not self.every_type and ticket.type != "incident":
            raise NotSyncable(
                f"Only issues can be synced: {ticket.key} is a {ticket.type}, and the Basic "
                "mapping syncs incidents only (a Script connection syncs every type)"
            )
        fields: dict[str, Any] = {name: getattr(ticket, name) for name in BASIC_FIELDS}
        fields["type"] = ticket.type
        # What came over this connection is the partner's already: never sent back.
        comments = tuple(
            RemoteComment(c.id, c.author, c.body, c.internal, c.created.isoformat())
            for c in ticket.comments
            if not c.internal and not (c.origin or "").startswith(self._origin)
        )
        attachments = tuple(
            RemoteAttachment(a.sha256, a.name, a.size)
            for a in ticket.attachments
            if not (a.origin or "").startswith(self._origin)
        )
        return Content(fields, comments, attachments)

    def incoming(
        self, replica: Content, first_sync: bool, previous: Content | None = None
    ) -> Incoming:
        fields = {name: replica.fields[name] for name in BASIC_FIELDS if name in replica.fields}
        if first_sync:
            fields["type"] = (
                replica.fields.get("type", "incident") if self.every_type else "incident"
            )
        comments = tuple((c, False) for c in replica.comments if not c.internal)
        return Incoming(fields, comments, replica.attachments)


def rules_for(connection: Connection, home: Home | None = None) -> Rules:
    """The rules this side applies on `connection`: its Script rules in `home` for a
    Script connection (the Basic mapping for every type when no home is given)."""
    if connection.mode is Mode.SCRIPT and home is not None:
        from exalate_tui.sync.script import load_rules

        return load_rules(home, connection)
    return Basic(connection.id, every_type=connection.mode is Mode.SCRIPT)
