"""Snapshots of every console screen and its main error states, at 80×24 and 120×36.

Baselines live in `snapshots/test_screens_snapshots/` (see conftest.py). Each
test builds its home under `tmp_path` but names it by a relative path, so no
temporary path ever reaches the screen; ids, tokens and the clock are fixed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Servers, StillConsole, verifier_via
from pilots import settle
from textual import events
from textual.pilot import Pilot

from exalate_tui.console.app import ExalateApp, Verifier, verify_url
from exalate_tui.domain.models import Connection, Instance, Mode, PeerState, Role, Status, Topology
from exalate_tui.flows.initiate import InitiateWizard
from exalate_tui.home.store import Home, NodeRecord
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.transport import background, client
from exalate_tui.transport.sqlite_streams import SqliteStreams
from screens.accept import CodeArea

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]
Compare = Callable[..., bool]
WHEN = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, frozen: float) -> None:
    """Fixed ids and clock; the home is `home`, relative to a temporary working directory."""
    monkeypatch.chdir(tmp_path)


def home_with(public_url: str | None = "https://snow.example.com") -> Home:
    home = Home(Path("home"))
    home.save_instance(Instance(short_name="snow", public_url=public_url))
    return home


def app_for(
    home: Home, frozen: float, *, clipboard: bool = True, verify: Verifier | None = None
) -> ExalateApp:
    def local_copy(text: str) -> None:
        if not clipboard:
            raise RuntimeError("no clipboard")  # what pyperclip does over SSH
        del text

    if verify is None:
        return StillConsole(home, local_copy=local_copy, now=lambda: frozen, supervise=False)
    return StillConsole(
        home, local_copy=local_copy, now=lambda: frozen, supervise=False, verify=verify
    )


def steps(*keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Press keys one at a time, letting each screen settle (and any copy finish)."""

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot, *keys)
        await pilot.pause()

    return run


def typed(text: str) -> list[str]:
    return ["space" if ch == " " else ch for ch in text]


NO_URL_TO_INFO = ["i", "ctrl+n", "down", "enter", "enter"]
TO_INVITATION = [*NO_URL_TO_INFO, *typed("jira"), "enter"]


def several(home: Home) -> None:
    rows = [
        ("snow_to_jira", Topology.PUBLIC_PRIVATE, Mode.SCRIPT, Status.PENDING, "jira"),
        ("Support escalations", Topology.PUBLIC_PUBLIC, Mode.BASIC, Status.ACTIVE, "zendesk"),
        ("snow_to_ado", Topology.PRIVATE_PUBLIC, Mode.SCRIPT, Status.DEACTIVATED, "ado"),
    ]
    for n, (name, topology, mode, status, remote) in enumerate(rows):
        home.save_connection(
            Connection(
                name=name,
                mode=mode,
                topology=topology,
                role=Role.INITIATOR,
                local_name="snow",
                remote_name=remote,
                status=status,
                created=WHEN + timedelta(days=n),
            )
        )


# -- first start -------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_first_run(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(Home(Path("home")), frozen), terminal_size=size, run_before=steps())


@pytest.mark.parametrize("size", SIZES)
def test_first_run_errors(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*typed("snow prod"), "tab", *typed("ftp://x"), "enter")
    assert snap_compare(app_for(Home(Path("home")), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_broken_instance(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = Home(Path("home"))
    home.ensure()
    home.instance_path.write_text('short_name = "snow"\npublic_url = \n')
    home.instance_path.chmod(0o600)  # as the console writes it: no permission warning
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=steps())


# -- Connections tab -----------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_connections_empty(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=steps())


@pytest.mark.parametrize("size", SIZES)
def test_connections_several(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = home_with()
    several(home)
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=steps())


@pytest.mark.parametrize("size", SIZES)
def test_connections_broken_file(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    home = home_with()
    several(home)
    home.connection_path("broken").write_text('name = "x"\nmode = "fast"\n[[oops\n')
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=steps())


# -- the wizard, step by step ------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_destination(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=steps("i"))


@pytest.mark.parametrize("size", SIZES)
def test_destination_invalid_url(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    run = steps("i", *typed("ftp://jira.example.com"), "enter")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_public_url(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps("i", "ctrl+n")
    assert snap_compare(app_for(home_with(None), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_public_url_missing(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps("i", "ctrl+n", "enter")
    assert snap_compare(app_for(home_with(None), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_config_type(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps("i", "ctrl+n", "down", "space")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_config_type_unchosen(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    # Next without a choice: tab to the Next button and press it.
    run = steps("i", "ctrl+n", "tab", "tab", "enter")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_note(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps("i", "ctrl+n", "down", "enter")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_info(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*NO_URL_TO_INFO)
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_info_errors(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    # A bad local name, no remote name, hence no suggested connection name.
    run = steps(*NO_URL_TO_INFO, "shift+tab", "end", *typed(" prod"), "enter")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_info_suggested_name(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*NO_URL_TO_INFO, *typed("jira"), "tab", "tab", *typed("Tickets"))
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_invitation(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*TO_INVITATION)
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_invitation_copied(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*TO_INVITATION, "c")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_invitation_copied_no_local_clipboard(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    run = steps(*TO_INVITATION, "c")
    app = app_for(home_with(), frozen, clipboard=False)
    assert snap_compare(app, terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_connections_after_done(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    home = home_with()
    several(home)
    # A remote name that clashes with none of `several`'s, so Next issues the code.
    run = steps(*NO_URL_TO_INFO, *typed("servicedesk"), "enter", "enter")
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=run)


# -- URL verification (real servers on Unix sockets: the typed URL never changes) --------

NODE_URL = "http://127.0.0.1:7001"


def verify_steps(url: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    return steps("i", *typed(url), "enter")


@pytest.mark.parametrize("size", SIZES)
def test_destination_verified(
    snap_compare: Compare, frozen: float, size: tuple[int, int], servers: Servers, tmp_path: Path
) -> None:
    jira = Home(tmp_path / "jira")
    jira.save_instance(Instance(short_name="jira"))
    servers.node(jira, uds=tmp_path / "node.sock")
    app = app_for(home_with(), frozen, verify=verifier_via(tmp_path / "node.sock"))
    assert snap_compare(app, terminal_size=size, run_before=verify_steps(NODE_URL))


@pytest.mark.parametrize("size", SIZES)
def test_destination_unreachable(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    # Port 1 on 127.0.0.1: nothing listens there, the connection is refused.
    app = app_for(home_with(), frozen, verify=verify_url)
    assert snap_compare(app, terminal_size=size, run_before=verify_steps("http://127.0.0.1:1"))


@pytest.mark.parametrize("size", SIZES)
def test_destination_tls_problem(
    snap_compare: Compare, frozen: float, size: tuple[int, int], servers: Servers, tmp_path: Path
) -> None:
    servers.html(uds=tmp_path / "web.sock")
    app = app_for(home_with(), frozen, verify=verifier_via(tmp_path / "web.sock"))
    run = verify_steps(NODE_URL.replace("http:", "https:"))
    assert snap_compare(app, terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_destination_not_a_node(
    snap_compare: Compare, frozen: float, size: tuple[int, int], servers: Servers, tmp_path: Path
) -> None:
    servers.html(uds=tmp_path / "web.sock")
    app = app_for(home_with(), frozen, verify=verifier_via(tmp_path / "web.sock"))
    assert snap_compare(app, terminal_size=size, run_before=verify_steps(NODE_URL))


@pytest.mark.parametrize("size", SIZES)
def test_destination_incompatible(
    snap_compare: Compare,
    frozen: float,
    size: tuple[int, int],
    servers: Servers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jira = Home(tmp_path / "jira")
    jira.save_instance(Instance(short_name="jira"))
    servers.node(jira, uds=tmp_path / "node.sock")
    # This console speaks one API version more than the (real) node it asks.
    monkeypatch.setattr(client, "API_VERSION", client.API_VERSION + 1)
    app = app_for(home_with(), frozen, verify=verifier_via(tmp_path / "node.sock"))
    assert snap_compare(app, terminal_size=size, run_before=verify_steps(NODE_URL))


# -- Accept invitation ------------------------------------------------------------------


def issued_code(frozen: float, *, issued_at: float | None = None) -> tuple[str, str]:
    """A public-private code from partner "snow" (the real wizard); returns (code, cid)."""
    partner = Home(Path("partner"))
    instance = Instance(short_name="snow", public_url=NODE_URL)
    partner.save_instance(instance)
    at = frozen if issued_at is None else issued_at
    wizard = InitiateWizard(instance, partner.load_connections().connections, now=lambda: at)
    wizard.choose_no_url()
    wizard.set_mode(Mode.SCRIPT)
    wizard.next()
    wizard.next()
    wizard.set_remote_name("jira")
    wizard.set_description("P1 incidents")
    assert wizard.next() and wizard.issued
    assert save_issued(partner, wizard.issued.connection, wizard.new_instance)
    return wizard.issued.code, wizard.issued.connection.id


def pasted(code: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Open Accept invitation and paste the code, cut in lines as a mail client would."""

    async def run(pilot: Pilot[None]) -> None:
        await steps("a")(pilot)
        lines = "\n".join(code[i : i + 60] for i in range(0, len(code), 60))
        pilot.app.screen.query_one(CodeArea).post_message(events.Paste(lines + "\n"))
        await steps()(pilot)

    return run


def acceptor() -> Home:
    home = Home(Path("home"))
    home.save_instance(Instance(short_name="jira"))
    return home


@pytest.mark.parametrize("size", SIZES)
def test_accept_valid(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    code, _ = issued_code(frozen)
    app = app_for(acceptor(), frozen)
    assert snap_compare(app, terminal_size=size, run_before=pasted(code))


@pytest.mark.parametrize("size", SIZES)
def test_accept_damaged(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    code, _ = issued_code(frozen)
    damaged = code[:40] + ("A" if code[40] != "A" else "B") + code[41:]
    app = app_for(acceptor(), frozen)
    assert snap_compare(app, terminal_size=size, run_before=pasted(damaged))


@pytest.mark.parametrize("size", SIZES)
def test_accept_expired(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    code, _ = issued_code(frozen, issued_at=frozen - 8 * 86400)
    app = app_for(acceptor(), frozen)
    assert snap_compare(app, terminal_size=size, run_before=pasted(code))


@pytest.mark.parametrize("size", SIZES)
def test_accept_used(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    code, cid = issued_code(frozen)
    home = acceptor()
    home.save_connection(
        Connection(
            id=cid,
            name="snow_to_jira",
            mode=Mode.SCRIPT,
            topology=Topology.PUBLIC_PRIVATE,
            role=Role.ACCEPTOR,
            local_name="jira",
            remote_name="snow",
            remote_url=NODE_URL,
            status=Status.ACTIVE,
            created=WHEN,
        )
    )
    app = app_for(home, frozen)
    assert snap_compare(app, terminal_size=size, run_before=pasted(code))


# -- live states, details, actions -----------------------------------------------------


def every_status(home: Home, now: float) -> None:
    """One connection per live state; contacts recorded at fixed times before `now`."""
    rows = [
        ("snow_to_jira", Topology.PUBLIC_PRIVATE, Role.INITIATOR, Status.PENDING, None),
        ("snow_to_zendesk", Topology.PUBLIC_PUBLIC, Role.INITIATOR, Status.ACTIVE, None),
        ("snow_to_ado", Topology.PUBLIC_PUBLIC, Role.ACCEPTOR, Status.ACTIVE, None),
        ("snow_to_gitlab", Topology.PUBLIC_PRIVATE, Role.INITIATOR, Status.DEACTIVATED, None),
        ("snow_to_github", Topology.PUBLIC_PUBLIC, Role.INITIATOR, Status.ACTIVE, "paused"),
    ]
    state = SqliteStreams(home.state_path)
    try:
        for n, (name, topology, role, status, peer) in enumerate(rows):
            remote = name.removeprefix("snow_to_")
            connection = Connection(
                name=name,
                mode=Mode.SCRIPT if n % 2 else Mode.BASIC,
                topology=topology,
                role=role,
                local_name="snow",
                remote_name=remote,
                remote_url=None if topology is Topology.PUBLIC_PRIVATE else f"{NODE_URL}/{n}",
                status=status,
                peer_state=PeerState.DEACTIVATED if peer else None,
                created=WHEN + timedelta(days=n),
                token_expires=WHEN + timedelta(days=7) if status is Status.PENDING else None,
            )
            home.save_connection(connection)
            if name == "snow_to_zendesk":
                state.record_ok(connection.id, when=now - 12)
            if name == "snow_to_ado":
                state.record_ok(connection.id, when=now - 3600)
                state.record_error(
                    connection.id,
                    "Cannot reach 127.0.0.1:7001: connection refused; check the port and "
                    "that `exalate-tui node` is running there.",
                    when=now - 95,
                )
    finally:
        state.close()


@pytest.mark.parametrize("size", SIZES)
def test_connections_every_status(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    home = home_with()
    every_status(home, frozen)
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=steps())


@pytest.mark.parametrize("size", SIZES)
def test_detail_unreachable(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = home_with()
    every_status(home, frozen)
    run = steps("down", "down", "enter")
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_detail_pending(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = home_with()
    every_status(home, frozen)
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=steps("enter"))


@pytest.mark.parametrize("size", SIZES)
def test_delete_confirmation(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = home_with()
    every_status(home, frozen)
    run = steps("down", "enter", "x")
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_regenerated_code(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = home_with()
    every_status(home, frozen)
    run = steps("enter", "g", "y")
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_write_code(
    snap_compare: Compare, frozen: float, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(Path.cwd()))  # the path offered reads ~/home/invitations/...
    home = home_with()
    every_status(home, frozen)
    run = steps("enter", "g", "y", "w")
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_confirm_new_code(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = home_with()
    every_status(home, frozen)
    run = steps("enter", "g")
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_leave_pending(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    run = steps(*TO_INVITATION, "escape")
    assert snap_compare(app_for(home_with(), frozen), terminal_size=size, run_before=run)


# -- the node: stopping it, quitting without it ------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_quit_without_node(snap_compare: Compare, frozen: float, size: tuple[int, int]) -> None:
    home = home_with()
    every_status(home, frozen)
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=steps("ctrl+q"))


@pytest.mark.parametrize("size", SIZES)
def test_confirm_stop_node(
    snap_compare: Compare, frozen: float, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = home_with()
    every_status(home, frozen)
    record = NodeRecord(
        pid=4242, host="0.0.0.0", port=8443, started=WHEN, version="0.1.0"
    )  # a node said to run: nothing is signalled unless y is pressed
    monkeypatch.setattr(
        background, "glance", lambda home: background.Status(True, record, probed=False)
    )
    assert snap_compare(app_for(home, frozen), terminal_size=size, run_before=steps("N"))
