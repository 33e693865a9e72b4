"""Every screen fits 80×24: its main button (or list) inside the screen, and nothing in
its body scrolled out of sight, even after a code is pasted (issue 11)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import pending_to_jira, snow_home
from pilots import settle
from textual import events
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget

from exalate_tui.console.app import ExalateApp
from exalate_tui.domain.models import Instance, Mode
from exalate_tui.flows.initiate import InitiateWizard
from exalate_tui.home.store import Home
from exalate_tui.lifecycle.initiate import save_issued
from screens.accept import CodeArea

pytestmark = pytest.mark.anyio
SIZE = (80, 24)
WHEN = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def private(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="jira"))
    return home


def with_pending(tmp_path: Path) -> Home:
    home = snow_home(tmp_path)
    pending_to_jira(home)
    return home


def broken(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.ensure()
    home.instance_path.write_text('short_name = "snow"\npublic_url = \n')
    return home


def with_ticket(tmp_path: Path) -> Home:
    """snow with one ticket, made as an admin would (`exalate-tui tickets create`)."""
    from concurrent.futures import ThreadPoolExecutor

    from exalate_tui.cli import main

    home = snow_home(tmp_path)
    summary = "Printer on fire on the third floor, by the stairs; users cannot print"
    args = ["--home", str(home.path), "tickets", "create", "--summary", summary]
    with ThreadPoolExecutor(1) as pool:  # the command runs its own event loop
        assert pool.submit(main, args).result() == 0
    return home


def code_from_snow(tmp_path: Path) -> str:
    partner = Home(tmp_path / "partner")
    instance = Instance(short_name="snow", public_url="https://snow.example.com")
    partner.save_instance(instance)
    wizard = InitiateWizard(instance, [])
    wizard.choose_no_url()
    wizard.set_mode(Mode.SCRIPT)
    wizard.next()
    wizard.next()
    wizard.set_remote_name("jira")
    wizard.set_description("P1 incidents, escalated from the service desk to engineering")
    assert wizard.next() and wizard.issued
    assert save_issued(partner, wizard.issued.connection, wizard.new_instance)
    return wizard.issued.code


def typed(text: str) -> list[str]:
    return ["space" if ch == " " else ch for ch in text]


TO_INFO = ["i", "ctrl+n", "down", "space", "enter", "enter"]

# (screen, home, keys, the main widget that must show)
CASES: list[tuple[str, Callable[[Path], Home], list[str], str]] = [
    ("first run", lambda p: Home(p / "home"), [], "#save"),
    ("broken instance.toml", broken, [], "#todo"),
    ("connections", with_pending, [], "#connections"),
    ("destination", snow_home, ["i"], "#next"),
    ("public URL", private, ["i", "ctrl+n"], "#next"),
    ("config type", snow_home, ["i", "ctrl+n"], "#next"),
    ("note", snow_home, ["i", "ctrl+n", "down", "space", "enter"], "#next"),
    ("info", snow_home, TO_INFO, "#next"),
    ("invitation", snow_home, [*TO_INFO, *typed("jira"), "enter"], "#done"),
    ("detail", with_pending, ["enter"], "#regenerate"),
    ("delete", with_pending, ["enter", "x"], "#yes"),
    ("regenerated", with_pending, ["enter", "g", "y"], "#done"),
    ("write code", with_pending, ["enter", "g", "y", "w"], "#write"),
    ("accept", private, ["a"], "#accept"),
    ("tickets", with_ticket, ["t"], "#tickets"),
    ("new ticket", with_ticket, ["t", "n"], "#save"),
    ("ticket", with_ticket, ["t", "enter"], "#title"),
    ("edit ticket", with_ticket, ["t", "enter", "e"], "#save"),
    ("tracker after first run", lambda p: Home(p / "home"), [*typed("snow"), "enter"], "#save"),
    ("tracker settings", snow_home, ["s"], "#save"),
    ("tracker: ServiceNow", snow_home, ["s", "enter", "down", "enter"], "#save"),
    ("tracker: ServiceNow refused", snow_home, ["s", "enter", "down", "enter", "ctrl+s"], "#save"),
]


# A ticket's detail is a page to read (fields, comments, history: as long as the ticket
# is); it scrolls by design, with its title and keys in view.
SCROLLS_BY_DESIGN = {"ticket"}


def inside(widget: Widget, screen: Region) -> bool:
    region = widget.region
    return region.area > 0 and screen.contains_region(region)


def nothing_scrolled_away(pilot: Pilot[None]) -> list[str]:
    return [
        f"{w} scrolls by {w.max_scroll_y}"
        for w in pilot.app.screen.query(Widget)
        # (a widget not displayed at all, like a hidden row's Input, has nothing to hide)
        if w.is_scrollable
        and w.max_scroll_y > 0
        and w.region.area > 0
        and w.id not in {"code", "connections"}
    ]


@pytest.mark.parametrize(("name", "make", "keys", "main"), CASES, ids=[c[0] for c in CASES])
async def test_screen_fits(
    tmp_path: Path, name: str, make: Callable[[Path], Home], keys: list[str], main: str
) -> None:
    app = ExalateApp(make(tmp_path), local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        screen = app.screen
        assert inside(screen.query_one(main), screen.region), f"{name}: {main} not in 80×24"
        if name not in SCROLLS_BY_DESIGN:
            assert nothing_scrolled_away(pilot) == []


async def test_accept_fits_after_a_paste(tmp_path: Path) -> None:
    """The code box, the preview, both names and the Accept button, all at once."""
    code = code_from_snow(tmp_path)
    app = ExalateApp(private(tmp_path), local_copy=lambda _: None, supervise=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        lines = "\n".join(code[i : i + 60] for i in range(0, len(code), 60))
        app.screen.query_one(CodeArea).post_message(events.Paste(lines + "\n"))
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        for part in ("#code", "#preview", "#local_name", "#name", "#accept"):
            assert inside(screen.query_one(part), screen.region), f"{part} not in 80×24"
        assert nothing_scrolled_away(pilot) == []
