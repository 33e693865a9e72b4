"""The console's node bar: whether this home's node runs, what needs it, `n` to start it;
and the warning about files others can read. Real node processes at free ports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import NOW, free_port, pending_to_jira
from pilots import quiet

from exalate_tui.console.app import ExalateApp, make_app
from exalate_tui.domain.live import NodeNeed, node_need
from exalate_tui.domain.models import Instance, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.transport import background
from screens.confirm import ConfirmStopNodeScreen, QuitWithoutNodeScreen
from screens.connections import ConnectionsScreen
from screens.widgets import NodeBar, node_line

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    """snow, public, listening on a free port; a node it still runs is stopped after."""
    made = Home(tmp_path / "snow")
    port = free_port()
    made.save_instance(
        Instance(short_name="snow", public_url=f"http://127.0.0.1:{port}", listen_port=port)
    )
    yield made
    background.stop(made, timeout=15)


def recording(app: ExalateApp) -> list[str]:
    """Every notification's message, in order (notify still shows it)."""
    said: list[str] = []
    shown = app.notify

    def notify(message: str, **options: Any) -> None:
        said.append(message)
        shown(message, **options)

    app.notify = notify  # type: ignore[method-assign]
    return said


def bar_text(app: object) -> str:
    bar = app.screen.query_one(NodeBar)  # type: ignore[attr-defined]
    return str(bar.render())


def test_what_needs_the_node(home: Home) -> None:
    connection = pending_to_jira(home)
    assert node_need([connection]) == NodeNeed(callers=("jira",))
    polling = connection.model_copy(update={"role": Role.ACCEPTOR})
    assert node_need([polling]) == NodeNeed(polls=True)
    assert node_need([connection.model_copy(update={"status": Status.DEACTIVATED})]) == NodeNeed()
    both = connection.model_copy(update={"topology": Topology.PUBLIC_PUBLIC, "role": Role.ACCEPTOR})
    assert node_need([connection, both]).callers == ("jira",)

    text, style = node_line(None, node_need([connection]), NOW)
    assert style == "-needed"
    assert text == "node: not running — press n to start it · jira cannot reach this instance"
    text, style = node_line(None, NodeNeed(polls=True), NOW)
    assert "syncing stops when the console closes" in text
    assert node_line(None, NodeNeed(), NOW) == (
        "node: not running — press n, or run `exalate-tui node start`",
        "-down",
    )


async def test_the_bar_says_what_stops_while_the_node_is_down(home: Home) -> None:
    app = make_app(home, supervise=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        assert bar_text(app).startswith("node: not running — press n, or run `exalate-tui")
        pending_to_jira(home)
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        text = bar_text(app)
        assert text == "node: not running — press n to start it · jira cannot reach this instance"
        # Fits 80 columns: cut with an ellipsis, never wrapped onto the table.
        assert app.screen.query_one(NodeBar).region.height == 1


@pytest.mark.e2e
async def test_n_starts_the_node_which_outlives_the_console(home: Home) -> None:
    pending_to_jira(home)
    port = home.load_instance().listen_port  # type: ignore[union-attr]
    app = make_app(home, supervise=False, watch_node=True)
    said = recording(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        assert "jira cannot reach this instance" in bar_text(app)
        await pilot.press("n")
        deadline = time.monotonic() + 30
        while not bar_text(app).startswith(f"node: running on 127.0.0.1:{port}"):
            assert time.monotonic() < deadline, bar_text(app)
            await pilot.pause(0.1)
        await app.workers.wait_for_complete()
        await pilot.press("n")  # a second time: it says so, starts nothing
        await pilot.pause()
        assert any("already runs" in message for message in said), said
    # The console is gone; the node is not.
    status = background.status(home)
    assert status.running and status.answers
    assert status.record is not None and status.record.port == port


@pytest.mark.e2e
async def test_the_bar_sees_a_node_started_elsewhere_and_its_stop(home: Home) -> None:
    app = make_app(home, supervise=False, watch_node=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        assert bar_text(app).startswith("node: not running")
        await pilot.pause()
        started = background.start(home)
        assert started.status.record is not None
        deadline = time.monotonic() + 15
        while not bar_text(app).startswith("node: running on 127.0.0.1"):
            assert time.monotonic() < deadline, bar_text(app)
            await pilot.pause(0.2)
        background.stop(home)
        while not bar_text(app).startswith("node: not running"):
            assert time.monotonic() < deadline + 15, bar_text(app)
            await pilot.pause(0.2)


async def test_the_console_warns_about_files_others_can_read(home: Home) -> None:
    home.path.chmod(0o755)
    app = make_app(home, supervise=False)
    said = recording(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert said == [f"{home.path} is readable by others (mode 755): run chmod 700 {home.path}"]


async def test_capital_n_with_no_node_says_so_and_asks_nothing(home: Home) -> None:
    app = make_app(home, supervise=False)
    said = recording(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        await pilot.press("N")
        await pilot.pause()
        assert isinstance(app.screen, ConnectionsScreen)
        assert said == ["No node runs for this home: nothing to stop."]
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Stop node" in titles and "Start node" in titles


@pytest.mark.e2e
async def test_capital_n_stops_the_node_once_confirmed(home: Home) -> None:
    pending_to_jira(home)
    started = background.start(home)
    assert started.status.record is not None
    app = make_app(home, supervise=False, watch_node=True)
    said = recording(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        deadline = time.monotonic() + 15
        while not bar_text(app).startswith("node: running on 127.0.0.1"):
            assert time.monotonic() < deadline, bar_text(app)
            await pilot.pause(0.1)
        assert bar_text(app).endswith("· N stops it")
        await pilot.press("N")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmStopNodeScreen)
        question = str(app.screen.query_one("#consequence").render())
        assert "jira cannot reach this instance until a node runs again" in question
        await pilot.press("n")  # keep it running
        await pilot.pause()
        assert isinstance(app.screen, ConnectionsScreen)
        assert background.status(home).running
        await pilot.press("N", "y")
        while not bar_text(app).startswith("node: not running"):
            assert time.monotonic() < deadline + 15, bar_text(app)
            await pilot.pause(0.1)
        await app.workers.wait_for_complete()
        assert any(message.startswith("The node stopped.") for message in said), said
    assert not background.status(home).running


def private_side(home: Home) -> None:
    """A connection this side polls: it accepted a public partner's code."""
    connection = pending_to_jira(home)
    home.save_connection(
        connection.model_copy(update={"role": Role.ACCEPTOR, "status": Status.ACTIVE})
    )


async def test_quit_with_nothing_needing_a_node_quits_at_once(home: Home) -> None:
    app = make_app(home, supervise=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert not app.is_running


async def test_quit_while_a_needed_node_is_down_asks_once_and_never_blocks(home: Home) -> None:
    private_side(home)
    app = make_app(home, supervise=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, QuitWithoutNodeScreen)
        text = str(app.screen.query_one("#consequence").render())
        assert "this side's polling stops with the console: nothing syncs" in text
        assert app.screen.focused is app.screen.query_one("#yes")
        await pilot.press("escape")  # stay
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, ConnectionsScreen)
        await pilot.press("ctrl+q", "q")  # quit without it
        await pilot.pause()
        assert not app.is_running
    assert app.exit_notes == [] and not background.status(home).running

    app = make_app(home, supervise=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        await pilot.press("ctrl+q", "ctrl+q")  # the second Ctrl+Q quits at once
        await pilot.pause()
        assert not app.is_running
    assert not background.status(home).running


@pytest.mark.e2e
async def test_quit_can_start_the_node_first(home: Home) -> None:
    pending_to_jira(home)
    app = make_app(home, supervise=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, QuitWithoutNodeScreen)
        text = str(app.screen.query_one("#consequence").render())
        assert "jira cannot reach this instance" in text
        await pilot.press("s")
        deadline = time.monotonic() + 30
        while app.is_running:
            assert time.monotonic() < deadline
            await pilot.pause(0.1)
    (note,) = app.exit_notes
    assert note.startswith("The node runs on http://127.0.0.1:"), note
    status = background.status(home)
    assert status.running and status.answers


@pytest.mark.e2e
async def test_quit_with_the_node_running_asks_nothing(home: Home) -> None:
    pending_to_jira(home)
    background.start(home)
    app = make_app(home, supervise=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert not app.is_running


async def test_delete_on_a_damaged_store_says_so_and_keeps_the_connection(home: Home) -> None:
    """All or nothing from the console too: the store's damage is the error shown, and the
    connection file stays (issue 10)."""
    from exalate_tui.transport.sqlite_streams import SqliteStreams

    connection = pending_to_jira(home)
    # Its first page whole, every later one broken: it opens, and fails on the first read.
    state = SqliteStreams(home.state_path)
    state.enqueue_many("x" * 36, [("ping", {"pad": "x" * 500}) for _ in range(200)])
    state.close()
    data = bytearray(home.state_path.read_bytes())
    data[16384:] = b"\xab" * (len(data) - 16384)
    home.state_path.write_bytes(bytes(data))
    app = make_app(home, supervise=False)
    said = recording(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)
        await pilot.press("enter", "x", "y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("Could not delete" in m and "nothing was changed" in m for m in said), said
    assert home.connection_path(connection.id).exists()
