"""The console on a home whose streams are in PostgreSQL: the same tab, the same words.

The console opens the home's database (`storage.open_streams`, and its connections
there: `storage.connection_store`); contact recorded
by another worker's handle shows in the Connections tab, and a connection action
from the detail screen enqueues its news there, where a poll of the partner's
would find it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app_live import SIZE, issue, press, until
from textual.widgets import DataTable

from exalate_tui.console.app import make_app
from exalate_tui.domain.models import Instance, Status
from exalate_tui.home.store import Home
from exalate_tui.transport.pg_streams import PgStreams
from exalate_tui.transport.storage import connection_store, make_key
from screens.connection_detail import ConnectionDetailScreen

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_console_reads_and_writes_the_streams_in_postgresql(
    tmp_path: Path, pg_url: str
) -> None:
    now = [1_714_564_800.0]
    home = Home(tmp_path / "snow", opener=connection_store)  # as the CLI opens it
    home.save_instance(
        Instance(short_name="snow", public_url="https://snow.example.com", database=pg_url)
    )
    make_key(home)
    issued = issue(home)
    cid = issued.connection.id
    assert not list(home.connections_dir.glob("*.toml"))  # a row in the database

    def make_active(connection: object) -> None:
        connection.status = Status.ACTIVE  # type: ignore[attr-defined]

    home.update_connection(cid, make_active)
    other = PgStreams(pg_url, hints=False)  # another worker of the same instance
    try:
        other.record_ok(cid, when=now[0] - 5)
        app = make_app(home, supervise=False, now=lambda: now[0])
        async with app.run_test(size=SIZE) as pilot:
            # Opened in a thread (a database may be slow to answer), then the tab.
            await until(pilot, lambda: isinstance(app.state, PgStreams))
            await until(pilot, lambda: bool(app.screen.query(DataTable)))
            table = app.screen.query_one(DataTable)
            await until(pilot, lambda: table.row_count == 1)
            await until(
                pilot, lambda: str(table.get_row_at(0)[2]) == "Active\nlast contact 5 s ago"
            )
            other.record_error(cid, "refused", when=now[0] - 1)
            now[0] += 60
            await until(pilot, lambda: str(table.get_row_at(0)[2]).startswith("Unreachable"))
            await press(pilot, "enter")
            assert isinstance(app.screen, ConnectionDetailScreen)
            await press(pilot, "d")
            await until(pilot, lambda: home.get_connection(cid).status is Status.DEACTIVATED)
        # The news waits in the database for the partner's next poll, whichever worker.
        assert [m.kind for m in other.pending(cid)] == ["connection.deactivated"]
    finally:
        other.close()
        home.close()


async def test_a_database_out_of_reach_is_said_on_the_tab_not_a_hang(tmp_path: Path) -> None:
    home = Home(tmp_path / "snow", opener=connection_store)
    url = "postgresql://exalate:pw-never-shown@127.0.0.1:1/exalate"  # nothing listens there
    home.save_instance(Instance(short_name="snow", database=url))
    make_key(home)
    app = make_app(home, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: bool(app.screen.query(DataTable)))
        assert app.state is None and app.state_problem is not None
        assert "postgresql://exalate@127.0.0.1:1/exalate: cannot be reached" in app.state_problem
        assert "pw-never-shown" not in app.state_problem
        # The connections are out of reach too: said above the table, the password not.
        problems = app.screen.query_one("#problems")
        await until(pilot, lambda: "cannot be reached" in str(problems.render()))
        shown = str(problems.render())
        assert "pw-never-shown" not in shown
        # A database is no file to fix or remove: it is said to be out of reach for now.
        assert "Cannot be read now" in shown and "could not be read" not in shown
