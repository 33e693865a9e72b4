"""What a new admin meets on the command line: --version, help on every option, a broken
pipe, a lost code issued again, the code kept out of `ps`, permission warnings, and
`connections --json` with each connection's last contact."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exalate_tui import __version__
from exalate_tui.cli import _parser, setup
from exalate_tui.cli.common import BadInput
from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Instance, Status
from exalate_tui.home.store import Home
from exalate_tui.transport.sqlite_streams import SqliteStreams

PUBLIC = "https://snow.example.com"


def run(
    home: Path, *args: str, stdin: str | None = None, **options: object
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EXALATE_TUI_HOME"}
    result = subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", "--home", str(home), *args],
        capture_output="stdout" not in options,
        text=True,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        timeout=60,
        env=env,
        **options,  # type: ignore[call-overload]
    )
    assert "Traceback" not in (result.stderr or ""), result.stderr
    return result  # type: ignore[no-any-return]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "snow"
    Home(path).save_instance(Instance(short_name="snow", public_url=PUBLIC))
    return path


def test_version(tmp_path: Path) -> None:
    result = run(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout == f"exalate-tui {__version__}\n"


COMMANDS = [
    [],
    ["init"],
    ["initiate"],
    ["accept"],
    ["node"],
    ["node", "start"],
    ["node", "stop"],
    ["node", "status"],
    ["node", "install-service"],
    ["connections"],
    *[["connections", action] for action in ("list", "show", "delete", "code")],
    *[["connections", action] for action in ("deactivate", "activate")],
]


def help_of(words: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        _parser().parse_args([*words, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_option_says_what_it_is_for(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """In `--help`, each option and argument is followed by its help, on its line or the next."""
    lines = help_of(words, capsys).splitlines()
    sections = ("options:", "positional arguments:")
    bare = []
    inside = False
    for at, line in enumerate(lines):
        if not line.startswith(" "):
            inside = line in sections
            continue
        if inside and line.startswith("  ") and not line.startswith("   "):
            following = lines[at + 1] if at + 1 < len(lines) else ""
            said = "  " in line.strip() or following.startswith(" " * 8)
            if not said:
                bare.append(line.strip())
    assert bare == []


def test_a_broken_pipe_leaves_no_traceback_and_the_code_can_be_issued_again(home: Path) -> None:
    """`initiate ... | true`: the reader is gone before the code is written."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        result = run(home, "initiate", "--no-url", "--mode", "script", "--remote-name", "jira",
                     stdout=closed, stderr=subprocess.PIPE)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == ""  # no "[Errno 32] Broken pipe", no "Exception ignored"
    [connection] = Home(home).load_connections().connections
    assert connection.status is Status.PENDING

    again = run(home, "connections", "code", connection.id[:8])
    assert again.returncode == 0, again.stderr
    invite = codes.decode(again.stdout)
    assert invite.cid == connection.id and invite.to == "jira"
    stored = Home(home).get_connection(connection.id)
    assert stored.token_hash == codes.hash_token(invite.tok) != connection.token_hash
    as_json = json.loads(run(home, "connections", "code", connection.id, "--json").stdout)
    assert codes.decode(as_json["code"]).cid == connection.id
    assert "token_hash" not in as_json["connection"]


def test_code_refuses_a_connection_that_needs_none(home: Path) -> None:
    run(home, "initiate", "--no-url", "--mode", "basic", "--remote-name", "jira")
    [connection] = Home(home).load_connections().connections
    Home(home).update_connection(connection.id, lambda c: c.model_copy(update={"status": "active"}))
    result = run(home, "connections", "code", connection.id)
    assert result.returncode == 2 and result.stdout == ""
    assert "exalate-tui connections: ID: " in result.stderr and "active" in result.stderr


# -- the code kept out of argv ----------------------------------------------------------


def test_a_code_in_the_arguments_works_with_a_warning(tmp_path: Path) -> None:
    result = run(tmp_path / "jira", "accept", "exa1.bad.00000000", "--short-name", "jira")
    assert result.returncode == 2
    assert "warning: a code given as an argument shows in `ps`" in result.stderr
    piped = run(tmp_path / "jira", "accept", "-", "--short-name", "jira", stdin="exa1.bad.0\n")
    assert piped.returncode == 2 and "warning" not in piped.stderr


def test_accept_without_a_code_and_no_terminal_says_how(tmp_path: Path) -> None:
    result = run(tmp_path / "jira", "accept", "--short-name", "jira")
    assert result.returncode == 2
    assert "CODE: no code given: pipe it in with `accept -`" in result.stderr
    assert not (tmp_path / "jira").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_terminal_accept_asks_for_the_code_wrapped_or_not(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invite = codes.Invitation.model_validate(
        {
            "cid": "3f2a0000-0000-4000-8000-000000000000",
            "url": PUBLIC,
            "dest_url": None,
            "from": "snow",
            "to": "jira",
            "name": "snow_to_jira",
            "desc": "",
            "mode": "script",
            "tok": "T" * 43,
            "exp": 2_000_000_000,
        }
    )
    code = codes.encode(invite)
    wrapped = "\n".join(code[i : i + 60] for i in range(0, len(code), 60))
    # Whole after its last line: nothing more is read (the rest stays for later).
    monkeypatch.setattr(sys, "stdin", _Terminal(wrapped + "\nnot read\n"))
    assert codes.decode(setup._read_code(None)) == invite
    assert "Paste the invitation code" in capsys.readouterr().err
    assert sys.stdin.read() == "not read\n"
    # A broken code ends at an empty line; the wizard then says what is wrong with it.
    monkeypatch.setattr(sys, "stdin", _Terminal("exa1.broken\n\nnot read\n"))
    assert setup._read_code(None) == "exa1.broken\n"


def test_interrupting_the_prompt_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    class Interrupted(_Terminal):
        def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", Interrupted())
    with pytest.raises(BadInput, match="interrupted"):
        setup._read_code(None)


# -- permission warnings -------------------------------------------------------------------


def test_files_others_can_read_are_named_once_per_command(home: Path) -> None:
    home.chmod(0o755)
    (home / "instance.toml").chmod(0o644)
    result = run(home, "connections")
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if "readable by others" in line]
    assert warnings == [
        f"exalate-tui connections: warning: {home} is readable by others (mode 755): "
        f"run chmod 700 {home}",
        f"exalate-tui connections: warning: {home / 'instance.toml'} is readable by others "
        f"(mode 644): run chmod 600 {home / 'instance.toml'}",
    ]
    home.chmod(0o700)
    (home / "instance.toml").chmod(0o600)
    assert run(home, "connections").stderr == ""


# -- --json: last contact, and no invitation fields once used ----------------------------


def test_connections_json_has_the_last_contact_and_error(home: Path) -> None:
    run(home, "initiate", "--no-url", "--mode", "basic", "--remote-name", "jira")
    run(home, "initiate", "--no-url", "--mode", "basic", "--remote-name", "jsm")
    active, pending = Home(home).load_connections().connections
    Home(home).update_connection(active.id, lambda c: c.model_copy(update={"status": "active"}))
    state = SqliteStreams(home / "state.sqlite3")
    state.record_ok(active.id, 1_714_564_800.0)
    state.record_error(active.id, "Cannot reach jira: connection refused", 1_714_564_900.0)
    state.close()

    listed = json.loads(run(home, "connections", "--json").stdout)["connections"]
    shown = {c["id"]: c for c in listed}
    assert (
        shown[active.id]["last_contact"] == datetime.fromtimestamp(1_714_564_800, UTC).isoformat()
    )
    assert shown[active.id]["last_error"] == "Cannot reach jira: connection refused"
    assert shown[active.id]["live"] == "unreachable"
    assert "token_expires" not in shown[active.id]
    assert shown[pending.id]["last_contact"] is None and shown[pending.id]["token_expires"]

    text = run(home, "connections", "show", active.id).stdout
    rows = dict(line.split(None, 1) for line in text.splitlines())
    assert rows["last_error"] == "Cannot reach jira: connection refused"
    assert rows["live"] == "Unreachable"
    table = run(home, "connections").stdout
    assert "unreachable" in table
