"""A damaged `state.sqlite3` (not a database at all, or one whose pages are broken)
gives one clean line and exit 1, never a traceback (issue 10, item 11)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from pydantic import SecretStr

from exalate_tui.domain.models import Connection, Status
from exalate_tui.home.store import Home
from exalate_tui.transport.sqlite_streams import SqliteStreams


def cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        timeout=60,
    )


def damage(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"this is not a database" * 100)
        path.chmod(0o600)  # as the store's own: no permission warning in the way
        return
    # A real store whose first page is whole and every later one overwritten: it opens,
    # and fails on the first read of a broken page ("database disk image is malformed").
    state = SqliteStreams(path)
    state.enqueue_many("x" * 36, [("ping", {"pad": "x" * 500}) for _ in range(200)])
    state.close()
    data = bytearray(path.read_bytes())
    data[16384:] = b"\xab" * (len(data) - 16384)
    path.write_bytes(bytes(data))


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "snow")
    made = cli(home.path, "init", "--short-name", "snow", "--public-url", "http://127.0.0.1:9")
    assert made.returncode == 0, made.stderr
    return home


def issue(home: Home) -> str:
    made = cli(
        home.path, "initiate", "--no-url", "--mode", "basic",
        "--local-name", "snow", "--remote-name", "jira", "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["code"])


def one_clean_line(result: subprocess.CompletedProcess[str], path: Path) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], result.stderr
    assert "move it aside" in lines[0]


@pytest.mark.parametrize("how", ["garbage", "malformed"])
@pytest.mark.parametrize("action", ["deactivate", "activate", "delete"])
def test_connection_actions_on_a_damaged_state(home: Home, how: str, action: str) -> None:
    issue(home)
    [connection] = home.load_connections().connections

    def started(current: Connection) -> Connection:
        # The status each action starts from, so it gets as far as the state.
        current.status = Status.DEACTIVATED if action == "activate" else Status.ACTIVE
        current.secret = SecretStr("s" * 43)
        return current

    home.update_connection(connection.id, started)
    damage(home.state_path, how)
    files = {path: path.read_bytes() for path in home.path.rglob("*") if path.is_file()}
    result = cli(home.path, "connections", action, connection.id)
    one_clean_line(result, home.state_path)
    if how == "malformed":
        assert "nothing was changed" in result.stderr
    # All or nothing: the connection file (and every other) as it was, none gone or added.
    assert {path: path.read_bytes() for path in home.path.rglob("*") if path.is_file()} == files


@pytest.mark.parametrize("how", ["garbage", "malformed"])
def test_accept_on_a_damaged_state_stops_before_the_handshake(tmp_path: Path, how: str) -> None:
    snow = Home(tmp_path / "snow")
    assert (
        cli(
            snow.path, "init", "--short-name", "snow", "--public-url", "http://127.0.0.1:9"
        ).returncode
        == 0
    )
    code = issue(snow)
    jira = Home(tmp_path / "jira")
    jira.ensure()
    damage(jira.state_path, how)
    # Port 9 is closed: had it tried the handshake, the error would say "Cannot reach".
    result = cli(jira.path, "accept", "-", "--short-name", "jira", stdin=code)
    one_clean_line(result, jira.state_path)
    assert "the code is still unused" in result.stderr
    assert jira.load_connections().connections == []


def test_node_on_a_damaged_state(home: Home) -> None:
    damage(home.state_path, "garbage")
    result = cli(home.path, "node", "--port", str(free_port()))
    one_clean_line(result, home.state_path)
