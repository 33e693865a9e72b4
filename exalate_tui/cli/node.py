"""`node`: serve the API and run the supervisor, in the foreground or in the background.

`node` alone runs it in the foreground (until SIGTERM or Ctrl+C). `node start`
runs the same command detached, its output in `node.log`; `node stop` and
`node status` find it by the home's node lock and `node.pid`
(transport/background.py), whichever way it was started. `node
install-service` writes a systemd unit that runs it (and never runs
systemctl itself: it prints the commands).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exalate_tui.cli.common import PROG, BadInput, inert, print_json, require_instance, run_async
from exalate_tui.domain.live import ago
from exalate_tui.home.store import Home

# What every home's unit was called before the name carried the home: two homes on one
# machine wrote the same file, the second replacing the first's service.
SHARED_UNIT_NAME = "exalate-tui-node.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


def unit_name(home: Path, short_name: str) -> str:
    """`exalate-tui-node-<short name>-<8 hex of the home's path>.service`: one per home.

    The short name says whose it is in `systemctl list-units`; the digest of the
    resolved path keeps two homes of one name (a test home, a second instance) apart.
    Characters systemd does not take in a unit name become `-`.
    """
    digest = hashlib.sha256(str(home).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    name = "".join(
        ch if ch.isascii() and (ch.isalnum() or ch in "_.") else "-" for ch in short_name
    )
    name = "-".join(part for part in name.split("-") if part)[:40]
    return f"exalate-tui-node-{name + '-' if name else ''}{digest}.service"


def cmd_node(args: argparse.Namespace, home: Home) -> int:
    import logging

    from exalate_tui.lifecycle.runtime import serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO: one line per push and long-poll would bury the
    # node's own lines in the journal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from exalate_tui.sync.service import run_engine

    run_async(serve(home, args.host, args.port, beside=[run_engine]))
    return 0


def _say_stale(stale: object | None) -> None:
    if stale is not None:
        print(f"{PROG} node: {stale}", file=sys.stderr)


def cmd_node_start(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.transport import background

    require_instance(home)
    if args.host is not None:
        _check_host(args.host)
    found = background.running(home, clean=True)
    _say_stale(found.stale)
    started = background.start(home, args.host, args.port, timeout=args.timeout)
    status = started.status
    record = status.record
    if args.json:
        print_json({"started": not started.already, "node": status.as_json(time.time())})
        return 0
    if started.already:
        where = f" (pid {record.pid}) on {record.url}" if record else ""
        print(f"The node already runs{where}: nothing started.")
        return 0
    assert record is not None  # start returns once the record answers
    print(f"Started the node (pid {record.pid}): listening on {record.url}")
    print(f"Its log: {inert(home.node_log_path)}. Stop it with `{PROG} node stop`.")
    return 0


def cmd_node_stop(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.transport import background

    stopped = background.stop(home, timeout=args.timeout)
    _say_stale(stopped.stale)
    record = stopped.record
    if args.json:
        print_json(
            {
                "stopped": record is not None,
                "pid": record.pid if record else None,
                "stale_pid_removed": stopped.stale is not None,
            }
        )
    elif record is None:
        print("No node runs for this home: nothing to stop.")
    else:
        print(f"Stopped the node (pid {record.pid}, {record.url}).")
    return 0


def cmd_node_status(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.transport import background

    status = background.status(home)
    _say_stale(status.stale)
    now = time.time()
    if args.json:
        print_json({"node": status.as_json(now)})
    elif not status.running:
        print(f"node: not running. Start it with `{PROG} node start`.")
    else:
        record = status.record
        document = status.as_json(now)
        rows = [
            ("running", "yes"),
            ("pid", str(record.pid) if record else "unknown (node.pid is missing)"),
            ("address", record.url if record else "unknown"),
            ("uptime", ago(status.uptime(now) or 0).removesuffix(" ago") if record else "?"),
            ("version", str(document["version"] or "?")),
            (
                "answers",
                f"yes: GET /api/v1/info ({inert(document['short_name'])})"
                if status.answers
                else "no: GET /api/v1/info gave no answer (starting, stuck, or "
                f"another address); see {inert(home.node_log_path)}",
            ),
        ]
        for key, value in rows:
            print(f"{key.ljust(8)}  {value}")
    # Scripts ask `node status && ...`: 0 only when the node runs and answers.
    return 0 if status.running and status.answers else 1


# -- install-service ----------------------------------------------------------------


def _unit_quote(text: str) -> str:
    """One word of a systemd command line: quoted where needed, `%` doubled."""
    text = text.replace("%", "%%")
    if all(ch.isalnum() or ch in "/._-+:=@," for ch in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _executable() -> list[str]:
    """The `exalate-tui` beside this Python (a venv's bin/), else this Python with -m."""
    script = Path(sys.executable).with_name(PROG)
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "exalate_tui.cli"]


def unit_text(home: Path, short_name: str, *, user_unit: bool, owner: str | None) -> str:
    command = " ".join(_unit_quote(word) for word in [*_executable(), "--home", str(home), "node"])
    service = [
        "Type=exec",
        f"ExecStart={command}",
        "Restart=on-failure",
        "RestartSec=5",
        # The node's graceful stop takes up to 5 s (open long-polls are answered at once).
        "TimeoutStopSec=15",
        "UMask=0077",
        "NoNewPrivileges=yes",
    ]
    if not user_unit:
        service += [
            f"User={owner}",
            "ProtectSystem=strict",
            f"ReadWritePaths={_unit_quote(str(home))}",
            "PrivateTmp=yes",
        ]
    unit = [
        "[Unit]",
        f"Description=exalate-tui node of {short_name} (API and pollers)",
        f"Documentation=file://{_unit_quote(str(home))}",
    ]
    if not user_unit:
        unit += ["Wants=network-online.target", "After=network-online.target"]
    install = ["[Install]", f"WantedBy={'default.target' if user_unit else 'multi-user.target'}"]
    lines = [
        f"# Written by `{PROG} node install-service`; the home is {home}.",
        *unit,
        "",
        "[Service]",
        *service,
        "",
        *install,
    ]
    return "\n".join(lines) + "\n"


def _user_unit_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def cmd_node_install_service(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.transport import background

    instance = require_instance(home)
    path = home.path.resolve()
    if any(not ch.isprintable() for ch in str(path)):
        raise BadInput(
            f"--home: {inert(path)} holds control characters, which a unit file cannot "
            "carry: move the home to a plain path"
        )
    directory = Path(args.unit_dir) if args.unit_dir else None
    if directory is not None and directory.exists() and not directory.is_dir():
        raise BadInput(f"--unit-dir: {inert(directory)} is not a folder: give a folder")
    directory = directory or (_user_unit_dir() if args.user else SYSTEM_UNIT_DIR)
    owner = pwd.getpwuid(path.stat().st_uid).pw_name
    text = unit_text(path, instance.short_name, user_unit=args.user, owner=owner)
    name = unit_name(path, instance.short_name)
    target = directory / name
    before = target.read_text() if target.is_file() else None
    try:
        if before != text:
            _write_unit(target, text)
    except PermissionError:
        print(
            f"{PROG} node install-service: cannot write {inert(target)}: permission denied. "
            "Run it as root (sudo), or install a user service with --user.",
            file=sys.stderr,
        )
        return 1
    print(f"{'Unchanged' if before == text else 'Replaced' if before else 'Wrote'} {inert(target)}")
    systemctl = "systemctl --user" if args.user else "sudo systemctl"
    print("Enable and start it (one node per home: stop any other first):")
    found = background.running(home)
    if found.running:
        print(f"  {PROG} --home {inert(path)} node stop")
    shared = directory / SHARED_UNIT_NAME
    if _unit_of(shared, path):
        # Written for this home under the name every home used to share: one node per home.
        print(f"  {systemctl} disable --now {SHARED_UNIT_NAME.removesuffix('.service')}")
        print(f"  rm {inert(shared)}    # this home's unit under its old, shared name")
    print(f"  {systemctl} daemon-reload")
    print(f"  {systemctl} enable --now {name.removesuffix('.service')}")
    if args.user:
        print(f"  loginctl enable-linger {owner}    # keep it running while you are logged out")
    journal = "journalctl --user" if args.user else "journalctl"
    print(f"Its log: {journal} -u {name.removesuffix('.service')} -f")
    return 0


def _unit_of(unit: Path, home: Path) -> bool:
    """Whether `unit` is one `install-service` wrote for `home` (its first line says)."""
    try:
        with unit.open(encoding="utf-8", errors="replace") as file:
            first = file.readline().rstrip("\n")
    except OSError:
        return False
    return first == f"# Written by `{PROG} node install-service`; the home is {home}."


def _write_unit(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # systemd reads it; it holds no secret
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# -- parsing ------------------------------------------------------------------------


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0-3600)")
    return value


def _check_host(host: str) -> None:
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise BadInput(
            f"--host: {inert(host)!r} is not an address of this machine: give an IP "
            "address such as 127.0.0.1 or 0.0.0.0"
        ) from None


def _listen_options(parser: argparse.ArgumentParser, *, sub: bool = False) -> None:
    # After `start`, SUPPRESS keeps `node --port P start` meaning port P.
    default = argparse.SUPPRESS if sub else None
    parser.add_argument(
        "--host",
        metavar="H",
        default=default,
        help="address to listen on (default: instance.toml's listen_host, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        metavar="P",
        type=_port,
        default=default,
        help="port to listen on (default: instance.toml's listen_port, else 7917)",
    )


def register(
    commands: Any, home: argparse.ArgumentParser, home_json: argparse.ArgumentParser
) -> None:
    node = commands.add_parser(
        "node",
        parents=[home],
        help="serve the API and run the pollers (foreground), or start|stop|status it",
        description="With no action: serve this home's API and run its pollers in the "
        "foreground until SIGTERM or Ctrl+C. The actions run it in the background.",
    )
    _listen_options(node)
    node.set_defaults(run=cmd_node)
    actions = node.add_subparsers(title="actions", metavar="ACTION")

    start = actions.add_parser(
        "start",
        parents=[home_json],
        help="start the node in the background (log: node.log in the home)",
    )
    _listen_options(start, sub=True)
    start.add_argument(
        "--timeout",
        metavar="S",
        type=_seconds,
        default=30.0,
        help="seconds to wait for it to answer GET /api/v1/info (default: 30)",
    )
    start.set_defaults(run=cmd_node_start)

    stop = actions.add_parser(
        "stop", parents=[home_json], help="stop the node serving this home (SIGTERM), and wait"
    )
    stop.add_argument(
        "--timeout",
        metavar="S",
        type=_seconds,
        default=15.0,
        help="seconds to wait for it to exit (default: 15)",
    )
    stop.set_defaults(run=cmd_node_stop, checks_instance=False)

    status = actions.add_parser(
        "status",
        parents=[home_json],
        help="whether a node serves this home: pid, address, uptime, version, answers "
        "(exit 0 only when it runs and answers)",
    )
    status.set_defaults(run=cmd_node_status, checks_instance=False)

    service = actions.add_parser(
        "install-service",
        parents=[home],
        help="write a systemd unit running this home's node, named after the home "
        "(exalate-tui-node-<short name>-<8 hex>.service); prints the systemctl commands",
    )
    service.add_argument(
        "--user",
        action="store_true",
        help="a user service (~/.config/systemd/user) instead of a system one "
        "(/etc/systemd/system, needs root)",
    )
    service.add_argument(
        "--unit-dir",
        metavar="DIR",
        help="write the unit into DIR instead (e.g. to review it first)",
    )
    service.set_defaults(run=cmd_node_install_service)
