"""Bulk exalate: count the tickets a connection's triggers match, send them all, and
show the progress until each has gone out (or an error holds it).

The count is the tracker's search for each trigger (an async worker); Enter
asks the sync engine for "bulk" (`SyncStore.request`), then a thread worker
reads which of the matched tickets have a replica queued every POLL seconds
and posts it. The arithmetic is `flows.sync.BulkProgress`. Leaving the
screen leaves the engine sending.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Label, ProgressBar, Static
from textual.worker import get_current_worker

from exalate_tui.domain.models import Connection
from exalate_tui.flows.sync import BulkProgress
from exalate_tui.sync.store import SyncStoreError
from exalate_tui.trackers.adapter import QueryError, Tracker, TrackerError

from .stores import Stores
from .widgets import TitleBar

# How often the progress is read while the engine sends.
POLL = 0.3


class BulkExalateScreen(Screen[None]):
    CSS_PATH = "bulk_exalate.tcss"
    AUTO_FOCUS = "#body"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "back",
            "Back",
            id="bulk.back",
            tooltip="Back to the connection's sync; the engine goes on sending",
        ),
        Binding(
            "enter",
            "start",
            "Send them all",
            id="bulk.start",
            tooltip="Exalate every matching ticket now",
        ),
    ]

    @dataclass
    class Counted(Message):
        matched: frozenset[str]
        problem: str | None = None

    @dataclass
    class Moved(Message):
        sent: frozenset[str]
        failed: frozenset[str]
        problem: str | None = None

    def __init__(self, stores: Stores, connection: Connection, tracker: Tracker) -> None:
        super().__init__()
        self.stores = stores
        self.connection = connection
        self.tracker = tracker
        self.progress: BulkProgress | None = None

    def compose(self) -> ComposeResult:
        yield TitleBar(Text(f"Bulk exalate · {self.connection.name}"), id="title")
        with VerticalScroll(id="body"):
            yield Static(self._about(), id="about")
            yield ProgressBar(id="progress", show_eta=False)
            yield Label(Text("Counting the tickets the triggers match…"), id="words")
        yield Footer(show_command_palette=False)

    def _about(self) -> Text:
        partner = self.connection.remote_name or "the partner"
        text = Text(f"Every ticket a trigger matches now syncs to {partner}:\n", "")
        for n, trigger in enumerate(self.connection.triggers, 1):
            text.append(f"  {n}. ")
            text.append(trigger, "bold")
            text.append("\n")
        text.append("Tickets that sync already are not sent twice.", "dim")
        return text

    def on_mount(self) -> None:
        self.query_one(ProgressBar).display = False
        self._count(self.tracker, list(self.connection.triggers))

    @work(exclusive=True, exit_on_error=False, group="count")
    async def _count(self, tracker: Tracker, triggers: list[str]) -> None:
        keys: set[str] = set()
        try:
            for text in triggers:
                keys.update(t.key for t in await tracker.search(tracker.check_query(text)))
        except (QueryError, TrackerError) as error:
            self.post_message(self.Counted(frozenset(), f"Cannot count the tickets: {error}"))
            return
        self.post_message(self.Counted(frozenset(keys)))

    @on(Counted)
    def _counted(self, event: Counted) -> None:
        self.progress = BulkProgress(event.matched, problem=event.problem)
        self._show()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            progress = self.progress
            return (
                progress is not None
                and not progress.started
                and progress.problem is None
                and progress.total > 0
            )
        return True

    def action_start(self) -> None:
        progress = self.progress
        if progress is None or progress.started or not progress.total:
            return
        progress.started = True
        self._show()
        self._send(self.connection.id, progress.matched)

    @work(thread=True, exclusive=True, exit_on_error=False, group="send")
    def _send(self, cid: str, matched: Collection[str]) -> None:
        worker = get_current_worker()
        try:
            if self.stores.sync is None:
                raise SyncStoreError("the sync tables are not open")
            store = self.stores.sync.store()
            store.request("bulk", cid)
            while not worker.is_cancelled:
                sent = frozenset(store.sent_keys(cid))
                failed = frozenset(
                    e.local_key for e in store.errors(cid) if e.direction == "out" and e.local_key
                )
                self.post_message(self.Moved(sent, failed))
                if all(key in sent or key in failed for key in matched):
                    return
                time.sleep(POLL)
        except (SyncStoreError, OSError) as error:
            self.post_message(self.Moved(frozenset(), frozenset(), f"Not sent: {error}"))

    @on(Moved)
    def _moved(self, event: Moved) -> None:
        progress = self.progress
        if progress is None:
            return
        if event.problem:
            progress.problem = event.problem
        progress.update(event.sent, event.failed)
        self._show()

    def _show(self) -> None:
        progress = self.progress
        if progress is None:
            return
        bar = self.query_one(ProgressBar)
        bar.display = progress.started
        bar.update(total=max(progress.total, 1), progress=progress.finished)
        style = "bold red" if progress.problem else ("green" if progress.done else "")
        self.query_one("#words", Label).update(Text(progress.words(), style))
        self.refresh_bindings()

    def action_back(self) -> None:
        self.dismiss()
