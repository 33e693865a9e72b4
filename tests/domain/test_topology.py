"""The topology table: each topology and role, who has a URL, who polls, who receives."""

from __future__ import annotations

import pytest

from exalate_tui.domain.models import Role, Topology
from exalate_tui.domain.topology import side, topology_for

INIT, ACC = Role.INITIATOR, Role.ACCEPTOR


@pytest.mark.parametrize(
    ("topology", "role", "has_url", "polls", "pushes", "receives"),
    [
        (Topology.PUBLIC_PRIVATE, INIT, True, False, False, True),
        (Topology.PUBLIC_PRIVATE, ACC, False, True, False, False),
        (Topology.PUBLIC_PUBLIC, INIT, True, False, True, True),
        (Topology.PUBLIC_PUBLIC, ACC, True, False, True, False),
        (Topology.PRIVATE_PUBLIC, INIT, False, True, False, False),
        (Topology.PRIVATE_PUBLIC, ACC, True, False, False, True),
    ],
)
def test_each_side_of_each_topology(
    topology: Topology, role: Role, has_url: bool, polls: bool, pushes: bool, receives: bool
) -> None:
    here = side(topology, role)
    assert (here.has_url, here.polls, here.pushes, here.receives_handshake) == (
        has_url,
        polls,
        pushes,
        receives,
    )
    # Exactly one side of a connection receives the handshake, and someone has a URL.
    other = side(topology, ACC if role is INIT else INIT)
    assert here.receives_handshake != other.receives_handshake
    assert here.has_url or other.has_url


def test_an_invitation_s_topology_follows_from_the_urls_it_carries() -> None:
    assert topology_for(initiator_has_url=True, acceptor_has_url=False) is Topology.PUBLIC_PRIVATE
    assert topology_for(initiator_has_url=True, acceptor_has_url=True) is Topology.PUBLIC_PUBLIC
    assert topology_for(initiator_has_url=False, acceptor_has_url=True) is Topology.PRIVATE_PUBLIC
    assert topology_for(initiator_has_url=False, acceptor_has_url=False) is Topology.PRIVATE_PUBLIC
