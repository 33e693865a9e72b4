"""The sync engine driven directly: two real embedded trackers, real streams and sync
stores, one connection between them (conftest.py: `Pair`)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from typing import Any

import pytest

from exalate_tui.domain.models import Status
from exalate_tui.sync import replica as wire
from exalate_tui.trackers.adapter import Ticket

from .pair import CID, Pair, Side

pytestmark = pytest.mark.anyio


async def only_ticket(side: Side) -> Ticket:
    tickets = await side.tracker.search()
    assert len(tickets) == 1, [t.key for t in tickets]
    return await side.tracker.get(tickets[0].key)


async def incident(side: Side, summary: str = "Printer on fire", **fields: object) -> Ticket:
    return await side.tracker.create(
        {"type": "incident", "summary": summary, "description": "3rd floor", **fields}
    )


async def test_a_ticket_matching_a_trigger_appears_on_the_other_side(pair: Pair) -> None:
    pair.a.set_triggers("priority<=2")
    created = await incident(pair.a, priority=1)
    await incident(pair.a, "Not urgent", priority=4)
    await pair.settle()

    copy = await only_ticket(pair.b)
    assert (copy.type, copy.summary, copy.description, copy.priority, copy.status) == (
        "incident",
        "Printer on fire",
        "3rd floor",
        1,
        "new",
    )
    # Both sides know the other's key, and the partner's history says where it came from.
    [a_link] = pair.a.store.links(CID)
    [b_link] = pair.b.store.links(CID)
    assert (a_link.local_key, a_link.remote_key) == (created.key, copy.key)
    assert (b_link.local_key, b_link.remote_key) == (copy.key, created.key)
    [entry] = pair.b.store.history(copy.key)
    assert entry.note == f"Created from snow's {created.key}"
    assert entry.changes["fields"]["summary"] == [None, "Printer on fire"]


async def test_nothing_flows_once_both_sides_agree(pair: Pair) -> None:
    pair.a.set_triggers("type=incident")
    await incident(pair.a)
    assert await pair.settle() > 0
    assert await pair.settle() == 0
    assert pair.a.streams.pending(CID) == [] and pair.b.streams.pending(CID) == []


async def test_an_edit_comes_back_and_a_local_edit_of_another_field_is_kept(pair: Pair) -> None:
    pair.a.set_triggers("type=incident")
    original = await incident(pair.a)
    await pair.settle()
    copy = await only_ticket(pair.b)

    # Both edit before either hears of the other: different fields.
    await pair.b.tracker.update(copy.key, {"status": "in_progress"})
    await pair.a.tracker.update(original.key, {"description": "2nd floor, by the stairs"})
    await pair.settle()

    for side in (pair.a, pair.b):
        ticket = await only_ticket(side)
        assert (ticket.status, ticket.description) == ("in_progress", "2nd floor, by the stairs")
    [entry] = pair.a.store.history(original.key)
    assert entry.changes["fields"] == {"status": ["new", "in_progress"]}
    assert await pair.settle() == 0


async def test_concurrent_edits_of_one_field_converge_on_the_initiators_value(pair: Pair) -> None:
    pair.a.set_triggers("type=incident")
    original = await incident(pair.a)
    await pair.settle()
    copy = await only_ticket(pair.b)

    await pair.a.tracker.update(original.key, {"summary": "snow's words"})
    await pair.b.tracker.update(copy.key, {"summary": "jira's words"})
    await pair.settle()

    assert (await only_ticket(pair.a)).summary == "snow's words"
    assert (await only_ticket(pair.b)).summary == "snow's words"
    assert "Concurrent edit of summary" in pair.b.store.history(copy.key)[-1].note
    assert await pair.settle() == 0


async def test_comments_are_merged_once_and_internal_ones_stay_home(pair: Pair) -> None:
    pair.a.set_triggers("type=incident")
    original = await incident(pair.a)
    await pair.a.tracker.comment(original.key, "Called the user", author="ann")
    await pair.a.tracker.comment(original.key, "Vendor ticket 123", internal=True, author="ann")
    await pair.settle()
    copy = await only_ticket(pair.b)
    assert [(c.body, c.author, c.internal) for c in copy.comments] == [
        ("Called the user", "ann", False)
    ]

    await pair.b.tracker.comment(copy.key, "Replaced the toner", author="bob")
    await pair.settle()
    back = await only_ticket(pair.a)
    assert [c.body for c in back.comments] == [
        "Called the user",
        "Vendor ticket 123",
        "Replaced the toner",
    ]
    assert [c.body for c in (await only_ticket(pair.b)).comments] == [
        "Called the user",
        "Replaced the toner",
    ]
    assert await pair.settle() == 0


async def test_processing_an_inbox_again_after_a_crash_changes_nothing_twice(pair: Pair) -> None:
    pair.a.set_triggers("type=incident")
    original = await incident(pair.a)
    await pair.a.tracker.comment(original.key, "First words", author="ann")
    pair.carry(pair.a, pair.b)  # nothing yet: the engine has not run
    await pair.a.engine.settle()
    pair.carry(pair.a, pair.b)

    # The ticket was created, then the process died before the cursor moved:
    # the engine finds it again by its correlation instead of making a second.
    [message] = [m for m in pair.b.streams.inbox(CID) if m.kind == wire.REPLICA]
    await pair.b.tracker.create(
        {"type": "incident", "summary": "Printer on fire"}, correlation=f"{CID}/{original.key}"
    )
    await pair.b.engine.settle()
    copy = await only_ticket(pair.b)
    assert [c.body for c in copy.comments] == ["First words"]
    assert pair.b.store.cursor(CID) == message.seq


async def test_an_attachment_arrives_with_the_same_hash(pair: Pair) -> None:
    pair.a.set_triggers("type=incident")
    original = await incident(pair.a)
    data = b"%PDF-1.7 not really\n" * 1000
    await pair.a.tracker.attach(original.key, "report.pdf", data)
    await pair.settle()
    copy = await only_ticket(pair.b)
    [attachment] = copy.attachments
    assert (attachment.name, attachment.sha256) == ("report.pdf", hashlib.sha256(data).hexdigest())
    assert await pair.b.tracker.attachment_bytes(copy.key, attachment.sha256) == data
    assert await pair.settle() == 0
    # Once applied, the engine's messages leave the inbox: no megabytes kept forever.
    assert not [m for m in pair.b.streams.inbox(CID) if m.kind in wire.KINDS]


async def test_a_refused_replica_holds_only_its_ticket_until_retried(pair: Pair) -> None:
    pair.a.set_triggers("type=incident")
    # A partner's replica the tracker here refuses (no such status), beside a good one.
    pair.a.streams.enqueue(
        CID,
        wire.REPLICA,
        {"v": 1, "key": "SNOW-99", "seen": 0, "fields": {"summary": "x", "status": "exploded"}},
    )
    await incident(pair.a, "Fine one")
    await pair.settle()

    assert [t.summary for t in await pair.b.tracker.search()] == ["Fine one"]
    [error] = pair.b.store.errors(CID)
    assert (error.direction, error.remote_key, error.attempts) == ("in", "SNOW-99", 1)
    assert "exploded" in error.message

    pair.b.store.request("retry", None, arg=str(error.id))
    await pair.b.engine.settle()
    [again] = pair.b.store.errors(CID)
    assert again.attempts == 2  # still refused: counted, still holding only it

    pair.b.store.request("resolve", None, arg=str(again.id))
    await pair.b.engine.settle()
    assert pair.b.store.errors(CID) == []


async def test_basic_syncs_incidents_only_and_says_so(pair: Pair) -> None:
    pair.a.set_triggers("priority=3")
    problem = await pair.a.tracker.create({"type": "problem", "summary": "Root cause"})
    await pair.settle()
    assert await pair.b.tracker.search() == []
    [error] = pair.a.store.errors(CID)
    assert error.local_key == problem.key
    assert error.message.startswith("Only issues can be synced")


async def test_a_script_connection_syncs_every_type(script_pair: Pair) -> None:
    script_pair.a.set_triggers("priority=3")
    await script_pair.a.tracker.create({"type": "problem", "summary": "Root cause"})
    await script_pair.settle()
    assert (await only_ticket(script_pair.b)).type == "problem"


async def test_unexalate_stops_syncing_and_keeps_both_copies(pair: Pair) -> None:
    pair.a.set_triggers("type=incident")
    original = await incident(pair.a)
    await pair.settle()
    pair.a.store.request("unexalate", CID, original.key)
    await pair.settle()
    await pair.a.tracker.update(original.key, {"summary": "changed after"})
    await pair.settle()
    assert (await only_ticket(pair.b)).summary == "Printer on fire"
    assert not pair.a.store.links(CID)[0].active and not pair.b.store.links(CID)[0].active

    # Exalate again: the partner's copy is the same ticket, now in step.
    pair.a.store.request("exalate", CID, original.key)
    await pair.settle()
    assert (await only_ticket(pair.b)).summary == "changed after"


async def test_exalate_one_ticket_on_demand_and_bulk_by_trigger(pair: Pair) -> None:
    one = await incident(pair.a, "On demand")
    for n in range(5):
        await incident(pair.a, f"Bulk {n}", priority=2)
    pair.a.store.request("exalate", CID, one.key)
    await pair.settle()
    assert [t.summary for t in await pair.b.tracker.search()] == ["On demand"]

    pair.a.set_triggers("priority=2")
    # A trigger added later matches tickets only as they change: Bulk syncs them now.
    pair.a.store.request("bulk", CID)
    await pair.settle()
    assert len(await pair.b.tracker.search()) == 6


async def test_a_deactivated_connection_queues_and_delivers_in_order_on_activation(
    pair: Pair,
) -> None:
    pair.a.set_triggers("type=incident")
    original = await incident(pair.a)
    await pair.settle()
    pair.a.set_status(Status.DEACTIVATED)
    for status in ("in_progress", "on_hold", "resolved"):
        await pair.a.tracker.update(original.key, {"status": status})
        await pair.settle()
    assert (await only_ticket(pair.b)).status == "new"
    pair.a.set_status(Status.ACTIVE)
    await pair.settle()
    assert (await only_ticket(pair.b)).status == "resolved"


async def test_both_sides_editing_the_same_tickets_converge_then_fall_silent(pair: Pair) -> None:
    """Random edits on both sides, delivered in random bursts: once edits stop, both
    trackers hold the same fields and no message flows."""
    import random

    rng = random.Random(12)
    pair.a.set_triggers("type=incident")
    for n in range(20):
        await incident(pair.a, f"Ticket {n}")
    await pair.settle()
    keys = {id(side): [t.key for t in await side.tracker.search()] for side in (pair.a, pair.b)}
    for _ in range(300):
        side = rng.choice([pair.a, pair.b])
        key = rng.choice(keys[id(side)])
        field, value = rng.choice(
            [
                ("summary", f"summary {rng.randrange(5)}"),
                ("description", f"description {rng.randrange(5)}"),
                ("status", rng.choice(["new", "in_progress", "on_hold", "resolved"])),
                ("priority", rng.randrange(1, 6)),
            ]
        )
        await side.tracker.update(key, {field: value})
        if rng.random() < 0.3:
            await side.engine.settle()
        if rng.random() < 0.2:
            sender, receiver = (pair.a, pair.b) if rng.random() < 0.5 else (pair.b, pair.a)
            pair.carry(sender, receiver)
    await pair.settle()
    assert await pair.settle() == 0

    def fields(ticket: Ticket) -> tuple[object, ...]:
        return ticket.summary, ticket.description, ticket.status, ticket.priority

    by_remote = {link.local_key: link.remote_key for link in pair.a.store.links(CID)}
    for key in keys[id(pair.a)]:
        mine = await pair.a.tracker.get(key)
        theirs = await pair.b.tracker.get(str(by_remote[key]))
        assert fields(mine) == fields(theirs), key


async def test_a_tracker_that_cannot_be_written_is_the_connections_error_until_it_can(
    pair: Pair,
) -> None:
    """Another process holds the partner's tracker: its engine shows Error with the
    reason and, once the tracker can be written again, syncs by itself."""
    import asyncio
    import sqlite3

    from exalate_tui.sync.engine import TRACKER_ERROR
    from exalate_tui.trackers.embedded import EmbeddedTracker

    b = pair.b
    await b.tracker.close()
    b.tracker = b.engine.tracker = EmbeddedTracker(
        b.home.tracker_path, b.home.attachments_dir, short_name="jira", busy_timeout=0.1
    )
    pair.a.set_triggers("type=incident")
    await incident(pair.a)
    await pair.a.engine.settle()
    pair.carry(pair.a, pair.b)

    holder = sqlite3.connect(b.home.tracker_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    running = asyncio.create_task(b.engine.run())
    try:
        for _ in range(100):
            if b.store.meta(TRACKER_ERROR):
                break
            await asyncio.sleep(0.05)
        reason = b.store.meta(TRACKER_ERROR)
        assert reason is not None and "locked" in reason
        assert await b.tracker.search() == []

        holder.execute("ROLLBACK")
        for _ in range(100):
            if not b.store.meta(TRACKER_ERROR) and await b.tracker.search():
                break
            await asyncio.sleep(0.05)
        assert b.store.meta(TRACKER_ERROR) is None
        assert [t.summary for t in await b.tracker.search()] == ["Printer on fire"]
    finally:
        running.cancel()
        holder.close()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_deleting_a_connection_drops_its_links_and_keeps_tickets_and_history(
    pair: Pair,
) -> None:
    pair.a.set_triggers("type=incident")
    original = await incident(pair.a)
    await pair.settle()
    pair.a.home.delete_connection(CID)
    pair.a.engine.tidy()  # what each pass does once a minute
    assert pair.a.store.links() == [] and pair.a.store.cids() == set()
    assert (await pair.a.tracker.get(original.key)).summary == "Printer on fire"
    assert (await only_ticket(pair.b)).summary == "Printer on fire"


async def test_a_retry_that_fails_again_counts_one_attempt(pair: Pair) -> None:
    pair.a.set_triggers("priority=3")
    await pair.a.tracker.create({"type": "problem", "summary": "Root cause"})
    await pair.settle()
    [error] = pair.a.store.errors(CID)
    pair.a.store.request("retry", None, arg=str(error.id))
    for _ in range(5):
        await pair.a.engine.settle()
    [again] = pair.a.store.errors(CID)
    assert again.attempts == 2  # the first try and the one Retry, not one per pass


async def test_an_edit_made_by_another_process_while_a_replica_is_applied_still_goes_out(
    pair: Pair,
) -> None:
    """The engine reads the ticket, another process (the CLI) edits another field, then
    the engine writes the partner's change: that edit must still reach the partner.
    (Found by two real nodes editing the same tickets: it was taken as the partner's.)"""
    from exalate_tui.trackers.embedded import EmbeddedTracker

    pair.a.set_triggers("type=incident")
    await incident(pair.a)
    await pair.settle()
    copy = await only_ticket(pair.b)
    other_process = EmbeddedTracker(pair.b.home.tracker_path, pair.b.home.attachments_dir)

    class Interleaved(EmbeddedTracker):
        async def update(self, key: str, fields: Mapping[str, Any]) -> Ticket:
            await other_process.update(key, {"priority": 1})  # lands between read and write
            return await super().update(key, fields)

    await pair.b.tracker.close()
    pair.b.tracker = pair.b.engine.tracker = Interleaved(
        pair.b.home.tracker_path, pair.b.home.attachments_dir, short_name="jira"
    )
    try:
        await pair.a.tracker.update((await only_ticket(pair.a)).key, {"summary": "snow's"})
        await pair.settle()
    finally:
        await other_process.close()
    assert (await only_ticket(pair.b)).priority == 1
    assert (await only_ticket(pair.a)).priority == 1
    assert (await only_ticket(pair.a)).summary == (await only_ticket(pair.b)).summary == "snow's"
    assert copy.key == (await only_ticket(pair.b)).key
