"""Tickets across two real `exalate-tui node` processes, in each topology, with the
headless CLI only: a ticket created under a trigger appears on the other side;
an edit and a comment come back; an internal comment stays home on a Basic
connection; an attachment arrives with the same hash; deactivate, edit,
activate delivers in order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from .conftest import Instance, MakeInstance, wait_for
from .test_e2e_topologies import TOPOLOGIES, connect

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

SYNCED_WITHIN = 20.0


def tickets(instance: Instance) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = instance.json("tickets")["tickets"]
    return listed


def ticket(instance: Instance, key: str) -> dict[str, Any]:
    shown: dict[str, Any] = instance.json("tickets", "show", key)["ticket"]
    return shown


def the_copy(instance: Instance) -> dict[str, Any]:
    [only] = tickets(instance)
    return ticket(instance, only["key"])


@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_tickets_sync_both_ways(instances: MakeInstance, tmp_path: Path, topology: str) -> None:
    a_public, b_public = TOPOLOGIES[topology]
    a = instances("snow", public=a_public)
    b = instances("jira", public=b_public)
    for side in (a, b):
        side.start()
        side.serving()
    cid, _ = connect(a, b, topology)
    a.ok("triggers", "add", "--connection", cid, "priority<=2^type=incident")

    key = a.ok(
        "tickets", "create", "--summary", "Printer on fire", "--priority", "1",
        "--description", "3rd floor",
    ).strip()  # fmt: skip
    a.ok("tickets", "create", "--summary", "Not urgent", "--priority", "4")
    wait_for(lambda: len(tickets(b)) == 1, "the triggered ticket on the other side", SYNCED_WITHIN)
    copy = the_copy(b)
    assert (copy["summary"], copy["priority"], copy["description"]) == (
        "Printer on fire",
        1,
        "3rd floor",
    )
    assert copy["links"][0]["remote_key"] == key

    # An edit and a comment on the other side come back; a work note stays home.
    b.ok("tickets", "edit", copy["key"], "--status", "in_progress")
    b.ok("tickets", "comment", copy["key"], "--body", "Replaced the toner")
    b.ok("tickets", "comment", copy["key"], "--body", "Vendor case 42", "--internal")

    def came_back() -> bool:
        here = ticket(a, key)
        return here["status"] == "in_progress" and len(here["comments"]) == 1

    wait_for(came_back, "the edit and the public comment back on snow", SYNCED_WITHIN)
    assert ticket(a, key)["comments"][0]["body"] == "Replaced the toner"

    # An attachment arrives with the same hash.
    report = tmp_path / "report.txt"
    report.write_bytes(b"line\n" * 4000)
    a.ok("tickets", "attach", key, str(report))
    wait_for(lambda: the_copy(b)["attachments"], "the attachment on jira", SYNCED_WITHIN)
    [attachment] = the_copy(b)["attachments"]
    assert attachment["sha256"] == hashlib.sha256(report.read_bytes()).hexdigest()

    # Deactivated: edits queue; activated: they arrive, the last one last.
    a.ok("connections", "deactivate", cid)
    for status in ("on_hold", "resolved"):
        a.ok("tickets", "edit", key, "--status", status)
    a.ok("connections", "activate", cid)
    wait_for(lambda: the_copy(b)["status"] == "resolved", "the queued edits", SYNCED_WITHIN)
    history = b.json("tickets", "history", copy["key"])["history"]
    assert [h["fields"].get("status", [None, None])[1] for h in history][-2:] == [
        "on_hold",
        "resolved",
    ]
