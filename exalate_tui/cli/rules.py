"""`rules`: a Script connection's own sync rules (show, set, test, history, revert,
apply, limit), and `connections set-mode ID script`.

Saving checks the rule under the sandbox's policy first (sync/script.py): a
refused rule exits 2 with its line and nothing is saved, so the version in
force stays. A new outgoing version asks the engine to re-send the synced
tickets whose replica it changes; a new incoming one applies to the next
replica, or to every synced ticket at once with `rules apply`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from exalate_tui.cli.common import PROG, BadInput, Parser, find, inert, print_json, run_async
from exalate_tui.cli.sync import _ask, open_store, open_tracker
from exalate_tui.domain.models import Connection, Mode
from exalate_tui.home.store import Home

DIRECTIONS = ("outgoing", "incoming")


def _script(home: Home, cid: str) -> Connection:
    connection = find(home, cid)
    if connection.mode is not Mode.SCRIPT:
        raise BadInput(
            f"ID: {connection.name!r} uses the Basic mapping, which has no rules to edit: "
            f"`{PROG} connections set-mode {connection.id[:8]} script` switches it"
        )
    return connection


def cmd_show(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.sync.script import rule_files

    connection = _script(home, args.id)
    files = rule_files(home, connection)
    version = files.current()[args.direction]
    source = files.source(version)
    if args.json:
        print_json(
            {
                "direction": args.direction,
                "version": version.number,
                "saved": version.saved.isoformat(),
                "source": source,
            }
        )
    else:
        sys.stdout.write(source)
    return 0


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"FILE: {error}") from None


def _after_save(home: Home, connection: Connection, direction: str) -> str:
    if direction == "outgoing":
        said = _ask(home, "rules", connection.id, None, None)
        return f"Synced tickets whose replica it changes are re-sent. {said}"
    return (
        "It applies to the next replica of each ticket; "
        f"`{PROG} rules apply {connection.id[:8]}` applies it to every synced ticket now."
    )


def cmd_set(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.sync.script import RuleRefused, save_rule

    connection = _script(home, args.id)
    source = _read(args.file)
    try:
        version = save_rule(home, connection, args.direction, source)
    except RuleRefused as error:
        raise BadInput(f"{error}\nNothing was saved: the version in force stays.") from None
    said = _after_save(home, connection, args.direction)
    if args.json:
        print_json({"saved": {"direction": args.direction, "version": version.number}})
    else:
        print(f"Saved {args.direction} v{version.number} of {inert(connection.name)}: in force.")
        print(said)
    return 0


def cmd_revert(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.home.rules import UnknownVersion
    from exalate_tui.sync.script import RuleRefused, revert_rule

    connection = _script(home, args.id)
    try:
        version = revert_rule(home, connection, args.version)
    except (UnknownVersion, RuleRefused) as error:
        raise BadInput(str(error)) from None
    said = _after_save(home, connection, version.direction)
    if args.json:
        print_json({"saved": {"direction": version.direction, "version": version.number}})
    else:
        print(
            f"{version.direction} v{args.version} is in force again, as v{version.number}. {said}"
        )
    return 0


def cmd_history(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.sync.script import rule_files

    connection = _script(home, args.id)
    files = rule_files(home, connection)
    current = {v.number for v in files.current().values()}
    versions = [
        {
            "version": v.number,
            "direction": v.direction,
            "saved": v.saved.isoformat(),
            "note": v.note,
            "in_force": v.number in current,
        }
        for v in files.versions()
    ]
    if args.json:
        print_json({"versions": versions, "time_limit": files.time_limit()})
        return 0
    for v in versions:
        mark = "*" if v["in_force"] else " "
        print(f"{mark} v{v['version']:<4} {v['direction']:<9} {v['saved']}  {inert(v['note'])}")
    print(f"* in force · each run may take {files.time_limit():g} s")
    return 0


def cmd_apply(args: argparse.Namespace, home: Home) -> int:
    connection = _script(home, args.id)
    said = _ask(home, "reapply", connection.id, None, None)
    if args.json:
        print_json({"reapply": connection.id})
    else:
        print(
            f"The incoming rules of {inert(connection.name)} are applied to the last replica "
            f"of every synced ticket. {said}"
        )
    return 0


def cmd_limit(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.home.rules import MAX_TIME_LIMIT
    from exalate_tui.sync.script import rule_files

    connection = _script(home, args.id)
    if not 0 < args.seconds <= MAX_TIME_LIMIT:
        raise BadInput(f"SECONDS: more than 0 and at most {MAX_TIME_LIMIT:g}")
    rule_files(home, connection).set_time_limit(args.seconds)
    if args.json:
        print_json({"time_limit": args.seconds})
    else:
        print(f"Each run of {inert(connection.name)}'s rules may take {args.seconds:g} s.")
    return 0


def _fields(fields: dict[str, Any]) -> list[str]:
    return [f"    {name} = {value!r}" for name, value in fields.items()]


def cmd_test(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.sync.script import try_rules
    from exalate_tui.trackers.adapter import TicketNotFound

    connection = _script(home, args.id)

    async def run() -> dict[str, Any]:
        tracker = open_tracker(home)
        store = open_store(home)
        try:
            return await try_rules(home, connection, tracker, store, args.key)
        except TicketNotFound as error:
            raise BadInput(f"KEY: {error}") from None
        finally:
            store.close()
            await tracker.close()

    report = run_async(run())
    if args.json:
        print_json({"test": report})
        return 0
    out, inc = report["outgoing"], report["incoming"]
    print(f"Test run of {inert(connection.name)}'s rules on {inert(args.key)} ({report['rules']})")
    print("Nothing is sent and nothing is written.")
    print("\nOutgoing: the replica it would send")
    if "error" in out:
        print(f"  error: {inert(out['error'])}")
    else:
        replica = out["replica"]
        print(inert("\n".join(_fields(replica["fields"])) or "    (no fields)"))
        print(f"  {len(replica['comments'])} comments, {len(replica['attachments'])} attachments")
    if out.get("printed"):
        print(inert("  printed: " + out["printed"].rstrip()))
    print("\nIncoming: what it would change from the last replica received")
    if inc is None:
        print(f"  nothing received for {inert(args.key)} yet")
    elif "error" in inc:
        print(f"  error: {inert(inc['error'])}")
    else:
        for name, (old, new) in inc["fields"].items():
            print(inert(f"    {name}: {old!r} → {new!r}"))
        if not inc["fields"]:
            print("    no field changes")
        for comment in inc["comments"]:
            kind = "work note" if comment["internal"] else "comment"
            print(inert(f"  + {kind} by {comment['author']}: {comment['body'][:60]}"))
        for name in inc["attachments"]:
            print(inert(f"  + attachment {name}"))
        if inc.get("printed"):
            print(inert("  printed: " + inc["printed"].rstrip()))
    return 0


def cmd_set_mode(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.sync.script import SwitchRefused, switch_to_script
    from exalate_tui.transport.storage import open_streams

    connection = find(home, args.id)
    home.ensure()
    streams = open_streams(home, hints=False)
    try:
        updated, switched = switch_to_script(home, connection.id, streams)
    except SwitchRefused as error:
        raise BadInput(f"ID: {error}") from None
    finally:
        streams.close()
    if args.json:
        print_json({"mode": updated.mode.value, "switched": switched})
    elif switched:
        print(
            f"{inert(updated.name)} uses Script rules now, starting as the Basic mapping "
            f"(`{PROG} rules show {updated.id[:8]} outgoing`). The partner is told and keeps "
            "its own rules."
        )
    else:
        print(f"{inert(updated.name)} already uses Script rules.")
    return 0


def register(commands: Any, home: Parser, home_json: Parser) -> None:
    """Add `rules`; `home` and `home_json` are the shared options."""
    rules = commands.add_parser(
        "rules", parents=[home_json], help="a Script connection's own sync rules"
    )
    rules.set_defaults(run=lambda args, home: rules.print_help() or 2)
    actions = rules.add_subparsers(title="actions", metavar="ACTION")

    def connection_id(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("id", metavar="ID", help="a connection id or a unique prefix of it")

    show = actions.add_parser("show", parents=[home_json], help="print the rule in force")
    connection_id(show)
    show.add_argument("direction", choices=DIRECTIONS)
    show.set_defaults(run=cmd_show)
    save = actions.add_parser(
        "set", parents=[home_json], help="check and save a new version (in force at once)"
    )
    connection_id(save)
    save.add_argument("direction", choices=DIRECTIONS)
    save.add_argument("file", metavar="FILE", help="the rule's file, or - for stdin")
    save.set_defaults(run=cmd_set)
    test = actions.add_parser(
        "test", parents=[home_json], help="what the rules would do to one ticket (writes nothing)"
    )
    connection_id(test)
    test.add_argument("key", metavar="KEY", help="the local ticket's key")
    test.set_defaults(run=cmd_test)
    history = actions.add_parser("history", parents=[home_json], help="every saved version")
    connection_id(history)
    history.set_defaults(run=cmd_history)
    revert = actions.add_parser(
        "revert", parents=[home_json], help="bring an earlier version back in force"
    )
    connection_id(revert)
    revert.add_argument("version", metavar="VERSION", type=int, help="as `rules history` says")
    revert.set_defaults(run=cmd_revert)
    apply = actions.add_parser(
        "apply",
        parents=[home_json],
        help="apply the incoming rules to every synced ticket's last replica now",
    )
    connection_id(apply)
    apply.set_defaults(run=cmd_apply)
    limit = actions.add_parser(
        "limit", parents=[home_json], help="how long one run of a rule may take (default 1 s)"
    )
    connection_id(limit)
    limit.add_argument("seconds", metavar="SECONDS", type=float)
    limit.set_defaults(run=cmd_limit)


def register_set_mode(actions: Any, home_json: Parser) -> None:
    """`connections set-mode ID script`, beside the other connection actions."""
    set_mode = actions.add_parser(
        "set-mode",
        parents=[home_json],
        help="switch a Basic connection to Script rules (they start as the Basic mapping)",
    )
    set_mode.add_argument("id", metavar="ID", help="a connection id or a unique prefix of it")
    set_mode.add_argument("mode", choices=["script"])
    set_mode.set_defaults(run=cmd_set_mode)
