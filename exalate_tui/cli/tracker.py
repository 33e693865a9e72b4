"""`exalate-tui tracker`: which tracker this instance fronts (README, "The tracker").

    tracker show [--json]
    tracker set local
    tracker set servicenow --url URL (--user USER | --client-id ID) [--table T ...] [--poll S]

The ServiceNow password (with --user) comes from $EXALATE_TUI_SERVICENOW_PASSWORD,
the OAuth client secret (with --client-id) from $EXALATE_TUI_SERVICENOW_CLIENT_SECRET,
else either from the first line of stdin; neither is ever printed, logged or put in
--json. The instance is checked before anything is saved (trackers/servicenow.verify).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from pydantic import SecretStr, ValidationError

from exalate_tui.cli.common import PROG, BadInput, Parser, print_json, run_async
from exalate_tui.domain.models import TrackerConfig
from exalate_tui.domain.models import shown as shown_text
from exalate_tui.home.store import Home

PASSWORD_ENV = "EXALATE_TUI_SERVICENOW_PASSWORD"
SECRET_ENV = "EXALATE_TUI_SERVICENOW_CLIENT_SECRET"


def shown(config: TrackerConfig) -> dict[str, Any]:
    """The settings as JSON data, without the password or the client secret."""
    if config.kind == "embedded":
        return {"kind": "embedded"}
    data = config.model_dump(mode="json", exclude={"password", "client_secret"})
    data["auth"] = "oauth" if config.client_id else "basic"
    data["fields"] = {table: len(columns) for table, columns in config.fields.items()}
    return {k: v for k, v in data.items() if v is not None}


def cmd_show(args: argparse.Namespace, home: Home) -> int:
    config = home.load_tracker_config()
    if getattr(args, "json", False):
        print_json({"tracker": shown(config)})
    elif config.kind == "embedded":
        print(f"tracker: embedded ({home.tracker_path})")
    else:
        who = f"OAuth client {config.client_id}" if config.client_id else f"user {config.user}"
        tables = ", ".join(config.tables)
        print(f"tracker: ServiceNow {config.url}, {_tables(config)} {tables}, {who}")
        print(f"changes looked for every {config.poll:g} s")
    return 0


def _tables(config: TrackerConfig) -> str:
    return "table" if len(config.tables) == 1 else "tables"


def cmd_set_local(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.trackers.setup import save_local

    save_local(home)
    print(f"tracker: embedded ({home.tracker_path})")
    return 0


def _secret(what: str, env: str, example: str) -> str:
    """The password or client secret: from `env`, else stdin (a prompt in a terminal)."""
    secret = os.environ.get(env)
    if secret is None:
        if sys.stdin.isatty():
            import getpass

            secret = getpass.getpass(f"ServiceNow {what}: ")
        else:
            secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise BadInput(
            f"no {what}: give it on stdin or in ${env} "
            f"(e.g. `{PROG} tracker set servicenow --url URL {example} < secret-file`)"
        )
    return secret


def cmd_set_servicenow(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.trackers.adapter import TrackerError
    from exalate_tui.trackers.setup import check_and_save

    for table in args.table or ():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,79}", table):
            raise BadInput(
                f"--table {shown_text(table)!r}: not a ServiceNow table name (lower-case "
                "letters, digits and _, e.g. incident, problem, change_request, sc_req_item)"
            )
    if args.client_id is not None:
        credentials: dict[str, Any] = {
            "client_id": args.client_id,
            "client_secret": SecretStr(_secret("client secret", SECRET_ENV, "--client-id ID")),
        }
    else:
        password = _secret("password", PASSWORD_ENV, "--user USER")
        credentials = {"user": args.user, "password": SecretStr(password)}
    try:
        config = TrackerConfig(
            kind="servicenow",
            url=args.url.rstrip("/"),
            tables=list(dict.fromkeys(args.table or ["incident"])),
            poll=args.poll,
            **credentials,
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise BadInput(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    try:
        checked = run_async(check_and_save(home, config))
    except TrackerError as error:
        raise BadInput(f"not saved: {error}") from None
    for line in checked:
        print(f"✓ {line}")
    tables = ", ".join(config.tables)
    print(f"tracker: ServiceNow {config.url}, {_tables(config)} {tables} (saved in tracker.toml)")
    return 0


def register(commands: Any, home: Parser, home_json: Parser) -> None:
    """Add `tracker`; `home` and `home_json` are the shared options."""
    tracker = commands.add_parser(
        "tracker", parents=[home_json], help="the ticket system this instance fronts"
    )
    tracker.set_defaults(run=cmd_show)
    actions = tracker.add_subparsers(title="actions", metavar="ACTION")
    show = actions.add_parser("show", parents=[home_json], help="which tracker, and its settings")
    show.set_defaults(run=cmd_show)
    sets = actions.add_parser("set", parents=[home], help="front another tracker")
    sets.set_defaults(run=lambda args, home: sets.print_help() or 2)
    kinds = sets.add_subparsers(title="trackers", metavar="TRACKER")
    local = kinds.add_parser("local", parents=[home], help="the embedded tracker (tracker.sqlite3)")
    local.set_defaults(run=cmd_set_local)
    snow = kinds.add_parser(
        "servicenow",
        parents=[home],
        help="a ServiceNow instance (the password or client secret on stdin)",
    )
    snow.add_argument("--url", required=True, help="e.g. https://acme.service-now.com")
    who = snow.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--user", help=f"the integration user's user_name (password on stdin or ${PASSWORD_ENV})"
    )
    who.add_argument(
        "--client-id",
        help=f"an OAuth client's id, for client credentials (secret on stdin or ${SECRET_ENV})",
    )
    snow.add_argument(
        "--table",
        action="append",
        metavar="TABLE",
        help="a task table whose records are tickets, repeatable (default incident; e.g. "
        "--table incident --table problem --table change_request --table sc_req_item)",
    )
    snow.add_argument(
        "--poll", type=float, default=5.0, help="seconds between looks for changes (default 5)"
    )
    snow.set_defaults(run=cmd_set_servicenow)
