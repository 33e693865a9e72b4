"""The handshake's effects: the token burnt once, the connection made Active, hello first.

Whoever holds the token's hash receives the handshake (`domain/topology.py`):
`take_invitation` is that side's half, run by the node. The side that
presented the token stores the answer with `handshake_answered` (a private
initiator's supervisor) or saves a new Active connection (an acceptor, in
`accept.py`). Both go through `made_active` and `greet`.

The token burns once, but the answer may be lost to the presenter (killed,
its disk full): for `GRACE` seconds the very same offer (token, digest,
short name, URL) gets the same answer again from the node that gave it
(`Winners`), so it can finish; any other offer is refused as a used
invitation is (the node tells the very token it burnt `invitation_used`:
transport/node.py, `Burnt`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import threading
from typing import TYPE_CHECKING

from pydantic import SecretStr

from exalate_tui.domain.invitation import token_matches
from exalate_tui.domain.models import Connection, Status, Topology, normalize_url
from exalate_tui.domain.topology import side
from exalate_tui.home.store import Home, NotFound
from exalate_tui.protocol import kinds
from exalate_tui.protocol.api import CONNECTION_ID
from exalate_tui.transport.hooks import HandshakeRefused, invalid_invitation
from exalate_tui.transport.streams import Streams

if TYPE_CHECKING:
    from exalate_tui.protocol.wire import HandshakeIn

# Checked against when there is no hash to check, so that takes as long as a real check.
_NO_HASH = "0" * 64
# Seconds during which the winning offer, repeated exactly, is answered again.
GRACE = 600.0


def _offer_digest(offer: HandshakeIn) -> bytes:
    return hashlib.sha256(
        json.dumps([offer.cid, offer.tok, offer.sum, offer.short_name, offer.url]).encode()
    ).digest()


class Winners:
    """The offers that won a handshake in the last `GRACE` seconds, by connection id.

    Held by the node that answered them (one per `runtime.Lifecycle`), in memory
    only: a restarted node answers a repeat as it answers any used invitation.
    """

    def __init__(self) -> None:
        self._won: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def remember(self, offer: HandshakeIn, now: float) -> None:
        with self._lock:
            for cid, (_, when) in list(self._won.items()):
                if now - when >= GRACE:
                    del self._won[cid]
            self._won[offer.cid] = (_offer_digest(offer), now)

    def repeated(self, home: Home, offer: HandshakeIn, now: float) -> Connection | None:
        """The connection a repeat of the winning offer gets again, within `GRACE`."""
        with self._lock:
            won = self._won.get(offer.cid)
        if won is None or not 0 <= now - won[1] < GRACE:
            return None
        if not hmac.compare_digest(won[0], _offer_digest(offer)):
            return None
        try:
            connection = home.get_connection(offer.cid)
        except NotFound:
            return None
        # Deleted, deactivated or regenerated since: the old answer is no longer true.
        if connection.status is not Status.ACTIVE or connection.secret is None:
            return None
        return connection


def made_active(connection: Connection, secret: SecretStr, remote_name: str | None) -> Connection:
    """What a handshake changes: the secret, Active, and the invitation burnt."""
    connection.secret = secret
    connection.status = Status.ACTIVE
    connection.token = None
    connection.token_hash = None
    connection.code_digest = None
    if remote_name:
        connection.remote_name = remote_name
    return connection


def _worker(home: Home) -> str:
    """This worker as a handshake's holder: its host and home, the same across restarts."""
    return f"{socket.gethostname()}:{home.path.resolve()}"


def greet(state: Streams, connection: Connection) -> int:
    """Enqueue hello, seq 1 of this side's stream: it carries our short name, and its
    delivery proves the secret works both ways."""
    return state.enqueue(connection.id, kinds.HELLO, {"short_name": connection.local_name})


def handshake_answered(
    home: Home, state: Streams, connection: Connection, secret: SecretStr, remote_name: str
) -> None:
    """The presenter's side once the receiver answered: Active with the secret it sent.

    Run again when the file could not be written (a full disk: the supervisor retries,
    and the receiver answers the same offer alike), so hello is enqueued only once.
    """
    # hello first: once the file says Active anything may be enqueued, and hello is seq 1.
    # A Pending connection's outbox holds nothing else, so a seq there is our hello.
    if state.last_seq(connection.id) == 0:
        greet(state, connection)
    home.update_connection(connection.id, lambda current: made_active(current, secret, remote_name))


def take_invitation(
    home: Home, state: Streams, offer: HandshakeIn, now: float, winners: Winners
) -> Connection:
    """Check and burn the token under the home lock: of two racing handshakes one wins.

    Returns the connection, Active with a fresh secret and its hello enqueued.
    Raises `HandshakeRefused`; nothing is written then. A used invitation is
    refused as an unknown id is: once the token is burnt its hash is gone, so
    a right token cannot be told from a wrong one, and saying "used" would
    tell anyone which ids exist.
    """
    invalid = invalid_invitation()

    def burn(connection: Connection) -> Connection:
        receives = side(connection.topology, connection.role).receives_handshake
        if connection.id != offer.cid or not receives:
            token_matches(offer.tok, _NO_HASH)  # the same work as a real check
            raise invalid
        if connection.token_hash is None:
            token_matches(offer.tok, _NO_HASH)
            raise invalid
        if not token_matches(offer.tok, connection.token_hash):
            raise invalid
        if connection.code_digest is not None and not hmac.compare_digest(
            offer.sum or "", connection.code_digest
        ):
            raise invalid  # the right token in a changed code
        expires = connection.token_expires
        if expires is not None and now >= expires.timestamp():
            raise HandshakeRefused("invitation_expired", "this invitation has expired")
        # Workers sharing the store: the first to get here burns it for all of them (the
        # others hold stale copies of the file). Answered as an unknown id, as a used one is.
        # Under the home lock, but it touches no stream's row: no apply waits on it.
        if not state.claim_handshake(offer.cid, _worker(home), _offer_digest(offer)):
            raise invalid
        made_active(connection, SecretStr(secrets.token_urlsafe(32)), offer.short_name)
        if offer.url and connection.topology is Topology.PUBLIC_PUBLIC:
            # The URL this side verified when initiating is proven reachable from here;
            # the acceptor's own idea of its URL only fills a gap.
            connection.remote_url = connection.remote_url or normalize_url(offer.url)
        return connection

    if not CONNECTION_ID.fullmatch(offer.cid) or home.find_connection(offer.cid) is None:
        token_matches(offer.tok, _NO_HASH)
        raise invalid
    again = winners.repeated(home, offer, now)
    if again is not None:
        return again  # said hello already, the first time
    try:
        connection = home.update_connection(offer.cid, burn)
    except NotFound:
        raise invalid from None
    winners.remember(offer, now)
    # After the burn, not before: only the handshake that won says hello.
    greet(state, connection)
    return connection
