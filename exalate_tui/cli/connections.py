"""`connections`: list, show, the admin's actions (deactivate, activate, delete), which
also tell the partner (docs/protocol.md), `code` (a new invitation code), and
`set-mode ID script` (cli/rules.py)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from exalate_tui.cli.common import PROG, BadInput, find, inert, print_json, public, run_async
from exalate_tui.domain.live import Contact, live_state
from exalate_tui.domain.models import Connection
from exalate_tui.home.store import Home


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp is not None else None


def contacts(home: Home, connections: list[Connection]) -> tuple[dict[str, Contact], str | None]:
    """Each connection's last contact and error from the streams' store, or why it could
    not be read; a home without state.sqlite3 yet has no contacts (it is not created here)."""
    import sqlite3

    from exalate_tui.transport.storage import open_streams, state_exists
    from exalate_tui.transport.streams import StateError

    if not connections or not state_exists(home):
        return {}, None
    try:
        state = open_streams(home, hints=False)
        try:
            return {c.id: state.contact(c.id) for c in connections}, None
        finally:
            state.close()
    except (StateError, sqlite3.DatabaseError, OSError) as error:
        return {}, str(error)


def described(connection: Connection, contact: Contact, now: float) -> dict[str, Any]:
    """A connection as `--json` shows it: no secrets, with its live state and last contact."""
    data = public(connection)
    live = live_state(connection, contact, now)
    data["live"] = live.live.value
    data["last_contact"] = _iso(contact.last_ok)
    data["last_error"] = contact.last_error
    data["error_since"] = _iso(contact.error_since)
    return data


def cmd_connections_list(args: argparse.Namespace, home: Home) -> int:
    loaded = home.load_connections()
    for problem in loaded.problems:
        print(f"{PROG} connections: {inert(problem)}", file=sys.stderr)
    seen, unreadable = contacts(home, loaded.connections)
    if unreadable:
        print(f"{PROG} connections: no last contacts: {inert(unreadable)}", file=sys.stderr)
    now = time.time()
    if args.json:
        print_json(
            {
                "connections": [
                    described(c, seen.get(c.id, Contact()), now) for c in loaded.connections
                ],
                "problems": [
                    {"path": str(p.path), "line": p.line, "message": p.message}
                    for p in loaded.problems
                ],
            }
        )
    elif loaded.connections:
        _print_table(loaded.connections, seen, now)
    elif not loaded.problems:
        print(f"No connections yet: create one with `{PROG} initiate` or `{PROG}` (the console).")
    # Like `ls` with an unreadable entry: list what loads, but do not report success.
    return 1 if loaded.problems or unreadable else 0


def _print_table(connections: list[Connection], seen: dict[str, Contact], now: float) -> None:
    header = ("ID", "NAME", "LOCAL → REMOTE", "TOPOLOGY", "MODE", "STATUS", "CREATED")
    rows = [header] + [
        (
            c.id[:8],
            inert(c.name),
            f"{c.local_name} → {c.remote_name or 'unknown'}",
            c.topology.value,
            c.mode.value,
            # The console's words (domain/live.py).
            live_state(c, seen.get(c.id, Contact()), now).live.value,
            c.created.strftime("%Y-%m-%d %H:%M"),
        )
        for c in connections
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def cmd_connections_show(args: argparse.Namespace, home: Home) -> int:
    connection = find(home, args.id)
    seen, unreadable = contacts(home, [connection])
    if unreadable:
        print(f"{PROG} connections: no last contact: {inert(unreadable)}", file=sys.stderr)
    now = time.time()
    contact = seen.get(connection.id, Contact())
    data = described(connection, contact, now)
    if args.json:
        print_json({"connection": data})
        return 1 if unreadable else 0
    data["live"] = live_state(connection, contact, now).label
    width = max(len(key) for key in data)
    for key, value in data.items():
        print(f"{key.ljust(width)}  {'-' if value in (None, '') else inert(value)}")
    return 1 if unreadable else 0


def cmd_connections_code(args: argparse.Namespace, home: Home) -> int:
    """A new invitation code for a Pending connection initiated here; the old one stops working."""
    from exalate_tui.lifecycle import actions

    connection = find(home, args.id)
    try:
        code = actions.regenerate_invitation(home, connection.id)
    except actions.ActionError as refused:
        raise BadInput(f"ID: {refused}") from None
    if args.json:
        print_json({"connection": public(home.get_connection(connection.id)), "code": code})
    else:
        print(code)
    return 0


def cmd_connections_delete(args: argparse.Namespace, home: Home) -> int:
    return _connection_action(args, home, "delete", "Deleted")


def cmd_connections_deactivate(args: argparse.Namespace, home: Home) -> int:
    return _connection_action(args, home, "deactivate", "Deactivated")


def cmd_connections_activate(args: argparse.Namespace, home: Home) -> int:
    return _connection_action(args, home, "activate", "Activated")


def _connection_action(args: argparse.Namespace, home: Home, name: str, done: str) -> int:
    """Run `actions.<name>`, which also tells the partner (docs/protocol.md)."""
    from exalate_tui.lifecycle import actions
    from exalate_tui.transport.storage import open_streams

    connection = find(home, args.id)
    home.ensure()
    state = open_streams(home, hints=False)
    try:
        # By the full id just resolved, so a prefix cannot hit a newer file.
        outcome = run_async(getattr(actions, name)(home, state, connection.id))
    except actions.ActionError as refused:
        raise BadInput(f"ID: {refused}") from None
    finally:
        state.close()
    told, error = outcome.told, outcome.error
    if args.json:
        key = "deleted" if name == "delete" else "connection"
        print_json({key: public(outcome.connection), "partner": told.value, "partner_error": error})
        return 0
    print(f"{done} connection {inert(connection.name)} ({connection.id})")
    if told is actions.Told.DELIVERED:
        print("The partner was told.")
    elif told is actions.Told.QUEUED:
        print(f"The partner learns of it when it next connects; keep `{PROG} node` running.")
    elif told is actions.Told.UNREACHABLE:
        print(f"Could not tell the partner now: {inert(error)}")
    return 0


def register(
    commands: Any, home: argparse.ArgumentParser, home_json: argparse.ArgumentParser
) -> None:
    connections = commands.add_parser(
        "connections",
        parents=[home_json],
        help="list, show, delete, deactivate or activate connections",
    )
    connections.set_defaults(run=cmd_connections_list)
    actions = connections.add_subparsers(title="actions", metavar="ACTION")
    actions.add_parser("list", parents=[home_json], help="the default").set_defaults(
        run=cmd_connections_list
    )
    for name, run, what in (
        ("show", cmd_connections_show, "show one connection (no secrets)"),
        ("delete", cmd_connections_delete, "delete one connection, without asking"),
        ("deactivate", cmd_connections_deactivate, "pause one connection; messages queue"),
        ("activate", cmd_connections_activate, "resume a deactivated connection"),
        (
            "code",
            cmd_connections_code,
            "print a new invitation code for a pending connection initiated here "
            "(the previous code stops working)",
        ),
    ):
        action = actions.add_parser(name, parents=[home_json], help=what)
        action.add_argument("id", metavar="ID", help="a connection id or a unique prefix of it")
        action.set_defaults(run=run)
    # Switching to Script writes rules, so it lives with them (cli/rules.py).
    from exalate_tui.cli.rules import register_set_mode

    register_set_mode(actions, home_json)
