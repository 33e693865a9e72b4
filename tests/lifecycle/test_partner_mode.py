"""`connection.mode`: the partner switched its side; this side records it once and keeps
its own rules (lifecycle/incoming.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.lifecycle.incoming import apply_effect
from exalate_tui.protocol import kinds
from exalate_tui.transport.streams import Message


def test_the_partners_mode_is_recorded_once_and_this_sides_mode_stays(tmp_path: Path) -> None:
    home = Home(tmp_path / "jira")
    home.save_instance(Instance(short_name="jira"))
    connection = Connection(
        name="snow_to_jira",
        mode=Mode.BASIC,
        topology=Topology.PUBLIC_PRIVATE,
        role=Role.ACCEPTOR,
        local_name="jira",
        remote_name="snow",
        status=Status.ACTIVE,
        secret=SecretStr("s" * 43),
        remote_url="http://127.0.0.1:9",
    )
    home.save_connection(connection)
    message = Message(seq=3, kind=kinds.MODE, body_json='{"mode": "script"}')
    apply_effect(home, connection.id, message)
    path = home.connection_path(connection.id)
    written = path.stat().st_ino
    apply_effect(home, connection.id, message)  # delivered again: nothing to write
    assert path.stat().st_ino == written
    stored = home.get_connection(connection.id)
    assert (stored.peer_mode, stored.mode) == (Mode.SCRIPT, Mode.BASIC)
    apply_effect(home, connection.id, Message(seq=4, kind=kinds.MODE, body_json='{"mode": "??"}'))
    assert home.get_connection(connection.id).peer_mode is Mode.SCRIPT
