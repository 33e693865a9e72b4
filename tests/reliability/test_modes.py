"""Every file that holds a secret is 0600 (its folder 0700), whichever path wrote it.

A connection's secret, its invitation token's hash, a tombstone (the whole
connection, secret included) and the message streams are written by
different paths: the wizard's Done, accept, the node's handshake,
regenerate, deactivate/activate, delete (the tombstone) and a partner's
`connection.*` message. After each of them, every file of both homes is
checked, so a new file or a new writer that forgets the mode fails here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Instance, Mode
from exalate_tui.flows.initiate import InitiateWizard
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import actions, runtime
from exalate_tui.lifecycle.accept import accept
from exalate_tui.lifecycle.incoming import apply_effect
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.transport.client import Remote
from exalate_tui.transport.sqlite_streams import SqliteStreams

PUBLIC = "http://snow.test"
# Not secret, and rewritten by every writer of the home: the lock's own file.
NOT_SECRET = {".lock"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Side:
    home: Home
    instance: Instance
    state: SqliteStreams
    transport: httpx.ASGITransport


def make_side(root: Path, name: str, url: str | None) -> Side:
    home = Home(root / name)
    instance = Instance(short_name=name, public_url=url)
    home.save_instance(instance)
    state = SqliteStreams(home.state_path)
    return Side(home, instance, state, httpx.ASGITransport(app=runtime.node_app(home, state)))


def entries(home: Home) -> Iterator[Path]:
    yield home.path
    yield from sorted(home.path.rglob("*"))


def assert_private(*sides: Side, expect: set[str]) -> None:
    """Every file 0600 and every folder 0700; `expect` names files that must exist."""
    seen: set[str] = set()
    for side in sides:
        for path in entries(side.home):
            mode = path.stat().st_mode & 0o777
            relative = path.relative_to(side.home.path).as_posix()
            seen.add(relative)
            if path.is_dir():
                assert mode == 0o700, f"{path} is {mode:o}"
            elif path.name not in NOT_SECRET:
                assert mode == 0o600, f"{path} is {mode:o}"
    missing = expect - seen
    assert not missing, f"not written, so not checked: {missing}"


def issue(side: Side, remote: str) -> codes.Invitation:
    """A public-private invitation from the real wizard (Done saves the connection)."""
    wizard = InitiateWizard(side.instance, side.home.load_connections().connections, now=time.time)
    wizard.choose_no_url()
    wizard.set_mode(Mode.BASIC)
    assert wizard.next() and wizard.next()
    wizard.set_remote_name(remote)
    assert wizard.next(), wizard.errors
    assert wizard.issued is not None
    assert save_issued(side.home, wizard.issued.connection)
    return wizard.issued.invitation


async def poll(public: Side, private: Side, cid: str) -> None:
    """One poll by the private side, applied as its poller applies it."""
    connection = private.home.get_connection(cid)
    assert connection.secret is not None
    async with Remote(PUBLIC, transport=public.transport) as remote:
        batch = await remote.fetch(cid, connection.secret, private.state.last_applied(cid))
    private.state.apply(cid, batch.messages, lambda m: apply_effect(private.home, cid, m))


@pytest.mark.anyio
async def test_every_path_that_writes_a_secret_writes_it_0600(tmp_path: Path) -> None:
    snow = make_side(tmp_path, "snow", PUBLIC)
    jira = make_side(tmp_path, "jira", None)
    assert_private(snow, jira, expect={"instance.toml", "state.sqlite3"})

    # The wizard's Done: the connection with its token's hash.
    pending = issue(snow, "jira")
    other = issue(snow, "zendesk")
    assert_private(snow, expect={f"connections/{pending.cid}.toml"})

    # Regenerate rewrites the token's hash.
    actions.regenerate_invitation(snow.home, other.cid)
    assert_private(snow, expect={f"connections/{other.cid}.toml"})

    # Accept: the acceptor saves the secret; the initiator's node writes it on the handshake.
    await accept(jira.home, jira.state, pending, "jira", transport=snow.transport)
    file = f"connections/{pending.cid}.toml"
    assert_private(snow, jira, expect={file})
    assert snow.home.get_connection(pending.cid).secret is not None

    # Deactivate and activate rewrite the connection, and queue messages (WAL files).
    await actions.deactivate(snow.home, snow.state, pending.cid)
    await actions.activate(snow.home, snow.state, pending.cid)
    assert_private(snow, expect={file, "state.sqlite3-wal"})

    # Delete on the polled side: the tombstone holds the whole connection, secret included.
    await actions.delete(snow.home, snow.state, pending.cid)
    tombstone = f"tombstones/{pending.cid}.toml"
    assert_private(snow, expect={tombstone})
    assert snow.home.get_tombstone(pending.cid) is not None

    # The partner's `connection.*` message rewrites the connection on the polling side.
    await poll(snow, jira, pending.cid)
    assert_private(jira, expect={file})
    assert jira.home.get_connection(pending.cid).peer_state is not None
