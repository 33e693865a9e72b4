"""Script rules: each side's own Python rules, run in the sandbox, behind the `Rules` seam.

- `ScriptRules` runs a connection's `outgoing.py` (ticket → replica) and
  `incoming.py` (replica → what the local ticket should hold) in the sandbox
  worker (sync/runner.py, sync/sandbox.py) with the connection's time limit.
  A failure is a `RuleError` naming the direction, the version, the line, the
  exception and the ticket; the engine holds only that ticket, and Retry runs
  whatever version is in force by then.
- `load_rules` gives the version in force (home/rules.py), compiled once per
  saved version; a Script connection that has no rules yet gets the Basic
  mapping written out as its first versions (`BASIC_OUTGOING`, `BASIC_INCOMING`).
- `save_rule` checks a rule under the sandbox's policy before it is kept:
  a refused one raises `RuleRefused` with its line, and nothing changes.
- `try_rules` (a Test run) shows what the rules would do to one ticket, writing nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from exalate_tui.domain.models import Connection, Mode
from exalate_tui.errors import ExalateError
from exalate_tui.home.rules import DIRECTIONS, MAX_RULE, RuleFiles, Version
from exalate_tui.home.store import Home
from exalate_tui.sync.replica import Content, RemoteAttachment, RemoteComment
from exalate_tui.sync.rules import Incoming, NotSyncable, RuleError
from exalate_tui.sync.runner import RuleFailed, Runner, runner
from exalate_tui.sync.sandbox import INCOMING, OUTGOING, check
from exalate_tui.trackers.adapter import (
    EDITABLE,
    PRIORITIES,
    STATUSES,
    TYPES,
    Ticket,
    ticket_data,
)

BASIC_OUTGOING = """\
# Outgoing rules: what this side sends of a ticket to the partner.
# `ticket` is the local ticket (read-only); fill `replica`. A field holds text,
# numbers, True/False or lists; the partner's incoming rules decide what to take.
# `skip("why")` keeps a ticket from syncing. Started as the Basic mapping.
replica.type = ticket.type
replica.summary = ticket.summary
replica.description = ticket.description
replica.status = ticket.status
replica.priority = ticket.priority
# Public comments and every attachment (what came from the partner never goes back).
replica.comments = [c for c in ticket.comments if not c.internal]
replica.attachments = ticket.attachments
"""

BASIC_INCOMING = """\
# Incoming rules: what the partner's replica changes here.
# `replica` is what the partner sent, `previous` the replica before it (None the
# first time), `first_sync` is True when this replica creates the local ticket.
# Set fields on `ticket`: only what the partner changed since `previous` is
# written, so local edits of other fields stay. A field set to None is left alone.
# Started as the Basic mapping.
if first_sync:
    ticket.type = replica.type or "incident"
ticket.summary = replica.summary
ticket.description = replica.description
ticket.status = replica.status
ticket.priority = replica.priority
# Each remote comment is added once; internal=True would add them as work notes.
comments.merge([c for c in replica.comments if not c.internal])
attachments.merge(replica.attachments)
"""

BASIC = {OUTGOING: BASIC_OUTGOING, INCOMING: BASIC_INCOMING}


class RuleRefused(ExalateError):
    """A rule the sandbox's policy refuses (or a connection that has no rules): nothing
    was saved; str() says the line and the reason."""

    bad_input = True

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _comment(comment: Any, origin: str) -> dict[str, Any]:
    return {
        "id": comment.id,
        "author": comment.author,
        "body": comment.body,
        "internal": comment.internal,
        "created": comment.created.isoformat(),
        "from_partner": (comment.origin or "").startswith(origin),
    }


def _attachment(attachment: Any, origin: str) -> dict[str, Any]:
    return {
        "sha256": attachment.sha256,
        "name": attachment.name,
        "size": attachment.size,
        "created": attachment.created.isoformat(),
        "from_partner": (attachment.origin or "").startswith(origin),
    }


def _theirs(previous: Content | None, content: Content) -> list[str]:
    """What the partner changed since `previous`: by stamp, else by value."""
    if previous is None:
        return sorted(content.fields)
    if content.changed:
        return sorted(
            n for n, stamp in content.changed.items() if stamp > previous.changed.get(n, 0)
        )
    names = previous.fields.keys() | content.fields.keys()
    return sorted(n for n in names if previous.fields.get(n) != content.fields.get(n))


def _replica_doc(content: Content, previous: Content | None) -> dict[str, Any]:
    return {
        "fields": content.fields,
        "changed_names": _theirs(previous, content),
        "comments": [vars(c) for c in content.comments],
        "attachments": [vars(a) for a in content.attachments],
    }


@dataclass
class ScriptRules:
    """One connection's Script rules, as in force when loaded."""

    connection: Connection
    versions: dict[str, Version]
    sources: dict[str, str]
    time_limit: float
    run_in: Runner = field(default_factory=runner)
    # What the last run printed, per direction (a Test run shows it).
    printed: dict[str, str] = field(default_factory=dict)
    name: str = ""
    # Directions whose source is an unsaved draft (a Test run from the Rules editor).
    drafts: frozenset[str] = frozenset()
    by_name = False  # the local fields it sets need not be named after the replica's

    def __post_init__(self) -> None:
        out, inc = (self._label(d) for d in (OUTGOING, INCOMING))
        self.name = f"script (outgoing {out}, incoming {inc})"

    def _label(self, direction: str) -> str:
        return "draft" if direction in self.drafts else f"v{self.versions[direction].number}"

    def with_drafts(self, drafts: Mapping[str, str]) -> ScriptRules:
        """These rules with `drafts` (direction → source, checked first: `RuleRefused`) in
        place of the versions in force; nothing is saved."""
        for direction, source in drafts.items():
            check_rule(direction, source)
        return replace(
            self,
            sources={**self.sources, **drafts},
            printed={},
            drafts=frozenset(drafts),
        )

    def _base(self) -> dict[str, Any]:
        c = self.connection
        return {
            "connection": {
                "id": c.id,
                "name": c.name,
                "local_name": c.local_name,
                "remote_name": c.remote_name,
                "role": c.role.value,
            },
            "statuses": list(STATUSES),
            "priorities": list(PRIORITIES),
            "types": list(TYPES),
        }

    def _run(self, direction: str, data: dict[str, Any], key: str) -> dict[str, Any]:
        filename = f"{direction}.py {self._label(direction)}"
        try:
            result = self.run_in.run(
                self.sources[direction], filename, direction, data, self.time_limit
            )
        except RuleFailed as error:
            if error.kind == "skip":
                raise NotSyncable(f"{key}: {str(error).split(': ', 2)[-1]}") from None
            where = f" (ticket {key})" if key else ""
            raise RuleFailed(f"{error}{where}", error.line, error.kind) from None
        self.printed[direction] = result.get("printed", "")
        return result

    def outgoing(self, ticket: Ticket) -> Content:
        origin = f"{self.connection.id}/"
        data = {
            **self._base(),
            "ticket": {
                **ticket_data(ticket),
                "comments": [_comment(c, origin) for c in ticket.comments],
                "attachments": [_attachment(a, origin) for a in ticket.attachments],
            },
        }
        result = self._run(OUTGOING, data, ticket.key)
        # What came over this connection is the partner's already: never sent back.
        comments = {c.id: c for c in ticket.comments if not (c.origin or "").startswith(origin)}
        files = {a.sha256: a for a in ticket.attachments if not (a.origin or "").startswith(origin)}
        return Content(
            dict(result["fields"]),
            tuple(
                RemoteComment(c.id, c.author, c.body, c.internal, c.created.isoformat())
                for c in (comments.get(i) for i in dict.fromkeys(result["comments"]))
                if c is not None
            ),
            tuple(
                RemoteAttachment(a.sha256, a.name, a.size)
                for a in (files.get(s) for s in dict.fromkeys(result["attachments"]))
                if a is not None
            ),
        )

    def incoming(
        self, replica: Content, first_sync: bool, previous: Content | None = None
    ) -> Incoming:
        data = {
            **self._base(),
            "replica": _replica_doc(replica, previous),
            "previous": None if previous is None else _replica_doc(previous, None),
            "first_sync": first_sync,
        }
        result = self._run(INCOMING, data, "")
        fields: dict[str, Any] = {}
        for name, value in result["fields"].items():
            if name not in EDITABLE:
                raise RuleFailed(
                    f"incoming.py {self._label(INCOMING)}: ticket.{name}: the tracker has no "
                    f"such field (it has {', '.join(EDITABLE)})"
                )
            if value is not None:
                fields[name] = (
                    tuple(value) if name == "labels" and isinstance(value, list) else value
                )
        if not first_sync:
            fields.pop("type", None)  # a ticket's type is set when it is created
        by_id = {c.id: c for c in replica.comments}
        by_sha = {a.sha256: a for a in replica.attachments}
        return Incoming(
            fields,
            tuple((by_id[i], internal) for i, internal in result["comments"] if i in by_id),
            tuple(by_sha[s] for s in result["attachments"] if s in by_sha),
        )


_CACHE: dict[tuple[Path, str], tuple[Any, ScriptRules]] = {}
_CACHE_LOCK = threading.Lock()


def rule_files(home: Home, connection: Connection) -> RuleFiles:
    """The connection's rule files, the Basic mapping written out if it has none yet."""
    files = RuleFiles(home, connection.id)
    files.ensure(BASIC, "the Basic mapping, written out as rules")
    return files


def load_rules(home: Home, connection: Connection) -> ScriptRules:
    """The Script rules in force on `connection` (cached until a version is saved)."""
    files = RuleFiles(home, connection.id)
    stamp = files.stamp()
    key = (home.path, connection.id)
    names = (connection.name, connection.local_name, connection.remote_name, connection.role)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if stamp is not None and cached is not None and cached[0] == (stamp, names):
            return cached[1]
    if stamp is None or files.current().keys() < set(DIRECTIONS):
        rule_files(home, connection)
        stamp = files.stamp()
    versions = files.current()
    rules = ScriptRules(
        connection,
        versions,
        {d: files.source(v) for d, v in versions.items()},
        files.time_limit(),
    )
    with _CACHE_LOCK:
        _CACHE[key] = ((stamp, names), rules)
    return rules


def _refused(direction: str, source: str) -> RuleRefused | None:
    if len(source) > MAX_RULE:
        return RuleRefused(f"{direction}.py: longer than {MAX_RULE:,} characters")
    problems = check(source, f"{direction}.py")
    if not problems:
        return None
    lines = [f"{direction}.py {p}" for p in problems]
    return RuleRefused("\n".join(lines), problems[0].line)


def check_rule(direction: str, source: str) -> None:
    """`RuleRefused` (each problem with its line) when `source` may not be saved."""
    if direction not in DIRECTIONS:
        raise RuleRefused(f"DIRECTION: outgoing or incoming, not {direction!r}")
    if refused := _refused(direction, source):
        raise refused


def save_rule(
    home: Home, connection: Connection, direction: str, source: str, note: str = "saved"
) -> Version:
    """Check `source` and keep it as the next version of `direction`, in force at once.

    The engine re-sends tickets whose outgoing replica changes when asked
    (a `rules` request: the caller makes it, see cli/rules.py)."""
    if connection.mode is not Mode.SCRIPT:
        raise RuleRefused(
            f"{connection.name!r} uses the Basic mapping: switch it with "
            f"`exalate-tui connections set-mode {connection.id[:8]} script` first"
        )
    check_rule(direction, source)
    return rule_files(home, connection).save(direction, source, note)


def revert_rule(home: Home, connection: Connection, number: int) -> Version:
    """Bring version `number` back in force, as a new version (history keeps all)."""
    files = rule_files(home, connection)
    old = files.version(number)
    source = files.source(old)
    return save_rule(home, connection, old.direction, source, f"revert to v{number}")


async def try_rules(
    home: Home,
    connection: Connection,
    tracker: Any,
    store: Any,
    key: str,
    drafts: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What the rules in force would do for ticket `key`, writing nothing: the replica the
    outgoing rule would send, and what the incoming rule would change from the last
    replica received for it. `drafts` (direction → unsaved source, Script only) run in
    place of the versions in force; a refused one raises `RuleRefused` before any run."""
    from exalate_tui.sync.rules import rules_for

    rules = rules_for(connection, home)
    if drafts and isinstance(rules, ScriptRules):
        rules = rules.with_drafts(drafts)
    ticket = await tracker.get(key)
    report: dict[str, Any] = {"key": key, "rules": rules.name}
    try:
        content = rules.outgoing(ticket)
        doc = content.doc()
        doc.pop("changed", None)
        report["outgoing"] = {"replica": doc, "printed": _printed(rules, OUTGOING)}
    except RuleError as error:
        report["outgoing"] = {"error": str(error), "printed": _printed(rules, OUTGOING)}
    link = store.link(connection.id, key)
    if link is None or link.in_doc is None:
        report["incoming"] = None
        return report
    try:
        wanted = rules.incoming(link.in_doc, first_sync=False, previous=None)
    except RuleError as error:
        report["incoming"] = {"error": str(error), "printed": _printed(rules, INCOMING)}
        return report
    have = {c.origin for c in ticket.comments if c.origin}
    files = {a.sha256 for a in ticket.attachments}
    report["incoming"] = {
        "version": link.in_version,
        "fields": {
            name: [_plain(getattr(ticket, name, None)), _plain(value)]
            for name, value in wanted.fields.items()
            if getattr(ticket, name, None) != value
        },
        "comments": [
            {"id": c.id, "author": c.author, "body": c.body, "internal": internal}
            for c, internal in wanted.comments
            if f"{connection.id}/{c.id}" not in have
        ],
        "attachments": [a.name for a in wanted.attachments if a.sha256 not in files],
        "printed": _printed(rules, INCOMING),
    }
    return report


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _printed(rules: Any, direction: str) -> str:
    return getattr(rules, "printed", {}).get(direction, "")


class SwitchRefused(ExalateError):
    bad_input = True


def switch_to_script(home: Home, cid: str, streams: Any) -> tuple[Connection, bool]:
    """Make a Basic connection a Script one: its rules start as the Basic mapping, and
    the partner is told (`connection.mode`) and keeps its own. (connection, switched)."""
    from exalate_tui.protocol.kinds import MODE

    connection = home.get_connection(cid)
    if connection.mode is Mode.SCRIPT:
        rule_files(home, connection)
        return connection, False
    if connection.secret is None:
        raise SwitchRefused(
            f"{connection.name!r} is pending: its invitation code says basic; switch it once "
            "the partner has accepted, or initiate a new one with --mode script"
        )

    def change(c: Connection) -> None:
        c.mode = Mode.SCRIPT

    updated = home.update_connection(cid, change)
    rule_files(home, updated)
    streams.enqueue(cid, MODE, {"mode": Mode.SCRIPT.value})
    return updated, True
