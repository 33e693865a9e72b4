"""`exalate-tui tickets`: the contract's output, and every bad input refused (exit 2)
with the flag named and nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exalate_tui.cli import main
from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home

TICKET_KEYS = {
    "key",
    "type",
    "summary",
    "description",
    "status",
    "priority",
    "assignee",
    "reporter",
    "labels",
    "created",
    "updated",
    "comments",
    "attachments",
    "links",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    Home(path).save_instance(Instance(short_name="snow"))
    return path


def tickets(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), "tickets", *args])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> Any:
    code, out, err = tickets(capsys, home, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def on_disk(home: Path) -> dict[str, bytes | None]:
    """Every file under the home with its bytes: what a refused command must leave alone."""
    if not home.exists():
        return {}
    return {
        str(p.relative_to(home)): p.read_bytes() if p.is_file() else None
        for p in sorted(home.rglob("*"))
        if not p.name.startswith(".lock")
    }


def test_create_prints_the_new_key_alone(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert tickets(capsys, home, "create", "--summary", "Printer on fire") == (0, "SNOW-1\n", "")
    assert tickets(capsys, home, "create", "--summary", "Disk full")[1] == "SNOW-2\n"


def test_create_json_is_the_whole_ticket(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    made = as_json(
        capsys,
        home,
        "create",
        "--summary",
        "Printer on fire",
        "--description",
        "Second floor",
        "--type",
        "problem",
        "--priority",
        "2",
        "--status",
        "in_progress",
        "--assignee",
        "ada",
        "--label",
        "vip",
        "--label",
        "hardware",
    )["ticket"]
    assert set(made) == TICKET_KEYS
    assert made["key"] == "SNOW-1" and made["reporter"] == "snow"  # the instance reports
    assert (made["type"], made["priority"], made["status"]) == ("problem", 2, "in_progress")
    assert (made["assignee"], made["labels"]) == ("ada", ["vip", "hardware"])
    assert made["comments"] == [] and made["attachments"] == [] and made["links"] == []
    assert made["created"].endswith("+00:00")


def test_show_json_holds_comments_attachments_and_links(
    capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path
) -> None:
    tickets(capsys, home, "create", "--summary", "Printer on fire")
    assert tickets(capsys, home, "comment", "SNOW-1", "--body", "Looking")[0] == 0
    note = as_json(capsys, home, "comment", "snow-1", "--body", "Toner", "--internal")
    assert note["key"] == "SNOW-1" and note["comment"]["internal"] is True
    log = tmp_path / "log.txt"
    log.write_bytes(b"line 1\n")
    attached = as_json(capsys, home, "attach", "SNOW-1", str(log))["attachment"]
    assert (attached["name"], attached["size"]) == ("log.txt", 7)

    shown = as_json(capsys, home, "show", "SNOW-1")["ticket"]
    assert set(shown) == TICKET_KEYS
    assert [set(c) for c in shown["comments"]] == [{"author", "body", "internal", "created"}] * 2
    assert [(c["author"], c["body"], c["internal"]) for c in shown["comments"]] == [
        ("snow", "Looking", False),
        ("snow", "Toner", True),
    ]
    assert shown["attachments"] == [attached]
    assert set(attached) == {"name", "size", "sha256", "created"}
    assert shown["links"] == []


def test_show_prints_the_ticket_for_a_reader(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    tickets(capsys, home, "create", "--summary", "Printer", "--description", "one\ntwo")
    tickets(capsys, home, "comment", "SNOW-1", "--body", "a note", "--internal")
    code, out, _ = tickets(capsys, home, "show", "SNOW-1")
    assert code == 0
    assert out.splitlines()[0] == "SNOW-1  Printer"
    assert "  priority  3 (moderate)" in out
    assert "Description:\n  one\n  two\n" in out
    assert "(work note: stays on this instance)\n    a note\n" in out
    assert "Attachments: none" in out and "Synced over: none" in out


def test_list_filters_with_the_query_language(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    assert "No tickets yet" in tickets(capsys, home)[1]
    tickets(capsys, home, "create", "--summary", "Network down", "--priority", "1")
    tickets(capsys, home, "create", "--summary", "Disk full", "--priority", "4")
    code, out, _ = tickets(capsys, home, "list")
    assert code == 0 and out.splitlines()[0].split() == [
        "KEY",
        "STATUS",
        "PRI",
        "TYPE",
        "UPDATED",
        "SUMMARY",
    ]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["SNOW-1", "SNOW-2"]
    found = as_json(capsys, home, "--filter", "priority<=2")["tickets"]
    assert [t["key"] for t in found] == ["SNOW-1"]
    found = as_json(capsys, home, "list", "--filter", "summaryLIKEdisk^ORpriority=1")["tickets"]
    assert [t["key"] for t in found] == ["SNOW-1", "SNOW-2"]
    assert "No ticket matches" in tickets(capsys, home, "--filter", "status=closed")[1]


def test_edit_changes_only_what_it_is_given(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    tickets(capsys, home, "create", "--summary", "Printer", "--label", "a")
    assert tickets(capsys, home, "edit", "SNOW-1", "--status", "resolved")[1] == "Updated SNOW-1\n"
    edited = as_json(capsys, home, "edit", "SNOW-1", "--label", "b", "--label", "c")["ticket"]
    assert (edited["status"], edited["labels"], edited["summary"]) == (
        "resolved",
        ["b", "c"],
        "Printer",
    )
    before = on_disk(home)
    code, out, _ = tickets(capsys, home, "edit", "SNOW-1", "--status", "resolved")
    assert code == 0 and "nothing changed" in out
    assert on_disk(home) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create", "--summary", " "], ["--summary", "needs a summary"]),
        (["create", "--summary", "x", "--label", "a,b"], ["--label", "no comma"]),
        (["show", "SNOW-9"], ["KEY", "no ticket 'SNOW-9'"]),
        (["edit", "SNOW-9", "--status", "closed"], ["KEY", "SNOW-9"]),
        (["edit", "SNOW-1"], ["nothing to change", "--status"]),
        (["edit", "SNOW-1", "--summary", ""], ["--summary", "needs a summary"]),
        (["comment", "SNOW-9", "--body", "x"], ["KEY", "SNOW-9"]),
        (["comment", "SNOW-1", "--body", "  "], ["--body", "needs a body"]),
        (["attach", "SNOW-9", "log.txt"], ["KEY", "SNOW-9"]),
        (["attach", "SNOW-1", "missing.txt"], ["FILE", "missing.txt does not exist"]),
        (["attach", "SNOW-1", "."], ["FILE", "is a folder"]),
        (["attach", "SNOW-1", "big.bin"], ["FILE", "10 MiB", "10,485,760 bytes"]),
        (["--filter", "priority<=high"], ["--filter", "'priority<=high'", "priority<=1"]),
        (["list", "--filter", "bogus=1"], ["--filter", "no field 'bogus'", "summary"]),
    ],
)
def test_bad_input_names_the_flag_exits_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    says: list[str],
) -> None:
    tickets(capsys, home, "create", "--summary", "Printer")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "log.txt").write_bytes(b"x")
    (tmp_path / "big.bin").write_bytes(b"\0" * (10 * 1024 * 1024 + 1))
    before = on_disk(home)
    code, out, err = tickets(capsys, home, *args)
    assert (code, out) == (2, "")
    for words in says:
        assert words in err
    assert on_disk(home) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create", "--summary", "x", "--priority", "9"], ["--priority", "1 to 5", "planning"]),
        (["create", "--summary", "x", "--priority", "high"], ["--priority", "'high'"]),
        (["create", "--summary", "x", "--status", "done"], ["--status", "new, in_progress"]),
        (["create", "--summary", "x", "--type", "bug"], ["--type", "incident, problem"]),
        (["edit", "SNOW-1", "--priority", "0"], ["--priority", "1 to 5"]),
        (["create"], ["--summary"]),
        (["comment", "SNOW-1"], ["--body"]),
    ],
)
def test_a_flag_out_of_range_is_refused_before_anything_opens(
    capsys: pytest.CaptureFixture[str], home: Path, args: list[str], says: list[str]
) -> None:
    before = on_disk(home)
    with pytest.raises(SystemExit) as exited:
        main(["--home", str(home), "tickets", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    for words in says:
        assert words in err
    assert on_disk(home) == before


def test_a_home_without_tickets_is_read_without_making_a_file(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    before = on_disk(home)
    assert as_json(capsys, home) == {"tickets": []}
    assert tickets(capsys, home, "show", "SNOW-1")[0] == 2
    assert tickets(capsys, home, "--filter", "bogus=1")[0] == 2
    assert on_disk(home) == before


def test_partner_text_reaches_the_terminal_inert(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J summary"
    tickets(capsys, home, "create", "--summary", hostile, "--description", "a\x1b[31m\nb")
    tickets(capsys, home, "comment", "SNOW-1", "--body", "\x9b31m body")
    for args in (["list"], ["show", "SNOW-1"]):
        code, out, _ = tickets(capsys, home, *args)
        assert code == 0
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
        assert "\\x1b]0;pwned\\x07" in out
    assert "\x1b" not in tickets(capsys, home, "show", "SNOW-1", "--json")[1]


def test_without_an_instance_keys_start_with_t_and_the_user_reports(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    made = as_json(capsys, bare, "create", "--summary", "x")["ticket"]
    assert made["key"] == "T-1" and made["reporter"]


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EXALATE_TUI_HOME"}
    done = subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", "--home", str(home), "tickets", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_the_installed_command_keeps_the_contract(home: Path) -> None:
    created = run(home, "create", "--summary", "From a shell", "--priority", "2")
    assert (created.returncode, created.stdout) == (0, "SNOW-1\n")
    shown = json.loads(run(home, "show", "SNOW-1", "--json").stdout)["ticket"]
    assert (shown["summary"], shown["priority"]) == ("From a shell", 2)
    refused = run(home, "create", "--summary", "x", "--priority", "9")
    assert refused.returncode == 2 and "--priority" in refused.stderr
    missing = run(home, "show", "SNOW-7")
    assert missing.returncode == 2 and "exalate-tui tickets: KEY: no ticket" in missing.stderr


def test_tickets_load_neither_the_console_nor_the_network(home: Path) -> None:
    script = (
        "import contextlib, io, json, sys\n"
        "from exalate_tui.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main(['--home', {str(home)!r}, 'tickets', 'create', '--summary', 'x'])\n"
        f"    rc += main(['--home', {str(home)!r}, 'tickets', '--json'])\n"
        "heavy = ('textual', 'rich', 'fastapi', 'starlette', 'uvicorn', 'httpx', 'httpcore')\n"
        "print(json.dumps([rc, sorted(m for m in sys.modules if m.split('.')[0] in heavy)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [0, []]


def test_help_lists_the_tickets_commands(home: Path) -> None:
    listed = run(home, "--help").stdout  # `exalate-tui tickets --help`
    for action in ("list", "create", "show", "edit", "comment", "attach"):
        assert f"    {action} " in listed, action
