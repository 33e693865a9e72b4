"""`exalate-tui db`: the PostgreSQL database a home keeps its streams and connections in
(README, PostgreSQL).

    db check [--json]     can it be reached, is its schema the one this exalate-tui reads,
                          how many connections it holds, is this home's key theirs
    db migrate [--json]   bring its schema to this exalate-tui's version (workers may run)

The database is the home's choice (`init --database URL`, or
$EXALATE_TUI_DATABASE_URL). A home on state.sqlite3 has nothing here to check
(exit 2, saying how to choose PostgreSQL); a URL that does not parse is exit
2; a database that cannot be reached, or whose schema is not current, exit 1,
naming it without its password and what to fix; a database key that is
missing or not the one the connections' secrets were written with, exit 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from exalate_tui.cli.common import PROG, BadInput, inert, print_json
from exalate_tui.domain.models import shown_database
from exalate_tui.home.store import Home


def _url(home: Home) -> str:
    from exalate_tui.transport.storage import ENV, database_url

    url = database_url(home)
    if url is None:
        raise BadInput(
            f"this home keeps its streams in {home.state_path}, not in PostgreSQL: choose a "
            f"database with `{PROG} init --short-name S --database postgresql://...` "
            f"or ${ENV}"
        )
    return url


def cmd_check(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.transport.pg_streams import SCHEMA_VERSION
    from exalate_tui.transport.storage import open_pg, open_pg_connections

    url = _url(home)
    # Without migrating, nor registering a key: a check changes nothing.
    state = open_pg(url, migrate=False, hints=False)
    state.close()
    store = open_pg_connections(home, url, migrate=False, register=False)
    try:
        connections, tombstones = store.counts()
    finally:
        store.close()
    where = shown_database(url)
    key = {"source": store.key_source, "registered": store.key_registered}
    if args.json:
        print_json(
            {
                "database": where,
                "reachable": True,
                "schema_version": SCHEMA_VERSION,
                "connections": connections,
                "tombstones": tombstones,
                "key": key,
            }
        )
        return 0
    print(f"{inert(where)}: reachable, schema at version {SCHEMA_VERSION} (current)")
    print(f"  connections: {connections}, tombstones: {tombstones}")
    if store.key_registered:
        print(f"  key: {inert(store.key_source)}, the one their secrets are encrypted with")
    else:
        print(
            f"  key: {inert(store.key_source)}; none registered in the database yet (the "
            "first worker to open it registers its own)"
        )
    return 0


def cmd_migrate(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.transport.storage import migrate_pg

    url = _url(home)
    where = shown_database(url)
    before, after = migrate_pg(url)
    result: dict[str, Any] = {"database": where, "from": before, "to": after}
    if args.json:
        print_json(result)
    elif before == after:
        print(f"{inert(where)}: schema already at version {after}; nothing to do")
    else:
        print(f"{inert(where)}: schema moved from version {before} to {after}")
    return 0


def register(
    commands: Any, home: argparse.ArgumentParser, home_json: argparse.ArgumentParser
) -> None:
    db = commands.add_parser(
        "db", parents=[home], help="the PostgreSQL database of this home's streams (check, migrate)"
    )
    actions = db.add_subparsers(title="actions", metavar="ACTION")
    db.set_defaults(run=lambda args, home: db.print_help() or 2)
    check = actions.add_parser(
        "check",
        parents=[home_json],
        help="can it be reached; is its schema current (changes nothing)",
    )
    check.set_defaults(run=cmd_check)
    migrate = actions.add_parser(
        "migrate", parents=[home_json], help="bring its schema to this version of exalate-tui"
    )
    migrate.set_defaults(run=cmd_migrate)
