"""`exalate-tui node start|stop|status|install-service`, run as an admin runs them: real
processes on 127.0.0.1 at free ports, a home each, judged by exit code, output and files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import free_port

from exalate_tui.cli.node import unit_name
from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home, NodeRecord

pytestmark = pytest.mark.e2e


def run(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "EXALATE_TUI_HOME"}
    result = subprocess.run(
        [sys.executable, "-m", "exalate_tui.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env=environment | (env or {}),
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """snow's home, listening on a free port; any node it still runs is killed after."""
    path = tmp_path / "snow"
    Home(path).save_instance(Instance(short_name="snow", listen_port=free_port()))
    yield path
    record = Home(path).load_node_record() if (path / "node.pid").exists() else None
    if record is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)


def status(home: Path) -> dict[str, object]:
    result = run(home, "node", "status", "--json")
    document: dict[str, object] = json.loads(result.stdout)["node"]
    assert result.returncode == (0 if document["running"] and document["answers"] else 1)
    return document


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, its parent gone and not reaping) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"


def test_start_status_stop(home: Path) -> None:
    port = Home(home).load_instance().listen_port  # type: ignore[union-attr]
    before = time.monotonic()
    started = run(home, "node", "start")
    took = time.monotonic() - before
    assert started.returncode == 0, started.stderr
    assert f"listening on http://127.0.0.1:{port}" in started.stdout
    assert str(home / "node.log") in started.stdout and started.stderr == ""
    assert took < 20

    # The node outlives the command that started it, and answers on its address.
    shown = status(home)
    assert shown["running"] is True and shown["answers"] is True
    assert shown["url"] == f"http://127.0.0.1:{port}" and shown["short_name"] == "snow"
    pid = shown["pid"]
    assert isinstance(pid, int) and alive(pid)
    assert isinstance(shown["uptime"], float) and shown["version"] == "0.1.0"
    for name in ("node.pid", "node.log"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    text = run(home, "node", "status")
    assert text.returncode == 0
    assert f"pid       {pid}" in text.stdout and "answers   yes" in text.stdout

    again = run(home, "node", "start")
    assert again.returncode == 0
    assert f"already runs (pid {pid})" in again.stdout and "nothing started" in again.stdout
    assert status(home)["pid"] == pid

    # One node per home: a foreground node is refused, naming the one that runs.
    second = run(home, "node", "--port", str(free_port()))
    assert second.returncode == 1
    assert f"a node already serves {home} (pid {pid}" in second.stderr
    assert "node stop" in second.stderr

    stopped = run(home, "node", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"Stopped the node (pid {pid}, http://127.0.0.1:{port}).\n"
    assert not alive(pid)
    assert not (home / "node.pid").exists()
    assert "node stopped" in (home / "node.log").read_text()
    assert status(home) | {"stale_pid_removed": False} == {
        "running": False,
        "pid": None,
        "url": None,
        "started": None,
        "uptime": None,
        "version": None,
        "answers": False,
        "short_name": None,
        "stale_pid_removed": False,
    }
    assert run(home, "node", "status").stdout.startswith("node: not running")
    nothing = run(home, "node", "stop")
    assert nothing.returncode == 0 and "nothing to stop" in nothing.stdout


def test_a_start_that_fails_shows_the_logs_last_lines(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(home, "node", "start", "--port", str(port))
    assert result.returncode == 1
    assert "the node exited at once" in result.stderr
    assert "Address already in use" in result.stderr  # from node.log
    assert not (home / "node.pid").exists()
    assert status(home)["running"] is False


@pytest.mark.parametrize("who", ["another program", "nobody"])
def test_a_stale_pid_file_is_removed_with_a_message(home: Path, who: str) -> None:
    """A node killed with SIGKILL leaves node.pid behind, and its pid may be reused."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        if who == "nobody":
            other.kill()
            other.wait()
        (home / "node.pid").write_text(
            f'pid = {other.pid}\nhost = "127.0.0.1"\nport = 9\n'
            'started = 2024-05-01T12:00:00Z\nversion = "0.1.0"\n'
        )
        (home / "node.pid").chmod(0o600)
        shown = run(home, "node", "status")
        assert shown.returncode == 1 and shown.stdout.startswith("node: not running")
        assert f"removed a stale node.pid (pid {other.pid}" in shown.stderr
        assert not (home / "node.pid").exists()
        (home / "node.pid").write_text('pid = "garbage"\n')
        (home / "node.pid").chmod(0o600)
        stopped = run(home, "node", "stop")
        assert stopped.returncode == 0 and "nothing to stop" in stopped.stdout
        assert "removed a stale node.pid (unreadable" in stopped.stderr
        if who == "another program":
            assert other.poll() is None  # never signalled
    finally:
        other.kill()
        other.wait()


HOLDER = """
import fcntl, signal, sys, time  # exalate_tui: a node that ignores SIGTERM
signal.signal(signal.SIGTERM, signal.SIG_IGN)
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def hold_the_lock(home: Path, pid_of: int | None = None) -> subprocess.Popen[str]:
    (home / "locks").mkdir(mode=0o700, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home / "locks" / "node.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    record = NodeRecord(
        pid=pid_of or holder.pid, host="127.0.0.1", port=9, started=datetime.now(UTC), version="0"
    )
    Home(home).save_node_record(record)
    return holder


def test_a_node_that_does_not_stop_in_time_is_reported(home: Path) -> None:
    holder = hold_the_lock(home)
    try:
        result = run(home, "node", "stop", "--timeout", "0.5")
        assert result.returncode == 1
        assert f"pid {holder.pid}) did not stop within 0.5 s of SIGTERM" in result.stderr
        assert holder.poll() is None
        shown = status(home)
        assert shown["running"] is True and shown["answers"] is False
    finally:
        holder.kill()
        holder.wait()


def test_a_pid_file_naming_another_program_is_never_signalled(home: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    holder = hold_the_lock(home, pid_of=other.pid)
    try:
        result = run(home, "node", "stop")
        assert result.returncode == 1
        assert f"names pid {other.pid}, which is not exalate-tui: not signalled" in result.stderr
        assert other.poll() is None
    finally:
        for process in (holder, other):
            process.kill()
            process.wait()


# -- install-service ------------------------------------------------------------------


@pytest.fixture
def no_systemctl(tmp_path: Path) -> dict[str, str]:
    """A PATH whose `systemctl` only records that it ran: the command must never run it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(f"#!/bin/sh\ntouch {tmp_path / 'systemctl-ran'}\n")
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_install_service_user_writes_the_unit_and_prints_the_commands(
    home: Path, tmp_path: Path, no_systemctl: dict[str, str]
) -> None:
    units = tmp_path / "units"
    result = run(
        home, "node", "install-service", "--user", "--unit-dir", str(units), env=no_systemctl
    )
    assert result.returncode == 0, result.stderr
    [unit] = units.iterdir()
    assert unit.name == unit_name(home.resolve(), "snow")
    assert re.fullmatch(r"exalate-tui-node-snow-[0-9a-f]{8}\.service", unit.name)
    service = unit.name.removesuffix(".service")
    text = unit.read_text()
    [exec_start] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert exec_start.endswith(f" --home {home.resolve()} node")
    assert "Restart=on-failure" in text and "WantedBy=default.target" in text
    assert "User=" not in text
    assert f"Wrote {unit}" in result.stdout
    assert "systemctl --user daemon-reload" in result.stdout
    assert f"systemctl --user enable --now {service}\n" in result.stdout
    assert f"journalctl --user -u {service} -f" in result.stdout
    assert "disable" not in result.stdout  # no unit of the old, shared name here
    assert not (tmp_path / "systemctl-ran").exists()
    again = run(home, "node", "install-service", "--user", "--unit-dir", str(units))
    assert f"Unchanged {unit}" in again.stdout


def test_install_service_system_runs_as_the_homes_owner(home: Path, tmp_path: Path) -> None:
    import pwd

    units = tmp_path / "system"
    result = run(home, "node", "install-service", "--unit-dir", str(units))
    assert result.returncode == 0, result.stderr
    name = unit_name(home.resolve(), "snow")
    text = (units / name).read_text()
    assert f"User={pwd.getpwuid(home.stat().st_uid).pw_name}" in text
    assert f"ReadWritePaths={home.resolve()}" in text
    assert "WantedBy=multi-user.target" in text
    assert f"sudo systemctl enable --now {name.removesuffix('.service')}" in result.stdout


def test_two_homes_on_one_machine_get_a_unit_each(home: Path, tmp_path: Path) -> None:
    """Each unit is named after its home: a second home's install leaves the first's alone;
    a unit this home wrote under the old shared name is named, to disable and remove."""
    units = tmp_path / "units"
    other = tmp_path / "elsewhere" / "home"
    assert run(other, "init", "--short-name", "snow").returncode == 0  # the same short name
    old = units / "exalate-tui-node.service"
    units.mkdir()
    old.write_text(
        f"# Written by `exalate-tui node install-service`; the home is {home.resolve()}.\n"
    )
    first = run(home, "node", "install-service", "--user", "--unit-dir", str(units))
    second = run(other, "node", "install-service", "--user", "--unit-dir", str(units))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    mine, theirs = (
        units / unit_name(home.resolve(), "snow"),
        units / unit_name(other.resolve(), "snow"),
    )
    assert mine != theirs and mine.is_file() and theirs.is_file()
    assert f"--home {home.resolve()} node" in mine.read_text()
    assert f"--home {other.resolve()} node" in theirs.read_text()
    assert "systemctl --user disable --now exalate-tui-node\n" in first.stdout
    assert f"rm {old}" in first.stdout
    assert "disable" not in second.stdout  # the old unit is the first home's, not this one's
    assert unit_name(Path("/h"), "Snow Prod/ü") == unit_name(Path("/h"), "Snow-Prod-")
    assert unit_name(Path("/h"), "Snow Prod/ü").startswith("exalate-tui-node-Snow-Prod-")


def test_install_service_refuses_bad_input_and_writes_nothing(tmp_path: Path, home: Path) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("")
    result = run(home, "node", "install-service", "--unit-dir", str(afile))
    assert (
        result.returncode == 2
        and "--unit-dir" in result.stderr
        and "give a folder" in result.stderr
    )
    fresh = tmp_path / "fresh"
    result = run(fresh, "node", "install-service", "--user", "--unit-dir", str(tmp_path / "u"))
    assert result.returncode == 2 and "exalate-tui init" in result.stderr
    assert not (tmp_path / "u").exists() and not fresh.exists()
