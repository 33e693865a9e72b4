"""What the transport asks of the layer above it: the `Hooks` interface.

The node and the supervisor move messages and perform handshakes; what a
handshake, a message or the passing of time *means* for a connection is
lifecycle's (`lifecycle/runtime.py` implements these hooks and wires them
in). Each hook is called from a worker thread, never on the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pydantic import SecretStr

from exalate_tui.domain.models import Connection
from exalate_tui.errors import ExalateError
from exalate_tui.transport.streams import Message

if TYPE_CHECKING:
    from exalate_tui.protocol.wire import HandshakeIn


class HandshakeRefused(ExalateError):
    """The offer does not match an invitation this side holds (answered 403).

    `code` is the protocol's: `invalid_invitation`, `invitation_used` or
    `invitation_expired` (docs/protocol.md); `detail` says it to the caller.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Hooks(Protocol):
    def take_invitation(self, offer: HandshakeIn, now: float) -> Connection:
        """The node received a handshake: check and burn the token, once, and return the
        connection made Active with a fresh secret (its hello already enqueued).

        Raises `HandshakeRefused`; `home.store.StoreError` when the home is unreadable.
        """
        ...

    def handshake_answered(
        self, connection: Connection, secret: SecretStr, remote_name: str
    ) -> None:
        """A private initiator's handshake was answered: the connection becomes Active."""
        ...

    def apply(self, cid: str, message: Message) -> None:
        """What a received message does beyond the inbox; runs inside the transaction
        that applies it, so it must be idempotent."""
        ...

    def housekeeping(self) -> list[str]:
        """Periodic chores of a serving node; returns the ids of connections forgotten."""
        ...


def invalid_invitation() -> HandshakeRefused:
    """The one answer for an unknown id, a wrong token, a used invitation and a broken file:
    a caller without the right token learns nothing about which ids exist."""
    return HandshakeRefused(
        "invalid_invitation", "this node has no invitation with that id and token"
    )
