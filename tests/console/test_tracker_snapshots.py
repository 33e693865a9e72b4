"""Snapshots of the tracker settings screen at 80×24 and 120×36: offered after the first
run, ServiceNow chosen with its fields refused inline, and a check ServiceNow failed (a
closed port on 127.0.0.1: the reason in words, nothing saved)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import StillConsole
from test_screens_snapshots import SIZES, home_with, steps, typed

from exalate_tui.home.store import Home

Compare = Callable[..., bool]
TO_SERVICENOW = ["s", "enter", "down", "enter"]


@pytest.fixture(autouse=True)
def here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, frozen: float) -> None:
    monkeypatch.chdir(tmp_path)


def app(home: Home, frozen: float) -> StillConsole:
    return StillConsole(home, local_copy=lambda _: None, now=lambda: frozen, supervise=False)


@pytest.mark.parametrize("size", SIZES)
def test_tracker_after_first_run(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    run = steps(*typed("snow"), "enter")
    assert snap_compare(app(Home(Path("home")), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_tracker_servicenow_refused_inline(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    run = steps(*TO_SERVICENOW, "tab", *typed("ftp://acme"), "ctrl+s")
    assert snap_compare(app(home_with(), frozen), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_tracker_servicenow_unreachable(
    snap_compare: Compare, frozen: float, size: tuple[int, int]
) -> None:
    fields = [
        "tab", *typed("http://127.0.0.1:9"), "tab", "tab", *typed("sync"), "tab", *typed("pw"),
    ]  # fmt: skip
    run = steps(*TO_SERVICENOW, *fields, "ctrl+s")
    assert snap_compare(app(home_with(), frozen), terminal_size=size, run_before=run)
