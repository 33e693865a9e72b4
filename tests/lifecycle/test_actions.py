"""Connection actions against a real node app (in-process): deactivate, activate,
delete with the partner told, tombstones, regenerated invitations, and what a
partner's `connection.*` messages do here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Connection, Instance, Mode, PeerState, Role, Status, Topology
from exalate_tui.flows.initiate import InitiateWizard, Step
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import actions, incoming, runtime
from exalate_tui.lifecycle.actions import ActionError, Told
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.transport.client import Remote, RemoteError
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.streams import Message

PUBLIC = "http://snow.test"
SECRET = SecretStr("s" * 43)
CID = "12345678-1234-4234-8234-123456789abc"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Side:
    home: Home
    state: SqliteStreams
    transport: httpx.ASGITransport


def side(root: Path, name: str, public_url: str | None) -> Side:
    home = Home(root / name)
    home.save_instance(Instance(short_name=name, public_url=public_url))
    state = SqliteStreams(home.state_path)
    return Side(home, state, httpx.ASGITransport(app=runtime.node_app(home, state)))


def connection(**values: Any) -> Connection:
    base: dict[str, Any] = {
        "id": CID,
        "name": "snow_to_jira",
        "mode": Mode.BASIC,
        "topology": Topology.PUBLIC_PRIVATE,
        "status": Status.ACTIVE,
        "secret": SECRET,
    }
    return Connection.model_validate({**base, **values})


def pair(tmp_path: Path) -> tuple[Side, Side]:
    """snow (public, polled) and jira (private, calls snow): one Active connection."""
    public = side(tmp_path, "snow", PUBLIC)
    private = side(tmp_path, "jira", None)
    public.home.save_connection(
        connection(role=Role.INITIATOR, local_name="snow", remote_name="jira")
    )
    private.home.save_connection(
        connection(role=Role.ACCEPTOR, local_name="jira", remote_name="snow", remote_url=PUBLIC)
    )
    return public, private


async def poll(public: Side, private: Side) -> list[str]:
    """One poll by the private side, applied as its poller does; returns the kinds."""
    async with Remote(PUBLIC, transport=public.transport) as remote:
        batch = await remote.fetch(CID, SECRET, private.state.last_applied(CID))
    private.state.apply(CID, batch.messages, lambda m: incoming.apply_effect(private.home, CID, m))
    return [m.kind for m in batch.messages]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- deactivate / activate --------------------------------------------------------------


@pytest.mark.anyio
async def test_polled_side_pauses_and_the_partner_catches_up_on_activation(
    tmp_path: Path,
) -> None:
    public, private = pair(tmp_path)
    outcome = await actions.deactivate(public.home, public.state, CID)
    assert (outcome.told, outcome.connection.status) == (Told.QUEUED, Status.DEACTIVATED)
    assert public.home.get_connection(CID).status is Status.DEACTIVATED
    with pytest.raises(RemoteError) as refused:
        await poll(public, private)
    assert (refused.value.status, refused.value.code) == (409, "deactivated")
    public.state.enqueue(CID, "sync", {"issue": 1})  # queues while deactivated

    outcome = await actions.activate(public.home, public.state, CID)
    assert (outcome.told, outcome.connection.status) == (Told.QUEUED, Status.ACTIVE)
    kinds = await poll(public, private)
    assert kinds == ["connection.deactivated", "sync", "connection.activated"]
    mirrored = private.home.get_connection(CID)
    assert (mirrored.status, mirrored.peer_state) == (Status.ACTIVE, None)


@pytest.mark.anyio
async def test_calling_side_tells_the_partner_at_once(tmp_path: Path) -> None:
    public, private = pair(tmp_path)
    private.state.enqueue(CID, "sync", {"issue": 1})  # sent before the pause
    outcome = await actions.deactivate(private.home, private.state, CID, transport=public.transport)
    assert (outcome.told, outcome.error) == (Told.DELIVERED, None)
    assert private.home.get_connection(CID).status is Status.DEACTIVATED
    assert private.state.pending(CID) == []  # delivered and acknowledged
    theirs = public.home.get_connection(CID)
    assert (theirs.status, theirs.peer_state) == (Status.ACTIVE, PeerState.DEACTIVATED)
    assert [m.kind for m in public.state.inbox(CID)] == ["sync", "connection.deactivated"]

    outcome = await actions.activate(private.home, private.state, CID, transport=public.transport)
    assert outcome.told is Told.DELIVERED
    assert private.home.get_connection(CID).status is Status.ACTIVE
    assert public.home.get_connection(CID).peer_state is None


@pytest.mark.anyio
async def test_an_unreachable_partner_is_reported_and_the_message_waits(tmp_path: Path) -> None:
    private = side(tmp_path, "jira", None)
    private.home.save_connection(
        connection(role=Role.ACCEPTOR, local_name="jira", remote_url=closed_port_url())
    )
    outcome = await actions.deactivate(private.home, private.state, CID, timeout=3)
    assert outcome.told is Told.UNREACHABLE
    assert "connection refused" in (outcome.error or "")
    assert private.home.get_connection(CID).status is Status.DEACTIVATED
    assert [m.kind for m in private.state.pending(CID)] == ["connection.deactivated"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("action", "values", "says"),
    [
        ("deactivate", {"status": Status.PENDING, "secret": None}, "only an active connection"),
        ("deactivate", {"status": Status.DEACTIVATED}, "only an active connection"),
        ("activate", {"status": Status.ACTIVE}, "only a deactivated connection"),
        (
            "activate",
            {"status": Status.DEACTIVATED, "peer_state": PeerState.DELETED},
            "the partner deleted",
        ),
    ],
)
async def test_actions_that_do_not_apply_are_refused_and_change_nothing(
    tmp_path: Path, action: str, values: dict[str, Any], says: str
) -> None:
    public = side(tmp_path, "snow", PUBLIC)
    public.home.save_connection(
        connection(role=Role.INITIATOR, local_name="snow", remote_name="jira", **values)
    )
    before = public.home.connection_path(CID).read_bytes()
    with pytest.raises(ActionError, match=says):
        await getattr(actions, action)(public.home, public.state, CID)
    assert public.home.connection_path(CID).read_bytes() == before
    assert public.state.pending(CID) == []


# -- delete -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_calling_side_tells_the_partner_then_deletes(tmp_path: Path) -> None:
    public, private = pair(tmp_path)
    private.state.enqueue(CID, "sync")
    outcome = await actions.delete(private.home, private.state, CID, transport=public.transport)
    assert outcome.told is Told.DELIVERED and outcome.connection.id == CID
    assert private.home.load_connections().connections == []
    assert (private.state.last_seq(CID), private.state.pending(CID)) == (0, [])
    theirs = public.home.get_connection(CID)
    assert (theirs.status, theirs.peer_state) == (Status.DEACTIVATED, PeerState.DELETED)


@pytest.mark.anyio
async def test_delete_goes_ahead_when_the_partner_cannot_be_told(tmp_path: Path) -> None:
    private = side(tmp_path, "jira", None)
    private.home.save_connection(
        connection(role=Role.ACCEPTOR, local_name="jira", remote_url=closed_port_url())
    )
    outcome = await actions.delete(private.home, private.state, CID, timeout=3)
    assert outcome.told is Told.UNREACHABLE and "connection refused" in (outcome.error or "")
    assert not private.home.connection_path(CID).exists()
    assert private.state.last_seq(CID) == 0


@pytest.mark.anyio
async def test_polled_side_leaves_a_tombstone_until_the_partner_has_the_news(
    tmp_path: Path,
) -> None:
    public, private = pair(tmp_path)
    public.state.enqueue(CID, "sync")
    outcome = await actions.delete(public.home, public.state, CID)
    assert outcome.told is Told.QUEUED
    assert public.home.load_connections().connections == []
    assert public.home.get_tombstone(CID) is not None

    assert await poll(public, private) == ["sync", "connection.deleted"]
    mine = private.home.get_connection(CID)
    assert (mine.status, mine.peer_state) == (Status.DEACTIVATED, PeerState.DELETED)
    assert await poll(public, private) == []  # its `after` acknowledges the news
    assert public.home.get_tombstone(CID) is None
    assert public.state.last_seq(CID) == 0
    with pytest.raises(RemoteError) as gone:
        await poll(public, private)
    assert gone.value.status == 401


@pytest.mark.anyio
async def test_an_ack_landing_before_the_file_moves_still_counts_as_heard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The enqueue wakes the partner at once: its ack can reach the node while the
    connection is still live there (the node just prunes). No tombstone may linger."""
    public, private = pair(tmp_path)
    enqueue = public.state.enqueue

    def enqueue_then_partner_acks(cid: str, kind: str, body: Any = None) -> int:
        seq = enqueue(cid, kind, body)
        assert public.home.get_tombstone(cid) is None  # not buried yet
        public.state.ack(cid, seq)  # what the node does with a live connection's ack
        return seq

    monkeypatch.setattr(public.state, "enqueue", enqueue_then_partner_acks)
    outcome = await actions.delete(public.home, public.state, CID)
    assert outcome.told is Told.QUEUED
    assert public.home.get_tombstone(CID) is None
    assert public.home.load_connections().connections == []
    assert public.state.last_seq(CID) == 0


@pytest.mark.anyio
async def test_a_deactivated_polled_side_still_leaves_the_news(tmp_path: Path) -> None:
    public, private = pair(tmp_path)
    await actions.deactivate(public.home, public.state, CID)
    await actions.delete(public.home, public.state, CID)
    assert await poll(public, private) == ["connection.deactivated", "connection.deleted"]
    assert private.home.get_connection(CID).peer_state is PeerState.DELETED


@pytest.mark.anyio
@pytest.mark.parametrize(
    "values",
    [
        {"status": Status.PENDING, "secret": None},
        {"status": Status.DEACTIVATED, "peer_state": PeerState.DELETED},
    ],
)
async def test_delete_with_nobody_to_tell(tmp_path: Path, values: dict[str, Any]) -> None:
    public = side(tmp_path, "snow", PUBLIC)
    public.home.save_connection(
        connection(role=Role.INITIATOR, local_name="snow", remote_name="jira", **values)
    )
    public.state.enqueue(CID, "sync")
    outcome = await actions.delete(public.home, public.state, CID)
    assert outcome.told is Told.NOBODY
    assert not public.home.connection_path(CID).exists()
    assert public.home.get_tombstone(CID) is None
    assert public.state.pending(CID) == []


class FullState(SqliteStreams):
    """A store that passes its check, then refuses the write (a disk filled meanwhile)."""

    def enqueue(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    def forget(self, cid: str) -> None:
        raise OSError(28, "No space left on device")


@pytest.mark.anyio
async def test_an_action_the_store_refuses_changes_nothing(tmp_path: Path) -> None:
    """All or nothing, past the damage check too: a status change whose message the store
    does not take goes back; a delete whose state cannot be forgotten keeps the file."""
    public = side(tmp_path, "snow", PUBLIC)
    public.home.save_connection(
        connection(role=Role.INITIATOR, local_name="snow", remote_name="jira")
    )
    full = FullState(public.home.state_path)
    before = public.home.connection_path(CID).read_bytes()
    with pytest.raises(OSError, match="No space"):
        await actions.deactivate(public.home, full, CID)
    assert public.home.get_connection(CID).status is Status.ACTIVE
    with pytest.raises(OSError, match="No space"):
        await actions.delete(public.home, full, CID)  # the news is enqueued first
    assert public.home.connection_path(CID).read_bytes() == before
    public.home.update_connection(CID, lambda c: setattr(c, "secret", None))
    with pytest.raises(OSError, match="No space"):
        await actions.delete(public.home, full, CID)  # nobody to tell: forget, then the file
    assert public.home.connection_path(CID).exists()
    full.close()


def test_purge_forgets_only_tombstones_past_their_grace(tmp_path: Path) -> None:
    public = side(tmp_path, "snow", PUBLIC)
    old_id, new_id = CID, "87654321-4321-4321-8321-cba987654321"
    for cid in (old_id, new_id):
        public.home.save_connection(
            connection(id=cid, name=cid[:8], role=Role.INITIATOR, local_name="snow")
        )
        public.state.enqueue(cid, "connection.deleted")
        public.home.bury_connection(cid)
    week_ago = time.time() - actions.TOMBSTONE_GRACE - 60
    os.utime(public.home.tombstone_path(old_id), (week_ago, week_ago))
    assert actions.purge_tombstones(public.home, public.state) == [old_id]
    assert public.home.get_tombstone(old_id) is None and public.state.last_seq(old_id) == 0
    assert public.home.get_tombstone(new_id) is not None and public.state.last_seq(new_id) == 1


# -- regenerate an invitation ----------------------------------------------------------------


def initiate(home: Home, *, no_url: bool) -> tuple[Connection, str]:
    instance = home.load_instance()
    assert instance is not None
    wizard = InitiateWizard(instance, home.load_connections().connections)
    if no_url:
        wizard.choose_no_url()
    else:
        wizard.set_dest_url("https://jira.example.com")
        assert wizard.next()
    wizard.set_mode(Mode.SCRIPT)
    wizard.set_remote_name("jira")
    wizard.set_description("tickets both ways")
    while wizard.step is not Step.INVITATION:
        assert wizard.next(), wizard.errors
    assert wizard.issued is not None
    assert save_issued(home, wizard.issued.connection, wizard.new_instance)
    return wizard.issued.connection, wizard.issued.code


@pytest.mark.anyio
async def test_a_regenerated_code_replaces_the_old_one(tmp_path: Path) -> None:
    public = side(tmp_path, "snow", PUBLIC)
    issued, old_code = initiate(public.home, no_url=True)
    later = time.time() + 60
    new_code = actions.regenerate_invitation(public.home, issued.id, now=lambda: later)
    old, new = codes.decode(old_code), codes.decode(new_code)
    assert new.model_dump(exclude={"tok", "exp"}) == old.model_dump(exclude={"tok", "exp"})
    assert new.tok != old.tok and new.exp == int(later) + codes.DEFAULT_LIFETIME
    stored = public.home.get_connection(issued.id)
    assert stored.token_hash == codes.hash_token(new.tok) and stored.token is None
    assert stored.token_expires is not None and stored.token_expires.timestamp() == new.exp

    async with httpx.AsyncClient(transport=public.transport, base_url=PUBLIC) as client:
        body = {"cid": issued.id, "short_name": "jira"}
        stale = await client.post("/api/v1/handshake", json={**body, "tok": old.tok})
        assert stale.status_code == 403 and stale.json()["error"] == "invalid_invitation"
        fresh = await client.post(
            "/api/v1/handshake", json={**body, "tok": new.tok, "sum": codes.digest(new)}
        )
        assert fresh.status_code == 200


def test_a_private_initiator_keeps_the_regenerated_token(tmp_path: Path) -> None:
    # "snow": an instance named "jira" may not initiate to "jira" (a connection to itself).
    private = side(tmp_path, "snow", None)
    issued, _ = initiate(private.home, no_url=False)
    assert issued.topology is Topology.PRIVATE_PUBLIC
    new = codes.decode(actions.regenerate_invitation(private.home, issued.id))
    assert new.url is None and new.dest_url == "https://jira.example.com"
    stored = private.home.get_connection(issued.id)
    assert stored.token is not None and stored.token.get_secret_value() == new.tok


@pytest.mark.parametrize(
    ("values", "public_url", "says"),
    [
        ({"role": Role.INITIATOR, "status": Status.ACTIVE}, PUBLIC, "only a pending connection"),
        (
            {"role": Role.ACCEPTOR, "status": Status.PENDING, "secret": None},
            PUBLIC,
            "only a pending connection",
        ),
        (
            {"role": Role.INITIATOR, "status": Status.PENDING, "secret": None},
            None,
            "no public URL",
        ),
    ],
)
def test_regenerating_is_refused_where_it_does_not_apply(
    tmp_path: Path, values: dict[str, Any], public_url: str | None, says: str
) -> None:
    home = Home(tmp_path / "snow")
    home.save_instance(Instance(short_name="snow", public_url=public_url))
    home.save_connection(connection(local_name="snow", remote_name="jira", **values))
    before = home.connection_path(CID).read_bytes()
    with pytest.raises(ActionError, match=says):
        actions.regenerate_invitation(home, CID)
    assert home.connection_path(CID).read_bytes() == before


# -- a partner's messages --------------------------------------------------------------------


def test_partner_messages_are_idempotent_and_write_only_on_change(tmp_path: Path) -> None:
    home = Home(tmp_path / "snow")
    home.save_connection(connection(role=Role.INITIATOR, local_name="snow"))
    path = home.connection_path(CID)

    def receive(kind: str) -> tuple[PeerState | None, Status]:
        incoming.apply_effect(home, CID, Message(1, kind))
        stored = home.get_connection(CID)
        return stored.peer_state, stored.status

    assert receive("ping") == (None, Status.ACTIVE)
    assert receive("connection.deactivated") == (PeerState.DEACTIVATED, Status.ACTIVE)
    written = path.stat().st_ino
    assert receive("connection.deactivated") == (PeerState.DEACTIVATED, Status.ACTIVE)
    assert path.stat().st_ino == written  # nothing changed, nothing written
    assert receive("connection.activated") == (None, Status.ACTIVE)
    assert receive("connection.deleted") == (PeerState.DELETED, Status.DEACTIVATED)
    # A deleted partner cannot come back.
    assert receive("connection.activated") == (PeerState.DELETED, Status.DEACTIVATED)
    path.unlink()
    incoming.apply_effect(home, CID, Message(2, "connection.deleted"))  # gone here too: no error


# -- the command line ----------------------------------------------------------------------


def cli(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", "--home", str(home.path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_connections_deactivate_and_activate_from_the_command_line(tmp_path: Path) -> None:
    public = side(tmp_path, "snow", PUBLIC)
    public.home.save_connection(connection(role=Role.INITIATOR, local_name="snow"))
    paused = cli(public.home, "connections", "deactivate", CID[:8], "--json")
    assert paused.returncode == 0, paused.stderr
    document = json.loads(paused.stdout)
    assert document["connection"]["status"] == "deactivated"
    assert (document["partner"], document["partner_error"]) == ("queued", None)
    assert "secret" not in document["connection"]

    again = cli(public.home, "connections", "deactivate", CID)
    assert again.returncode == 2
    assert "only an active connection can be deactivated" in again.stderr

    resumed = cli(public.home, "connections", "activate", CID)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"Activated connection snow_to_jira ({CID})\n")
    assert "when it next connects" in resumed.stdout
    assert [m.kind for m in public.state.pending(CID)] == [
        "connection.deactivated",
        "connection.activated",
    ]
