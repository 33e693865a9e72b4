"""What a received message does beyond the inbox, dispatched by its kind.

The node applies pushed batches and the supervisor fetched ones; both call
`apply_effect` inside `Streams.apply`'s transaction, so every handler must be
idempotent and write the connection file only when something changes. A new
kind (protocol/kinds.py) gets its handler in `_HANDLERS`; a kind with none
(hello, ping) changes nothing beyond the inbox.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from exalate_tui.domain.models import Connection, Mode, PeerState, Status
from exalate_tui.home.store import Home, NotFound
from exalate_tui.protocol import kinds
from exalate_tui.transport.streams import Message


def _after(kind: str, connection: Connection) -> tuple[PeerState | None, Status]:
    """This side's (peer_state, status) once the partner's `kind` is applied."""
    if kind == kinds.DELETED:
        # Nothing will flow again: the admin here can only delete it too.
        return PeerState.DELETED, Status.DEACTIVATED
    if connection.peer_state is PeerState.DELETED:
        return connection.peer_state, connection.status  # a deleted partner cannot come back
    if kind == kinds.DEACTIVATED:
        return PeerState.DEACTIVATED, connection.status
    return None, connection.status


def _partner_acted(home: Home, cid: str, message: Message) -> None:
    """The partner's admin deactivated, activated or deleted the connection.

    A partner's pause goes to `peer_state`, never to `status` (see `PeerState`).
    """
    try:
        current = home.get_connection(cid)
    except NotFound:
        return  # deleted here as well: nothing left to mark
    if _after(message.kind, current) == (current.peer_state, current.status):
        return

    def change(connection: Connection) -> None:
        connection.peer_state, connection.status = _after(message.kind, connection)

    with contextlib.suppress(NotFound):
        home.update_connection(cid, change)


def _partner_mode(home: Home, cid: str, message: Message) -> None:
    """The partner switched its side's mode: recorded, this side's rules stay its own."""
    body = message.body if isinstance(message.body, dict) else {}
    try:
        mode = Mode(str(body.get("mode")))
        current = home.get_connection(cid)
    except (ValueError, NotFound):
        return  # a mode this version does not know, or deleted here: nothing to record
    if current.peer_mode is mode:
        return

    def change(connection: Connection) -> None:
        connection.peer_mode = mode

    with contextlib.suppress(NotFound):
        home.update_connection(cid, change)


_HANDLERS: dict[str, Callable[[Home, str, Message], None]] = {
    kinds.MODE: _partner_mode,
    kinds.DEACTIVATED: _partner_acted,
    kinds.ACTIVATED: _partner_acted,
    kinds.DELETED: _partner_acted,
}


def apply_effect(home: Home, cid: str, message: Message) -> None:
    """What a received message does beyond the inbox (see the module docstring)."""
    handler = _HANDLERS.get(message.kind)
    if handler is not None:
        handler(home, cid, message)
