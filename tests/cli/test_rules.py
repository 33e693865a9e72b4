"""`exalate-tui rules ...` and `connections set-mode ID script`: checked saves (exit 2
with the line, nothing saved), history and revert, a Test run, the partner told."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from exalate_tui.cli import main
from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.rules import RuleFiles
from exalate_tui.home.store import Home
from exalate_tui.transport.sqlite_streams import SqliteStreams

CID = "0b7c6c1e-3c55-4d6e-9a57-0d1f0e2a9c11"


def make_home(tmp_path: Path, mode: Mode) -> Path:
    path = tmp_path / "home"
    home = Home(path)
    home.save_instance(Instance(short_name="snow"))
    home.save_connection(
        Connection(
            id=CID,
            name="snow_to_jira",
            mode=mode,
            topology=Topology.PUBLIC_PRIVATE,
            role=Role.INITIATOR,
            local_name="snow",
            remote_name="jira",
            status=Status.ACTIVE,
            secret=SecretStr("s" * 43),
        )
    )
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path, Mode.SCRIPT)


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> Any:
    code, out, err = run(capsys, home, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_show_prints_the_basic_mapping_as_rules(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    code, out, _ = run(capsys, home, "rules", "show", CID[:8], "incoming")
    assert code == 0
    assert "ticket.summary = replica.summary" in out
    shown = as_json(capsys, home, "rules", "show", CID[:8], "outgoing")
    assert shown["version"] == 1 and "replica.summary = ticket.summary" in shown["source"]


def test_set_refuses_a_forbidden_rule_with_its_line_and_saves_nothing(
    capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, home, "rules", "show", CID[:8], "outgoing")
    before = RuleFiles(Home(home), CID).versions()
    monkeypatch.setattr("sys.stdin", io.StringIO("replica.summary = ticket.summary\nimport os\n"))
    code, out, err = run(capsys, home, "rules", "set", CID[:8], "outgoing", "-")
    assert code == 2
    assert "outgoing.py line 2: import is not allowed" in err
    assert "Nothing was saved" in err
    assert RuleFiles(Home(home), CID).versions() == before


def test_set_history_and_revert(
    capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path
) -> None:
    rule = tmp_path / "out.py"
    rule.write_text("replica.summary = ticket.summary.upper()\n")
    code, out, err = run(capsys, home, "rules", "set", CID[:8], "outgoing", str(rule))
    assert code == 0, err
    assert "Saved outgoing v3" in out
    assert RuleFiles(Home(home), CID).current_path("outgoing").read_text() == rule.read_text()
    history = as_json(capsys, home, "rules", "history", CID[:8])
    assert [(v["version"], v["direction"], v["in_force"]) for v in history["versions"]] == [
        (1, "outgoing", False),
        (2, "incoming", True),
        (3, "outgoing", True),
    ]
    assert history["time_limit"] == 1.0
    code, out, _ = run(capsys, home, "rules", "revert", CID[:8], "1")
    assert code == 0 and "as v4" in out
    shown = as_json(capsys, home, "rules", "show", CID[:8], "outgoing")
    assert shown["version"] == 4 and "ticket.summary.upper()" not in shown["source"]
    assert run(capsys, home, "rules", "revert", CID[:8], "99")[0] == 2
    assert run(capsys, home, "rules", "limit", CID[:8], "2.5")[0] == 0
    assert as_json(capsys, home, "rules", "history", CID[:8])["time_limit"] == 2.5


def test_test_run_prints_the_replica_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    assert run(capsys, home, "tickets", "create", "--summary", "Printer on fire")[0] == 0
    run(capsys, home, "rules", "show", CID[:8], "outgoing")  # the rules exist
    state = SqliteStreams(Home(home).state_path)
    outbox = state.pending(CID)
    state.close()
    report = as_json(capsys, home, "rules", "test", CID[:8], "SNOW-1")["test"]
    assert report["outgoing"]["replica"]["fields"]["summary"] == "Printer on fire"
    assert report["incoming"] is None
    code, out, _ = run(capsys, home, "rules", "test", CID[:8], "SNOW-1")
    assert code == 0 and "Nothing is sent and nothing is written." in out
    state = SqliteStreams(Home(home).state_path)
    assert state.pending(CID) == outbox
    state.close()
    assert run(capsys, home, "rules", "test", CID[:8], "SNOW-9")[0] == 2


def test_set_mode_switches_basic_to_script_and_tells_the_partner(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    home = make_home(tmp_path, Mode.BASIC)
    code, _, err = run(capsys, home, "rules", "show", CID[:8], "outgoing")
    assert code == 2 and "set-mode" in err
    assert as_json(capsys, home, "connections", "set-mode", CID[:8], "script") == {
        "mode": "script",
        "switched": True,
    }
    assert Home(home).get_connection(CID).mode is Mode.SCRIPT
    assert [v.number for v in RuleFiles(Home(home), CID).versions()] == [1, 2]
    state = SqliteStreams(Home(home).state_path)
    [told] = [m for m in state.pending(CID) if m.kind == "connection.mode"]
    state.close()
    assert told.body == {"mode": "script"}
    again = as_json(capsys, home, "connections", "set-mode", CID[:8], "script")
    assert again["switched"] is False
