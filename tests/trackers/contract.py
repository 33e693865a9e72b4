"""The adapter contract: what every tracker does, as the sync engine, the CLI and the console
rely on it (exalate_tui/trackers/adapter.py). As vdirsyncer holds each storage to one suite.

An adapter's test module subclasses `TrackerContract` and provides two fixtures:
- `tracker`: a new, empty tracker of that kind, closed after the test;
- `elsewhere`: `await elsewhere(summary)` creates a ticket with that summary from
  another process (another writer of the same ticket system), returning its key.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC

import pytest

from exalate_tui.trackers.adapter import (
    EDITABLE,
    PRIORITIES,
    STATUSES,
    TYPES,
    NewComment,
    QueryError,
    Ticket,
    TicketNotFound,
    TicketRefused,
    Tracker,
    TrackerError,
)

Elsewhere = Callable[[str], Awaitable[str]]
TEN_MIB = 10 * 1024 * 1024


class Wakes:
    """Counts `wake()` calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    async def next(self, within: float = 3.0) -> float:
        """Wait for a wake after the last one awaited; returns how long it took."""
        started = time.monotonic()
        await asyncio.wait_for(self._event.wait(), within)
        self._event.clear()
        return time.monotonic() - started


async def _new(tracker: Tracker, summary: str = "Printer on fire", **fields: object) -> Ticket:
    return await tracker.create({"summary": summary, **fields})


class TrackerContract:
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    # -- create, get -------------------------------------------------------------

    async def test_a_created_ticket_reads_back_whole(self, tracker: Tracker) -> None:
        made = await tracker.create(
            {
                "summary": "Printer on fire",
                "description": "Second floor.\nSmoke.",
                "type": "incident",
                "status": "in_progress",
                "priority": 1,
                "assignee": "ada",
                "labels": ["vip", "hardware"],
            },
            reporter="grace",
        )
        assert made == await tracker.get(made.key)
        assert (made.summary, made.description) == ("Printer on fire", "Second floor.\nSmoke.")
        assert (made.type, made.status, made.priority) == ("incident", "in_progress", 1)
        assert (made.assignee, made.reporter, made.labels) == ("ada", "grace", ("vip", "hardware"))
        assert made.created.tzinfo is not None and made.created.utcoffset() == UTC.utcoffset(None)
        assert made.updated == made.created
        assert made.comments == () and made.attachments == () and made.correlation is None

    async def test_a_ticket_needs_only_a_summary(self, tracker: Tracker) -> None:
        made = await _new(tracker)
        assert made.type in TYPES and made.status in STATUSES and made.priority in PRIORITIES
        assert made.reporter  # someone: the instance or the user
        assert made.labels == ()

    async def test_get_many_reads_the_keys_that_exist_in_order(self, tracker: Tracker) -> None:
        a, b = await _new(tracker, "a"), await _new(tracker, "b")
        await tracker.comment(b.key, "on b")
        got = await tracker.get_many([b.key, "NOPE-999", a.key, b.key])
        assert got == [await tracker.get(b.key), await tracker.get(a.key)]
        assert await tracker.get_many([]) == []

    async def test_writes_in_a_deferred_block_read_back_and_stay_after_an_error(
        self, tracker: Tracker
    ) -> None:
        with pytest.raises(RuntimeError):
            async with tracker.deferred():
                made = await _new(tracker, "in the block")
                await tracker.comment(made.key, "noted")
                assert len((await tracker.get(made.key)).comments) == 1
                raise RuntimeError("the engine stopped")
        assert (await tracker.get(made.key)).comments[0].body == "noted"
        after = await _new(tracker, "after the block")
        assert await tracker.get(after.key) == after

    async def test_keys_are_distinct_and_found_again(self, tracker: Tracker) -> None:
        keys = [(await _new(tracker, f"t{i}")).key for i in range(3)]
        assert len(set(keys)) == 3
        assert [(await tracker.get(key)).summary for key in keys] == ["t0", "t1", "t2"]

    @pytest.mark.parametrize(
        ("fields", "says"),
        [
            ({"status": "done"}, ", ".join(STATUSES)),
            ({"type": "bug"}, ", ".join(TYPES)),
            ({"priority": 9}, "1 to 5"),
            ({"priority": "2"}, "1 to 5"),
            ({"summary": "   "}, "summary"),
            ({"labels": "vip"}, "list of labels"),
            ({"labels": ["a,b"]}, "no comma"),
            ({"reporter": "me"}, ", ".join(EDITABLE)),
        ],
    )
    async def test_a_value_out_of_range_is_refused_with_what_is_allowed(
        self, tracker: Tracker, fields: dict[str, object], says: str
    ) -> None:
        with pytest.raises(TicketRefused) as refused:
            await tracker.create({"summary": "x", **fields})
        assert says in str(refused.value)
        assert refused.value.bad_input and not refused.value.unavailable
        assert await tracker.search() == []

    async def test_a_ticket_without_a_summary_is_refused(self, tracker: Tracker) -> None:
        with pytest.raises(TicketRefused, match="summary"):
            await tracker.create({"description": "no summary"})

    # -- update ------------------------------------------------------------------

    async def test_update_sets_the_fields_given_and_moves_updated(self, tracker: Tracker) -> None:
        made = await _new(tracker, labels=["a"])
        await asyncio.sleep(0.002)
        after = await tracker.update(made.key, {"status": "resolved", "labels": ["a", "b"]})
        assert (after.status, after.labels, after.summary) == ("resolved", ("a", "b"), made.summary)
        assert after.updated > made.updated and after.created == made.created
        assert after == await tracker.get(made.key)

    async def test_an_update_to_the_same_values_writes_nothing(self, tracker: Tracker) -> None:
        made = await _new(tracker, priority=2, labels=["x"])
        mark = (await tracker.changed(None)).watermark
        await asyncio.sleep(0.002)
        same = await tracker.update(
            made.key, {"summary": made.summary, "priority": 2, "labels": ("x",)}
        )
        assert same == made  # `updated` did not move
        assert (await tracker.changed(mark)).keys == ()

    async def test_an_update_is_refused_whole_when_one_value_is_bad(self, tracker: Tracker) -> None:
        made = await _new(tracker)
        with pytest.raises(TicketRefused, match="priority"):
            await tracker.update(made.key, {"summary": "new words", "priority": 0})
        assert await tracker.get(made.key) == made

    # -- changed -----------------------------------------------------------------

    async def test_changed_lists_each_key_once_oldest_change_first(self, tracker: Tracker) -> None:
        a, b, c = [await _new(tracker, name) for name in "abc"]
        await tracker.update(a.key, {"summary": "a again"})
        first = await tracker.changed(None)
        assert first.keys == (b.key, c.key, a.key)
        assert (await tracker.changed(first.watermark)).keys == ()
        await tracker.comment(c.key, "a comment changes its ticket")
        await tracker.update(b.key, {"priority": 1})
        assert (await tracker.changed(first.watermark)).keys == (c.key, b.key)

    async def test_changed_goes_on_from_its_watermark_in_pages(self, tracker: Tracker) -> None:
        keys = [(await _new(tracker, f"t{i}")).key for i in range(5)]
        seen: list[str] = []
        mark = None
        for _ in range(4):
            page = await tracker.changed(mark, limit=2)
            seen += page.keys
            mark = page.watermark
        assert seen == keys
        assert (await tracker.changed(mark, limit=2)).watermark == mark

    # -- comments ----------------------------------------------------------------

    async def test_comments_keep_author_body_and_whether_internal(self, tracker: Tracker) -> None:
        made = await _new(tracker)
        public = await tracker.comment(made.key, "Looking into it", author="ada")
        note = await tracker.comment(made.key, "It was the toner", internal=True)
        ticket = await tracker.get(made.key)
        assert ticket.comments == (public, note)
        assert (public.author, public.body, public.internal) == ("ada", "Looking into it", False)
        assert note.internal and note.author and note.id != public.id
        assert ticket.updated >= note.created

    async def test_a_comment_with_an_origin_is_added_once(self, tracker: Tracker) -> None:
        made = await _new(tracker)
        first = await tracker.comment(made.key, "from the partner", origin="c1/42")
        mark = (await tracker.changed(None)).watermark
        again = await tracker.comment(made.key, "from the partner", origin="c1/42")
        assert again == first
        assert (await tracker.get(made.key)).comments == (first,)
        assert (await tracker.changed(mark)).keys == ()
        other = await tracker.comment(made.key, "from the partner", origin="c1/43")
        assert len((await tracker.get(made.key)).comments) == 2 and other.origin == "c1/43"

    async def test_an_empty_comment_is_refused(self, tracker: Tracker) -> None:
        made = await _new(tracker)
        with pytest.raises(TicketRefused, match="body"):
            await tracker.comment(made.key, "  ")

    # -- attachments -------------------------------------------------------------

    async def test_attachments_are_kept_by_hash_once(self, tracker: Tracker) -> None:
        made = await _new(tracker)
        first = await tracker.attach(made.key, "log.txt", b"line 1\n")
        again = await tracker.attach(made.key, "copy of log.txt", b"line 1\n")
        other = await tracker.attach(made.key, "photo.png", b"\x89PNG\x00")
        assert again == first
        assert (first.name, first.size) == ("log.txt", 7)
        assert first.sha256 == hashlib.sha256(b"line 1\n").hexdigest()
        assert (await tracker.get(made.key)).attachments == (first, other)
        assert await tracker.attachment_bytes(made.key, first.sha256) == b"line 1\n"
        assert await tracker.attachment_bytes(made.key, other.sha256) == b"\x89PNG\x00"

    async def test_an_attachment_with_an_origin_is_added_once(self, tracker: Tracker) -> None:
        made = await _new(tracker)
        first = await tracker.attach(made.key, "a.txt", b"a", origin="c1/a")
        assert await tracker.attach(made.key, "a.txt", b"a", origin="c1/a") == first
        assert first.origin == "c1/a"
        assert len((await tracker.get(made.key)).attachments) == 1

    async def test_the_same_bytes_may_hang_on_two_tickets(self, tracker: Tracker) -> None:
        one, two = await _new(tracker, "one"), await _new(tracker, "two")
        await tracker.attach(one.key, "x.bin", b"same")
        await tracker.attach(two.key, "x.bin", b"same")
        assert len((await tracker.get(two.key)).attachments) == 1

    async def test_an_attachment_over_the_limit_is_refused_naming_it(
        self, tracker: Tracker
    ) -> None:
        made = await _new(tracker)
        with pytest.raises(TrackerError) as refused:
            await tracker.attach(made.key, "huge.iso", b"\0" * (TEN_MIB + 1))
        assert "10 MiB" in str(refused.value) and "huge.iso" in str(refused.value)
        assert not refused.value.unavailable
        assert (await tracker.get(made.key)).attachments == ()
        await tracker.attach(made.key, "exactly.bin", b"\0" * TEN_MIB)

    async def test_bytes_of_an_attachment_the_ticket_lacks_are_not_found(
        self, tracker: Tracker
    ) -> None:
        made = await _new(tracker)
        with pytest.raises(TicketNotFound):
            await tracker.attachment_bytes(made.key, "0" * 64)

    # -- created for a correlation -------------------------------------------------

    async def test_a_ticket_created_for_a_correlation_is_found_by_it(
        self, tracker: Tracker
    ) -> None:
        assert await tracker.find_created("c1/JIRA-7") is None
        made = await tracker.create({"summary": "from jira"}, correlation="c1/JIRA-7")
        assert made.correlation == "c1/JIRA-7"
        assert await tracker.find_created("c1/JIRA-7") == made
        assert await tracker.find_created("c1/JIRA-8") is None
        await tracker.comment(made.key, "x")
        found = await tracker.find_created("c1/JIRA-7")
        assert found is not None and len(found.comments) == 1

    async def test_a_ticket_created_with_comments_has_them_in_order_in_one_change(
        self, tracker: Tracker
    ) -> None:
        start = (await tracker.changed(None)).watermark
        made = await tracker.create(
            {"summary": "from jira"},
            correlation="c1/JIRA-9",
            comments=[
                NewComment("first", author="ann", origin="c1/1"),
                NewComment("a work note", internal=True, author="bob", origin="c1/2"),
            ],
        )
        assert made == await tracker.get(made.key)
        assert [(c.body, c.internal, c.author, c.origin) for c in made.comments] == [
            ("first", False, "ann", "c1/1"),
            ("a work note", True, "bob", "c1/2"),
        ]
        assert (await tracker.changed(start)).keys == (made.key,)
        # The origins hold as for `comment`: adding one again adds nothing.
        await tracker.comment(made.key, "first", author="ann", origin="c1/1")
        assert len((await tracker.get(made.key)).comments) == 2

    async def test_a_bad_comment_refuses_the_whole_create(self, tracker: Tracker) -> None:
        with pytest.raises(TicketRefused, match="body"):
            await tracker.create({"summary": "x"}, comments=[NewComment("  ")])
        assert await tracker.search() == []

    async def test_creating_twice_for_one_correlation_makes_one_ticket(
        self, tracker: Tracker
    ) -> None:
        made = await tracker.create({"summary": "from jira"}, correlation="c1/JIRA-7")
        again = await tracker.create({"summary": "retried"}, correlation="c1/JIRA-7")
        assert again == made
        assert len(await tracker.search()) == 1

    # -- search ------------------------------------------------------------------

    async def test_search_filters_with_the_trackers_query_language(self, tracker: Tracker) -> None:
        a = await _new(tracker, "Network down", priority=1, labels=["vip"])
        b = await _new(tracker, "Disk full", priority=4)
        c = await _new(tracker, "Network slow", priority=3, status="on_hold")

        async def keys(text: str, limit: int | None = None) -> list[str]:
            query = tracker.check_query(text)
            assert query.text == text
            return [ticket.key for ticket in await tracker.search(query, limit)]

        assert [t.key for t in await tracker.search()] == [a.key, b.key, c.key]
        assert await keys("summaryLIKEnetwork") == [a.key, c.key]
        assert await keys("summaryLIKEnetwork^priority>=2") == [c.key]
        assert await keys("priority=4^ORlabels=vip") == [a.key, b.key]
        assert await keys("status=on_hold^NQpriority=1") == [a.key, c.key]
        assert await keys("ORDERBYDESCpriority") == [b.key, c.key, a.key]
        assert await keys("summaryLIKEnetwork", limit=1) == [a.key]
        assert await keys("") == [a.key, b.key, c.key]
        assert await keys("summaryLIKEprinter") == []

    async def test_a_query_matches_a_ticket_as_search_does(self, tracker: Tracker) -> None:
        made = await _new(tracker, priority=2, labels=["vip"])
        assert tracker.check_query("priority<=2^labels=vip").matches(made)
        assert not tracker.check_query("status=closed").matches(made)
        found = await tracker.search(tracker.check_query("priority<=2^labels=vip"))
        assert [t.key for t in found] == [made.key]
        assert found[0].comments == made.comments

    @pytest.mark.parametrize(
        "text", ["priority<=high", "bogus=1", "status=done", "summaryCONTAINSx", "a=1^^b=2"]
    )
    async def test_a_bad_query_is_refused_with_the_part(self, tracker: Tracker, text: str) -> None:
        with pytest.raises(QueryError) as refused:
            tracker.check_query(text)
        assert refused.value.bad_input

    # -- unknown keys --------------------------------------------------------------

    @pytest.mark.parametrize("action", ["get", "update", "comment", "attach", "bytes"])
    async def test_an_unknown_key_is_not_found(self, tracker: Tracker, action: str) -> None:
        await _new(tracker)
        calls = {
            "get": lambda: tracker.get("NOPE-999"),
            "update": lambda: tracker.update("NOPE-999", {"status": "closed"}),
            "comment": lambda: tracker.comment("NOPE-999", "hello"),
            "attach": lambda: tracker.attach("NOPE-999", "a.txt", b"a"),
            "bytes": lambda: tracker.attachment_bytes("NOPE-999", "0" * 64),
        }
        mark = (await tracker.changed(None)).watermark
        with pytest.raises(TicketNotFound) as missing:
            await calls[action]()
        assert "NOPE-999" in str(missing.value) and missing.value.bad_input
        assert (await tracker.changed(mark)).keys == ()

    # -- watch -------------------------------------------------------------------

    async def test_watch_wakes_on_a_write_in_this_process(self, tracker: Tracker) -> None:
        wakes = Wakes()
        stop = tracker.watch(wakes)
        try:
            made = await _new(tracker)
            assert await wakes.next(within=1.0) < 1.0
            await tracker.comment(made.key, "hi")
            await wakes.next(within=1.0)
        finally:
            stop()
        before = wakes.count
        await _new(tracker, "after stop")
        await asyncio.sleep(0.3)
        assert wakes.count == before

    async def test_watch_wakes_on_a_write_from_another_process(
        self, tracker: Tracker, elsewhere: Elsewhere
    ) -> None:
        wakes = Wakes()
        stop = tracker.watch(wakes)
        try:
            key = await elsewhere("made by another process")
            await wakes.next(within=2.0)
            assert (await tracker.changed(None)).keys == (key,)
            assert (await tracker.get(key)).summary == "made by another process"
        finally:
            stop()

    async def test_an_update_to_the_same_values_wakes_no_one(self, tracker: Tracker) -> None:
        made = await _new(tracker)
        wakes = Wakes()
        stop = tracker.watch(wakes)
        try:
            await tracker.update(made.key, {"summary": made.summary})
            await asyncio.sleep(0.3)
            assert wakes.count == 0
        finally:
            stop()
