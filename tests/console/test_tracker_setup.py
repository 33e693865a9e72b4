"""The console's tracker settings: offered once after the first run (Escape keeps the
embedded tracker) and from the Connections tab (`s`); ServiceNow checked as `tracker set`
checks it, in a worker, its refusal shown readably and nothing saved; the secret never on
screen. Against the ServiceNow emulator on 127.0.0.1."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import snow_home
from emulator import Emulator
from pilots import settle, typed
from serve import served
from textual.pilot import Pilot
from textual.widgets import Input, Label, Select, Static

from exalate_tui.console.app import ExalateApp
from exalate_tui.flows.tracker import AUTHS, KINDS
from exalate_tui.home.store import Home
from screens.connections import ConnectionsScreen
from screens.first_run import FirstRunScreen
from screens.tracker_setup import TrackerSetupScreen

pytestmark = pytest.mark.anyio
SIZE = (80, 24)
SECRET = "integration-pw"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Emulator:
    emulator = Emulator()
    emulator.add_user("sync", SECRET)
    emulator.add_oauth_client("exalate", "client-secret", "sync")
    emulator.insert("incident", {"short_description": "there"}, by="admin")
    return emulator


@pytest.fixture
def url(emulator: Emulator) -> Iterator[str]:
    with served(emulator) as url:
        yield url


def console(home: Home) -> ExalateApp:
    return ExalateApp(home, local_copy=lambda _: None, supervise=False)


def text(app: ExalateApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def screen_text(app: ExalateApp) -> str:
    return "\n".join(str(w.render()) for w in app.screen.query(Static))


async def choose(pilot: Pilot[None], field: str, value: str) -> None:
    """Pick `value` in a Select with the keyboard: Enter opens it, arrows move, Enter picks."""
    order = list({"kind": KINDS, "auth": AUTHS}[field])
    select = pilot.app.screen.query_one(f"#field-{field}", Select)
    select.focus()
    steps = order.index(value) - order.index(str(select.value))
    await settle(pilot, "enter", *(["down"] * steps if steps > 0 else ["up"] * -steps), "enter")
    assert select.value == value


async def fill(pilot: Pilot[None], field: str, value: str) -> None:
    box = pilot.app.screen.query_one(f"#field-{field}", Input)
    box.focus()
    box.value = ""
    await pilot.press(*typed(value))
    await settle(pilot)


async def test_first_run_offers_the_tracker_and_escape_keeps_the_embedded_one(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path / "home")
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, FirstRunScreen)
        await settle(pilot, *typed("snow"), "enter")
        assert isinstance(app.screen, TrackerSetupScreen)
        assert "Which ticket system does this instance sync?" in text(app, "#intro")
        assert app.screen.query_one("#field-kind", Select).value == "embedded"
        assert not app.screen.query_one("#row-url").display  # ServiceNow's rows hidden
        await settle(pilot, "escape")
        assert isinstance(app.screen, ConnectionsScreen)
    assert not home.tracker_config_path.exists()


async def test_servicenow_is_checked_in_a_worker_then_saved(tmp_path: Path, url: str) -> None:
    home = snow_home(tmp_path)
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "s")
        assert isinstance(app.screen, TrackerSetupScreen)
        await choose(pilot, "kind", "servicenow")
        assert app.screen.query_one("#row-url").display
        await fill(pilot, "url", url)
        await fill(pilot, "user", "sync")
        await fill(pilot, "secret", SECRET)
        await fill(pilot, "tables", "incident, problem")
        assert SECRET not in screen_text(app)  # a password field: dots, never the text
        await settle(pilot, "ctrl+s")
        assert isinstance(app.screen, ConnectionsScreen)
    stored = tomllib.loads(home.tracker_config_path.read_text())
    assert (stored["kind"], stored["user"], stored["tables"]) == (
        "servicenow",
        "sync",
        ["incident", "problem"],
    )
    assert stored["fields"]["incident"]["state"] == "integer"  # read from sys_dictionary
    assert home.tracker_config_path.stat().st_mode & 0o777 == 0o600

    # Opened again: the secret is not shown, and left empty it is kept.
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "s")
        secret = app.screen.query_one("#field-secret", Input)
        assert secret.value == "" and "leave empty to keep it" in secret.placeholder
        await fill(pilot, "poll", "2")
        await settle(pilot, "ctrl+s")
        assert isinstance(app.screen, ConnectionsScreen)
    stored = tomllib.loads(home.tracker_config_path.read_text())
    assert (stored["poll"], stored["password"]) == (2.0, SECRET)


async def test_a_refusal_is_shown_readably_and_nothing_is_saved(
    tmp_path: Path, url: str, emulator: Emulator
) -> None:
    emulator.deny("sync", "sys_journal_field", "read")
    home = snow_home(tmp_path)
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "s")
        await choose(pilot, "kind", "servicenow")
        await fill(pilot, "url", url)
        await fill(pilot, "user", "sync")
        await fill(pilot, "secret", SECRET)
        await settle(pilot, "ctrl+s")
        assert isinstance(app.screen, TrackerSetupScreen)
        failure = text(app, "#failure")
        assert failure.startswith("Not saved: the user 'sync' lacks read on sys_journal_field")
        assert "grant it read on sys_journal_field" in failure
        assert "Traceback" not in screen_text(app) and SECRET not in screen_text(app)
        await fill(pilot, "secret", "wrong")
        await settle(pilot, "ctrl+s")
        assert "refused user 'sync' and that password" in text(app, "#failure")
    assert not home.tracker_config_path.exists()


async def test_oauth_asks_for_a_client_id_and_secret(tmp_path: Path, url: str) -> None:
    home = snow_home(tmp_path)
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "s")
        await choose(pilot, "kind", "servicenow")
        await choose(pilot, "auth", "oauth")
        assert str(app.screen.query_one("#label-user", Label).render()) == "Client id"
        assert str(app.screen.query_one("#label-secret", Label).render()) == "Client secret"
        await fill(pilot, "url", url)
        await fill(pilot, "user", "exalate")
        await fill(pilot, "secret", "client-secret")
        await settle(pilot, "ctrl+s")
        assert isinstance(app.screen, ConnectionsScreen)
    stored = tomllib.loads(home.tracker_config_path.read_text())
    assert (stored["client_id"], stored["client_secret"]) == ("exalate", "client-secret")
    assert "user" not in stored and "password" not in stored


async def test_bad_fields_are_refused_inline_before_any_request(tmp_path: Path) -> None:
    home = snow_home(tmp_path)
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, "s")
        await choose(pilot, "kind", "servicenow")
        await fill(pilot, "url", "ftp://acme")
        await fill(pilot, "tables", "incident, Bad-Table")
        await settle(pilot, "ctrl+s")
        assert isinstance(app.screen, TrackerSetupScreen)
        errors = {
            name: str(app.screen.query_one(f"#error-{name}", Label).render())
            for name in ("url", "user", "secret", "tables")
        }
        assert errors["url"].startswith("ServiceNow URL must start with http:// or https://")
        assert errors["user"] == "User is required."
        assert errors["secret"] == "Password is required."
        assert "'bad-table'" in errors["tables"] or "'Bad-Table'" in errors["tables"]
        assert app.screen.focused is app.screen.query_one("#field-url")
        await settle(pilot, "escape")
        assert isinstance(app.screen, ConnectionsScreen)
    assert not home.tracker_config_path.exists()
