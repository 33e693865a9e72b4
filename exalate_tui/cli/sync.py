"""`sync` (Exalate, Unexalate, Bulk; status, errors, retry, resolve) and `triggers`.

An action becomes a request to the sync engine (sync/store.py): when a node
or console runs the engine for this home, it takes the request within a
second; when none does, this command takes the engine's lock and runs it
once itself, so the replicas are queued and leave when a node next runs.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from exalate_tui.cli.common import PROG, BadInput, Parser, find, inert, print_json, run_async
from exalate_tui.domain.models import Connection, Status
from exalate_tui.home.store import Home

if TYPE_CHECKING:
    from exalate_tui.sync.store import SyncStore
    from exalate_tui.trackers.adapter import Tracker


def syncs(connection: Connection) -> bool:
    from exalate_tui.sync.engine import syncs

    return syncs(connection)


def open_tracker(home: Home) -> Tracker:
    from exalate_tui.trackers import open_tracker

    return open_tracker(home)


def open_store(home: Home) -> SyncStore:
    from exalate_tui.sync.storage import open_sync_store

    return open_sync_store(home)


def _syncing(home: Home, cid: str) -> Connection:
    connection = find(home, cid)
    if not syncs(connection):
        why = (
            "is pending: tickets sync once the partner accepts the invitation"
            if connection.status is Status.PENDING
            else "no longer syncs (the partner deleted it)"
        )
        raise BadInput(f"--connection: {connection.name!r} {why}")
    return connection


async def _ticket_exists(tracker: Tracker, key: str) -> None:
    from exalate_tui.trackers.adapter import TicketNotFound

    try:
        await tracker.get(key)
    except TicketNotFound as error:
        raise BadInput(f"KEY: {error}") from None


def _ask(home: Home, action: str, cid: str | None, key: str | None, arg: str | None) -> str:
    """Queue the request; run the engine here if no other process does. What happened."""
    from exalate_tui.sync.engine import Engine, EngineLock
    from exalate_tui.transport.storage import open_streams

    store = open_store(home)
    try:
        store.request(action, cid, key, arg)
        with EngineLock(home).held() as mine:
            if not mine:
                return "The running node (or console) takes it within a second."

            async def run() -> None:
                streams = open_streams(home, hints=False)
                tracker = open_tracker(home)
                try:
                    await Engine(home, streams, tracker, store).settle()
                finally:
                    await tracker.close()
                    streams.close()

            run_async(run())
            return f"Queued; it reaches the partner while `{PROG} node` (or the console) runs."
    finally:
        store.close()


def cmd_exalate(args: argparse.Namespace, home: Home) -> int:
    connection = _syncing(home, args.connection)
    _check_key(home, args.key)
    said = _ask(home, "exalate", connection.id, args.key, None)
    if args.json:
        print_json({"exalate": {"key": args.key, "connection": connection.id}})
    else:
        print(f"Exalated {inert(args.key)} over {inert(connection.name)}. {said}")
    return 0


def cmd_unexalate(args: argparse.Namespace, home: Home) -> int:
    connection = _syncing(home, args.connection)
    link = None
    if home.state_path.exists():  # nothing synced yet: nothing to open (or create)
        store = open_store(home)
        try:
            link = store.link(connection.id, args.key)
        finally:
            store.close()
    if link is None or not link.active:
        raise BadInput(
            f"KEY: {inert(args.key)} does not sync over {connection.name!r}; "
            f"`{PROG} sync status --connection {connection.id[:8]}` lists what does"
        )
    said = _ask(home, "unexalate", connection.id, args.key, None)
    if args.json:
        print_json({"unexalate": {"key": args.key, "connection": connection.id}})
    else:
        print(f"{inert(args.key)} no longer syncs over {inert(connection.name)}; both copies kept.")
        print(said)
    return 0


def cmd_bulk(args: argparse.Namespace, home: Home) -> int:
    connection = _syncing(home, args.connection)
    if not connection.triggers:
        raise BadInput(
            f"--connection: {connection.name!r} has no triggers: add one with "
            f"`{PROG} triggers add --connection {connection.id[:8]} QUERY`"
        )
    if args.trigger is not None and not 1 <= args.trigger <= len(connection.triggers):
        raise BadInput(
            f"--trigger: {connection.name!r} has triggers 1 to {len(connection.triggers)}"
        )
    matched = run_async(_matching(home, connection, args.trigger))
    said = _ask(
        home, "bulk", connection.id, None, None if args.trigger is None else str(args.trigger)
    )
    if args.json:
        print_json({"bulk": {"connection": connection.id, "tickets": matched}})
    else:
        print(f"Bulk exalate over {inert(connection.name)}: {matched} tickets match. {said}")
    return 0


async def _matching(home: Home, connection: Connection, trigger: int | None) -> int:
    tracker = open_tracker(home)
    try:
        texts = connection.triggers if trigger is None else [connection.triggers[trigger - 1]]
        keys: set[str] = set()
        for text in texts:
            keys.update(t.key for t in await tracker.search(tracker.check_query(text)))
        return len(keys)
    finally:
        await tracker.close()


def _check_key(home: Home, key: str) -> None:
    async def check() -> None:
        tracker = open_tracker(home)
        try:
            await _ticket_exists(tracker, key)
        finally:
            await tracker.close()

    run_async(check())


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return "-"
    seconds = max(0, int(now - when))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def status_of(home: Home, connection: Connection, store: SyncStore, streams: Any) -> dict[str, Any]:
    """One connection's sync state, as `sync status --json` prints it."""
    cid = connection.id
    links = store.links(cid)
    out_count, out_oldest = streams.backlog(cid)
    in_count, in_oldest = streams.backlog(cid, inbox_after=store.cursor(cid))
    errors = store.errors(cid)
    from exalate_tui.sync.engine import TRACKER_ERROR

    tracker_error = store.meta(TRACKER_ERROR)
    return {
        "id": cid,
        "name": connection.name,
        "status": "error" if tracker_error else connection.status.value,
        "error": tracker_error,
        "triggers": connection.triggers,
        "synced": [
            {
                "local_key": link.local_key,
                "remote_key": link.remote_key,
                "state": "syncing" if link.active else "stopped",
                "last_synced": link.last_synced,
            }
            for link in links
        ],
        "queue": {
            "outgoing": out_count,
            "outgoing_oldest": out_oldest,
            "incoming": in_count,
            "incoming_oldest": in_oldest,
        },
        "errors": len(errors),
    }


def cmd_status(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.transport.storage import open_streams

    if args.connection:
        connections = [find(home, args.connection)]
    else:
        connections = [c for c in home.load_connections().connections if syncs(c)]
    home.ensure()
    store, streams = open_store(home), open_streams(home, hints=False)
    try:
        states = [status_of(home, c, store, streams) for c in connections]
    finally:
        store.close()
        streams.close()
    if args.json:
        print_json({"connections": states})
        return 0
    if not states:
        print(f"No connection syncs yet: `{PROG} connections` lists them.")
    now = time.time()
    for state in states:
        queue = state["queue"]
        print(f"{inert(state['name'])} ({state['id'][:8]}): {state['status']}")
        if state["error"]:
            print(f"  error: {inert(state['error'])} (retried until it works)")
        print(
            f"  {_count(len(state['synced']), 'ticket')} synced · queue: {queue['outgoing']} out "
            f"(oldest {_ago(queue['outgoing_oldest'], now)}), {queue['incoming']} in · "
            f"{_count(state['errors'], 'error')}"
        )
        for n, trigger in enumerate(state["triggers"], 1):
            print(f"  trigger {n}: {inert(trigger)}")
        if args.connection:
            for link in state["synced"]:
                print(
                    f"  {inert(link['local_key'])} ↔ {inert(link['remote_key'] or 'pending')}  "
                    f"{link['state']}  {_ago(link['last_synced'], now)}"
                )
    return 0


def cmd_errors(args: argparse.Namespace, home: Home) -> int:
    errors = []
    if home.state_path.exists():
        store = open_store(home)
        try:
            errors = store.errors()
        finally:
            store.close()
    names = {c.id: c.name for c in home.load_connections().connections}
    if args.json:
        print_json(
            {
                "errors": [
                    {
                        "id": e.id,
                        "connection": e.cid,
                        "direction": "outgoing" if e.direction == "out" else "incoming",
                        "local_key": e.local_key,
                        "remote_key": e.remote_key,
                        "message": e.message,
                        "first": e.first_at,
                        "last": e.last_at,
                        "attempts": e.attempts,
                        "holds": e.holds,
                    }
                    for e in errors
                ]
            }
        )
        return 0
    if not errors:
        print("No sync errors.")
    now = time.time()
    for e in errors:
        ticket = e.local_key or f"{names.get(e.cid, e.cid[:8])}'s {e.remote_key}"
        print(
            f"#{e.id}  {inert(ticket)}  {'out' if e.direction == 'out' else 'in'}  "
            f"{inert(names.get(e.cid, e.cid[:8]))}  {e.attempts} attempts, last "
            f"{_ago(e.last_at, now)}"
        )
        print(f"     {inert(e.message)}")
    if errors:
        print(f"`{PROG} sync retry ID|--all` tries again; `{PROG} sync resolve ID` drops one.")
    return 0


def _error_ids(home: Home, args: argparse.Namespace) -> list[int]:
    known: list[int] = []
    if home.state_path.exists():
        store = open_store(home)
        try:
            known = [e.id for e in store.errors()]
        finally:
            store.close()
    if getattr(args, "all", False):
        return known
    if args.error not in known:
        raise BadInput(
            f"ERROR: there is no sync error #{args.error}; `{PROG} sync errors` lists them"
        )
    return [args.error]


def cmd_retry(args: argparse.Namespace, home: Home) -> int:
    if args.error is None and not args.all:
        raise BadInput("ERROR: give an error's number (`sync errors` lists them), or --all")
    ids = _error_ids(home, args)
    said = ""
    for error_id in ids:
        said = _ask(home, "retry", None, None, str(error_id))
    if args.json:
        print_json({"retried": ids})
    else:
        print(f"Retrying {len(ids)} errors. {said}")
    return 0


def cmd_resolve(args: argparse.Namespace, home: Home) -> int:
    ids = _error_ids(home, args)
    for error_id in ids:
        _ask(home, "resolve", None, None, str(error_id))
    if args.json:
        print_json({"resolved": ids})
    else:
        print(f"Resolved error #{ids[0]}.")
    return 0


# -- triggers ----------------------------------------------------------------------


def cmd_triggers_list(args: argparse.Namespace, home: Home) -> int:
    if args.connection:
        connections = [find(home, args.connection)]
    else:
        connections = home.load_connections().connections
    if args.json:
        print_json({"triggers": {c.id: c.triggers for c in connections}})
        return 0
    for connection in connections:
        print(f"{inert(connection.name)} ({connection.id[:8]}):")
        if not connection.triggers:
            print("  no triggers: tickets sync only when exalated one by one")
        for n, trigger in enumerate(connection.triggers, 1):
            print(f"  {n}. {inert(trigger)}")
    return 0


def cmd_triggers_add(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.sync.triggers import add_trigger
    from exalate_tui.trackers import check_query
    from exalate_tui.trackers.adapter import QueryError

    connection = find(home, args.connection)
    try:
        updated = add_trigger(home, partial(check_query, home), connection.id, args.query)
    except QueryError as error:
        raise BadInput(f"QUERY: {error}") from None
    if args.json:
        print_json({"triggers": updated.triggers})
    else:
        print(
            f"Trigger {len(updated.triggers)} of {inert(updated.name)}: {inert(args.query)}\n"
            f"Tickets that match sync when they next change; `{PROG} sync bulk --connection "
            f"{updated.id[:8]}` syncs every match now."
        )
    return 0


def cmd_triggers_remove(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.sync.triggers import remove_trigger

    connection = find(home, args.connection)
    text = remove_trigger(home, connection.id, args.number)
    if args.json:
        print_json({"removed": text})
    else:
        print(f"Removed trigger {args.number} of {inert(connection.name)}: {inert(text)}")
    return 0


def register(commands: Any, home: Parser, home_json: Parser) -> None:
    """Add `sync` and `triggers`; `home` and `home_json` are the shared options."""
    sync = commands.add_parser(
        "sync", parents=[home_json], help="sync tickets: exalate, unexalate, bulk, status, errors"
    )
    sync.set_defaults(run=cmd_status, connection=None)
    actions = sync.add_subparsers(title="actions", metavar="ACTION")

    def connection_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
        parser.add_argument(
            "--connection",
            metavar="ID",
            required=required,
            help="a connection id or a unique prefix of it",
        )

    for name, run, what in (
        ("exalate", cmd_exalate, "sync one ticket over a connection now"),
        ("unexalate", cmd_unexalate, "stop syncing one ticket (both copies kept)"),
    ):
        action = actions.add_parser(name, parents=[home_json], help=what)
        action.add_argument("key", metavar="KEY", help="the local ticket's key")
        connection_option(action, required=True)
        action.set_defaults(run=run)
    bulk = actions.add_parser(
        "bulk", parents=[home_json], help="sync every ticket a connection's triggers match now"
    )
    connection_option(bulk, required=True)
    bulk.add_argument("--trigger", metavar="N", type=int, help="only trigger N (`triggers list`)")
    bulk.set_defaults(run=cmd_bulk)
    status = actions.add_parser(
        "status", parents=[home_json], help="synced tickets, queue and errors per connection"
    )
    connection_option(status, required=False)
    status.set_defaults(run=cmd_status)
    actions.add_parser("errors", parents=[home_json], help="what failed, per ticket").set_defaults(
        run=cmd_errors
    )
    retry = actions.add_parser("retry", parents=[home_json], help="try failed tickets again")
    retry.add_argument("error", metavar="ERROR", type=int, nargs="?", help="an error's number")
    retry.add_argument("--all", action="store_true", help="every error")
    retry.set_defaults(run=cmd_retry)
    resolve = actions.add_parser(
        "resolve", parents=[home_json], help="drop an error; its ticket syncs on its next change"
    )
    resolve.add_argument("error", metavar="ERROR", type=int, help="an error's number")
    resolve.set_defaults(run=cmd_resolve)

    triggers = commands.add_parser(
        "triggers", parents=[home_json], help="which tickets sync automatically, per connection"
    )
    triggers.set_defaults(run=cmd_triggers_list, connection=None)
    trigger_actions = triggers.add_subparsers(title="actions", metavar="ACTION")
    listing = trigger_actions.add_parser("list", parents=[home_json], help="the default")
    connection_option(listing, required=False)
    listing.set_defaults(run=cmd_triggers_list)
    add = trigger_actions.add_parser(
        "add",
        parents=[home_json],
        help="add a filter in ServiceNow's encoded-query syntax, e.g. 'priority<=2^type=incident'",
    )
    connection_option(add, required=True)
    add.add_argument("query", metavar="QUERY", help="the filter; checked before it is saved")
    add.set_defaults(run=cmd_triggers_add)
    remove = trigger_actions.add_parser("remove", parents=[home_json], help="remove trigger N")
    connection_option(remove, required=True)
    remove.add_argument("number", metavar="N", type=int, help="as `triggers list` numbers it")
    remove.set_defaults(run=cmd_triggers_remove)
