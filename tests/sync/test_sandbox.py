"""The Script rules' sandbox: what the policy refuses on save, what the worker stops at
run time, and what allowed rules make (sync/sandbox.py, sync/runner.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from exalate_tui.sync.runner import RuleFailed, RuleTimeout, Runner
from exalate_tui.sync.sandbox import check

TICKET = {
    "key": "SNOW-1",
    "type": "incident",
    "summary": "Printer on fire",
    "description": "3rd floor",
    "status": "new",
    "priority": 2,
    "labels": ["hw"],
    "comments": [
        {"id": "1", "author": "ann", "body": "hot", "internal": False, "from_partner": False},
        {"id": "2", "author": "bob", "body": "note", "internal": True, "from_partner": False},
    ],
    "attachments": [],
}


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    made = Runner()
    yield made
    made.close()


def outgoing(runner: Runner, source: str, limit: float = 1.0) -> dict[str, Any]:
    return runner.run(source, "outgoing.py", "outgoing", {"ticket": TICKET}, limit)


@pytest.mark.parametrize(
    ("source", "line", "reason"),
    [
        ("x = 1\nimport os", 2, "import is not allowed"),
        ("from subprocess import run", 1, "import is not allowed"),
        ("data = open('/etc/passwd').read()", 1, "'open' is not allowed"),
        ("x = ().__class__.__bases__[0].__subclasses__()", 1, "starts with"),
        ("x = ticket.__class__", 1, '"__class__"'),
        ("x = getattr(ticket, '__class__')", 1, "'getattr' is not allowed"),
        ("eval('1 + 1')", 1, "not allowed"),
        ("exec('x = 1')", 1, "not allowed"),
        ("f = compile('1', 'x', 'eval')", 1, "'compile' is not allowed"),
        ("g = globals()", 1, "'globals' is not allowed"),
        ("class Evil:\n    pass", 1, "cannot define classes"),
        ("def f():\n    return f.__globals__", 2, '"__globals__"'),
        ("x = ticket._data", 1, '"_data"'),
        ("replica.summary = (", 1, "SyntaxError"),
    ],
)
def test_the_policy_refuses_on_save_with_the_line(source: str, line: int, reason: str) -> None:
    problems = check(source, "outgoing.py")
    assert problems, source
    assert problems[0].line == line
    assert reason in problems[0].reason


@pytest.mark.parametrize(
    ("source", "kind", "line"),
    [
        ("def f(n):\n    return f(n + 1)\nf(0)", "RecursionError", 2),
        ("x = 'a' * (10 ** 10)", "MemoryError", None),
        ("x = [0] * (10 ** 9)", "MemoryError", None),
        ("x = 1\ny = x / 0", "ZeroDivisionError", 2),
        ("x = ticket.nope", "AttributeError", 1),
        ("'{0}'.format(ticket)", "NotImplementedError", 1),
        ("ticket.summary = 'x'", "TypeError", 1),
    ],
)
def test_a_failing_rule_says_where_and_why(
    runner: Runner, source: str, kind: str, line: int | None
) -> None:
    with pytest.raises(RuleFailed) as failed:
        outgoing(runner, source)
    assert failed.value.kind == kind
    assert failed.value.line == line
    if line:
        assert f"outgoing.py line {line}: {kind}" in str(failed.value)


@pytest.mark.parametrize(
    "source", ["while True:\n    pass", "x = sum(range(10 ** 12))", "x = 10 ** 10 ** 8"]
)
def test_a_rule_past_its_time_limit_is_stopped(runner: Runner, source: str) -> None:
    started = time.monotonic()
    with pytest.raises(RuleTimeout, match=r"stopped after 0\.3 s"):
        outgoing(runner, source, limit=0.3)
    assert time.monotonic() - started < 2
    # The next run gets a new worker and works.
    assert outgoing(runner, "replica.summary = ticket.summary")["fields"] == {
        "summary": "Printer on fire"
    }


def test_an_allowed_rule_makes_the_replica(runner: Runner) -> None:
    made = outgoing(
        runner,
        "\n".join(
            [
                "replica.summary = ticket.summary.upper()",
                "replica['labels'] = sorted(list(ticket.labels) + ['P%d' % ticket.priority])",
                "replica.comments = [c for c in ticket.comments if not c.internal]",
                "for n, c in enumerate(ticket.comments):",
                "    print(n, c.author)",
                "total = 0",
                "total += ticket.priority",
                "replica.score = {'total': total, 'key': f'{ticket.key}!'}",
            ]
        ),
    )
    assert made["fields"] == {
        "summary": "PRINTER ON FIRE",
        "labels": ["P2", "hw"],
        "score": {"total": 2, "key": "SNOW-1!"},
    }
    assert made["comments"] == ["1"]
    assert made["printed"] == "0 ann\n1 bob\n"


def test_an_incoming_rule_sets_fields_and_merges_comments(runner: Runner) -> None:
    replica = {
        "fields": {"summary": "s", "priority": 4},
        "changed_names": ["priority"],
        "comments": [{"id": "9", "author": "x", "body": "b", "internal": False}],
        "attachments": [],
    }
    source = "\n".join(
        [
            "ticket.labels = ['P%d' % replica.priority]",
            "if 'priority' in replica.changed and previous is not None:",
            "    ticket.summary = replica.summary + ' (was P%d)' % previous.priority",
            "comments.merge(replica.comments, internal=True)",
            "ticket.assignee = replica.nothing_here",
        ]
    )
    previous = {**replica, "fields": {"summary": "s", "priority": 2}, "changed_names": []}
    made = runner.run(
        source,
        "incoming.py",
        "incoming",
        {"replica": replica, "previous": previous, "first_sync": False},
        1.0,
    )
    assert made["fields"] == {"labels": ["P4"], "summary": "s (was P2)", "assignee": None}
    assert made["comments"] == [["9", True]]
