"""The Rules editor's state (flows/rules.py) with no terminal: unsaved tabs, a refusal
kept per tab, a reload that keeps what is being edited, the Test run's key and report
in words, versions newest first with their diff against the one in force."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exalate_tui.flows.rules import RulesEditor, TestRun, Versions, report_lines


def test_the_editor_knows_what_is_unsaved_and_saves_one_tab_at_a_time() -> None:
    editor = RulesEditor()
    assert editor.status() == "Reading the rules…"
    editor.load("outgoing", 1, "a = 1\n")
    editor.load("incoming", 2, "b = 2\n")
    editor.loaded_all()
    assert not editor.dirty and editor.to_save() is None
    editor.edit("a = 3\n")
    assert editor.title("outgoing") == "Outgoing v1 ●"
    assert "unsaved: v1 stays in force until ctrl+s" in editor.status()
    assert editor.drafts() == {"outgoing": "a = 3\n"}
    assert editor.to_save() == ("outgoing", "a = 3\n")
    assert editor.to_save() is None  # one save at a time
    editor.refused("outgoing", "outgoing.py line 1: no", 1)
    assert editor.current.refusal is not None and editor.current.refusal.line == 1
    assert editor.dirty
    # A reload (after a revert) keeps the tab being edited, replaces the other.
    assert not editor.load("outgoing", 5, "a = 5\n")
    assert editor.load("incoming", 6, "b = 6\n")
    assert editor.buffers["incoming"].text == "b = 6\n"
    assert editor.title("outgoing") == "Outgoing v5 ●"
    assert editor.to_save() == ("outgoing", "a = 3\n")
    editor.saved("outgoing", 7, "a = 3\n")
    assert not editor.dirty and editor.current.refusal is None
    assert editor.title("outgoing") == "Outgoing v7"
    assert editor.show("incoming") and not editor.show("incoming")
    with pytest.raises(ValueError):
        editor.show("sideways")


def test_a_test_run_needs_a_key_and_says_its_report_in_words() -> None:
    run = TestRun([("SNOW-1", "JIRA-1")])
    assert run.submit() is None and run.error and "Type a ticket's key" in run.error
    run.set_key(" snow-2 ")
    assert run.submit() == "SNOW-2" and run.running == "SNOW-2"
    run.finished(
        {
            "key": "SNOW-2",
            "rules": "script (outgoing draft, incoming v2)",
            "outgoing": {
                "replica": {"fields": {"summary": "Printer"}, "comments": [], "attachments": []},
                "printed": "hello\n",
            },
            "incoming": {
                "fields": {"labels": [[], ["P2"]]},
                "comments": [{"author": "joe", "body": "On it", "internal": True}],
                "attachments": ["photo.jpg"],
                "printed": "",
            },
        }
    )
    assert run.running is None and run.report is not None
    lines = [(line.kind, line.text) for line in report_lines(run.report)]
    assert ("text", "  summary = 'Printer'") in lines
    assert ("text", "    hello") in lines
    assert ("text", "  labels: [] → ['P2']") in lines
    assert ("added", "  + work note by joe: On it") in lines
    assert ("added", "  + attachment photo.jpg") in lines
    refused = report_lines(
        {"key": "S-1", "rules": "r", "outgoing": {"error": "boom"}, "incoming": None}
    )
    assert ("error", "  boom") in [(x.kind, x.text) for x in refused]
    assert "nothing received for S-1 yet" in refused[-1].text


def test_versions_newest_first_each_diffed_against_the_one_in_force() -> None:
    day = datetime(2024, 5, 1, tzinfo=UTC)
    versions = Versions.of(
        [
            (1, "outgoing", day, "basic"),
            (2, "incoming", day, "basic"),
            (3, "outgoing", day, "marked"),
        ],
        {1: "a = 1\nb = 2\n", 2: "c = 3\n", 3: "a = 1\nb = 9\n"},
    )
    assert [(r.number, r.in_force) for r in versions.rows] == [(3, True), (2, True), (1, False)]
    assert not versions.can_revert()
    heading, lines = versions.diff()
    assert heading.startswith("v3 is in force: what it changed from v1")
    assert "-b = 2" in lines and "+b = 9" in lines
    versions.select(1)
    assert versions.diff() == ("v2 is in force, the first incoming version.", [])
    versions.select(9)
    assert versions.row is not None and versions.row.number == 1 and versions.can_revert()
    heading, lines = versions.diff()
    assert heading == "Reverting brings v1 back: - v3 in force, + v1"
    assert lines[:2] == ["--- outgoing.py v3", "+++ outgoing.py v1"]
    assert "-b = 9" in lines and "+b = 2" in lines
