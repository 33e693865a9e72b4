"""Choosing PostgreSQL for a home's streams: `init --database`, $EXALATE_TUI_DATABASE_URL,
`db check`, `db migrate`; a bad URL is exit 2 with nothing written, a database that
cannot be reached exit 1 naming it; the password is never printed."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from exalate_tui.cli import main
from exalate_tui.home.store import Home
from exalate_tui.transport.pg_streams import SCHEMA_VERSION, PgStreams
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.storage import ENV, open_streams

PASSWORD = "hunter2-never-shown"


@pytest.fixture(autouse=True)
def no_database_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "url, reason",
    [
        ("mysql://db.example.com/x", "must start with postgresql://"),
        ("postgresql://db.example.com:port/x", "check the port"),
        ("postgresql:///x", "must name a host"),
        ("postgresql://db example.com/x", "spaces"),
    ],
)
def test_a_url_that_does_not_parse_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, reason: str
) -> None:
    home = tmp_path / "home"
    code, out, err = run(
        capsys, "--home", str(home), "init", "--short-name", "snow", "--database", url
    )
    assert code == 2 and out == ""
    assert err.startswith("exalate-tui init: --database: the PostgreSQL URL ") and reason in err
    assert not home.exists()


def test_init_stores_the_choice_privately_and_never_prints_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    url = f"postgresql://exalate:{PASSWORD}@127.0.0.1:1/exalate"
    code, out, err = run(
        capsys, "--home", str(home), "init", "--short-name", "snow", "--database", url
    )
    assert code == 0, err
    assert "streams: PostgreSQL, postgresql://exalate@127.0.0.1:1/exalate" in out
    assert PASSWORD not in out + err
    instance = home / "instance.toml"
    assert instance.stat().st_mode & 0o777 == 0o600
    assert Home(home).load_instance().database == url  # type: ignore[union-attr]
    # Unreachable (nothing listens on port 1): exit 1, naming it and the fix, not the password.
    for action in ("check", "migrate"):
        code, out, err = run(capsys, "--home", str(home), "db", action)
        assert code == 1 and out == ""
        assert "postgresql://exalate@127.0.0.1:1/exalate: cannot be reached" in err
        assert "`exalate-tui db check`" in err and PASSWORD not in err
    # '' goes back to state.sqlite3.
    code, out, err = run(
        capsys, "--home", str(home), "init", "--short-name", "snow", "--database", ""
    )
    assert code == 0 and Home(home).load_instance().database is None  # type: ignore[union-attr]
    assert f"streams: {home / 'state.sqlite3'}" in out


def test_db_on_a_home_without_postgresql_says_how_to_choose_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert run(capsys, "--home", str(home), "init", "--short-name", "snow")[0] == 0
    code, out, err = run(capsys, "--home", str(home), "db", "check")
    assert code == 2 and out == ""
    assert "init --short-name S --database postgresql://" in err and ENV in err


def test_the_environment_overrides_the_home_and_a_bad_one_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    home = tmp_path / "home"
    assert run(capsys, "--home", str(home), "init", "--short-name", "snow")[0] == 0
    monkeypatch.setenv(ENV, "postgresql://x:1:2")
    code, out, err = run(capsys, "--home", str(home), "db", "check")
    assert code == 2 and ENV in err and "fix it or unset it" in err
    monkeypatch.setenv(ENV, pg_url)
    state = open_streams(Home(home))
    try:
        assert isinstance(state, PgStreams)
    finally:
        state.close()
    monkeypatch.delenv(ENV)
    state = open_streams(Home(home))
    try:
        assert isinstance(state, SqliteStreams)
    finally:
        state.close()


def test_check_changes_nothing_and_migrate_brings_the_schema_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    home = tmp_path / "home"
    code, _, err = run(
        capsys, "--home", str(home), "init", "--short-name", "snow", "--database", pg_url
    )
    assert code == 0, err
    code, out, err = run(capsys, "--home", str(home), "db", "check")
    assert code == 1 and "schema is at version 0" in err and "db migrate" in err
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT to_regnamespace('exalate')").fetchone() == (None,)
    code, out, err = run(capsys, "--home", str(home), "db", "migrate", "--json")
    assert code == 0 and json.loads(out)["from"] == 0 and json.loads(out)["to"] == SCHEMA_VERSION
    code, out, err = run(capsys, "--home", str(home), "db", "migrate")
    assert code == 0 and f"already at version {SCHEMA_VERSION}" in out
    code, out, err = run(capsys, "--home", str(home), "db", "check", "--json")
    assert code == 0 and json.loads(out)["reachable"] is True
    # The connections' table too, and the key: init made one; nothing registered it yet.
    checked = json.loads(out)
    assert checked["connections"] == 0 and checked["tombstones"] == 0
    assert checked["key"] == {"source": str(home / "database.key"), "registered": False}
    code, out, err = run(capsys, "--home", str(home), "connections")  # registers the key
    assert code == 0, err
    code, out, err = run(capsys, "--home", str(home), "db", "check")
    assert code == 0 and "connections: 0, tombstones: 0" in out
    assert "the one their secrets are encrypted with" in out
    (home / "database.key").unlink()
    code, out, err = run(capsys, "--home", str(home), "db", "check")
    assert code == 2 and "copy database.key from a worker" in err
