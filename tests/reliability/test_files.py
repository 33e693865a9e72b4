"""Promise 5: files. Private modes, no torn writes, no lost updates between processes.

RELIABILITY_SECONDS sets how long the two-process churn runs (CI default 8 s;
the full run in docs/reliability.md uses 60).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Topology
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


def _rewrite_forever(path: str, cid: str) -> None:
    home = Home(Path(path))
    for n in itertools.count():
        description = "x" * (n % 997)
        home.update_connection(
            cid, lambda c, d=description: c.model_copy(update={"description": d})
        )


@pytest.mark.parametrize("run", range(3))
def test_kill_9_mid_write_leaves_the_old_or_the_new_file(tmp_path: Path, run: int) -> None:
    home = Home(tmp_path / "home")
    connection = _connection("a")
    home.save_connection(connection)
    child = multiprocessing.get_context("spawn").Process(
        target=_rewrite_forever, args=(str(home.path), connection.id)
    )
    child.start()
    time.sleep(0.6 + random.random() * 0.4)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    survivor = home.get_connection(connection.id)  # parses: not torn
    assert set(survivor.description) <= {"x"}
    assert list(home.connections_dir.glob("*.toml")) == [home.connection_path(connection.id)]


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
