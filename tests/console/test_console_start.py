"""The console's start: its first screen drawn from a glance at the files, before pydantic.

Every other console test runs with pydantic already loaded, where the console
reads the home through the models as before; here `pydantic_loaded` says no,
as it does in a freshly started console (benchmarks/README.md).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import DataTable

from exalate_tui import cli
from exalate_tui.console import app as app_module
from exalate_tui.console.app import ExalateApp, make_app
from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home, Listed
from screens.connections import ConnectionsScreen
from screens.instance_error import InstanceErrorScreen

SIZE = (100, 30)
WHEN = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def home_with_rows(tmp_path: Path, count: int = 12) -> Home:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow", public_url="https://snow.example.com"))
    for n in range(count):
        home.save_connection(
            Connection(
                name=f"snow_to_partner{n:02d}",
                mode=Mode.SCRIPT if n % 2 else Mode.BASIC,
                topology=Topology.PUBLIC_PRIVATE,
                role=Role.INITIATOR,
                local_name="snow",
                remote_name=None if n == 3 else f"partner{n:02d}",
                status=[Status.PENDING, Status.ACTIVE, Status.DEACTIVATED][n % 3],
                created=WHEN + timedelta(hours=n),
            )
        )
    return home


def console(home: Home, frozen: float) -> ExalateApp:
    return make_app(home, local_copy=lambda text: None, now=lambda: frozen, supervise=False)


def first_frame_of(app: App[None]) -> str:
    return app.export_screenshot()


async def test_the_first_screen_from_a_glance_is_the_models_screen(
    tmp_path: Path, frozen: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = home_with_rows(tmp_path)
    async with console(home, frozen).run_test(size=SIZE) as pilot:
        await pilot.pause()  # the Footer lists the tab's keys once the first frame is out
        expected = first_frame_of(pilot.app)
    monkeypatch.setattr(app_module, "pydantic_loaded", lambda: False)
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, ConnectionsScreen)
        assert all(isinstance(c, Listed) for c in screen._connections)
        await pilot.pause()
        assert first_frame_of(app) == expected
        table = screen.query_one(DataTable)
        cleared: list[bool] = []
        monkeypatch.setattr(table, "clear", lambda *a, **k: cleared.append(True))
        # The first tick validates the files; the rows read the same, so the table stays.
        screen.action_reload()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert all(isinstance(c, Connection) for c in screen._connections)
        assert not cleared
        assert first_frame_of(app) == expected
        assert app.instance == home.load_instance()


async def test_the_instance_from_a_glance_is_the_model_when_first_asked_for(
    tmp_path: Path, frozen: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = home_with_rows(tmp_path, 1)
    monkeypatch.setattr(app_module, "pydantic_loaded", lambda: False)
    app = console(home, frozen)
    async with app.run_test(size=SIZE) as pilot:
        assert app._glance is not None
        await pilot.press("i")  # the wizard needs the model: validated now
        await pilot.pause()
        assert app._glance is None
        assert app.instance == Instance(short_name="snow", public_url="https://snow.example.com")


async def test_an_unusual_file_goes_the_models_way_at_once(
    tmp_path: Path, frozen: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = home_with_rows(tmp_path, 2)
    home.instance_path.write_text('short_name = "snow white"\n')
    monkeypatch.setattr(app_module, "pydantic_loaded", lambda: False)
    async with console(home, frozen).run_test(size=SIZE) as pilot:
        assert isinstance(pilot.app.screen, InstanceErrorScreen)


def test_the_console_starts_without_pydantic() -> None:
    probe = (
        "import sys, exalate_tui.cli, exalate_tui.console.app, screens.connections;"
        "bad = [m for m in ('pydantic', 'exalate_tui.flows.wizard',"
        " 'argparse') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("argv", "home"),
    [([], [None]), (["--home", "h"], ["h"]), (["--home=h"], ["h"]), (["--home="], [""])],
)
def test_the_console_alone_is_read_without_argparse(argv: list[str], home: list[str]) -> None:
    assert cli._console_home(argv) == home


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--home"], ["--home", "-h"], ["--ho", "h"], ["init"], ["--home", "h", "x"]],
)
def test_anything_else_goes_to_argparse(argv: list[str]) -> None:
    assert cli._console_home(argv) is None


PUBLIC_SIDE_ONLY = """
import asyncio, sys
from pathlib import Path
from pydantic import SecretStr
from exalate_tui.console.app import make_app
from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home

home = Home(Path(sys.argv[1]))
home.save_instance(Instance(short_name="snow", public_url="https://snow.example.com"))
home.save_connection(Connection(
    name="snow_to_jira", mode=Mode.SCRIPT, topology=Topology.PUBLIC_PRIVATE,
    role=Role.INITIATOR, local_name="snow", remote_name="jira",
    status=Status.ACTIVE, secret=SecretStr("s" * 43),
))

async def main():
    app = make_app(home, local_copy=lambda text: None)
    async with app.run_test() as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if app.supervisor is not None and app.supervisor._links == {}:
                break
        await pilot.pause(0.3)  # a scan or two
        print(app.supervisor is not None, "httpx" in sys.modules)

asyncio.run(main())
"""


def test_a_home_whose_partners_all_poll_it_never_loads_httpx(tmp_path: Path) -> None:
    """The seed's ServiceNow side: its partner makes every request, so the console's
    supervisor has nothing to call and leaves httpx (~7 MB) unloaded."""
    done = subprocess.run(
        [sys.executable, "-c", PUBLIC_SIDE_ONLY, str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"], done.stdout + done.stderr
