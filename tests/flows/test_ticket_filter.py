"""The Tickets list's filter (flows/tickets.py), parsed by the real embedded tracker's
`check_query`: what applies, what is refused with the reason, and that a refused
filter leaves the list on the last one that parsed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from exalate_tui.flows.tickets import TicketFilter
from exalate_tui.trackers.embedded import EmbeddedTracker


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[EmbeddedTracker]:
    opened = EmbeddedTracker(tmp_path / "tracker.sqlite3", tmp_path / "attachments")
    yield opened
    anyio.run(opened.close)


def test_no_filter_is_every_ticket(tracker: EmbeddedTracker) -> None:
    flt = TicketFilter(tracker.check_query)
    assert flt.query is None and flt.error is None
    assert flt.applied == "all tickets"
    assert flt.set_text("   ") is False


def test_a_filter_that_parses_applies(tracker: EmbeddedTracker) -> None:
    flt = TicketFilter(tracker.check_query)
    assert flt.set_text(" priority<=2^status=new ") is True
    assert flt.query is not None and flt.error is None
    assert flt.applied == "priority<=2^status=new"
    # The same again: nothing to search for.
    assert flt.set_text("priority<=2^status=new") is False


def test_a_filter_that_does_not_parse_is_refused_with_the_reason(
    tracker: EmbeddedTracker,
) -> None:
    flt = TicketFilter(tracker.check_query)
    flt.set_text("priority<=2")
    assert flt.set_text("priority<=2^colour=red") is False
    assert flt.error is not None
    assert flt.error.startswith("Filter not applied: ")
    assert "colour" in flt.error
    # The list stays on the last filter that parsed.
    assert flt.applied == "priority<=2"


def test_emptying_the_filter_shows_every_ticket_again(tracker: EmbeddedTracker) -> None:
    flt = TicketFilter(tracker.check_query)
    flt.set_text("type=incident")
    flt.set_text("type=")
    assert flt.set_text("") is True
    assert flt.query is None and flt.error is None
