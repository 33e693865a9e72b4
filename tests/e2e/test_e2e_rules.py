"""Script rules across two real nodes, public–private, with the headless CLI only: each
side's own rules both ways; a rule that raises holds only its ticket until fixed and
retried; a new outgoing version re-sends synced tickets."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import MakeInstance, wait_for
from .test_e2e_sync import SYNCED_WITHIN, ticket, tickets
from .test_e2e_topologies import connect

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

PRIORITY_AS_LABEL = """\
if first_sync:
    ticket.type = replica.type
ticket.summary = replica.summary
ticket.labels = ["P%d" % replica.priority]
if replica.summary == "explode":
    boom = 1 / 0
"""

ADDS_A_LABEL = """\
if first_sync:
    ticket.type = replica.type
ticket.summary = replica.summary
ticket.priority = replica.priority
ticket.labels = ["from-" + connection.remote_name]
"""


def test_each_side_runs_its_own_rules(instances: MakeInstance, tmp_path: Path) -> None:
    a = instances("snow", public=True)
    b = instances("jira", public=False)
    for side in (a, b):
        side.start()
        side.serving()
    cid, _ = connect(a, b, "public-private")
    for side, rule in ((b, PRIORITY_AS_LABEL), (a, ADDS_A_LABEL)):
        path = tmp_path / f"{side.short_name}.py"
        path.write_text(rule)
        side.ok("rules", "set", cid, "incoming", str(path))
    a.ok("triggers", "add", "--connection", cid, "type=incident")
    b.ok("triggers", "add", "--connection", cid, "type=incident")

    a.ok("tickets", "create", "--summary", "explode", "--priority", "1")
    a.ok("tickets", "create", "--summary", "From snow", "--priority", "2")
    wait_for(lambda: len(tickets(b)) == 1, "the good ticket on jira", SYNCED_WITHIN)
    [copy] = tickets(b)
    assert (copy["summary"], copy["labels"]) == ("From snow", ["P2"])
    [error] = b.json("sync", "errors")["errors"]
    assert "incoming.py v3 line 6: ZeroDivisionError" in error["message"]

    mine = b.ok("tickets", "create", "--summary", "From jira", "--priority", "4").strip()
    wait_for(lambda: len(tickets(a)) == 3, "jira's ticket on snow", SYNCED_WITHIN)
    [back] = [t for t in tickets(a) if t["summary"] == "From jira"]
    assert (back["priority"], back["labels"]) == (4, ["from-jira"])

    # The fix, then Retry: the held ticket syncs under the new version.
    fixed = tmp_path / "fixed.py"
    fixed.write_text(PRIORITY_AS_LABEL.replace("boom = 1 / 0", "pass"))
    b.ok("rules", "set", cid, "incoming", str(fixed))
    b.ok("sync", "retry", "--all")
    wait_for(lambda: len(tickets(b)) == 3, "the held ticket on jira", SYNCED_WITHIN)
    assert b.json("sync", "errors")["errors"] == []

    # A new outgoing version on jira re-sends its synced ticket.
    source = b.json("rules", "show", cid, "outgoing")["source"]
    changed = tmp_path / "outgoing.py"
    changed.write_text(source.replace("ticket.summary", "ticket.summary + ' [jira]'"))
    b.ok("rules", "set", cid, "outgoing", str(changed))
    wait_for(
        lambda: any(t["summary"] == "From jira [jira]" for t in tickets(a)),
        "the re-sent ticket on snow",
        SYNCED_WITHIN,
    )
    assert ticket(b, mine)["summary"] == "From jira"
