"""Promise 5: files. Private modes, no torn writes, no lost updates between processes.

RELIABILITY_SECONDS sets how long the two-process churn runs (CI default 8 s;
the full run in docs/reliability.md uses 60).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.connection import Connection as Connection_
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import tomli_w

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Topology
from exalate_tui.home import store
from exalate_tui.home.store import Home, NotFound, StoreError

SECONDS = float(os.environ.get("RELIABILITY_SECONDS", "8"))


def _connection(name: str, description: str = "") -> Connection:
    return Connection(
        name=name,
        description=description,
        mode=Mode.SCRIPT,
        topology=Topology.PUBLIC_PRIVATE,
        role=Role.INITIATOR,
        local_name="snow",
        remote_name="jira",
    )


def test_home_and_secret_files_are_private(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow"))
    connection = _connection("a")
    home.save_connection(connection)
    assert home.path.stat().st_mode & 0o777 == 0o700
    assert home.connections_dir.stat().st_mode & 0o777 == 0o700
    assert home.connection_path(connection.id).stat().st_mode & 0o777 == 0o600
    assert home.instance_path.stat().st_mode & 0o777 == 0o600
    assert home.permission_warnings() == []


def test_looser_modes_are_warned_about_with_the_fix(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    connection = _connection("a")
    home.save_connection(connection)
    home.path.chmod(0o755)
    home.connection_path(connection.id).chmod(0o644)
    warnings = home.permission_warnings()
    assert len(warnings) == 2
    assert f"run chmod 700 {home.path}" in warnings[0]
    assert f"run chmod 600 {home.connection_path(connection.id)}" in warnings[1]


def _write_until_killed(path: str, cid: str, point: str, ready: Connection_) -> None:
    """Rewrite one connection, stopping at `point` inside the atomic write until killed.

    The hooks replace what `_write_atomic` calls (tomli_w.dump, os.replace) in this
    child process only, so the parent's SIGKILL lands exactly there, and `ready`
    tells the parent it has.
    """

    def stop() -> None:
        ready.send(point)
        while True:
            time.sleep(60)

    real_replace = os.replace

    def torn_dump(data: dict[str, Any], file: BinaryIO) -> None:
        encoded = tomli_w.dumps(data).encode()
        file.write(encoded[: len(encoded) // 2])
        file.flush()
        os.fsync(file.fileno())
        stop()

    def replace(source: str, target: str) -> None:
        if point == "after the rename":
            real_replace(source, target)
        stop()

    if point == "mid-dump":
        tomli_w.dump = torn_dump  # type: ignore[assignment]
    else:
        os.replace = replace  # type: ignore[assignment]
    Home(Path(path)).update_connection(cid, lambda c: c.model_copy(update={"description": "new"}))


@pytest.mark.parametrize("point", ["mid-dump", "before the rename", "after the rename"])
def test_kill_9_mid_write_leaves_the_old_or_the_new_file(tmp_path: Path, point: str) -> None:
    home = Home(tmp_path / "home")
    connection = _connection("a", description="old")
    home.save_connection(connection)
    path = home.connection_path(connection.id)
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_write_until_killed, args=(str(home.path), connection.id, point, sender)
    )
    child.start()
    sender.close()  # the child holds the only writing end: if it dies, the wait ends
    # The child says where it stopped; a write that never gets there fails here.
    try:
        reached = receiver.recv() if receiver.poll(60) else None
    except EOFError:
        reached = None
    assert reached == point, f"the child never reached {point}"
    child.kill()  # SIGKILL
    child.join()
    temps = list(home.connections_dir.glob(".*.tmp"))
    if point == "mid-dump":
        # Killed inside the write: half a file is on disk, but only under its temp name.
        (temp,) = temps
        assert 0 < temp.stat().st_size < len(tomli_w.dumps(store._dump(connection)))
    survivor = home.get_connection(connection.id)  # parses: not torn
    assert survivor.description == ("new" if point == "after the rename" else "old")
    assert list(home.connections_dir.glob("*.toml")) == [path]
    # The dead writer's lock is gone with it.
    home.update_connection(connection.id, lambda c: c.model_copy(update={"description": "x"}))
    assert home.get_connection(connection.id).description == "x"


def _churn(path: str, tag: str, seconds: float, queue: multiprocessing.Queue) -> None:
    """Create, edit and delete connections; report the names that must survive."""
    home = Home(Path(path))
    kept: list[str] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        connection = _connection(f"{tag}-{n}")
        home.save_connection(connection)
        home.update_connection(connection.id, lambda c: c.model_copy(update={"description": tag}))
        if n % 3 == 0:
            home.delete_connection(connection.id)
        else:
            kept.append(connection.name)
    queue.put(kept)


def test_two_processes_churning_lose_and_corrupt_nothing(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    workers = [
        context.Process(target=_churn, args=(str(home.path), tag, SECONDS, results))
        for tag in ("left", "right")
    ]
    for worker in workers:
        worker.start()
    expected = sorted(results.get(timeout=SECONDS + 60) + results.get(timeout=SECONDS + 60))
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    loaded = home.load_connections()
    assert loaded.problems == []
    assert sorted(c.name for c in loaded.connections) == expected
    assert all(c.description == c.name.split("-")[0] for c in loaded.connections)
    assert not list(home.connections_dir.glob(".*.tmp"))


def test_a_damaged_connection_file_is_named_and_never_overwritten(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    connection = _connection("a")
    home.save_connection(connection)
    path = home.connection_path(connection.id)
    path.write_text('name = "a"\nmode = \n')
    damaged = path.read_bytes()
    with pytest.raises(StoreError) as problem:
        home.save_connection(connection)
    assert str(problem.value).startswith(f"{path}:2: ")
    assert "fix or remove the file" in str(problem.value)
    with pytest.raises(StoreError):
        home.update_connection(connection.id, lambda c: c)
    assert path.read_bytes() == damaged
    with pytest.raises(NotFound):
        home.get_connection("no-such-id")


def test_a_damaged_instance_file_is_named_and_never_overwritten(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    home.instance_path.write_bytes(b"\xff\xfe short_name")
    with pytest.raises(StoreError, match="instance.toml: is not UTF-8"):
        home.load_instance()
    with pytest.raises(StoreError):
        home.save_instance(Instance(short_name="snow"))
    assert home.instance_path.read_bytes() == b"\xff\xfe short_name"
