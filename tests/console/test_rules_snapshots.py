"""Snapshots of the Rules editor and its screens at 80×24 and 120×36, on a home that
synced and switched to Script (scripted.py, times pinned): the editor, a refused save,
a Test run's report, the versions with a diff, the revert question, the Script
connection's detail and the Switch to Script question; then each baseline's text read
back from its <text> elements, so that nothing is cut off at either size.

Baselines live in `snapshots/test_rules_snapshots/` (see conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import NOW, SNAPSHOTS, StillConsole
from pilots import quiet
from scripted import screen_lines, scripted
from synced import story
from textual.pilot import Pilot
from textual.widgets import TextArea

from exalate_tui.home.store import Home

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]
Compare = Callable[..., bool]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return asyncio.run(scripted(tmp_path))


def app_for(home: Home) -> StillConsole:
    return StillConsole(home, now=lambda: NOW, supervise=False)


def steps(*keys: str, line: int | None = None) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Press `keys`; with `line`, the editor's cursor goes there after the first two."""

    async def run(pilot: Pilot[None]) -> None:
        await quiet(pilot)
        for n, key in enumerate(keys):
            if n == 2 and line is not None:
                pilot.app.screen.query_one("#outgoing", TextArea).move_cursor((line, 0))
            await pilot.press(key)
            await pilot.pause()
            for _ in range(2):
                await pilot.app.workers.wait_for_complete()
                await pilot.pause()

    return run


def typed(text: str) -> list[str]:
    return ["space" if ch == " " else "enter" if ch == "\n" else ch for ch in text]


@pytest.mark.parametrize("size", SIZES)
def test_rules_editor(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter", "e"))


@pytest.mark.parametrize("size", SIZES)
def test_rules_refused(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    run = steps("enter", "e", *typed("import os\n"), "ctrl+s", line=4)
    assert snap_compare(app_for(home), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_rules_test_run(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    run = steps("enter", "e", "f4", "tab", "enter")
    assert snap_compare(app_for(home), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_rules_test_pick(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter", "e", "f4"))


@pytest.mark.parametrize("size", SIZES)
def test_rules_versions(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    run = steps("enter", "e", "f5", "down", "down", "down")
    assert snap_compare(app_for(home), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_rules_revert_asks(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    run = steps("enter", "e", "f5", "down", "down", "down", "r")
    assert snap_compare(app_for(home), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_script_connection(snap_compare: Compare, home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(home), terminal_size=size, run_before=steps("enter"))


@pytest.mark.parametrize("size", SIZES)
def test_switch_asks(snap_compare: Compare, tmp_path: Path, size: tuple[int, int]) -> None:
    basic = asyncio.run(story(tmp_path))
    assert snap_compare(app_for(basic), terminal_size=size, run_before=steps("enter", "m"))


def test_nothing_is_cut_off_in_the_baselines() -> None:
    """Every baseline's Footer has room to spare (a cut Footer fills its line), and no
    line was shortened with an ellipsis."""
    baselines = sorted((SNAPSHOTS / Path(__file__).stem).glob("*.svg"))
    assert len(baselines) == 16
    for path in baselines:
        width = 80 if "[80x24]" in path.name else 120
        lines = screen_lines(path.read_text())
        assert len(lines) == (24 if width == 80 else 36), path.name
        footer = lines[-1].rstrip()
        assert footer.startswith(" esc ") and len(footer) < width - 1, (path.name, footer)
        assert not [line for line in lines if "…" in line], path.name
