"""A connection's live state, as the consoles show it: the stored status plus last contact.

Pure: the stored `Status` (this side's choice), what the partner said
(`peer_state`) and the contact the supervisor or node recorded
(`Contact`) make one of Pending, Active, Paused by partner, Unreachable,
Deactivated, with a short line of detail. A long-polled connection with no
contact for longer than a poll can wait is Unreachable ("no poll for 40 s"),
on either side: a live poller is never that quiet. These are the words both the console
and the command line show. The clock is passed in, so "N s ago" can be tested.
`node_need` says what depends on this instance's node running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from exalate_tui.domain.models import Connection, PeerState, Status
from exalate_tui.domain.topology import side


@dataclass(frozen=True)
class Contact:
    """What the last attempts to reach the other side said."""

    last_ok: float | None = None
    last_error: str | None = None
    error_since: float | None = None


class Live(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    # Active here, deactivated by the partner: nothing flows until they activate it.
    PAUSED = "paused by partner"
    UNREACHABLE = "unreachable"
    DEACTIVATED = "deactivated"


@dataclass(frozen=True)
class LiveState:
    """What to show: the state, one short line about it, and the last error in full."""

    live: Live
    detail: str
    error: str | None = None

    @property
    def label(self) -> str:
        return self.live.value.capitalize()


def ago(seconds: float) -> str:
    """ "12 s ago", "3 min ago", "2 h ago", "5 d ago" (rounded down; never negative)."""
    seconds = max(0, int(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def when(timestamp: float, now: float) -> str:
    """A UTC moment, the time alone when it is less than a day old."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    if 0 <= now - timestamp < 86400:
        return moment.strftime("%H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


_PEER = {
    PeerState.DEACTIVATED: "paused by the partner",
    PeerState.DELETED: "deleted by the partner",
}


# A polled connection is silent for too long past this: the poll that began last (when the
# polled side records contact) waits at most `protocol.wire.MAX_WAIT` (30 s), and every
# answer is followed at once by the next poll, so a live poller is never quieter than
# that plus a margin for the round trip and a busy node.
POLL_SILENCE = 35.0


def polled(connection: Connection) -> bool:
    """Whether one side of this connection long-polls the other (either side of it)."""
    here = side(connection.topology, connection.role)
    return not (here.has_url and here.peer_has_url)


def live_state(connection: Connection, contact: Contact, now: float) -> LiveState:
    """The state to show for `connection` at `now`."""
    peer = _PEER.get(connection.peer_state) if connection.peer_state else None
    match connection.status:
        case Status.DEACTIVATED:
            return LiveState(Live.DEACTIVATED, peer or "deactivated here", contact.last_error)
        case Status.PENDING:
            waiting = f"waiting for {connection.remote_name or 'the partner'}"
            return LiveState(Live.PENDING, waiting, contact.last_error)
    if contact.last_error is not None:
        since = contact.error_since if contact.error_since is not None else now
        return LiveState(Live.UNREACHABLE, f"since {when(since, now)}", contact.last_error)
    if connection.peer_state is PeerState.DEACTIVATED:
        return LiveState(Live.PAUSED, "deactivated there")
    if peer:
        return LiveState(Live.ACTIVE, peer)
    if contact.last_ok is None:
        return LiveState(Live.ACTIVE, "no contact yet")
    silence = now - contact.last_ok
    if polled(connection) and silence > POLL_SILENCE:
        # No poll is open: the poller stopped (its console closed, its node down), or
        # cannot get through, or this side's node is down. Which, this side cannot tell.
        quiet = ago(silence).removesuffix(" ago")
        if side(connection.topology, connection.role).polls:
            return LiveState(Live.UNREACHABLE, f"not polling for {quiet}")
        return LiveState(Live.UNREACHABLE, f"no poll for {quiet}")
    return LiveState(Live.ACTIVE, f"last contact {ago(silence)}")


@dataclass(frozen=True)
class NodeNeed:
    """Why this instance's node must run: partners that call it, or its own polling."""

    callers: tuple[str, ...] = ()
    polls: bool = False

    def __bool__(self) -> bool:
        return bool(self.callers or self.polls)

    @property
    def reason(self) -> str:
        """One short clause for a one-line bar: what goes wrong while the node is down."""
        if self.callers:
            names = ", ".join(self.callers[:2]) + (" and others" if len(self.callers) > 2 else "")
            return f"{names} cannot reach this instance"
        if self.polls:
            return "syncing stops when the console closes"
        return ""


def node_need(connections: Sequence[Connection]) -> NodeNeed:
    """What depends on this instance's node (domain/topology.py): every partner that calls
    this side (it has the URL), and this side's own polling, which only the console
    does while it is open. Deactivated connections need nothing."""
    callers: list[str] = []
    polls = False
    for connection in connections:
        if connection.status is Status.DEACTIVATED:
            continue
        if side(connection.topology, connection.role).has_url:
            name = connection.remote_name or "your partner"
            if name not in callers:
                callers.append(name)
        else:
            polls = True
    return NodeNeed(tuple(callers), polls)
