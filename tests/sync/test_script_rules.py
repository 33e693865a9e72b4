"""Script rules between two instances: each side's own rules, their errors held per
ticket, new versions applied at once, Test run writing nothing (sync/script.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exalate_tui.home.rules import RuleFiles
from exalate_tui.sync.script import BASIC_INCOMING, RuleRefused, load_rules, save_rule, try_rules
from exalate_tui.trackers.adapter import Ticket

from .pair import CID, Pair, Side

pytestmark = pytest.mark.anyio

# jira's incoming rule: the partner's priority 1-5 becomes a label P1-P5 here, and the
# priority itself stays this side's.
PRIORITY_AS_LABEL = """\
if first_sync:
    ticket.type = replica.type
    ticket.priority = 3
ticket.summary = replica.summary
ticket.labels = ["P%d" % replica.priority]
comments.merge([c for c in replica.comments if not c.internal])
"""

# snow's incoming rule: the Basic mapping, and a label saying where it came from.
ADDS_A_LABEL = BASIC_INCOMING + 'ticket.labels = ["from-" + connection.remote_name]\n'


def set_rule(side: Side, direction: str, source: str) -> int:
    version = save_rule(side.home, side.connection, direction, source)
    if direction == "outgoing":
        side.store.request("rules", CID)
    return version.number


async def only(side: Side) -> Ticket:
    [ticket] = await side.tracker.search()
    return await side.tracker.get(ticket.key)


async def test_a_new_script_connection_starts_with_the_basic_mapping(script_pair: Pair) -> None:
    rules = load_rules(script_pair.a.home, script_pair.a.connection)
    files = RuleFiles(script_pair.a.home, CID)
    assert [(v.number, v.direction) for v in files.versions()] == [
        (1, "outgoing"),
        (2, "incoming"),
    ]
    assert files.current_path("incoming").read_text() == BASIC_INCOMING
    assert files.current_path("outgoing").stat().st_mode & 0o777 == 0o600
    assert rules.name == "script (outgoing v1, incoming v2)"


async def test_each_side_applies_its_own_rules_both_ways(script_pair: Pair) -> None:
    a, b = script_pair.a, script_pair.b
    set_rule(b, "incoming", PRIORITY_AS_LABEL)
    set_rule(a, "incoming", ADDS_A_LABEL)
    a.set_triggers("type=incident")
    b.set_triggers("type=incident")
    await a.tracker.create({"type": "incident", "summary": "From snow", "priority": 1})
    await script_pair.settle()
    [copy] = [t for t in await b.tracker.search() if t.summary == "From snow"]
    assert (copy.labels, copy.priority) == (("P1",), 3)

    problem = await b.tracker.create({"type": "problem", "summary": "From jira", "priority": 2})
    b.store.request("exalate", CID, problem.key)
    await script_pair.settle()
    back = [t for t in await a.tracker.search() if t.summary == "From jira"]
    assert [(t.type, t.priority, t.labels) for t in back] == [("problem", 2, ("from-jira",))]

    # A change of priority over there moves the label here, not the priority; a local
    # edit of another field stays.
    original = [t for t in await a.tracker.search() if t.summary == "From snow"][0]
    await b.tracker.update(copy.key, {"description": "kept here"})
    await a.tracker.update(original.key, {"priority": 4})
    await script_pair.settle()
    copy = await b.tracker.get(copy.key)
    assert (copy.labels, copy.priority, copy.description) == (("P4",), 3, "kept here")
    assert await script_pair.settle() == 0


async def test_a_rule_that_raises_holds_only_its_ticket_until_fixed_and_retried(
    script_pair: Pair,
) -> None:
    a, b = script_pair.a, script_pair.b
    set_rule(b, "incoming", BASIC_INCOMING + 'if replica.summary == "bad":\n    x = 1 / 0\n')
    a.set_triggers("type=incident")
    await a.tracker.create({"type": "incident", "summary": "bad"})
    await a.tracker.create({"type": "incident", "summary": "good"})
    await script_pair.settle()
    assert [t.summary for t in await b.tracker.search()] == ["good"]
    [error] = b.store.errors(CID)
    line = BASIC_INCOMING.count("\n") + 2
    assert f"incoming.py v3 line {line}: ZeroDivisionError: division by zero" in error.message

    version = set_rule(b, "incoming", BASIC_INCOMING)
    b.store.request("retry", None, arg=str(error.id))
    await script_pair.settle()
    assert sorted(t.summary for t in await b.tracker.search()) == ["bad", "good"]
    assert b.store.errors(CID) == []
    [entry] = [e for t in await b.tracker.search() for e in b.store.history(t.key)][:1]
    assert entry.rules.startswith("script")
    assert version == 4


async def test_a_refused_rule_is_not_saved_and_the_previous_stays(script_pair: Pair) -> None:
    side = script_pair.a
    before = load_rules(side.home, side.connection).name
    with pytest.raises(RuleRefused, match=r"outgoing.py line 2: import is not allowed"):
        save_rule(side.home, side.connection, "outgoing", "x = 1\nimport os\n")
    assert load_rules(side.home, side.connection).name == before
    assert len(RuleFiles(side.home, CID).versions()) == 2


async def test_a_new_outgoing_version_resends_synced_tickets(script_pair: Pair) -> None:
    a, b = script_pair.a, script_pair.b
    a.set_triggers("type=incident")
    for n in range(3):
        await a.tracker.create({"type": "incident", "summary": f"Ticket {n}"})
    await script_pair.settle()
    assert await script_pair.settle() == 0
    outgoing = RuleFiles(a.home, CID)
    source = outgoing.current_path("outgoing").read_text()
    set_rule(a, "outgoing", source.replace("ticket.summary", "'[snow] ' + ticket.summary"))
    moved = await script_pair.settle()
    assert moved >= 3
    assert sorted(t.summary for t in await b.tracker.search()) == [
        "[snow] Ticket 0",
        "[snow] Ticket 1",
        "[snow] Ticket 2",
    ]
    # A version that changes no replica sends nothing.
    set_rule(a, "outgoing", source.replace("ticket.summary", "'[snow] ' + ticket.summary") + "\n")
    assert await script_pair.settle() == 0


async def test_apply_to_synced_tickets_now_reapplies_the_last_replica(script_pair: Pair) -> None:
    a, b = script_pair.a, script_pair.b
    a.set_triggers("type=incident")
    await a.tracker.create({"type": "incident", "summary": "Printer", "priority": 2})
    await script_pair.settle()
    set_rule(b, "incoming", PRIORITY_AS_LABEL)
    assert (await only(b)).labels == ()  # a new incoming version waits for the next replica
    b.store.request("reapply", CID)
    await script_pair.settle()
    copy = await only(b)
    assert copy.labels == ("P2",)
    assert "Re-applied" in b.store.history(copy.key)[-1].note
    assert await script_pair.settle() == 0


def _state(side: Side) -> tuple[object, ...]:
    db = sqlite3.connect(side.home.state_path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return tuple(
            (name, db.execute(f"SELECT * FROM {name} ORDER BY 1").fetchall()) for name in tables
        )
    finally:
        db.close()


def _files(path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


async def test_a_test_run_shows_both_directions_and_writes_nothing(script_pair: Pair) -> None:
    a, b = script_pair.a, script_pair.b
    a.set_triggers("type=incident")
    await a.tracker.create({"type": "incident", "summary": "Printer", "priority": 2})
    await script_pair.settle()
    set_rule(b, "incoming", PRIORITY_AS_LABEL + 'print("labels", ticket.labels)\n')
    set_rule(b, "outgoing", 'replica.summary = ticket.summary + "!"\n')
    copy = await only(b)
    tickets, state, outbox = (
        await b.tracker.search(),
        _state(b),
        b.streams.pending(CID),
    )
    rules_dir = _files(b.home.path / "rules")

    report = await try_rules(b.home, b.connection, b.tracker, b.store, copy.key)

    assert report["outgoing"]["replica"]["fields"] == {"summary": "Printer!"}
    assert report["incoming"]["fields"] == {"labels": [[], ["P2"]]}
    assert report["incoming"]["printed"] == "labels ['P2']\n"
    assert await b.tracker.search() == tickets
    assert _state(b) == state
    assert b.streams.pending(CID) == outbox
    assert _files(b.home.path / "rules") == rules_dir


async def test_a_test_run_of_drafts_runs_them_unsaved_and_refuses_what_save_would(
    script_pair: Pair,
) -> None:
    a = script_pair.a
    ticket = await a.tracker.create({"type": "incident", "summary": "Printer", "priority": 2})
    load_rules(a.home, a.connection)  # the Basic mapping written out, as on first use
    rules_dir = _files(a.home.path / "rules")
    drafts = {"outgoing": 'replica.summary = "draft: " + ticket.summary\n'}

    report = await try_rules(a.home, a.connection, a.tracker, a.store, ticket.key, drafts)

    assert report["rules"] == "script (outgoing draft, incoming v2)"
    assert report["outgoing"]["replica"]["fields"] == {"summary": "draft: Printer"}
    with pytest.raises(RuleRefused) as refused:
        await try_rules(
            a.home, a.connection, a.tracker, a.store, ticket.key, {"incoming": "import os\n"}
        )
    assert refused.value.line == 1
    assert _files(a.home.path / "rules") == rules_dir
    assert load_rules(a.home, a.connection).name == "script (outgoing v1, incoming v2)"
