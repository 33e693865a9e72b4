"""`exalate-tui tracker`: which tracker this instance fronts (README, "The tracker").

    tracker show [--json]
    tracker set local
    tracker set servicenow --url URL --user USER [--table T] [--poll S]

The ServiceNow password comes from $EXALATE_TUI_SERVICENOW_PASSWORD, else the
first line of stdin; it is never printed, logged or put in --json. The
instance is checked before anything is saved (trackers/servicenow.verify).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pydantic import SecretStr, ValidationError

from exalate_tui.cli.common import PROG, BadInput, Parser, print_json, run_async
from exalate_tui.domain.models import TrackerConfig
from exalate_tui.home.store import Home

PASSWORD_ENV = "EXALATE_TUI_SERVICENOW_PASSWORD"


def shown(config: TrackerConfig) -> dict[str, Any]:
    """The settings as JSON data, without the password."""
    if config.kind == "embedded":
        return {"kind": "embedded"}
    return config.model_dump(mode="json", exclude={"password"})


def cmd_show(args: argparse.Namespace, home: Home) -> int:
    config = home.load_tracker_config()
    if getattr(args, "json", False):
        print_json({"tracker": shown(config)})
    elif config.kind == "embedded":
        print(f"tracker: embedded ({home.tracker_path})")
    else:
        print(f"tracker: ServiceNow {config.url}, table {config.table}, user {config.user}")
        print(f"changes looked for every {config.poll:g} s")
    return 0


def cmd_set_local(args: argparse.Namespace, home: Home) -> int:
    home.save_tracker_config(TrackerConfig())
    print(f"tracker: embedded ({home.tracker_path})")
    return 0


def _password() -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if sys.stdin.isatty():
            import getpass

            password = getpass.getpass("ServiceNow password: ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise BadInput(
            f"no password: give it on stdin or in ${PASSWORD_ENV} "
            f"(e.g. `{PROG} tracker set servicenow --url URL --user USER < password-file`)"
        )
    return password


def cmd_set_servicenow(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.trackers.adapter import TrackerError
    from exalate_tui.trackers.servicenow import settings_from, verify

    try:
        config = TrackerConfig(
            kind="servicenow",
            url=args.url.rstrip("/"),
            user=args.user,
            password=SecretStr(_password()),
            table=args.table,
            poll=args.poll,
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise BadInput(f"--{first['loc'][0]}: {first['msg']}") from None
    try:
        checked = run_async(verify(settings_from(config)))
    except TrackerError as error:
        raise BadInput(f"not saved: {error}") from None
    home.save_tracker_config(config)
    for line in checked:
        print(f"✓ {line}")
    print(f"tracker: ServiceNow {config.url}, table {config.table} (saved in tracker.toml)")
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
        help=f"a ServiceNow instance (password on stdin or in ${PASSWORD_ENV})",
    )
    snow.add_argument("--url", required=True, help="e.g. https://acme.service-now.com")
    snow.add_argument("--user", required=True, help="the integration user's user_name")
    snow.add_argument("--table", default="incident", help="the task table (default incident)")
    snow.add_argument(
        "--poll", type=float, default=5.0, help="seconds between looks for changes (default 5)"
    )
    snow.set_defaults(run=cmd_set_servicenow)
