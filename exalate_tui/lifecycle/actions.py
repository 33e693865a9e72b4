"""Connection actions the console and the CLI share; no UI (docs/protocol.md).

Deactivate, activate and delete a connection, telling the partner; regenerate
a Pending connection's invitation. What the partner's `connection.*`
messages do on this side is `incoming.py`'s. Deleted connections whose
partner polls this side stay as tombstones until the partner has fetched the
news (`purge_tombstones` forgets the ones it never fetched).

Lock order: a state transaction may take the home lock (`incoming.apply_effect`),
so nothing here writes the state while holding the home lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import SecretStr

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Connection, PeerState, Role, Status, Topology
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home
from exalate_tui.protocol.kinds import ACTIVATED, DEACTIVATED, DELETED
from exalate_tui.transport.delivery import deliver
from exalate_tui.transport.streams import Streams

if TYPE_CHECKING:
    import httpx

# How long a deleted connection waits for its polling partner to fetch `connection.deleted`.
TOMBSTONE_GRACE = 7 * 24 * 3600
# An action tells the partner directly for at most this long; then the supervisor goes on.
TELL_TIMEOUT = 5.0
BATCH = 500


class ActionError(ExalateError):
    """The action does not apply to this connection; str() says why and what to do."""

    bad_input = True


class Told(StrEnum):
    """How the partner learns of an action."""

    DELIVERED = "delivered"  # delivered just now
    QUEUED = "queued"  # in the outbox: the partner fetches it, or the supervisor delivers it
    UNREACHABLE = "unreachable"  # could not be delivered now (see `Outcome.error`)
    NOBODY = "nobody"  # no partner to tell: still pending, or the partner deleted it


@dataclass(frozen=True)
class Outcome:
    connection: Connection
    told: Told
    error: str | None = None


async def deactivate(
    home: Home,
    state: Streams,
    cid: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = TELL_TIMEOUT,
) -> Outcome:
    """Stop the flow both ways; messages queue on both sides until `activate`.

    This side stops making requests and its node answers 409 `deactivated`;
    the partner is told with `connection.deactivated` (pushed now when this
    side calls the partner; a polling partner meets the 409 and fetches the
    message once the connection is active again).
    """
    return await _change_and_tell(home, state, cid, _DEACTIVATE, transport, timeout)


async def activate(
    home: Home,
    state: Streams,
    cid: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = TELL_TIMEOUT,
) -> Outcome:
    """Let messages flow again, the ones queued meanwhile first; tell the partner."""
    return await _change_and_tell(home, state, cid, _ACTIVATE, transport, timeout)


@dataclass(frozen=True)
class _Move:
    """A status change an admin asks for, and the message that tells the partner."""

    before: Status
    after: Status
    kind: str
    only: str  # the rule, as the refusal says it

    def __call__(self, connection: Connection) -> None:
        if self.after is Status.ACTIVE and connection.peer_state is PeerState.DELETED:
            raise ActionError(
                f"the partner deleted {connection.name!r}: it cannot be activated again; "
                "delete it here too"
            )
        if connection.status is not self.before:
            raise ActionError(f"{connection.name!r} is {connection.status.value}: {self.only}")
        connection.status = self.after


_DEACTIVATE = _Move(
    Status.ACTIVE, Status.DEACTIVATED, DEACTIVATED, "only an active connection can be deactivated"
)
_ACTIVATE = _Move(
    Status.DEACTIVATED, Status.ACTIVE, ACTIVATED, "only a deactivated connection can be activated"
)


async def _change_and_tell(
    home: Home,
    state: Streams,
    cid: str,
    move: _Move,
    transport: httpx.AsyncBaseTransport | None,
    timeout: float,
) -> Outcome:
    connection = await asyncio.to_thread(home.get_connection, cid)
    # The file and the state change together or not at all: a damaged store is found
    # before the file says Deactivated with no message to tell the partner.
    await asyncio.to_thread(state.check)
    updated = await asyncio.to_thread(home.update_connection, connection.id, move)
    if updated.peer_state is PeerState.DELETED:
        return Outcome(updated, Told.NOBODY)
    # Status first, then the message: the enqueue wakes this process's supervisor,
    # whose rescan then sees the new status.
    try:
        seq = await asyncio.to_thread(state.enqueue, updated.id, move.kind)
    except BaseException:
        # The store took no message (full, or damaged since the check): the status goes
        # back, so the partner is never left unaware of a change made here.
        await asyncio.to_thread(home.update_connection, updated.id, _back(move))
        raise
    return await _tell(updated, state, seq, transport, timeout)


def _back(move: _Move) -> Callable[[Connection], None]:
    def undo(connection: Connection) -> None:
        if connection.status is move.after:
            connection.status = move.before

    return undo


async def delete(
    home: Home,
    state: Streams,
    cid: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = TELL_TIMEOUT,
) -> Outcome:
    """Delete a connection and tell the partner with `connection.deleted` when it can.

    A side that calls its partner pushes the news, then deletes (it deletes
    even when the push fails: `Outcome.error` says why). A side whose
    partner polls it leaves a tombstone: its node keeps answering the
    partner's polls until the partner has acknowledged `connection.deleted`,
    or `TOMBSTONE_GRACE` passed. A pending connection has nobody to tell.
    """
    connection = await asyncio.to_thread(home.get_connection, cid)
    cid = connection.id
    # All or nothing: a damaged store is refused before the file goes.
    await asyncio.to_thread(state.check)
    if connection.secret is None or connection.peer_state is PeerState.DELETED:
        await asyncio.to_thread(_erase, home, state, cid)
        return Outcome(connection, Told.NOBODY)
    seq = await asyncio.to_thread(state.enqueue, cid, DELETED)
    if connection.remote_url is None:
        await asyncio.to_thread(_bury, home, state, cid, seq)
        return Outcome(connection, Told.QUEUED)
    outcome = await _tell(connection, state, seq, transport, timeout)
    await asyncio.to_thread(_erase, home, state, cid)
    return outcome


def _bury(home: Home, state: Streams, cid: str, seq: int) -> None:
    """Keep the connection as a tombstone until the partner acknowledges `seq`.

    The enqueue wakes the partner's poll before the file moves, so its ack can
    land while the node still sees a live connection. That ack pruned the news
    from the outbox: then the partner has heard, and nothing is left to keep.
    (After the move, the node itself drops the tombstone on the ack; both may.)
    """
    home.bury_connection(cid)
    if not any(m.seq == seq for m in state.pending(cid, seq - 1, 1)):
        home.drop_tombstone(cid)
        state.forget(cid)


def _erase(home: Home, state: Streams, cid: str) -> None:
    # The state first: should it fail after all, the connection is still there to delete.
    state.forget(cid)
    home.delete_connection(cid)


async def _tell(
    connection: Connection,
    state: Streams,
    seq: int,
    transport: httpx.AsyncBaseTransport | None,
    timeout: float,
) -> Outcome:
    """Push the outbox up to `seq` now, when this side is the one that calls the partner."""
    if connection.secret is None:
        return Outcome(connection, Told.NOBODY)
    if connection.remote_url is None:
        return Outcome(connection, Told.QUEUED)  # the partner fetches it when it polls
    # httpx loads only here: a home whose partners all poll it never needs it.
    import httpx

    from exalate_tui.transport.client import Remote, RemoteError

    cid, secret = connection.id, connection.secret
    try:
        async with asyncio.timeout(timeout):
            async with Remote(
                connection.remote_url, transport=transport, timeout=httpx.Timeout(timeout)
            ) as remote:
                while True:
                    pending = await asyncio.to_thread(state.pending, cid, 0, BATCH)
                    if not pending or pending[0].seq > seq:
                        # Delivered, by us or meanwhile by the supervisor's pusher.
                        return Outcome(connection, Told.DELIVERED)
                    await deliver(remote, state, cid, secret, pending)
    except TimeoutError:
        return Outcome(connection, Told.QUEUED)
    except RemoteError as error:
        return Outcome(connection, Told.UNREACHABLE, str(error))


def purge_tombstones(
    home: Home, state: Streams, *, now: float | None = None, grace: float = TOMBSTONE_GRACE
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


def regenerate_invitation(
    home: Home,
    cid: str,
    *,
    now: Callable[[], float] = time.time,
    lifetime: int = codes.DEFAULT_LIFETIME,
) -> str:
    """A new code for a Pending connection this side initiated; the old one stops working."""
    connection = home.get_connection(cid)
    if connection.status is not Status.PENDING or connection.role is not Role.INITIATOR:
        raise ActionError(
            f"{connection.name!r} is {connection.status.value} and was "
            f"{'initiated' if connection.role is Role.INITIATOR else 'accepted'} here: only a "
            "pending connection this side initiated has an invitation to regenerate"
        )
    instance = home.load_instance()
    url = instance.public_url if instance else None
    if url is None and connection.topology is not Topology.PRIVATE_PUBLIC:
        raise ActionError(
            "this instance has no public URL, and the partner must call it: "
            "set one with `exalate-tui init --public-url URL`"
        )
    token = codes.new_token()
    expires = int(now()) + lifetime
    # Built before anything is written: a payload that does not validate changes nothing.
    invite = codes.for_connection(connection, url=url, token=token, expires=expires)
    code = codes.encode(invite)

    def change(current: Connection) -> None:
        if current.status is not Status.PENDING:
            raise ActionError(f"{current.name!r} was accepted meanwhile: it needs no new code")
        current.token_hash = codes.hash_token(token)
        current.code_digest = codes.digest(invite)
        # Only a private initiator presents the token itself (its supervisor's handshake).
        private = current.topology is Topology.PRIVATE_PUBLIC
        current.token = SecretStr(token) if private else None
        current.token_expires = datetime.fromtimestamp(expires, UTC)

    home.update_connection(connection.id, change)
    return code
