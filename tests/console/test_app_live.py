"""The console against real nodes on 127.0.0.1: URL verification, Accept invitation, live
states, connection details and actions, and the pollers it runs while open.

Every partner is the real node app (`runtime.node_app`) under uvicorn in a thread,
with its own home; "not a node" is a plain `http.server`. Nothing is faked.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Servers, free_port
from pilots import quiet as settle
from rich.console import Console
from textual import events
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, Static, TextArea

from exalate_tui.console.app import ExalateApp, make_app
from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Instance, Mode, PeerState, Status, Topology
from exalate_tui.flows.initiate import InitiateWizard, Issued
from exalate_tui.home.store import Home
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.protocol.api import UrlCheck
from exalate_tui.transport import client
from exalate_tui.transport.client import verify_url
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.supervisor import ConnectionLock
from screens.accept import AcceptScreen, CodeArea
from screens.config_type import ConfigTypeScreen
from screens.confirm_delete import ConfirmDeleteScreen
from screens.connection_detail import ConnectionDetailScreen
from screens.connections import ConnectionsScreen
from screens.destination import DestinationScreen
from screens.regenerated import RegeneratedScreen

SIZE = (80, 24)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def press(pilot: Pilot[None], *keys: str) -> None:
    await settle(pilot)
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


async def type_text(pilot: Pilot[None], text: str) -> None:
    await press(pilot, *text)


async def until(pilot: Pilot[None], condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        await pilot.pause(0.05)


def text_of(app: ExalateApp, selector: str) -> str:
    """A Static's content as plain text, tables included."""
    console = Console(width=300, file=io.StringIO(), record=True)
    console.print(app.screen.query_one(selector, Static).content)
    return console.export_text().strip()


def public_home(tmp_path: Path, name: str, url: str | None) -> Home:
    home = Home(tmp_path / name)
    home.save_instance(Instance(short_name=name, public_url=url))
    return home


def issue(home: Home, *, dest_url: str | None = None) -> Issued:
    """A code from the real Initiate wizard of `home` (no URL: public-private)."""
    instance = home.load_instance()
    assert instance is not None
    wizard = InitiateWizard(instance, home.load_connections().connections)
    if dest_url is None:
        wizard.choose_no_url()
    else:
        wizard.set_dest_url(dest_url)
        assert wizard.next()
    wizard.set_mode(Mode.BASIC)
    wizard.next()
    if wizard.topology is Topology.PUBLIC_PRIVATE:
        wizard.next()
    wizard.set_remote_name("jira")
    assert wizard.next() and wizard.issued
    assert save_issued(home, wizard.issued.connection, wizard.new_instance)
    return wizard.issued


def running_node(tmp_path: Path, servers: Servers, name: str = "snow") -> tuple[Home, str]:
    """A real node for a home whose public URL is where it listens."""
    port = free_port()
    home = public_home(tmp_path, name, f"http://127.0.0.1:{port}")
    return home, servers.node(home, port=port)


async def paste(pilot: Pilot[None], code: str) -> None:
    area = pilot.app.screen.query_one(CodeArea)
    area.post_message(events.Paste("\n".join(code[i : i + 50] for i in range(0, len(code), 50))))
    await settle(pilot)


# -- URL verification --------------------------------------------------------------


async def test_a_node_verifies_with_a_tick_then_next_goes_on(
    tmp_path: Path, servers: Servers
) -> None:
    _, url = running_node(tmp_path, servers, "jira")
    app = make_app(public_home(tmp_path, "snow", "https://snow.example.com"), supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i")
        await type_text(pilot, url)
        await press(pilot, "enter")
        assert isinstance(app.screen, DestinationScreen)
        check = str(app.screen.query_one("#url-check", Label).render())
        assert check.startswith(f"✓ {url} is exalate-tui ")
        assert 'instance "jira"' in check
        await press(pilot, "enter")
        assert isinstance(app.screen, ConfigTypeScreen)


async def test_checking_keeps_the_screen_responsive(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connects, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"

        async def slow(target: str) -> UrlCheck:
            return await verify_url(target, timeout=1.0)

        app = make_app(public_home(tmp_path, "snow", None), supervise=False, verify=slow)
        async with app.run_test(size=SIZE) as pilot:
            await press(pilot, "i")
            await type_text(pilot, url)
            await pilot.press("enter")
            await pilot.pause()
            label = app.screen.query_one("#url-check", Label)
            assert str(label.render()).startswith(f"Checking {url}")
            await pilot.press("end", "x")  # typing goes on meanwhile
            await pilot.pause()
            assert app.screen.query_one("#dest_url", Input).value == url + "x"
            await settle(pilot)
            assert app.wizard is not None and app.wizard.url_check is None  # an older URL's


@pytest.mark.parametrize("kind", ["unreachable", "tls", "not a node", "incompatible"])
async def test_each_failure_says_why_then_retry_fix_or_no_url(
    tmp_path: Path, servers: Servers, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    if kind == "unreachable":
        port = free_port()
        url, expected = f"http://127.0.0.1:{port}", "Cannot reach 127.0.0.1"
    elif kind == "tls":
        url, expected = servers.html().replace("http:", "https:"), "TLS problem with"
    elif kind == "not a node":
        url, expected = servers.html(), "is not an exalate-tui node"
    else:
        _, url = running_node(tmp_path, servers, "jira")
        monkeypatch.setattr(client, "API_VERSION", client.API_VERSION + 1)
        expected = "this one speaks 2: update the older of the two"
    app = make_app(public_home(tmp_path, "snow", "https://snow.example.com"), supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "i")
        await type_text(pilot, url)
        await press(pilot, "enter")
        assert expected in str(app.screen.query_one("#error-dest_url", Label).render())
        assert "Enter checks again" in str(app.screen.query_one("#url-check", Label).render())
        if kind == "unreachable":
            # The node comes up on that port; Enter retries and it verifies.
            servers.node(public_home(tmp_path, "jira", None), port=port)
            await press(pilot, "enter")
            assert str(app.screen.query_one("#error-dest_url", Label).render()) == ""
            assert app.wizard is not None and app.wizard.url_check is not None
            assert app.wizard.url_check.ok
        else:
            await press(pilot, "ctrl+n")
            assert isinstance(app.screen, ConfigTypeScreen)


# -- Accept invitation -------------------------------------------------------------


async def test_accept_a_code_connects_and_both_sides_go_active(
    tmp_path: Path, servers: Servers
) -> None:
    snow, url = running_node(tmp_path, servers)
    issued = issue(snow)
    jira = public_home(tmp_path, "jira", None)
    app = make_app(jira)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "a")
        assert isinstance(app.screen, AcceptScreen)
        await paste(pilot, issued.code)
        assert app.screen.query_one(CodeArea).text == issued.code  # lines joined
        preview = text_of(app, "#preview")
        for fact in (f"snow at {url}", "snow_to_jira", "Basic", "public-private", "(in 6 days)"):
            assert fact in preview
        assert app.screen.query_one("#local_name", Input).value == "jira"
        await press(pilot, "enter")  # the code is fine: on to the names
        assert app.screen.focused is app.screen.query_one("#local_name")
        await press(pilot, "enter")  # accept
        stages = text_of(app, "#stages")
        assert f"Contacting snow at {url}" in stages
        assert "✓ Accepted" in stages and "✓ Connected" in stages
        await press(pilot, "enter")
        assert isinstance(app.screen, ConnectionsScreen)
        [row] = [app.screen.query_one(DataTable).get_row_at(0)]
        assert str(row[2]).startswith("Active")
        # The console's own poller keeps contact: "last contact N s ago" appears.
        table = app.screen.query_one(DataTable)
        await until(pilot, lambda: "last contact" in str(table.get_row_at(0)[2]))
        cid = issued.connection.id
        await until(pilot, lambda: app.supervisor is not None and cid in app.supervisor.running)
    assert jira.get_connection(issued.connection.id).status is Status.ACTIVE
    assert snow.get_connection(issued.connection.id).status is Status.ACTIVE
    # Closing the console released the poller's lock.
    lock = ConnectionLock(jira, issued.connection.id)
    assert lock.acquire()
    lock.release()


async def test_bad_codes_say_exactly_why(tmp_path: Path, servers: Servers) -> None:
    snow, _ = running_node(tmp_path, servers)
    issued = issue(snow)
    jira = public_home(tmp_path, "jira", None)
    app = make_app(jira, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "a")
        await press(pilot, "enter")
        assert "No invitation code given" in str(
            app.screen.query_one("#error-code", Label).render()
        )
        damaged = issued.code[:30] + ("A" if issued.code[30] != "A" else "B") + issued.code[31:]
        await paste(pilot, damaged)
        assert "damaged" in str(app.screen.query_one("#error-code", Label).render())
        assert text_of(app, "#preview") == ""
        await press(pilot, "enter")
        assert app.screen.focused is app.screen.query_one(CodeArea)
    # Accepted elsewhere first: the initiator refuses, and the screen says so in one line.
    other = public_home(tmp_path, "other", None)
    from exalate_tui.lifecycle.accept import accept

    state = SqliteStreams(other.state_path)
    await accept(other, state, codes.decode(issued.code), "other")
    state.close()
    app = make_app(jira, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "a")
        await paste(pilot, issued.code)
        await press(pilot, "enter", "enter")
        error = str(app.screen.query_one("#error-accept", Label).render())
        assert error == "This invitation was already used: ask snow for a new code."
        assert isinstance(app.screen, AcceptScreen)
    assert jira.load_connections().connections == []


async def test_a_public_acceptor_of_a_private_initiator_waits(tmp_path: Path) -> None:
    jira_url = "http://127.0.0.1:7002"
    snow = public_home(tmp_path, "snow", None)
    # A private initiator's code names the acceptor's URL (issued headless: unverified).
    issued = issue(snow, dest_url=jira_url)
    jira = public_home(tmp_path, "jira", jira_url)
    app = make_app(jira, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "a")
        await paste(pilot, issued.code)
        assert "private-public" in text_of(app, "#preview")
        await press(pilot, "enter", "enter")
        assert "Waiting for snow to connect to this instance" in text_of(app, "#stages")
    assert jira.get_connection(issued.connection.id).status is Status.PENDING


# -- live states, details, actions ---------------------------------------------------


async def test_the_tab_follows_the_files_and_the_contacts(tmp_path: Path) -> None:
    now = [1_714_564_800.0]
    home = public_home(tmp_path, "snow", "https://snow.example.com")
    app = make_app(home, supervise=False, now=lambda: now[0])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        issued = issue(home)  # written behind the console's back
        table = app.screen.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 1)
        assert str(table.get_row_at(0)[2]) == "Pending\nwaiting for jira"

        def make_active(connection: object) -> None:
            connection.status = Status.ACTIVE  # type: ignore[attr-defined]

        home.update_connection(issued.connection.id, make_active)
        assert app.state is not None
        app.state.record_ok(issued.connection.id, when=now[0] - 5)
        await until(pilot, lambda: str(table.get_row_at(0)[2]) == "Active\nlast contact 5 s ago")
        now[0] += 30  # the injected clock moves; the file does not
        await until(pilot, lambda: str(table.get_row_at(0)[2]) == "Active\nlast contact 35 s ago")
        # jira polls this side: no poll is open any more, so it cannot be Active.
        now[0] += 30
        await until(pilot, lambda: str(table.get_row_at(0)[2]) == "Unreachable\nno poll for 1 min")
        app.state.record_error(issued.connection.id, "refused", when=now[0] - 1)
        await until(pilot, lambda: str(table.get_row_at(0)[2]).startswith("Unreachable\nsince "))


async def test_detail_deactivate_activate_delete_tell_the_partner(
    tmp_path: Path, servers: Servers
) -> None:
    snow, _ = running_node(tmp_path, servers)
    issued = issue(snow)
    jira = public_home(tmp_path, "jira", None)
    cid = issued.connection.id
    app = make_app(jira)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "a")
        await paste(pilot, issued.code)
        await press(pilot, "enter", "enter", "enter")
        await press(pilot, "enter")  # the row: its details
        assert isinstance(app.screen, ConnectionDetailScreen)
        shown = text_of(app, "#fields")
        assert cid in shown and "snow_to_jira" in shown
        secret = jira.get_connection(cid).secret
        assert secret is not None and secret.get_secret_value() not in shown

        await press(pilot, "d")
        await until(pilot, lambda: jira.get_connection(cid).status is Status.DEACTIVATED)
        await until(pilot, lambda: snow.get_connection(cid).peer_state is PeerState.DEACTIVATED)
        await until(pilot, lambda: text_of(app, "#fields").startswith("Status"))
        await until(pilot, lambda: "Deactivated" in text_of(app, "#fields"))
        await press(pilot, "a")
        await until(pilot, lambda: snow.get_connection(cid).peer_state is None)

        await press(pilot, "x")
        assert isinstance(app.screen, ConfirmDeleteScreen)
        await press(pilot, "n")
        assert isinstance(app.screen, ConnectionDetailScreen)
        await press(pilot, "x", "y")
        await until(pilot, lambda: isinstance(app.screen, ConnectionsScreen))
    assert jira.load_connections().connections == []
    assert snow.get_connection(cid).peer_state is PeerState.DELETED


async def test_regenerate_shows_a_new_code_and_the_old_one_stops_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    home = public_home(tmp_path, "snow", "https://snow.example.com")
    old = issue(home)
    copied: list[str] = []
    app = make_app(home, supervise=False, local_copy=copied.append)
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign, assignment]
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "enter", "g", "y")  # asks first: the old code stops working
        assert isinstance(app.screen, RegeneratedScreen)
        code = app.screen.query_one("#code", TextArea).text
        assert code != old.code
        await press(pilot, "c", "w", "enter")
        assert copied == [code, code]
        written = home.path / "invitations" / "snow_to_jira.invitation.txt"
        assert written.read_text() == code + "\n"
        assert not list(tmp_path.glob("*.invitation.txt"))  # never the working directory
        await press(pilot, "enter")
        assert isinstance(app.screen, ConnectionDetailScreen)
        assert [i.code for i in app.issued] == [code]
    stored = home.get_connection(old.connection.id)
    assert stored.token_hash == codes.hash_token(codes.decode(code).tok)
    # Presented to this side's node, the old code is refused and the new one accepted.
    import httpx

    from exalate_tui.lifecycle import runtime
    from exalate_tui.lifecycle.accept import AcceptError, accept
    from exalate_tui.transport.sqlite_streams import SqliteStreams

    state = SqliteStreams(home.state_path)
    transport = httpx.ASGITransport(app=runtime.node_app(home, state))
    late = public_home(tmp_path, "jira", None)
    late_state = SqliteStreams(late.state_path)
    try:
        with pytest.raises(AcceptError):
            await accept(late, late_state, codes.decode(old.code), "jira", transport=transport)
        assert late.load_connections().connections == []
        assert home.get_connection(old.connection.id).status is Status.PENDING
        await accept(late, late_state, codes.decode(code), "jira", transport=transport)
        assert home.get_connection(old.connection.id).status is Status.ACTIVE
    finally:
        late_state.close()
        state.close()


async def test_the_console_skips_a_connection_another_process_polls(
    tmp_path: Path, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    snow, _ = running_node(tmp_path, servers)
    issued = issue(snow)
    jira = public_home(tmp_path, "jira", None)
    state = SqliteStreams(jira.state_path)
    from exalate_tui.lifecycle.accept import accept

    await accept(jira, state, codes.decode(issued.code), "jira")
    state.close()
    held = ConnectionLock(jira, issued.connection.id)
    assert held.acquire()  # as a running `exalate-tui node` would
    # Each time the console's supervisor tries to take the connection's lock, and fails.
    refused: list[Path] = []
    acquire = ConnectionLock.acquire

    def counted(lock: ConnectionLock) -> bool:
        taken = acquire(lock)
        if not taken:
            refused.append(lock.path)
        return taken

    monkeypatch.setattr(ConnectionLock, "acquire", counted)
    try:
        app = make_app(jira)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.supervisor is not None)
            # It tried, was refused, and left the link to the other process.
            await until(pilot, lambda: held.path in refused)
            assert app.supervisor is not None and app.supervisor.running == frozenset()
    finally:
        held.release()
