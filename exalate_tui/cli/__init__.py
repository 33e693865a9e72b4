"""The `exalate-tui` entry point: the console, and the headless commands (README.md).

Each group of commands is a module here (`setup`, `connections`, `node`,
`tickets`, `sync`, `rules`, `tracker`, `db`): small functions taking the parsed arguments and the
home, and a `register` that adds their parsers; `_parser` calls each
`register`. The commands drive
the same objects the console does (`InitiateWizard`, `Home`), so both refuse
the same input with the same words.

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
import os
import sys
from collections.abc import Sequence

from exalate_tui import __version__
from exalate_tui.cli import connections, db, node, rules, setup, sync, tickets, tracker
from exalate_tui.cli.common import PROG, inert, options
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home, StoreError


def cmd_console(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.console.app import run_console

    return run_console(home)


# `exalate-tui --help` ends with the README's two-instance walk-through, in brief.
WALK_THROUGH = f"""\
two instances, each with its own home and its own node (see the README):
snow has a public URL; jira sits in a private network and has none.
  snow$ {PROG} init --short-name snow \\
            --public-url https://snow.example.com
  snow$ {PROG} node start # keep it running: 127.0.0.1:7917, https in front
  jira$ {PROG} init --short-name jira
  jira$ {PROG} node start # jira's poller: jira makes every request
  snow$ {PROG} initiate --no-url --mode script \\
            --remote-name jira    # prints the code
  jira$ {PROG} accept     # paste the code when asked (or pipe it: accept -):
                          # it contacts snow; both Active within seconds
  either$ {PROG} connections [show|deactivate|activate|delete ID]
  either$ {PROG} node status   # or: node stop, node install-service --user
Both public: snow initiates with --url https://jira.example.com instead.
Only jira public: the same --url; jira's accept waits for snow's node to call.
"""


def _parser() -> argparse.ArgumentParser:
    home = options(json_flag=False)
    home_json = options(json_flag=True)
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[home],
        description="Set up cross-instance ticket-sync connections. "
        "With no command, opens the console.",
        epilog=WALK_THROUGH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    parser.set_defaults(run=cmd_console)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    for group in (setup, node, connections, tickets, sync, rules, tracker, db):
        group.register(commands, home, home_json)
    return parser


def _open_home(args: argparse.Namespace, command: str) -> Home:
    """The home, its permission warnings said once, and a broken instance.toml refused.

    The console shows both its own way (a screen, a notification); `node stop`
    and `node status` must work whatever the files say, so they only warn.
    """
    from exalate_tui.transport.storage import open_home

    # Its connections open where the home chose (its files, or its database) when first
    # used: the console shows a broken instance.toml its own way.
    home = open_home(getattr(args, "home", None))
    if args.run is cmd_console:
        return home
    for warning in home.permission_warnings():
        print(f"{command}: warning: {inert(warning)}", file=sys.stderr)
    try:
        home.load_instance()
    except StoreError as error:
        if getattr(args, "checks_instance", True):
            raise
        print(f"{command}: warning: {inert(error)}", file=sys.stderr)
    return home


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.json = getattr(args, "json", False)
    command = f"{PROG} {args.command}" if args.command else PROG
    opened: list[Home] = []
    try:
        opened.append(_open_home(args, command))
        code: int = args.run(args, opened[0])
        # Inside the try: a reader gone (`initiate | true`) shows up here at the latest.
        sys.stdout.flush()
    except BrokenPipeError:
        # Python docs, "Note on SIGPIPE": nothing more reaches stdout, and no traceback
        # at exit when Python flushes it again. The connection's code is not lost:
        # `connections code ID` issues a new one for a Pending connection.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except ExalateError as error:
        # An error may say several things (each refused flag, a log's last lines): a line each.
        lines = str(error).splitlines() if error.bad_input or error.lines else [str(error)]
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
    finally:
        for home in opened:
            home.close()
    return code
