"""The `exalate-tui` entry point: the console, and the headless commands (README.md).

Each headless command is one small function taking the parsed arguments and
the home, plus one entry in `_parser`. The commands drive the same objects the
console does (`InitiateWizard`, `Home`), so both refuse the same input with the
same words.

Exit codes, mapped in `main` alone from the error tree (exalate_tui/errors.py):
0 ok; 2 bad input (`ExalateError.bad_input`), i.e. something the user changes
on the command line or fixes with another command first (a refused flag
value, an unknown connection id, no `instance.toml` yet); 1 anything else,
e.g. a file in the home that does not parse (it is never overwritten: the
message names it and its line) or an OS error. Bad input is refused before
anything is written.

A command imports the heavy layers it uses when it runs: the console
(Textual), the node (FastAPI, uvicorn), the network client (httpx). So a
headless command never loads Textual, and `initiate --json` no network stack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from exalate_tui.domain.live import Contact, live_state
from exalate_tui.domain.models import Connection, Instance, check_instance
from exalate_tui.errors import ExalateError
from exalate_tui.flows.accept import AcceptWizard, Stage
from exalate_tui.flows.initiate import InitiateWizard, Step
from exalate_tui.home.store import Home, NotFound
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.protocol.api import UrlCheck

PROG = "exalate-tui"
# Never printed, never in --json: they let someone else act as this side.
SECRET_FIELDS = frozenset({"secret", "token", "token_hash"})
# Bookkeeping of the handshake, of no use to a reader.
INTERNAL_FIELDS = frozenset({"code_digest"})

# The flag that sets each wizard field, so an error names what to change.
FLAGS = {
    "dest_url": "--url",
    "mode": "--mode",
    "local_name": "--local-name",
    "remote_name": "--remote-name",
    "name": "--name",
    "description": "--description",
}


class BadInput(ExalateError):
    """Exit 2: str() says which flag or value is wrong and how to fix it."""

    bad_input = True


def inert(text: object) -> str:
    """Text safe for a terminal: control and other invisible characters shown escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def public(connection: Connection) -> dict[str, Any]:
    """A connection as JSON data, without its secrets."""
    return connection.model_dump(mode="json", exclude=set(SECRET_FIELDS | INTERNAL_FIELDS))


def _print_json(data: object) -> None:
    # ensure_ascii (the default) escapes every control character: the output stays inert.
    print(json.dumps(data, indent=2))


def _require_instance(home: Home) -> Instance:
    instance = home.load_instance()
    if instance is None:
        raise BadInput(
            f"this instance is not set up ({home.instance_path} does not exist): "
            f"run `{PROG} init --short-name NAME [--public-url URL]` first"
        )
    return instance


# -- commands ------------------------------------------------------------------


def cmd_console(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.console.app import run_console

    return run_console(home)


def cmd_init(args: argparse.Namespace, home: Home) -> int:
    public_url, problems = check_instance(args.short_name, args.public_url)
    if problems:
        words = {
            "short_name": "--short-name: this instance's short name",
            "public_url": "--public-url: this instance's public URL",
        }
        raise BadInput("\n".join(f"{words[f]} {reason}." for f, reason in problems.items()))

    current = home.load_instance()
    if current is None:
        instance = Instance(short_name=args.short_name, public_url=public_url or None)
    else:
        update: dict[str, Any] = {"short_name": args.short_name}
        if public_url is not None:  # absent keeps it, "" removes it
            update["public_url"] = public_url or None
        instance = current.model_copy(update=update)
    home.save_instance(instance)
    print(f"Saved {inert(home.instance_path)}")
    print(f"  short name: {inert(instance.short_name)}")
    print(
        f"  public URL: {inert(instance.public_url)}"
        if instance.public_url
        else "  public URL: none (partners cannot call this instance; "
        "set one with --public-url to invite private partners)"
    )
    return 0


def cmd_initiate(args: argparse.Namespace, home: Home) -> int:
    instance = _require_instance(home)
    known = home.load_connections().connections
    wizard = InitiateWizard(instance, known, require_verified=not args.no_verify)

    if args.no_url:
        wizard.choose_no_url()
        if wizard.needs_public_url:
            raise BadInput(
                "--no-url: your private partner will call this instance, so it needs a "
                f"public URL and {instance.short_name!r} has none: run `{PROG} init "
                f"--short-name {instance.short_name} --public-url URL`, then try again"
            )
    else:
        wizard.set_dest_url(args.url)
        if wizard.needs_check and wizard.require_verified:
            wizard.record_check(_verify(wizard.dest_url))
    # Every field at once, so one run reports every problem.
    wizard.set_mode(args.mode)
    wizard.set_local_name(args.local_name)
    wizard.set_remote_name(args.remote_name)
    if args.name is not None:
        wizard.set_name(args.name)
    if args.description is not None:
        wizard.set_description(args.description)
    _refuse(wizard, args)

    while wizard.step is not Step.INVITATION:
        if not wizard.next():
            _refuse(wizard, args)
            raise RuntimeError(f"the wizard stopped at {wizard.step} without saying why")
    issued = wizard.issued
    assert issued is not None  # INVITATION is reached only by issuing
    if not wizard.saved(save_issued(home, issued.connection, wizard.new_instance)):
        _refuse(wizard, args)  # the name was taken since the wizard was made

    if args.json:
        _print_json({"connection": public(issued.connection), "code": issued.code})
    else:
        print(issued.code)
    return 0


def cmd_accept(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.lifecycle.accept import accept
    from exalate_tui.transport.sqlite_streams import SqliteStreams

    text = sys.stdin.read() if args.code == "-" else args.code
    wizard = AcceptWizard(home.load_instance(), home.load_connections().connections)
    wizard.set_code(text)
    if args.short_name is not None:
        wizard.set_local_name(args.short_name)
    if args.name is not None:
        wizard.set_name(args.name)
    # Checked here too, before state.sqlite3 is opened: a refused code writes nothing.
    problems = wizard.problems()
    if problems:
        flags = {"code": "CODE", "local_name": "--short-name", "name": "--name"}
        if "local_name" in problems and args.short_name is None:
            problems["local_name"] += f" Give it with --short-name S, or run `{PROG} init`."
        raise BadInput("\n".join(f"{flags[f]}: {p}" for f, p in problems.items()))
    invite = wizard.invitation
    assert invite is not None  # problems() reports a missing code
    stages: list[Stage] = []

    def progress(stage: Stage) -> None:
        stages.append(stage)
        if args.json:
            return
        if stage is Stage.CONTACTING:
            print(f"Contacting {inert(invite.from_)} at {inert(invite.url)} …")
        elif stage is Stage.ACCEPTED:
            print("Accepted: the connection secret is stored.")
        elif stage is Stage.CONNECTED:
            print("Connected: the first message was delivered.")

    opened: list[SqliteStreams] = []

    def open_state() -> SqliteStreams:
        # Opened only once there is something to store: a refused accept writes nothing.
        home.ensure()
        opened.append(SqliteStreams(home.state_path))
        return opened[-1]

    try:
        connection = asyncio.run(
            accept(home, open_state, invite, wizard.local_name, progress, name=wizard.name)
        )
    finally:
        for state in opened:
            state.close()
    if args.json:
        _print_json({"connection": public(connection), "stages": stages})
    elif Stage.WAITING in stages:
        print(
            f"Accepted {inert(connection.name)} ({connection.id}): pending until "
            f"{inert(invite.from_)} connects to this instance; keep `{PROG} node` running."
        )
    else:
        print(f"Connection {inert(connection.name)} ({connection.id}) is active.")
    return 0


def _verify(url: str) -> UrlCheck:
    """`GET {url}/api/v1/info`, as the console's step 1 does (httpx loads only here)."""
    from exalate_tui.transport.client import verify_url

    return asyncio.run(verify_url(url))


def _refuse(wizard: InitiateWizard, args: argparse.Namespace) -> None:
    """Raise BadInput naming every flag the wizard refused, if any."""
    if not wizard.errors:
        return
    lines = []
    for field, problem in wizard.errors.items():
        hint = ""
        if field == "name" and args.name is None:
            hint = " The name was made from the two short names: give one with --name NAME."
        if field == "dest_url" and wizard.url_check is not None:
            hint = " (--no-verify skips this check, e.g. before the partner's node is up.)"
        lines.append(f"{FLAGS.get(field, field)}: {problem}{hint}")
    raise BadInput("\n".join(lines))


def cmd_connections_list(args: argparse.Namespace, home: Home) -> int:
    loaded = home.load_connections()
    for problem in loaded.problems:
        print(f"{PROG} connections: {inert(problem)}", file=sys.stderr)
    if args.json:
        _print_json(
            {
                "connections": [public(c) for c in loaded.connections],
                "problems": [
                    {"path": str(p.path), "line": p.line, "message": p.message}
                    for p in loaded.problems
                ],
            }
        )
    elif loaded.connections:
        _print_table(loaded.connections)
    elif not loaded.problems:
        print(f"No connections yet: create one with `{PROG} initiate` or `{PROG}` (the console).")
    # Like `ls` with an unreadable entry: list what loads, but do not report success.
    return 1 if loaded.problems else 0


def _print_table(connections: list[Connection]) -> None:
    header = ("ID", "NAME", "LOCAL → REMOTE", "TOPOLOGY", "MODE", "STATUS", "CREATED")
    rows = [header] + [
        (
            c.id[:8],
            inert(c.name),
            f"{c.local_name} → {c.remote_name or 'unknown'}",
            c.topology.value,
            c.mode.value,
            # The console's words (domain/live.py); without the state file's contacts.
            live_state(c, Contact(), time.time()).live.value,
            c.created.strftime("%Y-%m-%d %H:%M"),
        )
        for c in connections
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def cmd_connections_show(args: argparse.Namespace, home: Home) -> int:
    connection = _find(home, args.id)
    if args.json:
        _print_json({"connection": public(connection)})
        return 0
    data = public(connection)
    width = max(len(key) for key in data)
    for key, value in data.items():
        print(f"{key.ljust(width)}  {'-' if value in (None, '') else inert(value)}")
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
    from exalate_tui.transport.sqlite_streams import SqliteStreams

    connection = _find(home, args.id)
    home.ensure()
    state = SqliteStreams(home.state_path)
    try:
        # By the full id just resolved, so a prefix cannot hit a newer file.
        outcome = asyncio.run(getattr(actions, name)(home, state, connection.id))
    except actions.ActionError as refused:
        raise BadInput(f"ID: {refused}") from None
    finally:
        state.close()
    told, error = outcome.told, outcome.error
    if args.json:
        key = "deleted" if name == "delete" else "connection"
        _print_json(
            {key: public(outcome.connection), "partner": told.value, "partner_error": error}
        )
        return 0
    print(f"{done} connection {inert(connection.name)} ({connection.id})")
    if told is actions.Told.DELIVERED:
        print("The partner was told.")
    elif told is actions.Told.QUEUED:
        print(f"The partner learns of it when it next connects; keep `{PROG} node` running.")
    elif told is actions.Told.UNREACHABLE:
        print(f"Could not tell the partner now: {inert(error)}")
    return 0


def cmd_node(args: argparse.Namespace, home: Home) -> int:
    import logging

    from exalate_tui.lifecycle.runtime import serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO: one line per push and long-poll would bury the
    # node's own lines in the journal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(home, args.host, args.port))
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _find(home: Home, cid: str) -> Connection:
    try:
        return home.get_connection(cid)
    except NotFound as error:
        raise BadInput(f"ID: {error}") from None


# -- parsing --------------------------------------------------------------------


def _common(*, json_flag: bool) -> argparse.ArgumentParser:
    """Options accepted before or after a subcommand's name.

    SUPPRESS keeps a subcommand's default from overwriting a value given before it.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="home folder (default: $EXALATE_TUI_HOME, else the user config folder)",
    )
    if json_flag:
        common.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print one JSON document on stdout",
        )
    return common


# `exalate-tui --help` ends with the README's two-instance walk-through, in brief.
WALK_THROUGH = f"""\
two instances, each with its own home and its own node (see the README):
snow has a public URL; jira sits in a private network and has none.
  snow$ {PROG} init --short-name snow \\
            --public-url https://snow.example.com
  snow$ {PROG} node       # keep it running: 127.0.0.1:7917, https in front
  jira$ {PROG} init --short-name jira
  jira$ {PROG} node       # jira's poller: jira makes every request
  snow$ {PROG} initiate --no-url --mode script \\
            --local-name snow --remote-name jira    # prints the code
  jira$ {PROG} accept CODE   # contacts snow: both Active within seconds
  either$ {PROG} connections [show|deactivate|activate|delete ID]
Both public: snow initiates with --url https://jira.example.com instead.
Only jira public: the same --url; jira's accept waits for snow's node to call.
"""


def _parser() -> argparse.ArgumentParser:
    home = _common(json_flag=False)
    home_json = _common(json_flag=True)
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[home],
        description="Set up cross-instance ticket-sync connections. "
        "With no command, opens the console.",
        epilog=WALK_THROUGH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=cmd_console)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    init = commands.add_parser(
        "init", parents=[home], help="create or update this instance (instance.toml)"
    )
    init.add_argument("--short-name", required=True, metavar="S", help="this instance's name")
    init.add_argument(
        "--public-url",
        metavar="URL",
        help="where partners reach this instance; '' removes it (default: keep)",
    )
    init.set_defaults(run=cmd_init)

    initiate = commands.add_parser(
        "initiate", parents=[home_json], help="initiate a connection, print its invitation code"
    )
    where = initiate.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", metavar="URL", help="the destination instance's URL")
    where.add_argument(
        "--no-url", action="store_true", help="the destination has no URL (it is private)"
    )
    initiate.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check --url against the destination's node (GET /api/v1/info)",
    )
    initiate.add_argument("--mode", required=True, choices=["basic", "script"])
    initiate.add_argument("--local-name", required=True, metavar="A")
    initiate.add_argument("--remote-name", required=True, metavar="B")
    initiate.add_argument("--name", metavar="N", help="default: A_to_B")
    initiate.add_argument("--description", metavar="D")
    initiate.set_defaults(run=cmd_initiate)

    accept = commands.add_parser(
        "accept", parents=[home_json], help="accept an invitation code from a partner"
    )
    accept.add_argument("code", metavar="CODE", help="the invitation code, or - to read stdin")
    accept.add_argument(
        "--short-name", metavar="S", help="this side's short name (default: the instance's)"
    )
    accept.add_argument(
        "--name", metavar="N", help="the connection's name here (default: the code's)"
    )
    accept.set_defaults(run=cmd_accept)

    node = commands.add_parser(
        "node", parents=[home], help="serve the API and run the pollers, headless (Ctrl+C stops)"
    )
    node.add_argument(
        "--host", metavar="H", help="address to listen on (default: instance.toml, else 127.0.0.1)"
    )
    node.add_argument(
        "--port", metavar="P", type=_port, help="port (default: instance.toml, else 7917)"
    )
    node.set_defaults(run=cmd_node)

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
    ):
        action = actions.add_parser(name, parents=[home_json], help=what)
        action.add_argument("id", metavar="ID", help="a connection id or a unique prefix of it")
        action.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.json = getattr(args, "json", False)
    command = f"{PROG} {args.command}" if args.command else PROG
    try:
        code: int = args.run(args, Home.resolve(getattr(args, "home", None)))
    except ExalateError as error:
        # Bad input may say several things, one per line; anything else is one line.
        lines = str(error).splitlines() if error.bad_input else [str(error)]
        for line in lines:
            print(f"{command}: {inert(line)}", file=sys.stderr)
        return 2 if error.bad_input else 1
    except OSError as error:
        print(f"{command}: {inert(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        import sqlite3  # only here: most commands never open the state

        if not isinstance(error, sqlite3.DatabaseError):
            raise
        # A store that opened but is damaged inside ("database disk image is malformed").
        home = Home.resolve(getattr(args, "home", None))
        print(
            f"{command}: {home.state_path}: the message store is damaged ({inert(error)}); "
            "move it aside and restart (undelivered messages in it would be lost)",
            file=sys.stderr,
        )
        return 1
    return code
