"""The topology table: for each topology and role, who has a URL and who does what.

| topology        | initiator has a URL | acceptor has a URL | receives the handshake |
|-----------------|---------------------|--------------------|------------------------|
| public-private  | yes                 | no                 | the initiator          |
| public-public   | yes                 | yes                | the initiator          |
| private-public  | no                  | yes                | the acceptor           |

Everything else follows from it (docs/protocol.md): a side without a URL
makes every HTTP request, so it polls; when both have one, each pushes to
the other; the side that makes the first request presents the invitation
token, so the other one holds its hash and receives the handshake.
"""

from __future__ import annotations

from dataclasses import dataclass

from exalate_tui.domain.models import Role, Topology


@dataclass(frozen=True)
class _Row:
    initiator_has_url: bool
    acceptor_has_url: bool
    receiver: Role


_TABLE = {
    Topology.PUBLIC_PRIVATE: _Row(
        initiator_has_url=True, acceptor_has_url=False, receiver=Role.INITIATOR
    ),
    Topology.PUBLIC_PUBLIC: _Row(
        initiator_has_url=True, acceptor_has_url=True, receiver=Role.INITIATOR
    ),
    Topology.PRIVATE_PUBLIC: _Row(
        initiator_has_url=False, acceptor_has_url=True, receiver=Role.ACCEPTOR
    ),
}


@dataclass(frozen=True)
class Side:
    """One side of a connection, as the table sees it."""

    has_url: bool
    peer_has_url: bool
    receives_handshake: bool

    @property
    def polls(self) -> bool:
        """No URL here: this side makes every request, long-polling the partner."""
        return not self.has_url

    @property
    def pushes(self) -> bool:
        """Both have a URL: each side delivers its own outbox to the other."""
        return self.has_url and self.peer_has_url


def side(topology: Topology, role: Role) -> Side:
    row = _TABLE[topology]
    initiator = role is Role.INITIATOR
    return Side(
        has_url=row.initiator_has_url if initiator else row.acceptor_has_url,
        peer_has_url=row.acceptor_has_url if initiator else row.initiator_has_url,
        receives_handshake=role is row.receiver,
    )


def topology_for(*, initiator_has_url: bool, acceptor_has_url: bool) -> Topology:
    """The topology of an invitation, from what its initiator knows of both URLs.

    A private initiator is private-public whatever it knows: two sides
    without a URL could never reach each other, so its acceptor has one.
    """
    if not initiator_has_url:
        return Topology.PRIVATE_PUBLIC
    return next(
        topology
        for topology, row in _TABLE.items()
        if row.initiator_has_url and row.acceptor_has_url is acceptor_has_url
    )
