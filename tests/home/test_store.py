"""The home folder: atomic private files, broken files reported and kept, the lock, id lookup."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home import store
from exalate_tui.home.store import Home, NameTaken, NotFound, StoreError


def connection(name: str = "snow_to_jira", **fields: object) -> Connection:
    values: dict[str, object] = {
        "name": name,
        "mode": Mode.SCRIPT,
        "topology": Topology.PUBLIC_PRIVATE,
        "role": Role.INITIATOR,
        "local_name": "snow",
        "remote_name": "jira",
        "token_hash": "0" * 64,
    }
    values.update(fields)
    return Connection.model_validate(values)


def listing(home: Home) -> dict[str, bytes]:
    """Every file under the home with its bytes: what a failed write must not change."""
    return {
        str(path.relative_to(home.path)): path.read_bytes()
        for path in sorted(home.path.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


# -- files and modes ---------------------------------------------------------------


def test_the_home_is_0700_and_its_files_0600_whatever_the_umask(home: Home) -> None:
    old = os.umask(0)
    try:
        home.save_instance(Instance(short_name="snow"))
        saved = connection()
        home.save_connection(saved)
    finally:
        os.umask(old)
    assert home.path.stat().st_mode & 0o777 == 0o700
    assert home.connections_dir.stat().st_mode & 0o777 == 0o700
    assert home.instance_path.stat().st_mode & 0o777 == 0o600
    assert home.connection_path(saved.id).stat().st_mode & 0o777 == 0o600


def test_a_replaced_file_stays_0600(home: Home) -> None:
    saved = connection()
    home.save_connection(saved)
    home.connection_path(saved.id).chmod(0o644)
    home.save_connection(saved.model_copy(update={"description": "changed"}))
    assert home.connection_path(saved.id).stat().st_mode & 0o777 == 0o600


def test_writes_leave_no_temporary_file(home: Home) -> None:
    home.save_instance(Instance(short_name="snow"))
    saved = connection()
    for n in range(5):
        home.save_connection(saved.model_copy(update={"description": f"v{n}"}))
    home.update_connection(saved.id, lambda c: c.model_copy(update={"description": "last"}))
    names = sorted(p.name for p in home.path.rglob("*") if p.is_file())
    assert names == [".lock", f"{saved.id}.toml", "instance.toml"]


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_nothing(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = connection(description="before")
    home.save_connection(saved)
    before = listing(home)

    def fail_midway(data: object, file: object) -> None:
        file.write(b'name = "half')  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tomli_w, "dump", fail_midway)
    with pytest.raises(OSError, match="No space left"):
        home.save_connection(saved.model_copy(update={"description": "after"}))
    assert listing(home) == before
    assert home.get_connection(saved.id).description == "before"


def test_a_connection_round_trips_with_its_secrets(home: Home) -> None:
    created = datetime(2024, 5, 1, 12, tzinfo=UTC)
    saved = connection(
        description="Incidents, both ways",
        remote_url="https://jira.example.com",
        created=created,
        token="T" * 43,
        token_expires=created + timedelta(days=7),
        secret="s3cr3t",
        status=Status.ACTIVE,
    )
    home.save_connection(saved)
    text = home.connection_path(saved.id).read_text()
    assert 'secret = "s3cr3t"' in text  # the file holds it: that is why it is 0600
    assert "None" not in text  # TOML has no null: absent keys are left out
    assert home.get_connection(saved.id) == saved


def test_a_parsed_connection_is_given_only_while_its_file_is_unchanged(home: Home) -> None:
    """What the node checks a poll's signature with, without a thread hop: never a parse
    of a file that changed since (a new secret, a deactivation)."""
    saved = connection(secret="one", status=Status.ACTIVE)
    home.save_connection(saved)
    assert home.parsed_connection(saved.id) is None  # never parsed yet
    path = home.connection_path(saved.id)
    old = time.time() - 60
    os.utime(path, (old, old))  # settled: a parse of it may be kept
    assert home.get_connection(saved.id) == saved
    parsed = home.parsed_connection(saved.id)
    assert parsed == saved and parsed is not home.parsed_connection(saved.id)  # copies
    home.save_connection(saved.model_copy(update={"status": Status.DEACTIVATED}))
    assert home.parsed_connection(saved.id) is None
    path.unlink()
    assert home.parsed_connection(saved.id) is None


def test_no_instance_yet_is_none(home: Home) -> None:
    assert home.load_instance() is None
    assert not home.path.exists()  # reading creates nothing


def test_the_instance_round_trips(home: Home) -> None:
    instance = Instance(short_name="snow", public_url="https://snow.example.com")
    home.save_instance(instance)
    assert home.load_instance() == instance
    assert tomllib.loads(home.instance_path.read_text())["short_name"] == "snow"


def test_listing_a_home_that_does_not_exist_creates_nothing(home: Home) -> None:
    loaded = home.load_connections()
    assert loaded.connections == [] and loaded.problems == []
    assert not home.path.exists()


def test_connections_list_oldest_first(home: Home) -> None:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    for name, days in (("b", 2), ("a", 2), ("c", 0), ("d", 1)):
        home.save_connection(connection(name, created=start + timedelta(days=days)))
    assert [c.name for c in home.load_connections().connections] == ["c", "d", "a", "b"]


# -- broken files --------------------------------------------------------------------


def test_a_connection_file_that_does_not_parse_is_reported_and_the_others_load(
    home: Home,
) -> None:
    good = [connection("one"), connection("two")]
    for saved in good:
        home.save_connection(saved)
    broken = home.connections_dir / "0000dead-0000-4000-8000-000000000000.toml"
    broken.write_text('name = "x"\nmode = \n')
    loaded = home.load_connections()
    assert sorted(c.name for c in loaded.connections) == ["one", "two"]
    [problem] = loaded.problems
    assert problem.path == broken
    assert problem.line == 2
    assert str(problem).startswith(f"{broken}:2: is not valid TOML (")
    assert str(problem).endswith("; fix or remove the file")


def test_a_broken_connection_file_is_never_overwritten(home: Home) -> None:
    saved = connection()
    home.save_connection(saved)
    path = home.connection_path(saved.id)
    path.write_text("name = 'unterminated\n")
    before = path.read_bytes()
    with pytest.raises(StoreError) as caught:
        home.save_connection(saved)
    assert caught.value.path == path and caught.value.line == 1
    with pytest.raises(StoreError):
        home.update_connection(saved.id, lambda c: c)
    with pytest.raises(StoreError):
        home.delete_connection(saved.id)
    assert path.read_bytes() == before


def test_a_connection_file_with_a_bad_value_names_the_key(home: Home) -> None:
    saved = connection()
    home.save_connection(saved)
    path = home.connection_path(saved.id)
    path.write_text(path.read_text().replace('mode = "script"', 'mode = "groovy"'))
    [problem] = home.load_connections().problems
    assert problem.path == path
    assert "key 'mode':" in str(problem)
    assert str(problem).endswith("; fix or remove the file")


def test_a_connection_file_that_is_not_utf8_is_reported(home: Home) -> None:
    home.ensure()
    path = home.connections_dir / "binary.toml"
    path.write_bytes(b"name = '\xff\xfe'\n")
    [problem] = home.load_connections().problems
    assert str(problem) == f"{path}: is not UTF-8 text; fix or remove the file"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('short_name = "snow"\npublic_url = https://x\n', 2, "is not valid TOML ("),
        ('short_name = "snow now"\n', None, "key 'short_name':"),
        ('short_name = "snow"\nport = 1\n', None, "key 'port': Extra inputs"),
    ],
)
def test_a_broken_instance_file_is_reported_and_never_overwritten(
    home: Home, text: str, line: int | None, reason: str
) -> None:
    home.ensure()
    home.instance_path.write_text(text)
    with pytest.raises(StoreError) as caught:
        home.load_instance()
    assert caught.value.path == home.instance_path
    assert caught.value.line == line
    assert reason in str(caught.value)
    with pytest.raises(StoreError):
        home.save_instance(Instance(short_name="snow"))
    assert home.instance_path.read_text() == text


# -- names ----------------------------------------------------------------------


def test_a_name_is_taken_whatever_its_case(home: Home) -> None:
    saved = connection("Snow_to_Jira")
    home.save_connection(saved)
    assert home.name_taken("snow_to_jira")
    assert home.name_taken("SNOW_TO_JIRA")
    assert not home.name_taken("snow_to_jira", except_id=saved.id)
    with pytest.raises(NameTaken, match="'SNOW_TO_JIRA' already exists"):
        home.save_connection(connection("SNOW_TO_JIRA"))
    home.save_connection(saved.model_copy(update={"description": "same id, same name"}))
    assert len(home.load_connections().connections) == 1


# -- the lock: two writers lose nothing -------------------------------------------------


def test_concurrent_saves_from_threads_lose_nothing(home: Home) -> None:
    def save(worker: int) -> None:
        for n in range(15):
            home.save_connection(connection(f"t{worker}-{n}"))

    threads = [threading.Thread(target=save, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loaded = home.load_connections()
    assert loaded.problems == []
    assert len(loaded.connections) == 6 * 15


def _blocked_on(path: Path) -> bool:
    """Whether some process waits for the flock on `path` (the kernel's /proc/locks)."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[6].endswith(f":{inode}"):
            return True
    return False


def _count_up(path: str, cid: str, times: int, inside: Any, done: Any) -> None:
    """Add 1 to the counter `times` times, never alone: each read-modify-write waits,
    between its read and its write, until the other writer is inside its own
    read-modify-write too, or waits for the home lock (or has finished).

    So the two writers overlap on every update: with the lock one of them waits at
    the lock; without it both read the same value and one increment is lost.
    """
    worker_home = Home(Path(path))
    lock_file = worker_home.path / ".lock"

    def bump(current: Connection) -> Connection:
        with inside.get_lock():
            inside.value += 1
        while inside.value < 2 and not done.value and not _blocked_on(lock_file):
            time.sleep(0.001)
        current.description = str(int(current.description or "0") + 1)
        with inside.get_lock():
            inside.value -= 1
        return current

    for _ in range(times):
        worker_home.update_connection(cid, bump)
    with done.get_lock():
        done.value += 1


def _save_many(path: str, prefix: str, count: int) -> None:
    worker_home = Home(Path(path))
    for n in range(count):
        worker_home.save_connection(connection(f"{prefix}-{n}"))


def test_concurrent_updates_from_two_processes_lose_nothing(home: Home) -> None:
    counter = connection("counter", description="0")
    home.save_connection(counter)
    context = multiprocessing.get_context("spawn")
    inside, done = context.Value("i", 0), context.Value("i", 0)
    workers = [
        context.Process(target=_count_up, args=(str(home.path), counter.id, 40, inside, done)),
        context.Process(target=_count_up, args=(str(home.path), counter.id, 40, inside, done)),
        context.Process(target=_save_many, args=(str(home.path), "p1", 20)),
        context.Process(target=_save_many, args=(str(home.path), "p2", 20)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    loaded = home.load_connections()
    assert loaded.problems == []
    assert home.get_connection(counter.id).description == "80"
    assert len(loaded.connections) == 1 + 2 * 20


def test_the_lock_is_exclusive(home: Home) -> None:
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def hold() -> None:
        with home.lock():
            inside.set()
            release.wait(5)
            order.append("first")

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(5)
    waiter = threading.Thread(target=lambda: home.save_connection(connection()))
    waiter.start()
    # Blocked while the other holds the lock: the kernel lists it as waiting.
    deadline = time.monotonic() + 10
    while not _blocked_on(home.path / ".lock"):
        assert waiter.is_alive() and time.monotonic() < deadline, "the save did not wait"
        time.sleep(0.001)
    assert not home.load_connections().connections
    release.set()
    holder.join()
    waiter.join(5)
    order.append("second")
    assert order == ["first", "second"]
    assert len(home.load_connections().connections) == 1


# -- finding a connection by id -------------------------------------------------------


def test_a_connection_is_found_by_its_id_or_a_unique_prefix(home: Home) -> None:
    first = connection("a", id="abcd1234-0000-4000-8000-000000000001")
    second = connection("b", id="abcd5678-0000-4000-8000-000000000002")
    for saved in (first, second):
        home.save_connection(saved)
    assert home.get_connection(first.id) == first
    assert home.get_connection("abcd1") == first
    assert home.get_connection("abcd5678") == second
    with pytest.raises(NotFound, match="'abcd' matches 2 connections: give more of the id"):
        home.get_connection("abcd")
    with pytest.raises(NotFound, match="no connection with id 'ffff'"):
        home.get_connection("ffff")
    with pytest.raises(NotFound, match="no connection id given"):
        home.get_connection("")


@pytest.mark.parametrize("cid", ["*", "?", "[a-z]*", "../instance", "/etc/passwd", "a*"])
def test_an_id_that_is_a_path_or_a_pattern_finds_nothing(home: Home, cid: str) -> None:
    home.save_instance(Instance(short_name="snow"))
    home.save_connection(connection(id="abcd1234-0000-4000-8000-000000000001"))
    with pytest.raises(NotFound, match="no connection with id"):
        home.get_connection(cid)
    with pytest.raises(NotFound):
        home.delete_connection(cid)
    assert len(home.load_connections().connections) == 1


def test_delete_by_prefix_removes_only_that_file(home: Home) -> None:
    keep = connection("keep", id="11111111-0000-4000-8000-000000000001")
    gone = connection("gone", id="22222222-0000-4000-8000-000000000002")
    for saved in (keep, gone):
        home.save_connection(saved)
    assert home.delete_connection("2222") == gone
    assert not home.connection_path(gone.id).exists()
    assert [c.name for c in home.load_connections().connections] == ["keep"]
    with pytest.raises(NotFound):
        home.delete_connection(gone.id)


def test_update_changes_one_connection_under_the_lock(home: Home) -> None:
    saved = connection()
    home.save_connection(saved)

    def activate(current: Connection) -> None:
        current.status = Status.ACTIVE  # changed in place: returning None keeps it

    updated = home.update_connection(saved.id[:6], activate)
    assert updated.status is Status.ACTIVE
    assert home.get_connection(saved.id).status is Status.ACTIVE


# -- where the home is ----------------------------------------------------------------


def test_the_home_comes_from_the_environment_then_platformdirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(store.HOME_ENV, str(tmp_path / "env-home"))
    assert store.default_home() == tmp_path / "env-home"
    assert Home.resolve().path == tmp_path / "env-home"
    assert Home.resolve(tmp_path / "flag-home").path == tmp_path / "flag-home"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Home.resolve("~/x").path == tmp_path / "x"
    monkeypatch.delenv(store.HOME_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert store.default_home() == tmp_path / "config" / "exalate-tui"
