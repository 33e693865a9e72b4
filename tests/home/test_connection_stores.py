"""The connection-store contract (`home.store.ConnectionStore`): what every store of a home's
connections keeps, as the CLI, the node, the lifecycle and the sync engine rely on it.
As the streams' contract, one suite run on each store: `FileConnections` (the files of
the home) and `PgConnections` (PostgreSQL, the home's database key).

Each test gets `stores`: `open()` makes another handle on one new, empty store (for
files, another `Home` of the same folder; for PostgreSQL, another worker: its own home
folder with the same instance.toml's database and the same key), `damage(home, cid)`
makes one stored connection unreadable the store's own way.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import SECRET, TOKEN, connection

from exalate_tui.domain.models import Connection, Instance
from exalate_tui.home.store import FileConnections, Home, NameTaken, NotFound, StoreError
from exalate_tui.transport.storage import ENV, KEY_ENV, connection_store, make_key


@dataclass
class Stores:
    kind: str
    open: Callable[[], Home]
    damage: Callable[[Home, str], None]
    opened: list[Home] = field(default_factory=list)


def _damage_file(home: Home, cid: str) -> None:
    home.connection_path(cid).write_text('name = "unterminated\n')


def _damage_row(url: str) -> Callable[[Home, str], None]:
    def damage(home: Home, cid: str) -> None:
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute(
                'UPDATE exalate.connections SET document = document || \'{"mode": "fancy"}\' '
                "WHERE id = %s",
                (cid,),
            )

    return damage


@pytest.fixture(params=["files", "postgresql"])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stores]:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    opened: list[Home] = []
    if request.param == "files":

        def open_files() -> Home:
            home = Home(tmp_path / "home")
            opened.append(home)
            return home

        made = Stores("files", open_files, _damage_file, opened)
    else:
        url: str = request.getfixturevalue("pg_url")
        first = tmp_path / "worker-0"

        def open_worker() -> Home:
            home = Home(tmp_path / f"worker-{len(opened)}", opener=connection_store)
            home.save_instance(Instance(short_name="snow", database=url))
            if home.path == first:
                assert make_key(home) is not None
            else:
                shutil.copy2(first / "database.key", home.path / "database.key")
            opened.append(home)
            return home

        made = Stores("postgresql", open_worker, _damage_row(url), opened)
    try:
        yield made
    finally:
        for home in opened:
            home.close()


def test_each_kind_is_the_store_it_says(stores: Stores) -> None:
    home = stores.open()
    expected = "FileConnections" if stores.kind == "files" else "PgConnections"
    assert type(home.connections).__name__ == expected


def test_a_connection_round_trips_with_its_secrets_and_lists_oldest_first(
    stores: Stores,
) -> None:
    home = stores.open()
    assert home.load_connections().connections == []
    later = connection("b_later", created="2024-05-02T00:00:00Z", triggers=["status=1"])
    earlier = connection("a_earlier", created="2024-05-01T00:00:00Z", secret=None)
    home.save_connection(later)
    home.save_connection(earlier)
    other = stores.open()
    for reader in (home, other):
        loaded = reader.load_connections()
        assert loaded.problems == []
        assert [c.name for c in loaded.connections] == ["a_earlier", "b_later"]
        got = reader.get_connection(later.id)
        assert got == later
        assert got.secret is not None and got.secret.get_secret_value() == SECRET
        assert got.token is not None and got.token.get_secret_value() == TOKEN
        assert reader.get_connection(earlier.id).secret is None
        assert reader.find_connection(later.id) == later


def test_ids_and_unique_prefixes_find_it_and_nothing_else_does(stores: Stores) -> None:
    home = stores.open()
    one = connection("one", id="aaaa1111-0000-4000-8000-000000000001")
    two = connection("two", id="aaaa2222-0000-4000-8000-000000000002")
    home.save_connection(one)
    home.save_connection(two)
    assert home.get_connection("aaaa1").name == "one"
    assert home.get_connection(two.id).name == "two"
    with pytest.raises(NotFound, match="matches 2 connections"):
        home.get_connection("aaaa")
    for bad in ("", "bbbb", "../instance", "*", "aaaa%", "aaaa_"):
        with pytest.raises(NotFound):
            home.get_connection(bad)
    # find: exactly an id, never a prefix.
    assert home.find_connection("aaaa1") is None
    assert home.find_connection("*") is None
    assert home.find_connection(one.id) == one


def test_a_name_is_taken_once_whatever_its_case(stores: Stores) -> None:
    home = stores.open()
    saved = connection("snow_to_jira")
    home.save_connection(saved)
    other = stores.open()
    assert other.name_taken("SNOW_TO_JIRA")
    assert not other.name_taken("snow_to_jira", except_id=saved.id)
    with pytest.raises(NameTaken):
        other.save_connection(connection("Snow_To_Jira"))
    # Saving the same connection again is no clash with itself.
    other.save_connection(saved.model_copy(update={"description": "again"}))
    second = connection("second")
    other.save_connection(second)

    def rename(c: Connection) -> None:
        c.name = "SNOW_to_jira"

    with pytest.raises(NameTaken):
        home.update_connection(second.id, rename)
    assert home.get_connection(second.id).name == "second"
    assert {c.name for c in home.load_connections().connections} == {"snow_to_jira", "second"}


def test_racing_saves_of_one_name_from_two_workers_keep_exactly_one(stores: Stores) -> None:
    homes = [stores.open() for _ in range(4)]
    wanted = [connection("the_name") for _ in homes]
    outcomes: list[str] = []
    start = threading.Barrier(len(homes))

    def save(home: Home, c: Connection) -> None:
        start.wait()
        try:
            home.save_connection(c)
            outcomes.append("saved")
        except NameTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=save, args=pair) for pair in zip(homes, wanted, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["saved", "taken", "taken", "taken"]
    assert len(homes[0].load_connections().connections) == 1


def test_updates_from_several_workers_at_once_lose_nothing(stores: Stores) -> None:
    homes = [stores.open() for _ in range(3)]
    saved = connection("counted", description="")
    homes[0].save_connection(saved)

    def add(c: Connection) -> None:
        c.description += "x"

    def worker(home: Home) -> None:
        for _ in range(15):
            home.update_connection(saved.id[:8], add)

    threads = [threading.Thread(target=worker, args=(home,)) for home in homes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert homes[1].get_connection(saved.id).description == "x" * 45


def test_an_update_that_fails_changes_nothing(stores: Stores) -> None:
    home = stores.open()
    saved = connection("kept", description="before")
    home.save_connection(saved)

    def fail(c: Connection) -> None:
        c.description = "after"
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        home.update_connection(saved.id, fail)
    assert stores.open().get_connection(saved.id).description == "before"
    with pytest.raises(NotFound):
        home.update_connection("ffff", fail)


def test_delete_and_bury_and_the_tombstones(stores: Stores) -> None:
    home = stores.open()
    gone, buried, kept = connection("gone"), connection("buried"), connection("kept")
    for c in (gone, buried, kept):
        home.save_connection(c)
    assert home.delete_connection(gone.id[:13]).id == gone.id
    with pytest.raises(NotFound):
        home.get_connection(gone.id)
    with pytest.raises(NotFound):
        home.delete_connection(gone.id)
    before = time.time()
    assert home.bury_connection(buried.id) == buried
    other = stores.open()
    assert [c.name for c in other.load_connections().connections] == ["kept"]
    assert other.find_connection(buried.id) is None
    tomb = other.get_tombstone(buried.id)
    assert tomb == buried and tomb.secret is not None
    assert tomb.secret.get_secret_value() == SECRET
    assert other.get_tombstone(buried.id[:8]) is None  # no prefixes
    assert other.get_tombstone(gone.id) is None
    ((cid, when),) = other.tombstones()
    assert cid == buried.id and before - 1 <= when <= time.time() + 1
    # A name buried is free again.
    assert not other.name_taken("buried")
    other.drop_tombstone(buried.id)
    assert home.tombstones() == [] and home.get_tombstone(buried.id) is None
    home.drop_tombstone("*")  # nothing, no error


def test_the_stamp_moves_with_every_write_and_the_signature_too(stores: Stores) -> None:
    home = stores.open()
    other = stores.open()
    saved, second = connection("stamped"), connection("second")
    stamps = [other.connections.stamp()]
    signatures = [other.connections.signature()]

    def wrote() -> None:
        stamps.append(other.connections.stamp())
        signatures.append(other.connections.signature())
        assert stamps[-1] != stamps[-2]
        assert signatures[-1] != signatures[-2]

    # A file's mtime moves with the file system's clock: a tick apart, so each moves it.
    tick = 0.05 if stores.kind == "files" else 0

    def describe(c: Connection) -> None:
        c.description = "d"

    for write in (
        lambda: home.save_connection(saved),
        lambda: home.update_connection(saved.id, describe),
        lambda: home.save_connection(second),
        lambda: home.bury_connection(saved.id),
        lambda: home.delete_connection(second.id),
    ):
        time.sleep(tick)
        write()
        wrote()
    time.sleep(1.1 if stores.kind == "files" else 0)
    assert other.connections.settled(other.connections.stamp())


def test_a_worker_never_takes_another_workers_change_for_its_cached_copy(stores: Stores) -> None:
    """The node's no-I/O path (`parsed`): after the change check, the old copy is never
    given again; the new one is read."""
    node, admin = stores.open(), stores.open()
    saved = connection("cached", description="old")
    node.save_connection(saved)
    node.load_connections()
    node.connections.stamp()
    time.sleep(0.06)  # a file read in its first 50 ms is not cached
    node.load_connections()
    found = node.parsed_connection(saved.id)
    assert found is None or found.description == "old"
    admin.update_connection(saved.id, lambda c: c.model_copy(update={"description": "new"}))
    node.connections.stamp()  # the supervisor's look, every 0.1 s on a node
    cached = node.parsed_connection(saved.id)
    assert cached is None or cached.description == "new"
    assert node.find_connection(saved.id).description == "new"  # type: ignore[union-attr]
    assert [c.description for c in node.load_connections().connections] == ["new"]
    admin.delete_connection(saved.id)
    node.connections.stamp()
    assert node.parsed_connection(saved.id) is None
    assert node.find_connection(saved.id) is None
    assert node.load_connections().connections == []


def test_a_connection_that_cannot_be_read_is_a_problem_and_the_others_load(
    stores: Stores,
) -> None:
    home = stores.open()
    good, bad = connection("good"), connection("bad")
    home.save_connection(good)
    home.save_connection(bad)
    stores.damage(home, bad.id)
    loaded = stores.open().load_connections()
    assert [c.name for c in loaded.connections] == ["good"]
    (problem,) = loaded.problems
    assert bad.id in str(problem) and "fix or" in str(problem)
    with pytest.raises(StoreError):
        stores.open().get_connection(bad.id)


def test_files_are_the_default_store_of_a_home() -> None:
    assert isinstance(Home(Path("/nonexistent")).connections, FileConnections)
