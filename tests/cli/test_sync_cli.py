"""`exalate-tui triggers` and `sync`: what they print, and every bad input refused
(exit 2) with what to fix and nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from exalate_tui.cli import main
from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home

CID = "5d2b8a0e-6f7e-4b1c-9a3d-2e4f6a8b0c1d"
PENDING = "7e1c2d3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "snow"
    store = Home(path)
    store.save_instance(Instance(short_name="snow", public_url="https://snow.example.com"))
    for cid, status in ((CID, Status.ACTIVE), (PENDING, Status.PENDING)):
        store.save_connection(
            Connection(
                id=cid,
                name=f"snow_to_{cid[:4]}",
                mode=Mode.BASIC,
                topology=Topology.PUBLIC_PRIVATE,
                role=Role.INITIATOR,
                local_name="snow",
                remote_name="jira",
                status=status,
                secret=SecretStr("s" * 43) if status is Status.ACTIVE else None,
            )
        )
    return path


def cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def files(home: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in sorted(home.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock"))
    }


def refused(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> str:
    before = files(home)
    code, out, err = cli(capsys, home, *args)
    assert code == 2 and out == "", (code, out, err)
    assert files(home) == before
    return err


def test_a_trigger_is_checked_before_it_is_saved(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    err = refused(capsys, home, "triggers", "add", "--connection", CID[:8], "priorty<=2")
    assert "QUERY:" in err and "priorty" in err  # names the unknown field
    code, out, _ = cli(capsys, home, "triggers", "add", "--connection", CID[:8], "priority<=2")
    assert code == 0 and "Trigger 1" in out
    code, out, _ = cli(capsys, home, "triggers", "--json")
    assert json.loads(out)["triggers"][CID] == ["priority<=2"]
    assert "no trigger 2" in refused(capsys, home, "triggers", "remove", "--connection", CID, "2")
    code, out, _ = cli(capsys, home, "triggers", "remove", "--connection", CID, "1")
    assert code == 0 and "priority<=2" in out


def test_sync_refuses_what_cannot_be_synced(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    cli(capsys, home, "tickets", "create", "--summary", "Printer on fire")
    assert "KEY:" in refused(capsys, home, "sync", "exalate", "SNOW-9", "--connection", CID)
    assert "pending" in refused(capsys, home, "sync", "exalate", "SNOW-1", "--connection", PENDING)
    assert "ID:" in refused(capsys, home, "sync", "exalate", "SNOW-1", "--connection", "nope")
    assert "no triggers" in refused(capsys, home, "sync", "bulk", "--connection", CID)
    assert "does not sync" in refused(
        capsys, home, "sync", "unexalate", "SNOW-1", "--connection", CID
    )
    assert "#7" in refused(capsys, home, "sync", "retry", "7")


def test_exalate_without_a_node_queues_the_replica_and_status_shows_it(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    cli(capsys, home, "tickets", "create", "--summary", "Printer on fire")
    code, out, err = cli(capsys, home, "sync", "exalate", "SNOW-1", "--connection", CID)
    assert code == 0, err
    assert "Queued" in out  # no node runs the engine here: this command ran it once
    code, out, _ = cli(capsys, home, "sync", "status", "--json")
    [state] = json.loads(out)["connections"]
    assert state["id"] == CID and state["status"] == "active"
    assert [link["local_key"] for link in state["synced"]] == ["SNOW-1"]
    assert state["queue"]["outgoing"] == 1  # the replica, waiting for jira to poll
    code, out, _ = cli(capsys, home, "tickets", "show", "SNOW-1", "--json")
    links: list[dict[str, Any]] = json.loads(out)["ticket"]["links"]
    assert [(link["connection"], link["state"]) for link in links] == [(CID, "syncing")]
    code, out, _ = cli(capsys, home, "sync", "errors")
    assert code == 0 and out.strip() == "No sync errors."
