"""What the screens that read or change connections are given: the home and its live state."""

from __future__ import annotations

from dataclasses import dataclass

from exalate_tui.home.store import Home
from exalate_tui.transport.sqlite_streams import SqliteStreams


@dataclass(frozen=True)
class Stores:
    """The home, and its `state.sqlite3` as the console opened it, or why it could not."""

    home: Home
    state: SqliteStreams | None
    state_problem: str | None
