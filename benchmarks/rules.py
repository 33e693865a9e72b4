"""Sync rules per ticket: a Script rule's run in the sandbox beside the Basic mapping's.

Each figure is one call of the `Rules` seam the engine makes per ticket, on a
ticket with three comments: `outgoing(ticket)` (ticket → replica content) and
`incoming(replica, first_sync, previous)` (replica → what the ticket should
hold). The Script rules are the Basic mapping written out as rules (what a
new Script connection starts with), so the two do the same work.

Reference for the Script rows: the Basic mapping (plain Python, in process).
The sandbox's overhead over plain Python is reported too: the same rule's
source run by `exec` in this process with no policy, no worker (what the
sandbox costs on top: RestrictedPython's guards, the JSON to and from the
worker, the pipe's round trip).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.sync.rules import Basic
from exalate_tui.sync.script import BASIC_OUTGOING, load_rules
from exalate_tui.trackers.adapter import Comment, Ticket

from .harness import Check, Figure, summarize, timed

REPEAT = 2000
WARMUP = 200
TARGET_US = 200.0


def _ticket() -> Ticket:
    now = datetime.now(UTC)
    return Ticket(
        key="SNOW-1",
        type="incident",
        summary="Printer on fire",
        description="3rd floor, next to the kitchen",
        status="in_progress",
        priority=2,
        assignee="ann",
        reporter="bob",
        labels=("hw",),
        created=now,
        updated=now,
        comments=tuple(Comment(str(n), "ann", f"comment {n}", n == 2, now) for n in range(3)),
    )


def _us(samples: list[float]) -> list[float]:
    return [s * 1e6 for s in samples]


def measure() -> list[Figure]:
    with tempfile.TemporaryDirectory() as folder:
        home = Home(Path(folder) / "home")
        home.save_instance(Instance(short_name="snow"))
        connection = Connection(
            name="snow_to_jira",
            mode=Mode.SCRIPT,
            topology=Topology.PUBLIC_PRIVATE,
            role=Role.INITIATOR,
            local_name="snow",
            remote_name="jira",
            status=Status.ACTIVE,
            secret=SecretStr("s" * 43),
        )
        home.save_connection(connection)
        script = load_rules(home, connection)
        basic = Basic(connection.id, every_type=True)
        ticket = _ticket()
        replica = basic.outgoing(ticket)
        for _ in range(WARMUP):
            script.outgoing(ticket)
            script.incoming(replica, False, replica)

        basic_out, basic_out_spread = summarize(_us(timed(lambda: basic.outgoing(ticket), REPEAT)))
        basic_in, _ = summarize(_us(timed(lambda: basic.incoming(replica, False, replica), REPEAT)))
        out, out_spread = summarize(_us(timed(lambda: script.outgoing(ticket), REPEAT)))
        inc, in_spread = summarize(
            _us(timed(lambda: script.incoming(replica, False, replica), REPEAT))
        )
        plain, _ = summarize(_us(timed(_plain_python(ticket), REPEAT)))

    return [
        Figure(
            name="Basic mapping: outgoing, per ticket",
            unit="µs",
            value=basic_out,
            method=f"median of {REPEAT} calls of Basic.outgoing",
            runs=REPEAT,
            spread=basic_out_spread,
        ),
        Figure(
            name="Script rule: outgoing, per ticket",
            unit="µs",
            value=out,
            method=f"median of {REPEAT} calls of ScriptRules.outgoing (sandbox worker)",
            runs=REPEAT,
            spread=out_spread,
            checks=[Check("median", out, "≤", TARGET_US, "µs")],
            reference=basic_out,
            reference_name="Basic mapping",
        ),
        Figure(
            name="Script rule: incoming, per ticket",
            unit="µs",
            value=inc,
            method=f"median of {REPEAT} calls of ScriptRules.incoming (sandbox worker)",
            runs=REPEAT,
            spread=in_spread,
            checks=[Check("median", inc, "≤", TARGET_US, "µs")],
            reference=basic_in,
            reference_name="Basic mapping",
        ),
        Figure(
            name="Script rule: sandbox overhead over plain Python",
            unit="µs",
            value=out - plain,
            method="outgoing in the sandbox less the same source run by exec in process",
            runs=REPEAT,
            spread="-",
            notes=[f"plain Python exec of the rule: {plain:.3g} µs"],
        ),
    ]


def _plain_python(ticket: Ticket) -> Callable[[], None]:
    """The outgoing rule's source compiled and run with plain `exec`, on the same data."""
    from exalate_tui.sync.sandbox import Draft, Record

    code = compile(BASIC_OUTGOING, "outgoing.py", "exec")
    data = {
        "key": ticket.key,
        "type": ticket.type,
        "summary": ticket.summary,
        "description": ticket.description,
        "status": ticket.status,
        "priority": ticket.priority,
        "comments": [
            Record({"id": c.id, "internal": c.internal}, "comment") for c in ticket.comments
        ],
        "attachments": [],
    }

    def run() -> None:
        exec(
            code,
            {
                "ticket": Record(data, "ticket"),
                "replica": Draft("replica", ("comments", "attachments")),
            },
        )

    return run
