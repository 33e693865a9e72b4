"""Accept invitation: the pure AcceptWizard, and `accept.accept` against the real node.

Codes are issued by the real InitiateWizard in a second home, so both halves
of the contract meet here exactly as they do between two instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import CountingHome, fill_disk, scans_pass, small_disk

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Connection, Instance, Mode, PeerState, Role, Status, Topology
from exalate_tui.flows.accept import AcceptStep, AcceptWizard, Stage, remaining
from exalate_tui.flows.initiate import InitiateWizard
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import actions, runtime
from exalate_tui.lifecycle.accept import AcceptError, accept
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.lifecycle.runtime import Supervisor
from exalate_tui.transport.sqlite_streams import SqliteStreams

NOW = 1_800_000_000.0
PUBLIC_A = "http://127.0.0.1:7001"
PUBLIC_B = "http://127.0.0.1:7002"


def issue(
    home: Home,
    instance: Instance,
    *,
    dest_url: str | None,
    now: float = NOW,
    name: str = "",
    remote_name: str = "jira",
) -> tuple[str, codes.Invitation]:
    """A code from the real Initiate wizard: dest_url None means "I don't have a URL"."""
    home.save_instance(instance)
    wizard = InitiateWizard(instance, home.load_connections().connections, now=lambda: now)
    if dest_url is None:
        wizard.choose_no_url()
    else:
        wizard.set_dest_url(dest_url)
        assert wizard.next()
    wizard.set_mode(Mode.SCRIPT)
    assert wizard.next()
    if wizard.topology is Topology.PUBLIC_PRIVATE:
        assert wizard.next()  # the note
    wizard.set_remote_name(remote_name)
    if name:
        wizard.set_name(name)
    assert wizard.next(), wizard.errors
    assert wizard.issued is not None
    assert save_issued(home, wizard.issued.connection, wizard.new_instance)
    return wizard.issued.code, wizard.issued.invitation


@pytest.fixture
def initiator(tmp_path: Path) -> Home:
    return Home(tmp_path / "initiator")


@pytest.fixture
def acceptor(tmp_path: Path) -> Home:
    return Home(tmp_path / "acceptor")


def accept_wizard(home: Home, instance: Instance | None, now: float = NOW) -> AcceptWizard:
    return AcceptWizard(instance, home.load_connections().connections, now=lambda: now)


# -- the pure wizard ------------------------------------------------------------


def test_a_pasted_code_with_line_breaks_previews_what_it_is(
    initiator: Home, acceptor: Home
) -> None:
    code, invite = issue(initiator, Instance(short_name="snow", public_url=PUBLIC_A), dest_url=None)
    wizard = accept_wizard(acceptor, None)
    pasted = "\n".join(code[i : i + 30] for i in range(0, len(code), 30)) + "\n  "
    assert wizard.set_code(pasted) is None
    preview = wizard.preview
    assert preview is not None
    assert (preview.from_name, preview.to_name, preview.name) == ("snow", "jira", "snow_to_jira")
    assert preview.mode is Mode.SCRIPT
    assert preview.topology is Topology.PUBLIC_PRIVATE
    assert "this side has none and will poll it" in preview.topology_text
    assert preview.initiator_url == PUBLIC_A
    assert preview.expires.timestamp() == invite.exp
    assert preview.expires_in == "in 7 days"
    assert wizard.name == "snow_to_jira"


def test_damaged_code_says_so_and_does_not_advance(initiator: Home, acceptor: Home) -> None:
    code, _ = issue(initiator, Instance(short_name="snow", public_url=PUBLIC_A), dest_url=None)
    wizard = accept_wizard(acceptor, None)
    damaged = code[:20] + ("A" if code[20] != "A" else "B") + code[21:]
    problem = wizard.set_code(damaged)
    assert problem is not None and "damaged" in problem
    assert wizard.preview is None
    assert not wizard.next()
    assert wizard.step is AcceptStep.CODE


def test_empty_code_is_refused(acceptor: Home) -> None:
    wizard = accept_wizard(acceptor, None)
    assert not wizard.next()
    assert "No invitation code given" in wizard.errors["code"]


def test_expired_code_shows_the_preview_and_why(initiator: Home, acceptor: Home) -> None:
    code, invite = issue(initiator, Instance(short_name="snow", public_url=PUBLIC_A), dest_url=None)
    wizard = accept_wizard(acceptor, None, now=invite.exp + 1)
    problem = wizard.set_code(code)
    assert problem is not None
    assert problem.startswith("This invitation expired on ")
    assert "ask snow for a new code" in problem
    assert wizard.preview is not None and wizard.preview.expires_in == "expired"
    assert not wizard.next()


def test_own_code_and_already_accepted_code_are_refused(initiator: Home) -> None:
    instance = Instance(short_name="snow", public_url=PUBLIC_A)
    code, invite = issue(initiator, instance, dest_url=None)
    own = accept_wizard(initiator, instance)
    assert "This instance issued this invitation" in (own.set_code(code) or "")

    accepted_home = Home(initiator.path.parent / "accepted")
    wizard = accept_wizard(accepted_home, None)
    wizard.set_code(code)
    accepted_home.save_connection(
        Connection(
            id=invite.cid,
            name="snow_to_jira",
            mode=Mode.SCRIPT,
            topology=Topology.PUBLIC_PRIVATE,
            role=Role.ACCEPTOR,
            local_name="jira",
        )
    )
    again = accept_wizard(accepted_home, None)
    assert again.set_code(code) == (
        "This invitation was already accepted here (connection 'snow_to_jira')."
    )


@pytest.mark.parametrize("initiator_url", [PUBLIC_A, None])
def test_public_topologies_need_a_public_url_here(
    initiator: Home, acceptor: Home, initiator_url: str | None
) -> None:
    code, _ = issue(
        initiator, Instance(short_name="snow", public_url=initiator_url), dest_url=PUBLIC_B
    )
    wizard = accept_wizard(acceptor, Instance(short_name="jira"))
    problem = wizard.set_code(code)
    assert problem is not None
    assert f"public URL ({PUBLIC_B}), but this instance has none" in problem
    assert "--public-url" in problem


def test_a_different_public_url_is_a_warning_not_an_error(initiator: Home, acceptor: Home) -> None:
    code, _ = issue(initiator, Instance(short_name="snow"), dest_url=PUBLIC_B)
    wizard = accept_wizard(acceptor, Instance(short_name="jira", public_url=PUBLIC_A))
    assert wizard.set_code(code) is None
    assert wizard.warnings and PUBLIC_B in wizard.warnings[0]
    same = accept_wizard(acceptor, Instance(short_name="jira", public_url=PUBLIC_B + "/"))
    same.set_code(code)
    assert same.warnings == []


def test_details_default_to_the_instance_and_are_checked(initiator: Home, acceptor: Home) -> None:
    code, _ = issue(initiator, Instance(short_name="snow", public_url=PUBLIC_A), dest_url=None)
    acceptor.save_connection(
        Connection(
            name="SNOW_to_jira",
            mode=Mode.BASIC,
            topology=Topology.PUBLIC_PUBLIC,
            role=Role.INITIATOR,
            local_name="jira",
        )
    )
    wizard = accept_wizard(acceptor, Instance(short_name="jira"))
    wizard.set_code(code)
    assert wizard.next()
    assert wizard.step is AcceptStep.DETAILS
    assert wizard.local_name == "jira"
    assert not wizard.next()
    assert "already exists in this home" in wizard.errors["name"]
    assert wizard.set_local_name("no spaces") is not None
    wizard.set_name("snow_to_jira_2")
    wizard.set_local_name("jira")
    assert wizard.next()
    assert wizard.step is AcceptStep.ACCEPTING
    wizard.record_failure("This invitation was already used: ask snow for a new code.")
    assert wizard.step is AcceptStep.DETAILS
    assert wizard.back() and wizard.step is AcceptStep.CODE


def test_remaining_rounds_down() -> None:
    assert remaining(7 * 86400) == "in 7 days"
    assert remaining(86400 + 5) == "in 1 day"
    assert remaining(3 * 3600 + 59) == "in 3 hours"
    assert remaining(61) == "in 1 minute"
    assert remaining(30) == "in less than a minute"
    assert remaining(0) == "expired"


def test_accept_checks_before_any_io(initiator: Home, acceptor: Home) -> None:
    """An expired code is refused by accept() itself; the home stays empty."""
    _, invite = issue(
        initiator,
        Instance(short_name="snow", public_url=PUBLIC_A),
        dest_url=None,
        now=time.time() - 8 * 86400,
    )
    acceptor.ensure()
    state = SqliteStreams(acceptor.state_path)
    with pytest.raises(AcceptError) as error:
        asyncio.run(accept(acceptor, state, invite, "jira"))
    assert error.value.bad_input
    assert str(error.value).startswith("This invitation expired on ")
    assert acceptor.load_connections().connections == []
    assert state.last_seq(invite.cid) == 0


# -- accept against the real node (in-process) ----------------------------------


@dataclass
class Side:
    """One instance: its home, its state and its node app, reachable in-process."""

    home: Home
    state: SqliteStreams
    instance: Instance
    transport: httpx.ASGITransport


def make_side(root: Path, short_name: str, public_url: str | None) -> Side:
    home = Home(root / short_name)
    instance = Instance(short_name=short_name, public_url=public_url)
    home.save_instance(instance)
    state = SqliteStreams(home.state_path)
    return Side(home, state, instance, httpx.ASGITransport(app=runtime.node_app(home, state)))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def supervising(
    side: Side, peer: Side, home: Home | None = None
) -> AsyncIterator[Supervisor]:
    """Run `side`'s supervisor (on `home`, another handle on its home, if given), its
    requests reaching `peer`'s node app."""
    supervisor = Supervisor(
        home or side.home, side.state, transport=peer.transport, wait=1, rescan=0.1
    )
    task = asyncio.create_task(supervisor.run())
    try:
        yield supervisor
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def flows_both_ways(a: Side, b: Side, cid: str) -> None:
    """A ping each way arrives after the hellos; both outboxes drain."""
    a.state.enqueue(cid, "ping", {"from": "a"})
    b.state.enqueue(cid, "ping", {"from": "b"})
    await until(lambda: a.state.last_applied(cid) == 2 and b.state.last_applied(cid) == 2)
    for side, other in ((a, "b"), (b, "a")):
        kinds = [(m.seq, m.kind, m.body) for m in side.state.inbox(cid)]
        assert kinds[0][:2] == (1, "hello")
        assert kinds[1] == (2, "ping", {"from": other})
    await until(lambda: a.state.pending(cid) == [] and b.state.pending(cid) == [])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_public_private_private_acceptor_connects_at_once(tmp_path: Path) -> None:
    a = make_side(tmp_path, "snow", PUBLIC_A)
    b = make_side(tmp_path, "jira", None)
    code, invite = issue(a.home, a.instance, dest_url=None, now=time.time())
    stages: list[Stage] = []
    connection = await accept(
        b.home, b.state, codes.decode(code), None, stages.append, transport=a.transport
    )
    assert stages == [Stage.CONTACTING, Stage.ACCEPTED, Stage.CONNECTED]
    assert (connection.status, connection.role, connection.remote_url) == (
        Status.ACTIVE,
        Role.ACCEPTOR,
        PUBLIC_A,
    )
    path = b.home.connection_path(invite.cid)
    assert path.stat().st_mode & 0o777 == 0o600
    stored = b.home.get_connection(invite.cid)
    theirs = a.home.get_connection(invite.cid)
    assert stored.secret is not None and theirs.secret is not None
    assert stored.secret.get_secret_value() == theirs.secret.get_secret_value()
    assert (theirs.status, theirs.remote_name, stored.remote_name) == (
        Status.ACTIVE,
        "jira",
        "snow",
    )
    assert theirs.token_hash is None
    # The acceptor's hello was delivered during accept; its outbox is already pruned.
    assert [m.kind for m in a.state.inbox(invite.cid)] == ["hello"]
    assert b.state.pending(invite.cid) == []
    assert b.state.contact(invite.cid).last_ok is not None
    async with supervising(b, a):
        await flows_both_ways(a, b, invite.cid)


@pytest.mark.anyio
async def test_public_public_both_sides_push(tmp_path: Path) -> None:
    a = make_side(tmp_path, "snow", PUBLIC_A)
    b = make_side(tmp_path, "jira", PUBLIC_B)
    code, invite = issue(a.home, a.instance, dest_url=PUBLIC_B, now=time.time())
    wizard = AcceptWizard(b.instance, b.home.load_connections().connections)
    assert wizard.set_code(code) is None
    assert wizard.next() and wizard.next()
    assert wizard.invitation is not None
    stages: list[Stage] = []
    await accept(
        b.home,
        b.state,
        wizard.invitation,
        wizard.local_name,
        stages.append,
        name=wizard.name,
        transport=a.transport,
    )
    assert stages == [Stage.CONTACTING, Stage.ACCEPTED, Stage.CONNECTED]
    theirs = a.home.get_connection(invite.cid)
    assert (theirs.status, theirs.remote_url) == (Status.ACTIVE, PUBLIC_B)
    async with supervising(a, b), supervising(b, a):
        await flows_both_ways(a, b, invite.cid)


@pytest.mark.anyio
async def test_private_public_acceptor_waits_for_the_initiator(tmp_path: Path) -> None:
    a = make_side(tmp_path, "snow", None)
    b = make_side(tmp_path, "jira", PUBLIC_B)
    code, invite = issue(a.home, a.instance, dest_url=PUBLIC_B, now=time.time())
    assert a.home.get_connection(invite.cid).token is not None

    def no_state() -> SqliteStreams:
        raise AssertionError("a waiting acceptor stores nothing in state.sqlite3")

    stages: list[Stage] = []
    connection = await accept(b.home, no_state, codes.decode(code), "jira", stages.append)
    assert stages == [Stage.WAITING]
    assert connection.status is Status.PENDING and connection.secret is None
    stored = b.home.get_connection(invite.cid)
    assert stored.token_hash == codes.hash_token(invite.tok) and stored.token is None
    assert stored.token_expires is not None and stored.token_expires.timestamp() == invite.exp

    async with supervising(a, b):
        await until(lambda: a.home.get_connection(invite.cid).status is Status.ACTIVE)
        mine, theirs = a.home.get_connection(invite.cid), b.home.get_connection(invite.cid)
        assert theirs.status is Status.ACTIVE and theirs.remote_name == "snow"
        assert mine.token is None and mine.remote_name == "jira"
        await flows_both_ways(a, b, invite.cid)


@pytest.mark.anyio
async def test_a_used_code_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    a = make_side(tmp_path, "snow", PUBLIC_A)
    b = make_side(tmp_path, "jira", None)
    code, invite = issue(a.home, a.instance, dest_url=None, now=time.time())
    await accept(b.home, b.state, codes.decode(code), None, transport=a.transport)
    other = Home(tmp_path / "other")

    def no_state() -> SqliteStreams:
        raise AssertionError("a refused accept opens no state")

    with pytest.raises(AcceptError) as error:
        await accept(
            other,
            no_state,
            codes.decode(code),
            "confluence",
            transport=a.transport,
        )
    assert str(error.value) == "This invitation was already used: ask snow for a new code."
    assert error.value.bad_input
    assert not other.path.exists()
    # The first acceptor's connection is untouched.
    assert a.home.get_connection(invite.cid).remote_name == "jira"


@pytest.mark.anyio
async def test_the_initiator_refusing_an_expired_code_is_reported(tmp_path: Path) -> None:
    a = make_side(tmp_path, "snow", PUBLIC_A)
    b = make_side(tmp_path, "jira", None)
    issued_at = time.time() - codes.DEFAULT_LIFETIME - 60
    _, invite = issue(a.home, a.instance, dest_url=None, now=issued_at)
    # This side's clock is behind: only the initiator notices the expiry.
    with pytest.raises(AcceptError) as error:
        await accept(b.home, b.state, invite, "jira", transport=a.transport, now=lambda: issued_at)
    assert str(error.value) == "This invitation has expired: ask snow for a new code."
    assert b.home.load_connections().connections == []
    assert a.home.get_connection(invite.cid).status is Status.PENDING


@pytest.mark.anyio
async def test_a_code_the_initiator_no_longer_knows_is_reported(tmp_path: Path) -> None:
    a = make_side(tmp_path, "snow", PUBLIC_A)
    b = make_side(tmp_path, "jira", None)
    _, invite = issue(a.home, a.instance, dest_url=None, now=time.time())
    a.home.delete_connection(invite.cid)
    with pytest.raises(AcceptError) as error:
        await accept(b.home, b.state, invite, "jira", transport=a.transport)
    assert "snow's instance does not know this invitation" in str(error.value)
    assert error.value.bad_input
    assert b.home.load_connections().connections == []


def test_an_unreachable_initiator_is_not_bad_input(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    a = Home(tmp_path / "snow")
    _, invite = issue(
        a, Instance(short_name="snow", public_url=url), dest_url=None, now=time.time()
    )
    b = Home(tmp_path / "jira")
    with pytest.raises(AcceptError) as error:
        asyncio.run(accept(b, lambda: SqliteStreams(b.state_path), invite, "jira"))
    assert not error.value.bad_input
    assert str(error.value).startswith("Could not contact snow: Cannot reach 127.0.0.1:")
    assert not b.path.exists()


@pytest.mark.anyio
async def test_public_public_pusher_pauses_while_the_partner_has_deactivated(
    tmp_path: Path,
) -> None:
    a = make_side(tmp_path, "snow", PUBLIC_A)
    b = make_side(tmp_path, "jira", PUBLIC_B)
    _, invite = issue(a.home, a.instance, dest_url=PUBLIC_B, now=time.time())
    await accept(b.home, b.state, invite, "jira", transport=a.transport)
    cid = invite.cid
    b_home = CountingHome(b.home.path)
    async with supervising(a, b), supervising(b, a, b_home):
        outcome = await actions.deactivate(a.home, a.state, cid, transport=b.transport)
        assert outcome.told is actions.Told.DELIVERED
        assert b.home.get_connection(cid).peer_state is PeerState.DEACTIVATED
        await scans_pass(b_home, 2)  # b's supervisor has seen the pause
        b.state.enqueue(cid, "ping", {"n": 1})  # wakes b's pusher at once
        await scans_pass(b_home)
        # Held back, not hammered against the partner's 409.
        assert a.state.last_applied(cid) == 1
        assert b.state.contact(cid).last_error is None
        await actions.activate(a.home, a.state, cid, transport=b.transport)
        await until(lambda: a.state.last_applied(cid) == 2)
        assert a.state.inbox(cid)[-1].body == {"n": 1}


# -- headless, end to end: `exalate-tui` processes on 127.0.0.1 ----------------------


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[Home, int], None]]:
    """Start `exalate-tui node` for a home; every node is killed at the end."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(home: Home, port: int) -> None:
        with open(tmp_path / f"{home.path.name}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "exalate_tui.cli", "--home", str(home.path), "node"]
                + ["--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / f"{home.path.name}.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/info").status_code == 200:
                    return
            assert time.monotonic() < deadline, "the node did not start in time"
            time.sleep(0.05)

    yield start
    for process in processes:
        process.kill()
        process.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def messages_flow(a: Home, b: Home, cid: str) -> None:
    a_state, b_state = SqliteStreams(a.state_path), SqliteStreams(b.state_path)
    try:
        a_state.enqueue(cid, "ping", {"from": a.path.name})
        b_state.enqueue(cid, "ping", {"from": b.path.name})
        wait_for(lambda: a_state.last_applied(cid) == 2 and b_state.last_applied(cid) == 2)
        assert a_state.inbox(cid)[-1].body == {"from": b.path.name}
        assert b_state.inbox(cid)[-1].body == {"from": a.path.name}
    finally:
        a_state.close()
        b_state.close()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("topology", "stages"),
    [
        (Topology.PUBLIC_PRIVATE, ["contacting", "accepted", "connected"]),
        (Topology.PUBLIC_PUBLIC, ["contacting", "accepted", "connected"]),
        (Topology.PRIVATE_PUBLIC, ["waiting"]),
    ],
)
def test_cli_two_nodes(
    tmp_path: Path, spawn: Callable[[Home, int], None], topology: Topology, stages: list[str]
) -> None:
    """The walk-through: init both, a node each, initiate on one, accept on the other."""
    a, b = Home(tmp_path / "snow"), Home(tmp_path / "jira")
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    a_public = topology is not Topology.PRIVATE_PUBLIC
    b_public = topology is not Topology.PUBLIC_PRIVATE
    for home, name, url, public in ((a, "snow", url_a, a_public), (b, "jira", url_b, b_public)):
        public_url = ["--public-url", url] if public else []
        init = cli("--home", str(home.path), "init", "--short-name", name, *public_url)
        assert init.returncode == 0, init.stderr
    # A private initiator's supervisor starts at once and retries until jira accepts.
    spawn(a, port_a)
    spawn(b, port_b)
    where = ["--url", url_b] if b_public else ["--no-url"]
    made = cli(
        "--home", str(a.path), "initiate", *where, "--mode", "script",
        "--local-name", "snow", "--remote-name", "jira",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    code = made.stdout.strip()
    folded = "\n".join(code[i : i + 60] for i in range(0, len(code), 60)) + "\n"
    accepted = cli("--home", str(b.path), "accept", "-", "--json", stdin=folded)
    assert accepted.returncode == 0, accepted.stderr
    document = json.loads(accepted.stdout)
    assert document["stages"] == stages
    assert document["connection"]["topology"] == topology.value
    assert not {"secret", "token", "token_hash"} & document["connection"].keys()
    cid = document["connection"]["id"]

    def active(home: Home) -> bool:
        return home.get_connection(cid).status is Status.ACTIVE

    wait_for(lambda: active(a) and active(b))
    messages_flow(a, b, cid)


@pytest.mark.e2e
def test_cli_accept_exit_codes(tmp_path: Path, spawn: Callable[[Home, int], None]) -> None:
    a = Home(tmp_path / "snow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    init = cli("--home", str(a.path), "init", "--short-name", "snow", "--public-url", url)
    assert init.returncode == 0
    spawn(a, port)
    made = cli(
        "--home", str(a.path), "initiate", "--no-url", "--mode", "basic",
        "--local-name", "snow", "--remote-name", "jira",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    code = made.stdout.strip()

    typo = code[:-1] + ("1" if code[-1] == "0" else "0")
    damaged = cli("--home", str(tmp_path / "x"), "accept", typo, "--short-name", "x")
    assert damaged.returncode == 2
    assert "damaged" in damaged.stderr and not (tmp_path / "x").exists()

    accepted = cli("--home", str(tmp_path / "jira"), "accept", code, "--short-name", "jira")
    assert accepted.returncode == 0, accepted.stderr
    lines = accepted.stdout.splitlines()
    assert lines[:3] == [
        f"Contacting snow at {url} …",
        "Accepted: the connection secret is stored.",
        "Connected: the first message was delivered.",
    ]
    assert lines[3].startswith("Connection snow_to_jira (") and lines[3].endswith(") is active.")

    again = cli("--home", str(tmp_path / "conf"), "accept", "-", "--short-name", "conf", stdin=code)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        "exalate-tui accept: This invitation was already used: ask snow for a new code."
    )
    assert not (tmp_path / "conf").exists()


def test_cli_accept_loads_neither_textual_nor_the_node(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from exalate_tui import cli\n"
        f"code = cli.main(['--home', {str(tmp_path / 'h')!r}, 'accept', 'exa1.x.y'])\n"
        "print(code, 'textual' in sys.modules, 'fastapi' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.split() == ["2", "False", "False"], result.stderr


# -- accept burns no code (issue 10, item 4) -----------------------------------------


@pytest.mark.anyio
async def test_storing_fails_after_the_handshake_and_the_same_accept_then_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_side(tmp_path, "snow", PUBLIC_A)
    b = make_side(tmp_path, "jira", None)
    code, invite = issue(a.home, a.instance, dest_url=None, now=time.time())
    save = Home.save_connection

    def disk_full(home: Home, connection: Connection) -> None:
        if home.path == b.home.path:
            raise OSError(28, "No space left on device")
        save(home, connection)

    monkeypatch.setattr(Home, "save_connection", disk_full)
    stages: list[Stage] = []
    with pytest.raises(AcceptError) as failed:
        await accept(
            b.home, b.state, codes.decode(code), None, stages.append, transport=a.transport
        )
    assert stages == [Stage.CONTACTING]  # never "accepted": nothing was stored
    assert not failed.value.bad_input
    assert "run the same accept again within 10 minutes" in str(failed.value)
    assert b.home.load_connections().connections == []
    assert a.home.get_connection(invite.cid).status is Status.ACTIVE  # the token burnt there

    monkeypatch.setattr(Home, "save_connection", save)
    stages.clear()
    await accept(b.home, b.state, codes.decode(code), None, stages.append, transport=a.transport)
    assert stages == [Stage.CONTACTING, Stage.ACCEPTED, Stage.CONNECTED]
    ours, theirs = (
        b.home.get_connection(invite.cid).secret,
        a.home.get_connection(invite.cid).secret,
    )
    assert ours is not None and theirs is not None
    assert ours.get_secret_value() == theirs.get_secret_value()
    assert [m.kind for m in a.state.inbox(invite.cid)] == ["hello"]  # one hello, seq 1
    assert [m.kind for m in b.state.inbox(invite.cid)] == []
    async with supervising(b, a):
        await flows_both_ways(a, b, invite.cid)


@pytest.mark.anyio
async def test_a_full_disk_fails_the_accept_before_the_handshake(tmp_path: Path) -> None:
    a = make_side(tmp_path, "snow", PUBLIC_A)
    code, invite = issue(a.home, a.instance, dest_url=None, now=time.time())
    with small_disk(tmp_path / "disk") as disk:
        home = Home(disk / "jira")
        filler = fill_disk(disk)
        opened: list[SqliteStreams] = []

        def open_state() -> SqliteStreams:
            opened.append(SqliteStreams(home.state_path))
            return opened[-1]

        stages: list[Stage] = []
        with pytest.raises(AcceptError) as failed:
            await accept(
                home, open_state, codes.decode(code), "jira", stages.append, transport=a.transport
            )
        assert str(failed.value).startswith(f"Cannot write in {disk} (No space left on device)")
        assert "the code is still unused" in str(failed.value)
        assert stages == [] and opened == [] and not home.path.exists()
        pending = a.home.get_connection(invite.cid)
        assert pending.status is Status.PENDING and pending.token_hash is not None

        filler.unlink()  # space again: the same code works
        try:
            connection = await accept(
                home, open_state, codes.decode(code), "jira", stages.append, transport=a.transport
            )
        finally:
            for state in opened:
                state.close()
        assert connection.status is Status.ACTIVE
        assert stages == [Stage.CONTACTING, Stage.ACCEPTED, Stage.CONNECTED]


@pytest.mark.anyio
async def test_a_damaged_state_fails_the_accept_before_the_handshake(tmp_path: Path) -> None:
    a = make_side(tmp_path, "snow", PUBLIC_A)
    code, invite = issue(a.home, a.instance, dest_url=None, now=time.time())
    home = Home(tmp_path / "jira")
    home.ensure()
    home.state_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AcceptError) as failed:
        await accept(
            home,
            lambda: SqliteStreams(home.state_path),
            codes.decode(code),
            "jira",
            transport=a.transport,
        )
    assert "cannot be used as the message store" in str(failed.value)
    assert "the code is still unused" in str(failed.value)
    assert a.home.get_connection(invite.cid).status is Status.PENDING
