"""The console's start: what its first screen loads, and what it leaves unloaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_console_starts_without_the_node_or_the_network() -> None:
    probe = (
        "import sys, exalate_tui.cli, exalate_tui.console.app, screens.connections;"
        "bad = [m for m in ('fastapi', 'uvicorn', 'httpx') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


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
