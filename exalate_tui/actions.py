"""Connection actions the console and the CLI share; no UI (docs/protocol.md).

Deactivate, activate, delete and regenerate an invitation here, and what a
partner's `connection.*` message does to this side (`apply_effect`, used by
the node for pushed batches and by the poller for fetched ones).
"""

from __future__ import annotations

import contextlib
import time

from .models import Connection, PeerState, Status
from .queue import Message, State
from .store import Home, NotFound

DEACTIVATED = "connection.deactivated"
ACTIVATED = "connection.activated"
DELETED = "connection.deleted"
# How long a deleted connection waits for its polling partner to fetch `connection.deleted`.
TOMBSTONE_GRACE = 7 * 24 * 3600


def _after(kind: str, connection: Connection) -> tuple[PeerState | None, Status]:
    """This side's (peer_state, status) once the partner's `kind` is applied."""
    if kind == DELETED:
        # Nothing will flow again: the admin here can only delete it too.
        return PeerState.DELETED, Status.DEACTIVATED
    if connection.peer_state is PeerState.DELETED:
        return connection.peer_state, connection.status  # a deleted partner cannot come back
    if kind == DEACTIVATED:
        return PeerState.DEACTIVATED, connection.status
    return None, connection.status


def apply_effect(home: Home, cid: str, message: Message) -> None:
    """What a received message does beyond the inbox.

    Runs inside `State.apply`'s transaction, so it must be idempotent, and it
    writes the connection file only when something changes. A partner's
    pause goes to `peer_state`, never to `status` (see `PeerState`).
    """
    if message.kind not in (DEACTIVATED, ACTIVATED, DELETED):
        return
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


def purge_tombstones(
    home: Home, state: State, *, now: float | None = None, grace: float = TOMBSTONE_GRACE
) -> list[str]:
    """Forget deleted connections whose partner did not fetch the news within `grace` s."""
    now = time.time() if now is None else now
    purged = []
    for cid, deleted in home.tombstones():
        if now - deleted >= grace:
            home.drop_tombstone(cid)
            state.forget(cid)
            purged.append(cid)
    return purged
