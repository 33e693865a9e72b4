"""The sync views' state (flows/sync.py) with no terminal: the trigger form against the
embedded tracker's own parser, Bulk exalate's arithmetic, history in words, which
view shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from exalate_tui.flows.sync import BulkProgress, SyncViews, TriggerForm, history_entries
from exalate_tui.sync.store import Change
from exalate_tui.trackers.embedded import EmbeddedTracker


@pytest.fixture
def check_query(tmp_path: Path):  # type: ignore[no-untyped-def]
    tracker = EmbeddedTracker(tmp_path / "tracker.sqlite3", tmp_path / "attachments")
    return tracker.check_query


def test_the_trigger_form_refuses_what_the_tracker_cannot_read(check_query) -> None:  # type: ignore[no-untyped-def]
    form = TriggerForm(check_query)
    assert form.submit() is None and form.error and "Type a filter" in form.error
    form.set_text("priority<=2^colour=red")
    assert form.submit() is None
    assert form.error is not None and "colour" in form.error
    form.set_text(" priority<=2^type=incident ")
    assert form.error is None
    assert form.submit() == "priority<=2^type=incident"


def test_bulk_progress_counts_sent_and_held_tickets_until_all_are_done() -> None:
    progress = BulkProgress(frozenset({"S-1", "S-2", "S-3"}))
    assert "3 tickets match" in progress.words() and not progress.done
    progress.started = True
    assert progress.update({"S-1", "OTHER-9"})
    assert (progress.finished, progress.total, progress.done) == (1, 3, False)
    assert not progress.update({"S-1"})  # nothing moved
    progress.update({"S-1", "S-2"}, failed_keys={"S-3"})
    assert progress.done
    assert progress.words() == (
        "Done: 2 of 3 tickets sent to the partner's queue; 1 held by an error (see Errors)."
    )
    assert "nothing to send" in BulkProgress(frozenset()).words()


def test_history_reads_newest_first_with_old_and_new_values() -> None:
    changes = [
        Change(
            1,
            "S-1",
            "c1",
            "J-1",
            100.0,
            3,
            "basic",
            {"fields": {"summary": [None, "A"]}},
            "Created from jira's J-1",
        ),
        Change(
            2,
            "S-1",
            "c1",
            "J-1",
            200.0,
            7,
            "basic",
            {"fields": {"status": ["new", "closed"]}, "comments": 2, "attachments": ["a.log"]},
            "",
        ),
        Change(3, "S-1", "c1", "J-1", 300.0, None, "basic", {}, "Unexalated here"),
    ]
    newest, middle, oldest = history_entries(changes, {"c1": "snow_to_jira"})
    assert newest.source == "snow_to_jira, J-1 · basic" and newest.note == "Unexalated here"
    assert middle.source == "from snow_to_jira, J-1 · v7 · basic"
    assert middle.lines == ("status: new → closed", "2 comments added", "attachment added: a.log")
    assert oldest.lines == ("summary: (empty) → A",)


def test_switching_views_closes_the_trigger_form(check_query) -> None:  # type: ignore[no-untyped-def]
    views = SyncViews()
    views.open_form(check_query)
    assert views.view == "triggers" and views.form is not None
    assert views.show("errors") and views.form is None
    with pytest.raises(ValueError):
        views.show("nowhere")
