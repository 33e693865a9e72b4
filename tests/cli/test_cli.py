"""The headless commands, run as a user runs them: in a subprocess, judged by exit code,
stdout, stderr and the files left in the home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from conftest import Servers, free_port

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home

PUBLIC = "https://snow.example.com"
DEST = "https://jira.example.com"
SECRET_KEYS = {"secret", "token", "token_hash"}
CONNECTION_KEYS = {
    "id",
    "name",
    "triggers",
    "description",
    "mode",
    "topology",
    "role",
    "local_name",
    "remote_name",
    "remote_url",
    "created",
    "status",
    "token_expires",
    "peer_state",
    "peer_mode",
}


def run(*args: str, env_home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EXALATE_TUI_HOME"}
    if env_home is not None:
        env["EXALATE_TUI_HOME"] = str(env_home)
    result = subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def files(home: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under the home with its mode and contents: the whole state on disk."""
    if not home.exists():
        return {}
    return {
        str(path.relative_to(home)): (
            path.stat().st_mode,
            path.read_bytes() if path.is_file() else None,
        )
        for path in sorted(home.rglob("*"))
    } | {".": (home.stat().st_mode, None)}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def public_home(home: Path) -> Path:
    done = run("--home", str(home), "init", "--short-name", "snow", "--public-url", PUBLIC)
    assert done.returncode == 0, done.stderr
    return home


@pytest.fixture
def private_home(home: Path) -> Path:
    assert run("--home", str(home), "init", "--short-name", "snow").returncode == 0
    return home


def initiate(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`initiate`; a --url is not verified here (DEST has no node): see the verify tests."""
    verify = ["--no-verify"] if "--url" in args else []
    return run("--home", str(home), "initiate", "--mode", "script", *verify, *args)


def issued(home: Path, *args: str) -> dict[str, object]:
    result = initiate(home, *args, "--json")
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


# -- init ---------------------------------------------------------------------------


def test_init_creates_the_instance_and_says_what_it_saved(home: Path) -> None:
    result = run("--home", str(home), "init", "--short-name", "snow", "--public-url", PUBLIC + "/")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert f"Saved {home / 'instance.toml'}" in result.stdout
    assert "short name: snow" in result.stdout
    assert f"public URL: {PUBLIC}\n" in result.stdout
    saved = tomllib.loads((home / "instance.toml").read_text())
    assert saved["short_name"] == "snow" and saved["public_url"] == PUBLIC
    assert (home / "instance.toml").stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700


def test_init_without_a_public_url_says_what_that_means(home: Path) -> None:
    result = run("--home", str(home), "init", "--short-name", "snow")
    assert result.returncode == 0
    assert "public URL: none" in result.stdout and "--public-url" in result.stdout
    assert "public_url" not in tomllib.loads((home / "instance.toml").read_text())


def test_init_updates_and_keeps_what_is_not_given(public_home: Path) -> None:
    instance = public_home / "instance.toml"
    instance.write_text(instance.read_text().replace("listen_port = 7917", "listen_port = 8000"))
    assert run("--home", str(public_home), "init", "--short-name", "snow2").returncode == 0
    saved = tomllib.loads(instance.read_text())
    assert saved == {
        "short_name": "snow2",
        "public_url": PUBLIC,
        "listen_host": "127.0.0.1",
        "listen_port": 8000,
    }
    result = run("--home", str(public_home), "init", "--short-name", "snow2", "--public-url", "")
    assert result.returncode == 0
    assert "public_url" not in tomllib.loads(instance.read_text())


@pytest.mark.parametrize(
    ("args", "flag", "says"),
    [
        (["--short-name", ""], "--short-name", "is required"),
        (["--short-name", "snow now"], "--short-name", "may only contain letters, digits"),
        (["--short-name", "s" * 33], "--short-name", "must be at most 32 characters"),
        (["--short-name", "snow", "--public-url", "snow.example.com"], "--public-url", "http://"),
        (["--short-name", "snow", "--public-url", "https://"], "--public-url", "must name a host"),
    ],
)
def test_init_refuses_bad_input_and_writes_nothing(
    home: Path, args: list[str], flag: str, says: str
) -> None:
    result = run("--home", str(home), "init", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"exalate-tui init: {flag}: ")
    assert says in result.stderr
    assert not home.exists()


def test_init_never_overwrites_a_broken_instance_file(home: Path) -> None:
    home.mkdir(mode=0o700)
    (home / "instance.toml").write_text('short_name = "snow"\npublic_url = \n')
    before = files(home)
    result = run("--home", str(home), "init", "--short-name", "snow")
    assert result.returncode == 1
    assert f"{home / 'instance.toml'}:2: is not valid TOML" in result.stderr
    assert "fix or remove the file" in result.stderr
    assert files(home) == before


# -- initiate ---------------------------------------------------------------------------


def test_initiate_prints_the_code_alone(public_home: Path) -> None:
    result = initiate(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    code = result.stdout.removesuffix("\n")
    assert "\n" not in code and code.startswith("exa1.")
    invite = codes.decode(code)
    assert (invite.from_, invite.to, invite.name, invite.url, invite.dest_url) == (
        "snow",
        "jira",
        "snow_to_jira",
        PUBLIC,
        None,
    )
    [saved] = (public_home / "connections").iterdir()
    assert saved.name == f"{invite.cid}.toml"
    assert saved.stat().st_mode & 0o777 == 0o600
    text = saved.read_text()
    assert invite.tok not in text
    assert tomllib.loads(text)["token_hash"] == codes.hash_token(invite.tok)


def test_initiate_json_is_one_document_without_secrets(public_home: Path) -> None:
    document = issued(
        public_home,
        "--url",
        DEST,
        "--local-name",
        "snow",
        "--remote-name",
        "jira",
        "--name",
        "Incidents",
        "--description",
        "P1 and P2",
    )
    assert set(document) == {"connection", "code"}
    connection = document["connection"]
    assert isinstance(connection, dict)
    assert set(connection) == CONNECTION_KEYS
    assert not SECRET_KEYS & set(connection)
    assert connection["name"] == "Incidents"
    assert connection["description"] == "P1 and P2"
    assert connection["mode"] == "script"
    assert connection["topology"] == "public-public"
    assert connection["role"] == "initiator"
    assert connection["status"] == "pending"
    assert connection["remote_url"] == DEST
    invite = codes.decode(str(document["code"]))
    assert invite.cid == connection["id"]
    assert (invite.name, invite.desc, invite.mode) == ("Incidents", "P1 and P2", "script")


@pytest.mark.parametrize(
    ("fixture", "where", "topology", "url"),
    [
        ("public_home", ["--no-url"], "public-private", PUBLIC),
        ("public_home", ["--url", DEST], "public-public", PUBLIC),
        ("private_home", ["--url", DEST], "private-public", None),
    ],
)
def test_initiate_reaches_every_topology(
    request: pytest.FixtureRequest,
    fixture: str,
    where: list[str],
    topology: str,
    url: str | None,
) -> None:
    home: Path = request.getfixturevalue(fixture)
    document = issued(home, *where, "--local-name", "snow", "--remote-name", "jira")
    connection = document["connection"]
    assert isinstance(connection, dict)
    assert connection["topology"] == topology
    invite = codes.decode(str(document["code"]))
    assert invite.topology.value == topology
    assert invite.url == url


def test_a_private_initiator_keeps_its_token_in_the_file_only(private_home: Path) -> None:
    document = issued(private_home, "--url", DEST, "--local-name", "snow", "--remote-name", "jira")
    invite = codes.decode(str(document["code"]))
    saved = tomllib.loads((private_home / "connections" / f"{invite.cid}.toml").read_text())
    assert saved["token"] == invite.tok
    shown = run("--home", str(private_home), "connections", "show", invite.cid[:8], "--json")
    listed = run("--home", str(private_home), "connections", "--json")
    plain = run("--home", str(private_home), "connections", "show", invite.cid[:8])
    for result in (shown, listed, plain):
        assert result.returncode == 0
        assert invite.tok not in result.stdout
        assert saved["token_hash"] not in result.stdout


def test_the_name_defaults_to_the_suggestion_and_a_duplicate_asks_for_name(
    public_home: Path,
) -> None:
    args = ["--no-url", "--local-name", "snow", "--remote-name", "jira"]
    assert initiate(public_home, *args).returncode == 0
    before = files(public_home)
    result = initiate(public_home, *args)
    assert result.returncode == 2
    assert result.stderr == (
        "exalate-tui initiate: --name: A connection named 'snow_to_jira' already exists: "
        "choose another name. The name was made from the two short names: "
        "give one with --name NAME.\n"
    )
    assert files(public_home) == before
    again = initiate(public_home, *args, "--name", "SNOW_TO_JIRA")
    assert again.returncode == 2
    assert "--name: A connection named 'SNOW_TO_JIRA' already exists" in again.stderr
    assert files(public_home) == before
    assert initiate(public_home, *args, "--name", "snow_to_jira 2").returncode == 0


@pytest.mark.parametrize(
    ("args", "flag", "says"),
    [
        (["--url", "ftp://jira"], "--url", "must start with http:// or https://"),
        (["--url", "jira.example.com"], "--url", "must start with http:// or https://"),
        (["--url", "https://"], "--url", "must name a host"),
        (["--url", ""], "--url", "is required"),
        (["--local-name", "snow now"], "--local-name", "may only contain letters, digits"),
        (["--local-name", ""], "--local-name", "is required"),
        (["--remote-name", "j" * 33], "--remote-name", "must be at most 32 characters"),
        (["--name", " "], "--name", "is required"),
        (["--name", "a\x1b[2Jb"], "--name", "must not contain control characters"),
        (["--name", "n" * 101], "--name", "must be at most 100 characters"),
        (["--description", "d" * 1001], "--description", "must be at most 1000 characters"),
        (["--description", "two\nlines"], "--description", "must not contain control characters"),
    ],
)
def test_initiate_refuses_bad_input_naming_the_flag_and_writes_nothing(
    public_home: Path, args: list[str], flag: str, says: str
) -> None:
    defaults = {"--url": DEST, "--local-name": "snow", "--remote-name": "jira"}
    defaults.update(dict(zip(args[::2], args[1::2], strict=True)))
    before = files(public_home)
    result = initiate(public_home, *(part for pair in defaults.items() for part in pair))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"exalate-tui initiate: {flag}: ")
    assert says in result.stderr
    assert "\x1b" not in result.stderr
    assert files(public_home) == before


def test_every_bad_flag_is_reported_in_one_run(public_home: Path) -> None:
    result = initiate(
        public_home,
        "--url",
        "ftp://x",
        "--local-name",
        "a b",
        "--remote-name",
        "",
        "--description",
        "x" * 1001,
    )
    assert result.returncode == 2
    flags = [line.split(": ")[1] for line in result.stderr.splitlines()]
    assert flags == ["--url", "--local-name", "--remote-name", "--description"]


def test_initiate_before_init_says_to_run_init(home: Path) -> None:
    result = initiate(home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    assert result.returncode == 2
    assert "exalate-tui init --short-name" in result.stderr
    assert "instance.toml" in result.stderr
    assert not home.exists()


def test_no_url_needs_this_instances_public_url(private_home: Path) -> None:
    before = files(private_home)
    result = initiate(private_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    assert result.returncode == 2
    assert result.stderr.startswith("exalate-tui initiate: --no-url: ")
    assert "needs a public URL" in result.stderr
    assert "exalate-tui init --short-name snow --public-url URL" in result.stderr
    assert files(private_home) == before


def test_a_broken_instance_file_is_reported_with_its_line(home: Path) -> None:
    home.mkdir(mode=0o700)
    (home / "instance.toml").write_text("short_name = snow\n")
    (home / "instance.toml").chmod(0o600)
    result = initiate(home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    assert result.returncode == 1
    assert result.stderr.startswith(f"exalate-tui initiate: {home / 'instance.toml'}:1: ")
    assert not (home / "connections").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["connections"],
        ["connections", "--json"],
        ["connections", "show", "abc"],
        ["accept", "-"],
        ["init", "--short-name", "snow"],
        ["node", "start"],
        ["node", "install-service", "--user"],
    ],
)
def test_a_broken_instance_file_fails_every_command_with_its_line(
    home: Path, args: list[str]
) -> None:
    home.mkdir(mode=0o700)
    (home / "instance.toml").write_text("short_name = snow\n")
    (home / "instance.toml").chmod(0o600)
    before = files(home)
    result = run("--home", str(home), *args)
    assert result.returncode == 1, result
    assert f"{home / 'instance.toml'}:1: is not valid TOML" in result.stderr
    assert "No connections yet" not in result.stdout
    assert files(home) == before


def test_node_status_and_stop_still_work_with_a_broken_instance_file(home: Path) -> None:
    home.mkdir(mode=0o700)
    (home / "instance.toml").write_text("short_name = snow\n")
    (home / "instance.toml").chmod(0o600)
    for action in ("status", "stop"):
        result = run("--home", str(home), "node", action)
        assert "warning: " in result.stderr and "instance.toml:1:" in result.stderr
    assert run("--home", str(home), "node", "stop").returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--local-name", "snow", "--remote-name", "jira"],  # neither --url nor --no-url
        ["--no-url", "--url", DEST, "--local-name", "snow", "--remote-name", "jira"],
        ["--no-url", "--local-name", "snow"],
        ["--no-url"],
    ],
)
def test_usage_errors_exit_2_and_write_nothing(public_home: Path, args: list[str]) -> None:
    before = files(public_home)
    result = initiate(public_home, *args)
    assert result.returncode == 2
    assert "usage: exalate-tui initiate" in result.stderr
    assert files(public_home) == before


def test_an_unknown_mode_is_a_usage_error(public_home: Path) -> None:
    result = run(
        "--home", str(public_home), "initiate", "--no-url", "--mode", "groovy",
        "--local-name", "snow", "--remote-name", "jira",
    )  # fmt: skip
    assert result.returncode == 2
    assert "--mode: invalid choice: 'groovy'" in result.stderr


# -- --home and the environment -------------------------------------------------------


def test_home_works_before_or_after_the_command(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert run("--home", str(first), "init", "--short-name", "a").returncode == 0
    assert run("init", "--short-name", "b", "--home", str(second)).returncode == 0
    assert tomllib.loads((first / "instance.toml").read_text())["short_name"] == "a"
    assert tomllib.loads((second / "instance.toml").read_text())["short_name"] == "b"
    listed = run("connections", "list", "--home", str(first), "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["connections"] == []


def test_the_home_defaults_to_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "env-home"
    assert run("init", "--short-name", "snow", env_home=home).returncode == 0
    assert (home / "instance.toml").exists()
    flag_home = tmp_path / "flag-home"
    assert run("--home", str(flag_home), "init", "--short-name", "x", env_home=home).returncode == 0
    assert (flag_home / "instance.toml").exists()
    assert tomllib.loads((home / "instance.toml").read_text())["short_name"] == "snow"


# -- connections -------------------------------------------------------------------------


def test_an_empty_home_lists_nothing_and_says_what_to_do(home: Path) -> None:
    result = run("--home", str(home), "connections")
    assert result.returncode == 0
    assert "No connections yet" in result.stdout and "exalate-tui initiate" in result.stdout
    assert not home.exists()


def test_list_shows_the_table(public_home: Path) -> None:
    first = issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    second = issued(
        public_home, "--url", DEST, "--local-name", "snow", "--remote-name", "jsm",
        "--name", "Service desk",
    )  # fmt: skip
    result = run("--home", str(public_home), "connections", "list")
    assert result.returncode == 0 and result.stderr == ""
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "ID", "NAME", "LOCAL", "→", "REMOTE", "TOPOLOGY", "MODE", "STATUS", "CREATED",
    ]  # fmt: skip
    by_id = {row[:8]: row for row in rows}
    assert len(by_id) == len(rows) == 2
    for document in (first, second):
        connection = document["connection"]
        assert isinstance(connection, dict)
        row = by_id[str(connection["id"])[:8]]
        assert str(connection["name"]) in row
        assert f"snow → {connection['remote_name']}" in row
        assert str(connection["topology"]) in row
        assert "script" in row and "pending" in row
        assert str(connection["created"])[:10] in row


def as_listed(connection: object) -> dict[str, object]:
    """A connection as `connections --json` shows it: with its live state and contacts."""
    assert isinstance(connection, dict)
    live = {"live": "pending", "last_contact": None, "last_error": None, "error_since": None}
    return {**connection, **live}


def test_list_json(public_home: Path) -> None:
    document = issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    result = run("--home", str(public_home), "connections", "--json")
    assert result.returncode == 0
    listed = json.loads(result.stdout)
    assert listed == {"connections": [as_listed(document["connection"])], "problems": []}


def test_local_name_defaults_to_the_instances_short_name(public_home: Path) -> None:
    document = issued(public_home, "--no-url", "--remote-name", "jira")
    connection = document["connection"]
    assert isinstance(connection, dict)
    assert connection["local_name"] == "snow" and connection["name"] == "snow_to_jira"


def test_show_by_unique_prefix(public_home: Path) -> None:
    document = issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    connection = document["connection"]
    assert isinstance(connection, dict)
    cid = str(connection["id"])
    result = run("--home", str(public_home), "connections", "show", cid[:5])
    assert result.returncode == 0
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["id"] == cid
    assert lines["name"] == "snow_to_jira"
    assert lines["topology"] == "public-private"
    assert lines["description"] == "-" and lines["remote_url"] == "-"
    assert not SECRET_KEYS & set(lines)
    assert lines["live"] == "Pending" and lines["last_contact"] == "-"
    assert lines["last_error"] == "-"
    shown = run("--home", str(public_home), "connections", "show", cid, "--json")
    assert json.loads(shown.stdout) == {"connection": as_listed(connection)}


def test_delete_by_prefix_says_what_it_deleted(public_home: Path) -> None:
    kept = issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    gone = issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jsm")
    gone_id = str(gone["connection"]["id"])  # type: ignore[index]
    result = run("--home", str(public_home), "connections", "delete", gone_id[:8])
    assert result.returncode == 0
    assert result.stdout == f"Deleted connection snow_to_jsm ({gone_id})\n"
    assert not (public_home / "connections" / f"{gone_id}.toml").exists()
    listed = json.loads(run("--home", str(public_home), "connections", "--json").stdout)
    assert listed["connections"] == [as_listed(kept["connection"])]


def test_delete_json(public_home: Path) -> None:
    document = issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    cid = str(document["connection"]["id"])  # type: ignore[index]
    result = run("--home", str(public_home), "connections", "delete", cid, "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "deleted": document["connection"],
        "partner": "nobody",  # pending: nobody to tell
        "partner_error": None,
    }


@pytest.mark.parametrize("action", ["show", "delete"])
@pytest.mark.parametrize(
    ("cid", "says"),
    [
        ("ffffffff", "no connection with id 'ffffffff'"),
        ("*", "no connection with id '*'"),
        ("../instance", "no connection with id '../instance'"),
        ("", "no connection id given"),
    ],
)
def test_an_unknown_id_exits_2_and_changes_nothing(
    public_home: Path, action: str, cid: str, says: str
) -> None:
    issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    before = files(public_home)
    result = run("--home", str(public_home), "connections", action, cid)
    assert result.returncode == 2
    assert result.stderr.startswith(f"exalate-tui connections: ID: {says}")
    assert "see `exalate-tui connections`" in result.stderr
    assert files(public_home) == before


def test_an_ambiguous_prefix_asks_for_more(public_home: Path) -> None:
    issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    connections = public_home / "connections"
    [original] = connections.iterdir()
    # Two ids sharing a prefix: copies of one file under ids chosen for the test.
    for cid in ("abcd1111-0000-4000-8000-000000000001", "abcd2222-0000-4000-8000-000000000002"):
        text = original.read_text().replace(original.stem, cid)
        text = text.replace('name = "snow_to_jira"', f'name = "{cid[:8]}"')
        (connections / f"{cid}.toml").write_text(text)
    before = files(public_home)
    result = run("--home", str(public_home), "connections", "delete", "abcd")
    assert result.returncode == 2
    assert "'abcd' matches 2 connections: give more of the id" in result.stderr
    assert files(public_home) == before


def test_a_broken_connection_file_is_reported_while_the_others_list(public_home: Path) -> None:
    document = issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    broken = public_home / "connections" / "0000dead-0000-4000-8000-000000000000.toml"
    broken.write_text('name = "half\n')
    broken.chmod(0o600)
    before = files(public_home)

    plain = run("--home", str(public_home), "connections")
    assert plain.returncode == 1
    assert plain.stderr == (
        f"exalate-tui connections: {broken}:1: is not valid TOML "
        "(Illegal character '\\n'); fix or remove the file\n"
    )
    assert "snow_to_jira" in plain.stdout

    as_json = run("--home", str(public_home), "connections", "--json")
    assert as_json.returncode == 1
    listed = json.loads(as_json.stdout)
    assert listed["connections"] == [as_listed(document["connection"])]
    [problem] = listed["problems"]
    assert problem["path"] == str(broken) and problem["line"] == 1
    assert "fix or remove the file" in problem["message"]
    assert files(public_home) == before


def test_a_file_name_with_control_characters_is_printed_inert(public_home: Path) -> None:
    connections = public_home / "connections"
    connections.mkdir(exist_ok=True)
    (connections / "evil\x1b[2J\x07.toml").write_text("= broken\n")
    result = run("--home", str(public_home), "connections")
    assert result.returncode == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "evil\\x1b[2J\\x07.toml:1:" in result.stderr


# -- what the headless commands load, and the console's entry ------------------------


def test_headless_commands_do_not_load_the_console_or_the_network(public_home: Path) -> None:
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from exalate_tui.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = main(["--home", {str(public_home)!r}, "initiate", "--no-url", "--mode",
                       "basic", "--local-name", "snow", "--remote-name", "jira", "--json"])
            rc += main(["--home", {str(public_home)!r}, "connections", "--json"])
        heavy = ("textual", "rich", "fastapi", "starlette", "uvicorn", "httpx", "httpcore")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
        print(json.dumps({{"rc": rc, "loaded": loaded}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"rc": 0, "loaded": []}


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    # The first word of each line of the commands' list: "init" must not pass by "initiate".
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")}
    assert {"init", "initiate", "accept", "node", "connections"} <= listed


def test_help_walks_through_two_instances_with_commands_that_parse() -> None:
    """The epilog's command lines are real: each one parses as written."""
    import shlex

    from exalate_tui.cli import _parser

    result = run("--help")
    assert result.returncode == 0
    text = result.stdout.replace("\\\n", " ")
    lines = [line.split("$ ", 1)[1] for line in text.splitlines() if "$ exalate-tui " in line]
    assert len(lines) >= 8 and any(line.startswith("exalate-tui accept ") for line in lines)
    assert any("node start" in line for line in lines)
    assert "7917" in text and "--no-url" in text
    for line in lines:
        words = shlex.split(line.split("#")[0].replace("[show|deactivate|activate|delete ID]", ""))
        assert words[0] == "exalate-tui"
        _parser().parse_args(words[1:])  # exits 2 (and fails the test) if it does not parse


# -- initiate --url checks the destination's node, as the console's step 1 does ------


def test_initiate_verifies_the_url_against_a_real_node(
    public_home: Path, tmp_path: Path, servers: Servers
) -> None:
    partner = Home(tmp_path / "partner")
    partner.save_instance(Instance(short_name="jira"))
    url = servers.node(partner)
    result = run(
        "--home", str(public_home), "initiate", "--url", url, "--mode", "basic",
        "--local-name", "snow", "--remote-name", "jira", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["connection"]["remote_url"] == url


def test_initiate_refuses_a_url_with_no_node_and_writes_nothing(public_home: Path) -> None:
    before = files(public_home)
    result = run(
        "--home", str(public_home), "initiate", "--url", f"http://127.0.0.1:{free_port()}",
        "--mode", "basic", "--local-name", "snow", "--remote-name", "jira",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("exalate-tui initiate: --url: ")
    assert "--no-verify" in result.stderr
    assert files(public_home) == before


def test_connections_list_says_paused_by_partner_in_the_consoles_words(
    public_home: Path,
) -> None:
    """An Active connection the partner deactivated: `paused by partner` (domain/live.py)."""
    from exalate_tui.domain.models import PeerState, Status

    document = issued(public_home, "--no-url", "--local-name", "snow", "--remote-name", "jira")
    connection = document["connection"]
    assert isinstance(connection, dict)
    home = Home(public_home)
    stored = home.get_connection(str(connection["id"]))
    home.save_connection(
        stored.model_copy(update={"status": Status.ACTIVE, "peer_state": PeerState.DEACTIVATED})
    )
    result = run("--home", str(public_home), "connections", "list")
    assert result.returncode == 0, result.stderr
    [row] = result.stdout.splitlines()[1:]
    assert "paused by partner" in row and " active " not in row


def test_initiate_refuses_a_connection_to_itself(public_home: Path) -> None:
    before = files(public_home)
    result = initiate(public_home, "--no-url", "--local-name", "snow", "--remote-name", "snow")
    assert result.returncode == 2
    assert "a connection to itself cannot be made" in result.stderr
    assert files(public_home) == before
