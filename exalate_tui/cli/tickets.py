"""`tickets`: list, create, show, edit, comment on and attach to the tickets of the
tracker this instance fronts (`trackers.open_tracker`: the embedded one, `tracker.sqlite3`).

Every value is checked before anything is written: a refused flag names
itself and what it takes (exit 2). Ticket text is the user's or a partner's,
so every line of it is printed through `inert`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from exalate_tui.cli.common import PROG, BadInput, inert, print_json, run_async
from exalate_tui.home.store import Home
from exalate_tui.trackers import open_tracker, tracker_exists
from exalate_tui.trackers.adapter import (
    PRIORITIES,
    STATUSES,
    TYPES,
    Attachment,
    Comment,
    QueryError,
    Ticket,
    TicketNotFound,
    TicketRefused,
    Tracker,
    ticket_data,
)
from exalate_tui.trackers.query import parse

R = TypeVar("R")

# The flag that sets each field a tracker may refuse, so the refusal names what to change.
FLAGS = {
    "summary": "--summary",
    "description": "--description",
    "type": "--type",
    "status": "--status",
    "priority": "--priority",
    "assignee": "--assignee",
    "labels": "--label",
    "body": "--body",
    "name": "FILE",
    "data": "FILE",
}
PRIORITY_WORDS = {1: "critical", 2: "high", 3: "moderate", 4: "low", 5: "planning"}


def _with_tracker(
    home: Home, work: Callable[[Tracker], Awaitable[R]], *, key: str | None = None
) -> R:
    """`work` on the home's tracker, closed after; its refusals as bad input naming the flag.

    A command on ticket `key` in a home with no tracker yet is refused before one is made.
    """
    if key is not None and not tracker_exists(home):
        raise BadInput(
            f"KEY: no ticket {inert(key)!r}: this instance has no tickets yet; "
            f"create one with `{PROG} tickets create --summary S`"
        )

    async def run() -> R:
        tracker = open_tracker(home)
        try:
            return await work(tracker)
        finally:
            await tracker.close()

    try:
        return run_async(run())
    except TicketNotFound as missing:
        raise BadInput(f"KEY: {missing}") from None
    except TicketRefused as refused:
        flag = FLAGS.get(refused.field or "", "a value")
        raise BadInput(f"{flag}: {refused}") from None


def _links(home: Home, key: str) -> list[dict[str, Any]]:
    """The connections ticket `key` is synced over, and the partner's ticket on each,
    from the sync engine's links in state.sqlite3 (none before it ever ran)."""
    from exalate_tui.sync.storage import open_sync_store, sync_state_exists

    if not sync_state_exists(home):
        return []
    store = open_sync_store(home)
    try:
        links = store.links(local_key=key)
        errors = {e.cid: e.message for e in store.errors() if e.local_key == key}
    finally:
        store.close()
    return [
        {
            "connection": link.cid,
            "remote_key": link.remote_key,
            "state": "syncing" if link.active else "stopped",
            "last_synced": _stamp(link.last_synced),
            "last_error": errors.get(link.cid),
        }
        for link in links
    ]


def _stamp(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat()


def cmd_tickets_history(args: argparse.Namespace, home: Home) -> int:
    """Every change the sync engine made to a ticket: which fields, from which side's
    replica, under which rules, when (sync/store.py's history)."""
    ticket = _with_tracker(home, lambda tracker: tracker.get(args.key), key=args.key)
    entries = []
    from exalate_tui.sync.storage import open_sync_store, sync_state_exists

    if sync_state_exists(home):
        store = open_sync_store(home)
        try:
            entries = store.history(ticket.key)
        finally:
            store.close()
    names = {c.id: c.name for c in home.load_connections().connections}
    if args.json:
        print_json(
            {
                "history": [
                    {
                        "at": _stamp(e.at),
                        "connection": e.cid,
                        "remote_key": e.remote_key,
                        "version": e.version,
                        "rules": e.rules,
                        "fields": e.changes.get("fields", {}),
                        "comments": e.changes.get("comments", 0),
                        "attachments": e.changes.get("attachments", []),
                        "note": e.note,
                    }
                    for e in entries
                ]
            }
        )
        return 0
    if not entries:
        print(f"{inert(ticket.key)}: no changes made by sync.")
    for e in entries:
        where = f"{names.get(e.cid, e.cid[:8])}, {e.remote_key or '?'}"
        version = f" v{e.version}" if e.version else ""
        moment = _when(datetime.fromtimestamp(e.at, UTC))
        print(f"{moment}  from {inert(where)}{version} ({inert(e.rules)} rules)")
        for name, (old, new) in e.changes.get("fields", {}).items():
            print(f"  {inert(name)}: {inert(old)} → {inert(new)}")
        if e.changes.get("comments"):
            print(f"  {e.changes['comments']} comment(s) added")
        for name in e.changes.get("attachments", []):
            print(f"  attachment added: {inert(name)}")
        if e.note:
            print(f"  {inert(e.note)}")
    return 0


# -- list ---------------------------------------------------------------------------


def cmd_tickets_list(args: argparse.Namespace, home: Home) -> int:
    text = getattr(args, "filter", None)

    async def work(tracker: Tracker) -> list[Ticket]:
        query = None
        if text:
            try:
                query = tracker.check_query(text)
            except QueryError as error:
                raise BadInput(f"--filter: {error}") from None
        return await tracker.search(query)

    if tracker_exists(home):
        tickets = _with_tracker(home, work)
    else:
        # No tickets yet, and listing them makes no file; the filter is still checked.
        from exalate_tui.trackers.embedded import FIELDS

        try:
            parse(text or "", FIELDS)
        except QueryError as error:
            raise BadInput(f"--filter: {error}") from None
        tickets = []
    if args.json:
        print_json({"tickets": [_brief(ticket) for ticket in tickets]})
    elif tickets:
        _print_table(tickets)
    elif text:
        print("No ticket matches the filter.")
    else:
        print(f"No tickets yet: create one with `{PROG} tickets create --summary S`.")
    return 0


def _print_table(tickets: list[Ticket]) -> None:
    header = ("KEY", "STATUS", "PRI", "TYPE", "UPDATED", "SUMMARY")
    rows = [header] + [
        (
            inert(t.key),
            t.status,
            str(t.priority),
            t.type,
            t.updated.strftime("%Y-%m-%d %H:%M"),
            inert(t.summary),
        )
        for t in tickets
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


# -- create, edit ---------------------------------------------------------------------


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ticket fields the flags set (absent flags: not set)."""
    fields: dict[str, Any] = {}
    for name in ("summary", "description", "type", "status", "priority", "assignee"):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    if getattr(args, "labels", None) is not None:
        fields["labels"] = args.labels
    return fields


def cmd_tickets_create(args: argparse.Namespace, home: Home) -> int:
    fields = _fields(args)
    ticket = _with_tracker(home, lambda tracker: tracker.create(fields))
    if args.json:
        print_json({"ticket": _full(home, ticket)})
    else:
        print(inert(ticket.key))
    return 0


def cmd_tickets_edit(args: argparse.Namespace, home: Home) -> int:
    fields = _fields(args)
    if not fields:
        raise BadInput(
            "nothing to change: give at least one of --summary, --description, --type, "
            "--status, --priority, --assignee, --label"
        )

    async def work(tracker: Tracker) -> tuple[Ticket, Ticket]:
        before = await tracker.get(args.key)
        return before, await tracker.update(before.key, fields)

    before, after = _with_tracker(home, work, key=args.key)
    if args.json:
        print_json({"ticket": _full(home, after)})
    elif after == before:
        print(f"{inert(after.key)}: nothing changed (it already had those values)")
    else:
        print(f"Updated {inert(after.key)}")
    return 0


# -- show -----------------------------------------------------------------------------


def cmd_tickets_show(args: argparse.Namespace, home: Home) -> int:
    ticket = _with_tracker(home, lambda tracker: tracker.get(args.key), key=args.key)
    if args.json:
        print_json({"ticket": _full(home, ticket)})
        return 0
    print(f"{inert(ticket.key)}  {inert(ticket.summary)}")
    for label, value in (
        ("type", ticket.type),
        ("status", ticket.status),
        ("priority", f"{ticket.priority} ({PRIORITY_WORDS.get(ticket.priority, '?')})"),
        ("assignee", ticket.assignee),
        ("reporter", ticket.reporter),
        ("labels", ", ".join(ticket.labels)),
        ("created", _when(ticket.created)),
        ("updated", _when(ticket.updated)),
    ):
        print(f"  {label.ljust(9)} {inert(value) if value else '-'}")
    if ticket.description:
        print("Description:")
        _print_text(ticket.description)
    print(f"Comments ({len(ticket.comments)}):" if ticket.comments else "Comments: none")
    for comment in ticket.comments:
        internal = "  (work note: stays on this instance)" if comment.internal else ""
        print(f"  {_when(comment.created)}  {inert(comment.author)}{internal}")
        _print_text(comment.body, indent="    ")
    if ticket.attachments:
        print(f"Attachments ({len(ticket.attachments)}):")
    else:
        print("Attachments: none")
    for attachment in ticket.attachments:
        print(
            f"  {inert(attachment.name)}  {attachment.size:,} bytes  "
            f"sha256 {attachment.sha256[:12]}  {_when(attachment.created)}"
        )
    links = _links(home, ticket.key)
    print(f"Synced over ({len(links)}):" if links else "Synced over: none")
    names = {c.id: c.name for c in home.load_connections().connections}
    for link in links:
        when = link["last_synced"]
        last = f"last sync {_when(datetime.fromisoformat(when))}" if when else "not synced yet"
        remote = link["remote_key"] or "(the partner's key is not known yet)"
        name = names.get(link["connection"], link["connection"][:8])
        print(f"  {inert(name)}  ↔ {inert(remote)}  {link['state']}, {last}")
        if link["last_error"]:
            print(f"    error: {inert(link['last_error'])}")
    return 0


def _print_text(text: str, indent: str = "  ") -> None:
    """Text of many lines, each made inert: a line break shows as one, not as `\\n`."""
    for line in text.splitlines() or [""]:
        print(f"{indent}{inert(line)}".rstrip())


def _when(moment: Any) -> str:
    return str(moment.strftime("%Y-%m-%d %H:%M:%S UTC"))


# -- comment, attach ------------------------------------------------------------------


def cmd_tickets_comment(args: argparse.Namespace, home: Home) -> int:
    async def work(tracker: Tracker) -> tuple[str, Comment]:
        key = (await tracker.get(args.key)).key
        return key, await tracker.comment(key, args.body, internal=args.internal)

    key, comment = _with_tracker(home, work, key=args.key)
    if args.json:
        print_json({"key": key, "comment": _comment(comment)})
    else:
        what = "Work note" if comment.internal else "Comment"
        print(f"{what} added to {inert(key)}")
    return 0


def cmd_tickets_attach(args: argparse.Namespace, home: Home) -> int:
    path = Path(args.file)

    async def work(tracker: Tracker) -> tuple[str, Attachment]:
        ticket = await tracker.get(args.key)  # an unknown key before reading the file
        data = _read(path, tracker.max_attachment)
        return ticket.key, await tracker.attach(ticket.key, path.name, data)

    key, attachment = _with_tracker(home, work, key=args.key)
    if args.json:
        print_json({"key": key, "attachment": _attachment(attachment)})
    else:
        print(f"Attached {inert(attachment.name)} ({attachment.size:,} bytes) to {inert(key)}")
    return 0


def _read(path: Path, limit: int) -> bytes:
    """The file's bytes; refused, unread, when larger than the tracker takes."""
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        raise BadInput(f"FILE: {inert(path)} does not exist; give the path of a file") from None
    except IsADirectoryError:
        raise BadInput(f"FILE: {inert(path)} is a folder; give the path of a file") from None
    except PermissionError:
        raise BadInput(f"FILE: {inert(path)} cannot be read (permission denied)") from None
    if len(data) > limit:
        raise BadInput(
            f"FILE: {inert(path)} is larger than this tracker takes "
            f"({limit:,} bytes, {limit / 1024 / 1024:g} MiB)"
        )
    return data


# -- JSON -----------------------------------------------------------------------------


def _brief(ticket: Ticket) -> dict[str, Any]:
    return ticket_data(ticket)


def _full(home: Home, ticket: Ticket) -> dict[str, Any]:
    return _brief(ticket) | {
        "comments": [_comment(comment) for comment in ticket.comments],
        "attachments": [_attachment(attachment) for attachment in ticket.attachments],
        "links": _links(home, ticket.key),
    }


def _comment(comment: Comment) -> dict[str, Any]:
    return {
        "author": comment.author,
        "body": comment.body,
        "internal": comment.internal,
        "created": comment.created.isoformat(),
    }


def _attachment(attachment: Attachment) -> dict[str, Any]:
    return {
        "name": attachment.name,
        "size": attachment.size,
        "sha256": attachment.sha256,
        "created": attachment.created.isoformat(),
    }


# -- flags ----------------------------------------------------------------------------


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise argparse.ArgumentTypeError(
                f"{inert(value)!r} is not one; give one of {', '.join(allowed)}"
            )
        return value

    return check


def _priority(value: str) -> int:
    words = ", ".join(f"{n} {word}" for n, word in PRIORITY_WORDS.items())
    if not re.fullmatch(r"[0-9]+", value) or int(value) not in PRIORITIES:
        raise argparse.ArgumentTypeError(
            f"{inert(value)!r} is not a priority; give 1 to 5 ({words})"
        )
    return int(value)


def _field_flags(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    parser.add_argument(
        "--summary", required=creating, metavar="S", help="one line saying what it is about"
    )
    parser.add_argument("--description", metavar="D", help="the details")
    parser.add_argument(
        "--type",
        type=_choice(TYPES),
        metavar="T",
        help=f"{', '.join(TYPES)}" + (" (default: incident)" if creating else ""),
    )
    parser.add_argument(
        "--status",
        type=_choice(STATUSES),
        metavar="S",
        help=f"{', '.join(STATUSES)}" + (" (default: new)" if creating else ""),
    )
    parser.add_argument(
        "--priority",
        type=_priority,
        metavar="N",
        help="1 critical, 2 high, 3 moderate, 4 low, 5 planning"
        + (" (default: 3)" if creating else ""),
    )
    parser.add_argument("--assignee", metavar="A", help="who works on it")
    parser.add_argument(
        "--label",
        dest="labels",
        action="append",
        metavar="L",
        help="a label; repeat for more" + ("" if creating else " (replaces the ticket's labels)"),
    )


def register(
    commands: Any, home: argparse.ArgumentParser, home_json: argparse.ArgumentParser
) -> None:
    tickets = commands.add_parser(
        "tickets",
        parents=[home_json],
        help="list, create, show, edit, comment on or attach to this instance's tickets",
    )
    tickets.add_argument(
        "--filter", metavar="Q", help="an encoded query, e.g. status=new^priority<=2"
    )
    tickets.set_defaults(run=cmd_tickets_list)
    actions = tickets.add_subparsers(title="actions", metavar="ACTION")

    listing = actions.add_parser("list", parents=[home_json], help="the default")
    listing.add_argument(
        "--filter",
        metavar="Q",
        default=argparse.SUPPRESS,
        help="an encoded query (ServiceNow's syntax), e.g. status=new^priority<=2",
    )
    listing.set_defaults(run=cmd_tickets_list)

    create = actions.add_parser(
        "create", parents=[home_json], help="create a ticket; prints its key"
    )
    _field_flags(create, creating=True)
    create.set_defaults(run=cmd_tickets_create)

    show = actions.add_parser(
        "show", parents=[home_json], help="one ticket with its comments and attachments"
    )
    show.add_argument("key", metavar="KEY", help="a ticket's key, e.g. SNOW-1")
    show.set_defaults(run=cmd_tickets_show)

    edit = actions.add_parser("edit", parents=[home_json], help="change a ticket's fields")
    edit.add_argument("key", metavar="KEY")
    _field_flags(edit, creating=False)
    edit.set_defaults(run=cmd_tickets_edit)

    comment = actions.add_parser("comment", parents=[home_json], help="comment on a ticket")
    comment.add_argument("key", metavar="KEY")
    comment.add_argument("--body", required=True, metavar="B", help="the comment's text")
    comment.add_argument(
        "--internal",
        action="store_true",
        help="a work note: stays on this instance, never synced under Basic",
    )
    comment.set_defaults(run=cmd_tickets_comment)

    attach = actions.add_parser("attach", parents=[home_json], help="attach a file to a ticket")
    attach.add_argument("key", metavar="KEY")
    attach.add_argument("file", metavar="FILE", help="the file to attach (up to 10 MiB)")
    attach.set_defaults(run=cmd_tickets_attach)

    history = actions.add_parser(
        "history", parents=[home_json], help="why each synced field changed, and when"
    )
    history.add_argument("key", metavar="KEY", help="the ticket's key")
    history.set_defaults(run=cmd_tickets_history)
