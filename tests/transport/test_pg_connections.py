"""`PgConnections` beyond the contract (tests/home/test_connection_stores.py): the secrets
are not in the clear in the database, the key stays outside it and another one is
refused with nothing changed, a ciphertext moved onto another row does not decrypt,
and the CLI on two workers' homes: connections made on one are seen, changed and
deleted on the other; `init --database` moves a home's files in; `db check` counts them.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import SECRET, TOKEN, connection

from exalate_tui.cli import main
from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home, StoreError
from exalate_tui.transport.pg_connections import PgConnections
from exalate_tui.transport.storage import (
    ENV,
    KEY_ENV,
    DatabaseKeyError,
    connection_store,
    key_path,
    make_key,
    open_home,
)


@pytest.fixture(autouse=True)
def no_database_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)


def worker(path: Path, url: str, key_from: Path | None = None) -> Home:
    """A worker's home on `url`: its own key, or a copy of `key_from`'s."""
    home = Home(path, opener=connection_store)
    home.save_instance(Instance(short_name="snow", database=url))
    if key_from is None:
        make_key(home)
    else:
        shutil.copy2(key_path(Home(key_from)), key_path(home))
    return home


def rows(url: str) -> list[tuple[Any, ...]]:
    """Everything the connection tables hold, as text: what a refusal must not change."""
    with psycopg.connect(url) as db:
        found = []
        for table in ("connections", "tombstones", "connection_store"):
            found += [
                (table, *row)
                for row in db.execute(f"SELECT * FROM exalate.{table} ORDER BY 1").fetchall()
            ]
        return found


def listing(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes (the node's lock file aside: an flock)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "node.lock"
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_secrets_are_not_in_the_clear_in_the_database_nor_the_key(
    tmp_path: Path, pg_url: str
) -> None:
    home = worker(tmp_path / "a", pg_url)
    try:
        saved = connection()
        home.save_connection(saved)
        home.bury_connection(home.load_connections().connections[0].id)
        home.save_connection(connection("second"))
    finally:
        home.close()
    key = key_path(home).read_text().strip()
    assert key_path(home).stat().st_mode & 0o777 == 0o600
    raw = base64.b64decode(key)
    with psycopg.connect(pg_url) as db:
        dumped = db.execute(
            "SELECT string_agg(t::text, ' ') FROM ("
            " SELECT id, name_key, document::text, encode(secrets, 'escape')"
            " FROM exalate.connections UNION ALL"
            " SELECT id, '', document::text, encode(secrets, 'escape')"
            " FROM exalate.tombstones) AS t"
        ).fetchone()[0]  # type: ignore[index]
        blobs = [
            bytes(b)
            for (b,) in db.execute(
                "SELECT secrets FROM exalate.connections UNION ALL "
                "SELECT secrets FROM exalate.tombstones UNION ALL "
                "SELECT key_check FROM exalate.connection_store"
            ).fetchall()
        ]
        document = db.execute(
            "SELECT document FROM exalate.connections WHERE name_key = 'second'"
        ).fetchone()[0]  # type: ignore[index]
    assert "snow_to_jira" in dumped and "second" in dumped  # the rows are there
    for clear in (SECRET, TOKEN, key):
        assert clear not in dumped
    for blob in blobs:
        assert SECRET.encode() not in blob and TOKEN.encode() not in blob and raw not in blob
    assert "secret" not in document and "token" not in document


def test_another_key_is_refused_before_anything_is_written(
    tmp_path: Path,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = worker(tmp_path / "a", pg_url)
    first.save_connection(connection())
    first.close()
    before = rows(pg_url)
    intruder = worker(tmp_path / "b", pg_url)  # a key of its own, not the first one's
    with pytest.raises(DatabaseKeyError, match="not the key the connections' secrets"):
        intruder.load_connections()
    # The CLI: exit 2, saying what to do, and nothing changed anywhere; the node does
    # not start serving.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    node = ["node", "--host", "127.0.0.1", "--port", port]
    files = listing(intruder.path)
    for argv in (node, ["connections", "--json"], ["connections", "delete", "x"]):
        code, out, err = run(capsys, "--home", str(intruder.path), *argv)
        assert code == 2, (argv, err)
        assert "not the key" in err and "database.key" in err and KEY_ENV in err
        assert "nothing was changed" in err
        assert listing(intruder.path) == files
    assert rows(pg_url) == before
    # With the first worker's key (from the environment, overriding its file): it works.
    monkeypatch.setenv(KEY_ENV, key_path(first).read_text().strip())
    code, out, err = run(capsys, "--home", str(intruder.path), "connections", "--json")
    assert code == 0, err
    assert [c["name"] for c in json.loads(out)["connections"]] == ["snow_to_jira"]


@pytest.mark.parametrize(
    "key, says",
    [
        (None, "copy database.key from a worker"),
        ("not base64!", "not a database key"),
        (base64.b64encode(b"short").decode(), "not a database key"),
    ],
)
def test_a_missing_or_malformed_key_is_bad_input_naming_the_fix(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str], key: str | None, says: str
) -> None:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow", database=pg_url))
    if key is not None:
        key_path(home).write_text(key)
    code, out, err = run(capsys, "--home", str(home.path), "connections")
    assert code == 2 and out == "" and says in err and KEY_ENV in err
    with psycopg.connect(pg_url) as db:  # not even the schema was made
        assert db.execute("SELECT to_regnamespace('exalate')").fetchone() == (None,)


def test_a_ciphertext_moved_onto_another_row_does_not_decrypt(tmp_path: Path, pg_url: str) -> None:
    home = worker(tmp_path / "a", pg_url)
    try:
        victim, attacker = connection("victim"), connection("attacker", secret="other")
        home.save_connection(victim)
        home.save_connection(attacker)
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute(
                "UPDATE exalate.connections SET secrets = "
                "(SELECT secrets FROM exalate.connections WHERE id = %s) WHERE id = %s",
                (victim.id, attacker.id),
            )
        other = worker(tmp_path / "b", pg_url, key_from=home.path)
        try:
            with pytest.raises(StoreError, match="do not decrypt with this key"):
                other.get_connection(attacker.id)
            loaded = other.load_connections()
            assert [c.name for c in loaded.connections] == ["victim"]
            assert attacker.id in str(loaded.problems[0])
        finally:
            other.close()
    finally:
        home.close()


def test_two_workers_homes_share_connections_through_the_cli(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b):
        assert run(
            capsys, "--home", str(path), "init", "--short-name", "snow",
            "--public-url", "https://snow.example.com", "--database", pg_url,
        )[0] == 0  # fmt: skip
    # b made a key of its own at init: the admin copies a's, as the README says.
    shutil.copy2(a / "database.key", b / "database.key")
    code, out, err = run(
        capsys, "--home", str(a), "initiate", "--no-url", "--mode", "basic",
        "--remote-name", "jira", "--json",
    )  # fmt: skip
    assert code == 0, err
    cid = json.loads(out)["connection"]["id"]
    assert not list((a / "connections").glob("*.toml"))  # not a file: a row
    code, out, err = run(capsys, "--home", str(b), "connections", "--json")
    assert code == 0, err
    assert [c["id"] for c in json.loads(out)["connections"]] == [cid]
    # The name is taken for b too.
    code, out, err = run(
        capsys, "--home", str(b), "initiate", "--no-url", "--mode", "basic",
        "--remote-name", "jira",
    )  # fmt: skip
    assert code == 2 and "snow_to_jira" in err and "already" in err
    assert run(capsys, "--home", str(b), "connections", "delete", cid[:8])[0] == 0
    code, out, err = run(capsys, "--home", str(a), "connections", "--json")
    assert json.loads(out)["connections"] == []
    code, out, err = run(capsys, "--home", str(a), "db", "check", "--json")
    assert code == 0, err
    checked = json.loads(out)
    assert checked["connections"] == 0 and checked["key"]["registered"] is True


def test_init_moves_a_homes_files_into_the_database_once_and_all_or_nothing(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow"))
    kept, buried = connection("kept"), connection("buried")
    home.save_connection(kept)
    home.save_connection(buried)
    home.bury_connection(buried.id)
    init = ("--home", str(home.path), "init", "--short-name", "snow", "--database")
    # A database that cannot be reached: nothing moved, nothing written, no key made.
    before = sorted(p.name for p in home.path.rglob("*"))
    code, out, err = run(capsys, *init, "postgresql://nobody@127.0.0.1:1/x")
    assert code == 1 and "cannot be reached" in err
    assert sorted(p.name for p in home.path.rglob("*")) == before
    assert home.load_instance().database is None  # type: ignore[union-attr]
    # A name the database has already (another worker's): refused, exit 2, nothing changed.
    other = worker(tmp_path / "other", pg_url)
    other.save_connection(connection("KEPT"))
    other.close()
    shutil.copy2(key_path(other), key_path(home))
    database_before = rows(pg_url)
    code, out, err = run(capsys, *init, pg_url)
    assert code == 2 and "'kept' is in" in err and "nothing was moved" in err
    assert rows(pg_url) == database_before
    assert home.load_instance().database is None  # type: ignore[union-attr]
    assert home.get_connection(kept.id) == kept
    opened = open_home(other.path)
    opened.delete_connection(opened.load_connections().connections[0].id)
    opened.close()
    # Now it moves, saying so; the files are gone, the database has them, secrets and all.
    code, out, err = run(capsys, *init, pg_url)
    assert code == 0, err
    assert "moved into the database: 1 connection(s) and 1 tombstone(s)" in out
    assert not list(home.connections_dir.glob("*.toml"))
    assert not list(home.tombstones_dir.glob("*.toml"))
    moved = open_home(home.path)
    try:
        assert moved.get_connection(kept.id) == kept
        assert moved.get_tombstone(buried.id) == buried
    finally:
        moved.close()
    # Run again (as after a move cut short before the files went): nothing to do.
    code, out, err = run(capsys, *init, pg_url)
    assert code == 0 and "moved" not in out


def test_a_worker_sees_another_workers_change_at_the_next_change_check(
    tmp_path: Path, pg_url: str
) -> None:
    """The node's path: `parsed` answers from memory only while the counter is unmoved;
    a connection with no secret yet is never answered from memory."""
    node = worker(tmp_path / "node", pg_url)
    admin = worker(tmp_path / "admin", pg_url, key_from=node.path)
    try:
        pending = connection("pending", secret=None)
        active = connection("active")
        admin.save_connection(pending)
        admin.save_connection(active)
        node.load_connections()
        assert node.parsed_connection(pending.id) is None  # no secret: read it
        assert node.parsed_connection(active.id) == active
        store = node.connections
        assert isinstance(store, PgConnections)
        admin.update_connection(active.id, lambda c: c.model_copy(update={"description": "d"}))
        store.stamp()
        assert node.parsed_connection(active.id) is None
        assert node.find_connection(active.id).description == "d"  # type: ignore[union-attr]
        store.stamp()
        assert node.parsed_connection(active.id) is None  # until read again...
        node.load_connections()  # ...as the supervisor does once the stamp moved
        assert node.parsed_connection(active.id).description == "d"  # type: ignore[union-attr]
        store.stamp()
        assert node.parsed_connection(active.id).description == "d"  # type: ignore[union-attr]
    finally:
        node.close()
        admin.close()


def test_a_key_file_others_can_read_is_warned_about(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home = worker(tmp_path / "a", pg_url)
    key_path(home).chmod(0o644)
    code, out, err = run(capsys, "--home", str(home.path), "connections")
    assert code == 0, err
    assert f"{key_path(home)} is readable by others (mode 644): run chmod 600" in err


def test_the_consoles_connections_tab_shows_a_refused_key_as_a_problem(
    tmp_path: Path, pg_url: str
) -> None:
    from screens.connections import read_home

    first = worker(tmp_path / "a", pg_url)
    first.save_connection(connection())
    first.close()
    intruder = worker(tmp_path / "b", pg_url)
    try:
        reading = read_home(intruder, None, None, [])
        (problem,) = reading.unreachable  # not a file the admin could fix or remove
        assert "not the key" in problem and reading.problems == [] and reading.connections == []
        shutil.copy2(key_path(first), key_path(intruder))
        reading = read_home(intruder, None, reading.signature, [])
        assert reading.unreachable == [] and reading.problems == []
        assert [c.name for c in reading.connections] == ["snow_to_jira"]
    finally:
        intruder.close()


def test_a_running_supervisor_sees_another_workers_change_at_once(
    tmp_path: Path, pg_url: str
) -> None:
    """As `test_supervisor.py`'s file changed by another process: no enqueue, no periodic
    rescan (60 s); an admin's change saved through another worker's home is enough."""
    import asyncio
    import time

    from test_supervisor import Supervisor, connect, run_supervisor, set_status, until

    from exalate_tui.domain.models import Status

    public, private, cid = connect(tmp_path)
    node = worker(private.home.path, pg_url)
    node.save_instance(Instance(short_name="jira", database=pg_url))
    node.save_connection(private.home.get_connection(cid))
    private.home.connection_path(cid).unlink()  # the row alone from now on
    admin = worker(tmp_path / "admin", pg_url, key_from=node.path)
    supervisor = Supervisor(node, private.state, transport=public.transport, rescan=60)
    took: list[float] = []

    async def body() -> None:
        await until(lambda: cid in supervisor.running, timeout=2)
        started = time.monotonic()
        await asyncio.to_thread(set_status, admin, cid, Status.DEACTIVATED)
        await until(lambda: cid not in supervisor.running, timeout=2)
        took.append(time.monotonic() - started)
        public.state.enqueue(cid, "ping")
        await asyncio.to_thread(set_status, admin, cid, Status.ACTIVE)
        await until(lambda: private.state.last_applied(cid) == 2, timeout=2)

    try:
        run_supervisor(supervisor, body)
    finally:
        node.close()
        admin.close()
    print(f"another worker's deactivate stopped the link {took[0] * 1000:.0f} ms later")
