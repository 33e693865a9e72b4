"""The node and the supervisor wired with this project's lifecycle: the one assembly.

The transport moves messages and performs handshakes; the `Hooks` it asks
for (transport/hooks.py) are implemented here by `Lifecycle`, from
`handshake.py`, `incoming.py` and `actions.py`. Everything that runs a node
or a supervisor takes them from here: `exalate-tui node` (`serve`), the
console's supervisor worker (`Supervisor`), the tests (`node_app`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from exalate_tui.domain.models import Connection
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import handshake
from exalate_tui.lifecycle.actions import purge_tombstones
from exalate_tui.lifecycle.incoming import apply_effect
from exalate_tui.transport import supervisor
from exalate_tui.transport.streams import Message, Streams
from exalate_tui.transport.wakeups import WATCH

if TYPE_CHECKING:
    from fastapi import FastAPI

    from exalate_tui.protocol.wire import HandshakeIn


class Lifecycle:
    """The transport's `Hooks` for one home and its open streams."""

    def __init__(self, home: Home, state: Streams) -> None:
        self.home = home
        self.state = state
        self.winners = handshake.Winners()

    def take_invitation(self, offer: HandshakeIn, now: float) -> Connection:
        return handshake.take_invitation(self.home, self.state, offer, now, self.winners)

    def handshake_answered(
        self, connection: Connection, secret: SecretStr, remote_name: str
    ) -> None:
        handshake.handshake_answered(self.home, self.state, connection, secret, remote_name)

    def apply(self, cid: str, message: Message) -> None:
        apply_effect(self.home, cid, message)

    def housekeeping(self) -> list[str]:
        """Drop tombstones whose partner never came to fetch `connection.deleted`."""
        return purge_tombstones(self.home, self.state)


def node_app(home: Home, state: Streams, *, watch: float = WATCH) -> FastAPI:
    """The node's ASGI app for this home and its open state."""
    # The console runs a supervisor and never a node: FastAPI loads only for a node.
    from exalate_tui.transport.node import create_app

    return create_app(home, state, Lifecycle(home, state), watch=watch)


class Supervisor(supervisor.Supervisor):
    """`transport.supervisor.Supervisor` with this home's `Lifecycle` as its hooks."""

    def __init__(self, home: Home, state: Streams, **options: Any) -> None:
        super().__init__(home, state, Lifecycle(home, state), **options)


async def serve(
    home: Home,
    host: str | None = None,
    port: int | None = None,
    beside: Sequence[Callable[[Home, Streams], Awaitable[None]]] = (),
) -> None:
    """`exalate-tui node`: serve the API and run the supervisor (and `beside`, the
    layers above's jobs: the sync engine) until SIGINT or SIGTERM."""
    from exalate_tui.transport import server  # uvicorn and FastAPI: a node's only

    await server.serve(home, Lifecycle, host, port, beside)
