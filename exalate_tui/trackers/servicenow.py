"""ServiceNow as an instance's tracker: task tables (incident by default; problem,
change_request, sc_req_item or any other task table by configuration) through the Table API
and the Attachment API.

httpx directly, not pysnc. pysnc's `AsyncServiceNowClient` validates every answer
itself (`AsyncTableAPI._validate_response`) and raises on a 429 or a 5xx with the
JSON body only, so the `Retry-After` a rate-limit rule sends is gone before we
can honour it; its `AsyncGlideRecord` pages by offset behind an iterator, with
no reach to `X-Total-Count`, `Date`, or the keyset paging `changed` needs; and
its `asyncio` extra pulls in the PyPI `asyncio` package (a Python 3.3 backport)
and `requests`. What we use of it would be a URL builder.

What a ticket is here (the embedded vocabulary of adapter.py on a task record):

    key            number (INC0010001): its prefix says which of the tables holds it (INC,
                   PRB, CHG, RITM by default; an unknown prefix is looked for in each)
    type           the table: incident, problem, change_request → change, others → task
    summary        short_description
    description    description
    status         state: 1 new, 2 in_progress, 3 on_hold, 6 resolved, 7 closed
                   (8 canceled reads as closed)
    priority       priority, written as impact + urgency: ServiceNow computes an
                   incident's priority from those (the default lookup's pairs)
    assignee       assigned_to, by display value (the user's name); written as the
                   sys_user whose user_name or name it is
    reporter       caller_id (else opened_by), the same way
    labels         a text column, u_labels by default (`labels_field`), comma-separated:
                   a task table has no labels of its own
    correlation    correlation_id (and correlation_display): what the engine created it for

Comments and work notes are read from `sys_journal_field` (element `comments` or
`work_notes` of the record), one entry each, never from the record's journal
field (that is the whole journal, every time). They are written by PATCHing
`comments` (public) or `work_notes` (internal). ServiceNow writes every entry as
the integration user, so an entry we write starts with a marker line,
`[code]<!-- exalate {...} -->[/code]` (hidden where `[code]` tags are allowed, as
they are by default), holding a nonce (to find the entry just written), the author
and the origin; a reader strips it. Attachments go through the Attachment API and
are known by `sys_attachment.hash` (the SHA-256 of the bytes); an origin rides as
a parameter of the stored content type.

Changes: `changed(watermark)` polls `sys_updated_on>=W-overlap^ORDERBYsys_updated_on
^ORDERBYsys_id`, keyset-paged on (sys_updated_on, sys_id), so a record that changes
while the pages are read moves past the cursor and is read again, never skipped; the
overlap (30 s) catches a transaction that committed with an earlier stamp, and the
watermark carries `(sys_id, sys_mod_count)` of what it already reported within the
overlap, so each change is reported once. Times are raw values, UTC, to the second:
the integration user's time zone must be UTC. Attachments do not change their
record's `sys_updated_on`, so one added in ServiceNow syncs with its record's next
change. `watch` polls the same way every `poll` seconds (5 s by default).

Faults: a 429 waits its `Retry-After` (at most 60 s) and tries again; 5xx and
timeouts back off with full jitter; after `attempts` tries, or on a 401 or 403, the
tracker is unavailable (`TrackerUnavailable`) with ServiceNow's own message and what
to fix (which table, which right), so the engine shows Error and resumes once fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from exalate_tui.domain.models import TrackerConfig
from exalate_tui.trackers.adapter import (
    Attachment,
    Changed,
    Comment,
    NewComment,
    Query,
    Ticket,
    TicketNotFound,
    TicketRefused,
    TrackerError,
    TrackerUnavailable,
)
from exalate_tui.trackers.embedded import FIELDS, MAX_NAME, MAX_TEXT, checked_fields, ticket_values
from exalate_tui.trackers.query import DATETIME, INT, STR, EncodedQuery, Kind, parse

STAMP = "%Y-%m-%d %H:%M:%S"
MIB = 1024 * 1024
PAGE = 200  # records per Table API call
CHUNK = 50  # sys_ids per `IN` list
STATE_TO_STATUS = {
    "1": "new",
    "2": "in_progress",
    "3": "on_hold",
    "6": "resolved",
    "7": "closed",
    "8": "closed",
}
STATUS_TO_STATE = {"new": "1", "in_progress": "2", "on_hold": "3", "resolved": "6", "closed": "7"}
# Priority → (impact, urgency) under ServiceNow's default priority lookup.
IMPACT_URGENCY = {1: ("1", "1"), 2: ("1", "2"), 3: ("2", "2"), 4: ("2", "3"), 5: ("3", "3")}
TABLE_TYPES = {"incident": "incident", "problem": "problem", "change_request": "change"}
# The numbers' default prefixes (System Definition > Number Maintenance); an instance may
# change them, so a key whose prefix says nothing is looked for in every table.
PREFIXES = {"incident": "INC", "problem": "PRB", "change_request": "CHG", "sc_req_item": "RITM"}
# sys_dictionary's internal_type → how a query compares the column; any other is text.
INTERNAL_TYPES: dict[str, Kind] = {
    "integer": INT,
    "glide_date_time": DATETIME,
    "due_date": DATETIME,
    "glide_date": DATETIME,
}
# The fields the adapter itself reads and writes: every task table has them (task's own).
REQUIRED = ("number", "short_description", "description", "state", "priority", "correlation_id")
# The task fields used before a table's dictionary was read (a tracker.toml saved before
# `tracker set` stored it): run `tracker set servicenow` again to check against the real ones.
NATIVE: dict[str, Kind] = {
    "sys_id": STR,
    "number": STR,
    "short_description": STR,
    "state": INT,
    "impact": INT,
    "urgency": INT,
    "active": STR,
    "assigned_to": STR,
    "caller_id": STR,
    "opened_by": STR,
    "assignment_group": STR,
    "category": STR,
    "correlation_id": STR,
    "sys_created_on": DATETIME,
    "sys_updated_on": DATETIME,
    "sys_mod_count": INT,
}
_MARK = re.compile(r"\A\[code\]<!-- exalate (\{.*?\}) -->\[/code\]\n?", re.S)
_ORIGIN = re.compile(r'exalate-origin="([^"]*)"')


@dataclass(frozen=True)
class Settings:
    """What `tracker.toml` says of a ServiceNow instance: basic authentication (`user`,
    `password`) or OAuth client credentials (`client_id`, `client_secret`)."""

    url: str
    user: str = ""
    password: str = field(default="", repr=False)
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    tables: tuple[str, ...] = ("incident",)
    # table → column → sys_dictionary internal_type, as read when the instance was checked
    fields: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    poll: float = 5.0  # seconds between looks for changes by `watch`
    overlap: float = 30.0  # seconds of changes read again by `changed`
    labels_field: str = "u_labels"
    max_attachment: int = 10 * MIB
    timeout: float = 30.0
    attempts: int = 6  # tries of one request through 429s, 5xx and timeouts

    @property
    def table(self) -> str:
        """Where a ticket whose type names no other table is created."""
        return self.tables[0]

    @property
    def oauth(self) -> bool:
        return bool(self.client_id)

    @property
    def who(self) -> str:
        """Whom ServiceNow is asked as, in words."""
        return f"OAuth client {self.client_id!r}" if self.oauth else f"user {self.user!r}"


def settings_from(config: TrackerConfig) -> Settings:
    """The adapter's settings from `tracker.toml`."""
    basic = config.user and config.password
    oauth = config.client_id and config.client_secret
    if not (config.url and (basic or oauth)):
        raise TrackerUnavailable(
            "tracker.toml names ServiceNow without its url and credentials (a user and "
            "password, or an OAuth client id and secret): run `exalate-tui tracker set "
            "servicenow --url URL --user USER` (or `--client-id ID`) again"
        )
    return Settings(
        url=config.url,
        user=config.user or "",
        password=config.password.get_secret_value() if config.password else "",
        client_id=(config.client_id or "") if oauth else "",
        client_secret=config.client_secret.get_secret_value() if config.client_secret else "",
        tables=tuple(config.tables),
        fields=config.fields,
        poll=config.poll,
        labels_field=config.labels_field,
    )


TOKEN_PATH = "/oauth_token.do"


async def fetch_token(client: httpx.AsyncClient, settings: Settings) -> tuple[str, float]:
    """An access token for the OAuth client and its lifetime in seconds: `POST
    /oauth_token.do` with `grant_type=client_credentials`, `client_id`, `client_secret`
    as a form (ServiceNow, "Client credentials grant workflow"). `TrackerUnavailable`
    says what to fix; the secret is in no message."""
    form = {
        "grant_type": "client_credentials",
        "client_id": settings.client_id,
        "client_secret": settings.client_secret,
    }
    try:
        answer = await client.post(TOKEN_PATH, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        raise TrackerUnavailable(
            f"cannot reach ServiceNow at {settings.url} ({type(error).__name__}: {error}); "
            "check the URL (https://<instance>.service-now.com) and that this machine reaches it"
        ) from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    token = body.get("access_token") if isinstance(body, dict) else None
    if answer.status_code in (400, 401) or (answer.status_code == 200 and not token):
        said = body.get("error_description") or body.get("error") if isinstance(body, dict) else ""
        raise TrackerUnavailable(
            f"ServiceNow at {settings.url} gave {settings.who} no token ({answer.status_code} "
            f"{said or answer.reason_phrase}); check the client id and secret, that its OAuth "
            "application registry entry is active with an OAuth Application User, and that "
            "the system property glide.oauth.inbound.client.credential.grant_type.enabled is true"
        )
    if answer.status_code != 200:
        raise TrackerUnavailable(
            f"ServiceNow at {settings.url} answered {answer.status_code} {_said(answer)} "
            "for an OAuth token; it is retried"
        )
    try:
        lifetime = float(body.get("expires_in", 1800))
    except (TypeError, ValueError):
        lifetime = 1800.0
    return str(token), max(1.0, lifetime)


@dataclass(frozen=True)
class Checked:
    """What `verify` found: each check passed, in words, and each table's columns."""

    lines: list[str]
    fields: dict[str, dict[str, str]]


async def verify(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Checked:
    """Check an instance before its settings are saved: reachable, the credentials taken,
    read and write on each table, read on sys_journal_field, and each table's columns from
    sys_dictionary (a task table's: it has number, state, short_description...). Returns
    what was checked, in words, with the columns; `TrackerError` says the first that failed
    and how to fix it."""
    checked: list[str] = []
    async with httpx.AsyncClient(
        base_url=settings.url.rstrip("/"),
        auth=None if settings.oauth else (settings.user, settings.password),
        headers={"Accept": "application/json"},
        timeout=min(settings.timeout, 15.0),
        transport=transport,
    ) as client:
        if settings.oauth:
            try:
                token, _ = await fetch_token(client, settings)
            except TrackerUnavailable as error:
                raise TrackerError(str(error)) from None
            client.headers["Authorization"] = f"Bearer {token}"
            checked.append("OAuth token issued")

        async def ask(method: str, path: str, **kwargs: Any) -> httpx.Response:
            try:
                return await client.request(method, path, **kwargs)
            except httpx.HTTPError as error:
                raise TrackerError(
                    f"cannot reach ServiceNow at {settings.url} ({type(error).__name__}: "
                    f"{error}); check the URL (https://<instance>.service-now.com) and that "
                    "this machine reaches it"
                ) from None

        for table in settings.tables:
            answer = await ask(
                "GET",
                f"/api/now/v2/table/{table}",
                params={"sysparm_limit": "1", "sysparm_fields": "sys_id"},
            )
            if answer.status_code == 401 and settings.oauth:
                raise TrackerError(
                    f"ServiceNow at {settings.url} refused the token of {settings.who} "
                    f"(401 {_said(answer)}); check that its OAuth Application User is active"
                )
            if answer.status_code == 401:
                raise TrackerError(
                    f"ServiceNow at {settings.url} refused user {settings.user!r} and that "
                    f"password (401 {_said(answer)}); check both, and that the user is active "
                    "and not 'Web service access only' disabled"
                )
            if "credentials accepted" not in checked:
                checked += ["reachable", "credentials accepted"]
            if answer.status_code == 403:
                raise TrackerError(
                    f"the {settings.who} lacks read on {table} (403 {_said(answer)}): "
                    f"grant it a role that reads {table} (e.g. itil)"
                )
            if (
                answer.status_code == 400
                or answer.status_code >= 500
                or '"result"' not in answer.text
            ):
                raise TrackerError(
                    f"{settings.url} did not answer as a ServiceNow Table API for table {table} "
                    f"({answer.status_code} {_said(answer)}); check the URL and the table's name"
                )
            checked.append(f"read on {table}")
            rows = answer.json().get("result") or []
            if rows:
                # An empty PATCH changes nothing but passes the table's write ACL.
                path = f"/api/now/v2/table/{table}/{rows[0]['sys_id']}"
                wrote = await ask("PATCH", path, json={})
                if wrote.status_code in (401, 403):
                    raise TrackerError(
                        f"the {settings.who} lacks write on {table} ({wrote.status_code} "
                        f"{_said(wrote)}): grant it a role that writes {table} (e.g. itil)"
                    )
                checked.append(f"write on {table}")
            else:
                checked.append(f"write on {table} not checked (no record yet)")
        journal = await ask(
            "GET", "/api/now/v2/table/sys_journal_field", params={"sysparm_limit": "1"}
        )
        if journal.status_code in (401, 403):
            raise TrackerError(
                f"the {settings.who} lacks read on sys_journal_field "
                f"({journal.status_code} {_said(journal)}): grant it read on "
                "sys_journal_field (an ACL for its role), or comments cannot be synced"
            )
        checked.append("read on sys_journal_field")
        fields: dict[str, dict[str, str]] = {}

        def unread(table: str, answer: httpx.Response) -> TrackerError:
            return TrackerError(
                f"the {settings.who} lacks read on {table} ({answer.status_code} "
                f"{_said(answer)}): grant it read on sys_db_object and sys_dictionary (e.g. "
                "the personalize_dictionary role), so triggers are checked against the "
                "tables' real fields"
            )

        for table in settings.tables:
            # The table and those it extends (sys_db_object.super_class), nearest first.
            chain: list[str] = []
            where = f"name={table}"
            while where and len(chain) < 10:
                found = await ask(
                    "GET",
                    "/api/now/v2/table/sys_db_object",
                    params={"sysparm_query": where, "sysparm_fields": "sys_id,name,super_class"},
                )
                if found.status_code in (401, 403):
                    raise unread("sys_db_object", found)
                rows = (found.json().get("result") or []) if found.status_code == 200 else []
                if not rows:
                    break
                chain.append(_raw(rows[0], "name"))
                parent = _raw(rows[0], "super_class")
                where = f"sys_id={parent}" if _plain(parent) else ""
            entries = await ask(
                "GET",
                "/api/now/v2/table/sys_dictionary",
                params={
                    "sysparm_query": f"nameIN{','.join(chain or [table])}^elementISNOTEMPTY",
                    "sysparm_fields": "name,element,internal_type",
                },
            )
            if entries.status_code in (401, 403):
                raise unread("sys_dictionary", entries)
            columns = _columns(entries, chain or [table])
            missing = [name for name in REQUIRED if name not in columns]
            if missing:
                raise TrackerError(
                    f"{table} is not a task table (sys_dictionary lists no "
                    f"{', '.join(missing)} for it): give a table that extends task, such as "
                    "incident, problem, change_request or sc_req_item"
                )
            fields[table] = columns
            checked.append(f"{len(columns)} fields of {table} (sys_dictionary)")
    return Checked(checked, fields)


def _columns(answer: httpx.Response, chain: Sequence[str]) -> dict[str, str]:
    """A table's columns from a sys_dictionary answer over the table and those it extends
    (`chain`, nearest first): its own over the ones it inherits."""
    try:
        rows = answer.json().get("result") or []
    except (ValueError, AttributeError):
        rows = []
    depth = {name: n for n, name in enumerate(chain)}
    columns: dict[str, str] = {}
    # The farthest ancestor's first, the table's own last: the nearest definition wins.
    for row in sorted(rows, key=lambda r: -depth.get(_raw(r, "name"), 0)):
        element, kind = _raw(row, "element"), _raw(row, "internal_type")
        if element and re.fullmatch(r"[a-z][a-z0-9_]{0,79}", element):
            columns[element] = kind or "string"
    return dict(sorted(columns.items()))


@dataclass(frozen=True)
class ServiceNowTicket(Ticket):
    """A ticket with the raw values of its record's fields, for filters in ServiceNow's
    names, and the table that holds it."""

    raw: tuple[tuple[str, str], ...] = ()
    table: str = "incident"


@dataclass(frozen=True)
class ServiceNowQuery:
    """A filter over the embedded vocabulary and the tables' own fields: the adapter's `Query`."""

    encoded: EncodedQuery
    native: bool  # every condition names the tables' own fields: ServiceNow can run it
    kinds: Mapping[str, Kind]  # the tables' columns (how each compares)
    columns: frozenset[str]  # the columns it names, which the records read must carry

    @property
    def text(self) -> str:
        return self.encoded.text

    def matches(self, ticket: Ticket) -> bool:
        return self.encoded.matches(_values(ticket, self.kinds))


def _values(ticket: Ticket, kinds: Mapping[str, Kind]) -> dict[str, Any]:
    values = ticket_values(ticket)
    for name, raw in getattr(ticket, "raw", ()):
        kind = kinds.get(name, STR)
        if kind is INT:
            values[name] = int(raw) if raw.lstrip("-").isdigit() else None
        elif kind is DATETIME:
            values[name] = _time(raw) if raw else None
        else:
            values.setdefault(name, raw)
    return values


def table_kinds(tables: Sequence[str], fields: Mapping[str, Mapping[str, str]]) -> dict[str, Kind]:
    """The columns a filter may name in ServiceNow's names: each table's from sys_dictionary
    as stored by `tracker set`, else (a tracker.toml from before) the task fields of NATIVE."""
    kinds: dict[str, Kind] = {}
    for table in tables:
        columns = fields.get(table)
        if not columns:
            kinds.update(NATIVE)
            continue
        for name, internal in columns.items():
            kinds.setdefault(name, INTERNAL_TYPES.get(internal, STR))
    return kinds


def check_query(
    text: str,
    tables: Sequence[str] = ("incident",),
    fields: Mapping[str, Mapping[str, str]] | None = None,
) -> ServiceNowQuery:
    """`text` parsed against the ticket fields and the tables' own (from sys_dictionary);
    unlike ServiceNow, which drops a condition on a field it lacks and then matches every
    record, one naming a field no table has is refused."""
    kinds = table_kinds(tables, fields or {})
    encoded = parse(text, {**kinds, **FIELDS})
    named = {c.field for group in encoded.groups for clause in group for c in clause}
    named |= {order.field for order in encoded.order}
    native = all(name in kinds for name in named)
    return ServiceNowQuery(encoded, native, kinds, frozenset(n for n in named if n in kinds))


def _time(text: str) -> datetime:
    return datetime.strptime(text, STAMP).replace(tzinfo=UTC)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(STAMP)


def _mib(size: int) -> str:
    return f"{size / MIB:g} MiB"


class ServiceNowTracker:
    """ServiceNow task tables behind the `Tracker` interface."""

    kind = "servicenow"
    polls = True  # `watch` looks every `poll` seconds; each look is a Table API call

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.tables = settings.tables
        self.table = settings.table
        self.types = {table: TABLE_TYPES.get(table, "task") for table in self.tables}
        self.type = self.types[self.table]
        self.kinds = table_kinds(self.tables, settings.fields)
        self.max_attachment = settings.max_attachment
        self._client = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            auth=None if settings.oauth else (settings.user, settings.password),
            headers={"Accept": "application/json"},
            timeout=settings.timeout,
            transport=transport,
        )
        # OAuth: the access token and when to fetch the next (before it expires).
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()
        self.tokens = 0  # tokens fetched
        self._sleep = sleep
        self._users: dict[str, str] = {}
        self._watchers: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
        self._poller: asyncio.Task[None] | None = None
        self.calls = 0  # Table and Attachment API requests sent (a cost for rate-limited users)
        self._columns = [
            *("sys_id", "number", "short_description", "description", "state", "priority"),
            *("assigned_to", "caller_id", "opened_by", "correlation_id", "sys_created_on"),
            *("sys_updated_on", "sys_mod_count", settings.labels_field),
        ]

    @property
    def _fields(self) -> str:
        """The columns every record is read with: ours, and those a checked filter names."""
        return ",".join(self._columns)

    # -- requests ---------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, *, table: str, right: str, **kwargs: Any
    ) -> httpx.Response:
        """One request, through rate limits and passing faults; 401/403 and lasting faults
        raise `TrackerUnavailable` naming `table` and `right`; a 404 is returned."""
        failures = 0
        refreshed = False
        while True:
            if self.settings.oauth:
                kwargs["headers"] = kwargs.get("headers", {}) | await self._bearer()
            self.calls += 1
            try:
                answer = await self._client.request(method, path, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                failures += 1
                if failures >= self.settings.attempts:
                    raise TrackerUnavailable(
                        f"ServiceNow at {self.settings.url} cannot be reached ({error!r}); "
                        "check the URL and the network; it is retried"
                    ) from None
                await self._sleep(random.uniform(0, min(30.0, 0.5 * 2**failures)))
                continue
            status = answer.status_code
            if status == 429 or status >= 500:
                failures += 1
                if failures >= self.settings.attempts:
                    raise TrackerUnavailable(
                        f"ServiceNow at {self.settings.url} answered {status} "
                        f"{_said(answer)} {failures} times; it is retried"
                    )
                if status == 429:
                    await self._sleep(_retry_after(answer))
                else:
                    await self._sleep(random.uniform(0, min(30.0, 0.5 * 2**failures)))
                continue
            if status == 401 and self.settings.oauth and not refreshed:
                # Revoked or expired early: one new token, then the same request again.
                refreshed = True
                self._token = None
                continue
            if status == 401:
                raise TrackerUnavailable(
                    f"ServiceNow at {self.settings.url} refused the credentials of "
                    f"{self.settings.who} (401 {_said(answer)}); set the right ones "
                    "with `exalate-tui tracker set servicenow`"
                )
            if status == 403:
                raise TrackerUnavailable(
                    f"ServiceNow refused {self.settings.who} {right} on {table} "
                    f"(403 {_said(answer)}); grant that user {right} on the {table} table "
                    "(a role such as itil, or an ACL), then it resumes by itself"
                )
            if status >= 400 and status != 404:
                raise TrackerError(f"ServiceNow refused a {right} on {table}: {_said(answer)}")
            return answer

    async def _bearer(self) -> dict[str, str]:
        """The OAuth header, with a token fetched first when there is none or it is within
        a tenth of its lifetime (at most a minute) of expiring."""
        async with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_until:
                self.calls += 1
                self.tokens += 1
                self._token, lifetime = await fetch_token(self._client, self.settings)
                self._token_until = time.monotonic() + lifetime - min(60.0, lifetime / 10)
            return {"Authorization": f"Bearer {self._token}"}

    async def _list(
        self, table: str, query: str, fields: str, limit: int = PAGE, *, right: str = "read"
    ) -> list[dict[str, Any]]:
        path = "/api/now/attachment" if table == "sys_attachment" else f"/api/now/v2/table/{table}"
        params = {"sysparm_query": query, "sysparm_limit": str(limit)}
        if table != "sys_attachment":
            params |= {"sysparm_fields": fields, "sysparm_display_value": "all"}
        answer = await self._send("GET", path, table=table, right=right, params=params)
        if answer.status_code == 404:
            return []
        return list(answer.json().get("result", []))

    async def _records(self, table: str, query: str, limit: int = PAGE) -> list[dict[str, Any]]:
        """Records of `table`, each marked with it (`@table`: no column is named so)."""
        records = await self._list(table, query, self._fields, limit)
        for record in records:
            record["@table"] = table
        return records

    def _likely(self, key: str) -> list[str]:
        """The tables to look for `key` in: the one its prefix names first."""
        first = [t for t in self.tables if key.startswith(PREFIXES.get(t, "\0"))]
        return first + [t for t in self.tables if t not in first]

    async def _record(self, key: str) -> dict[str, Any]:
        if _plain(key):
            for table in self._likely(key):
                found = await self._records(table, f"number={key}", 1)
                if found:
                    return found[0]
        raise TicketNotFound(
            f"no ticket {key!r} in the ServiceNow tables {', '.join(self.tables)} "
            f"({self.settings.url}); see `exalate-tui tickets`"
        )

    # -- reading ----------------------------------------------------------------------

    async def get(self, key: str) -> Ticket:
        return (await self._whole([await self._record(key)]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[Ticket]:
        wanted = [key for key in dict.fromkeys(str(k).upper() for k in keys) if _plain(key)]
        records: dict[str, dict[str, Any]] = {}
        for table in self.tables:
            # Each key in the table its prefix names; one whose prefix names none, in each.
            named = [k for k in wanted if k not in records and self._likely(k)[0] == table]
            if table == self.tables[-1]:
                named = [k for k in wanted if k not in records]
            for start in range(0, len(named), CHUNK):
                chunk = ",".join(named[start : start + CHUNK])
                for record in await self._records(table, f"numberIN{chunk}", CHUNK):
                    records[_raw(record, "number")] = record
        tickets = {t.key: t for t in await self._whole(list(records.values()))}
        return [tickets[key] for key in wanted if key in tickets]

    async def _whole(self, records: list[dict[str, Any]]) -> list[Ticket]:
        """Tickets of `records` with their comments and attachments (two reads per 50)."""
        ids = [_raw(record, "sys_id") for record in records]
        comments: dict[str, list[Comment]] = {}
        attachments: dict[str, list[Attachment]] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ",".join(ids[start : start + CHUNK])
            entries = await self._all(
                "sys_journal_field",
                f"element_idIN{chunk}^elementINcomments,work_notes^ORDERBYsys_created_on",
                "sys_id,element,element_id,value,sys_created_on,sys_created_by",
            )
            for entry in entries:
                comments.setdefault(_raw(entry, "element_id"), []).append(_comment(entry))
            files = await self._all(
                "sys_attachment", f"table_sys_idIN{chunk}^ORDERBYsys_created_on", ""
            )
            for meta in files:
                attachments.setdefault(meta["table_sys_id"], []).append(_attachment(meta))
        return [
            self._ticket(record, comments.get(sys_id, ()), attachments.get(sys_id, ()))
            for record, sys_id in zip(records, ids, strict=True)
        ]

    async def _all(self, table: str, query: str, fields: str) -> list[dict[str, Any]]:
        """Every record of a query, by offset (journal entries and attachments only grow)."""
        rows: list[dict[str, Any]] = []
        while True:
            path = (
                "/api/now/attachment" if table == "sys_attachment" else f"/api/now/v2/table/{table}"
            )
            params = {
                "sysparm_query": query,
                "sysparm_limit": str(PAGE),
                "sysparm_offset": str(len(rows)),
            }
            if table != "sys_attachment":
                params |= {"sysparm_fields": fields, "sysparm_display_value": "all"}
            answer = await self._send("GET", path, table=table, right="read", params=params)
            page = [] if answer.status_code == 404 else answer.json().get("result", [])
            rows += page
            if len(page) < PAGE:
                return rows

    def _ticket(
        self,
        record: Mapping[str, Any],
        comments: Sequence[Comment] = (),
        attachments: Sequence[Attachment] = (),
    ) -> ServiceNowTicket:
        priority = _raw(record, "priority")
        labels = _raw(record, self.settings.labels_field)
        correlation = _raw(record, "correlation_id")
        table = str(record.get("@table", self.table))
        return ServiceNowTicket(
            key=_raw(record, "number"),
            type=self.types.get(table, "task"),
            summary=_raw(record, "short_description"),
            description=_raw(record, "description"),
            status=STATE_TO_STATUS.get(_raw(record, "state"), "in_progress"),
            priority=int(priority) if priority in ("1", "2", "3", "4", "5") else 3,
            assignee=_shown(record, "assigned_to"),
            reporter=_shown(record, "caller_id") or _shown(record, "opened_by"),
            labels=tuple(label for label in labels.split(",") if label),
            created=_time(_raw(record, "sys_created_on")),
            updated=_time(_raw(record, "sys_updated_on")),
            comments=tuple(comments),
            attachments=tuple(attachments),
            correlation=correlation or None,
            raw=tuple((name, _raw(record, name)) for name in record if name != "@table"),
            table=table,
        )

    def check_query(self, text: str) -> Query:
        query = check_query(text, self.tables, self.settings.fields)
        # Read from now on with every record, so a trigger on a column is matched here.
        self._columns += [name for name in sorted(query.columns) if name not in self._columns]
        return query

    async def search(self, query: Query | None = None, limit: int | None = None) -> list[Ticket]:
        """Tickets matching `query`, oldest first (or in its ORDERBY). A filter in the table's
        own names runs in ServiceNow; one in the ticket vocabulary is matched here. Paged by
        offset in order of creation, which a change during the paging does not move."""
        server = query.text if isinstance(query, ServiceNowQuery) and query.native else ""
        if "ORDERBY" not in server:
            server = f"{server}^ORDERBYsys_created_on" if server else "ORDERBYsys_created_on"
        records: list[dict[str, Any]] = []
        for table in self.tables:
            found = await self._all(table, server, self._fields)
            for record in found:
                record["@table"] = table
            records += found
        light = [self._ticket(record) for record in records]
        if len(self.tables) > 1:
            light.sort(key=lambda ticket: ticket.created)  # one list, oldest first
        hits = [t for t in light if query is None or query.matches(t)]
        if isinstance(query, ServiceNowQuery) and query.encoded.order:
            kinds = query.kinds
            hits = query.encoded.sort(hits, lambda ticket: _values(ticket, kinds))
        if limit is not None:
            hits = hits[:limit]
        by_number = {_raw(record, "number"): record for record in records}
        return await self._whole([by_number[t.key] for t in hits])

    async def find_created(self, correlation: str) -> Ticket | None:
        if not _plain(correlation, allow="/:-_."):
            return None
        for table in self.tables:
            found = await self._records(table, f"correlation_id={correlation}", 1)
            if found:
                return (await self._whole(found))[0]
        return None

    async def attachment_bytes(self, key: str, sha256: str) -> bytes:
        record = await self._record(key)
        metas = await self._list(
            "sys_attachment",
            f"table_name={record['@table']}^table_sys_id={_raw(record, 'sys_id')}"
            f"^hash={_hex(sha256)}",
            "",
            1,
        )
        if not metas:
            raise TicketNotFound(f"{key} has no attachment with SHA-256 {sha256}")
        answer = await self._send(
            "GET",
            f"/api/now/attachment/{metas[0]['sys_id']}/file",
            table="sys_attachment",
            right="read",
        )
        data = answer.content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise TrackerError(
                f"the bytes of an attachment of {key} in ServiceNow differ from "
                "their hash; attach the file again"
            )
        return data

    # -- changes ----------------------------------------------------------------------

    async def changed(self, watermark: str | None, limit: int = 500) -> Changed:
        """What changed in each table after the watermark (one mark per table in it)."""
        marks = self._read_marks(watermark)
        keys: list[str] = []
        for table in self.tables:
            if len(keys) >= limit:
                break  # the later tables' marks stay: the next call goes on there
            found, marks[table] = await self._changed_in(table, marks[table], limit - len(keys))
            keys += found
        body = {"at": self.settings.url.rstrip("/"), "tables": marks}
        return Changed(tuple(keys), json.dumps(body, separators=(",", ":")))

    async def _changed_in(
        self, table: str, mark: dict[str, Any], limit: int
    ) -> tuple[list[str], dict[str, Any]]:
        top: str | None = mark["t"]
        seen: dict[str, list[Any]] = dict(mark["seen"])
        since = (
            _stamp(_time(top) - timedelta(seconds=self.settings.overlap))
            if top is not None
            else None
        )
        keys: list[str] = []
        cursor: tuple[str, str] | None = None
        done = False
        while not done:
            bound = f"sys_updated_on>={since}^" if since and cursor is None else ""
            query = f"{bound}{_after('sys_updated_on', cursor)}ORDERBYsys_updated_on^ORDERBYsys_id"
            page = await self._list(
                table, query, "sys_id,number,sys_updated_on,sys_mod_count", PAGE
            )
            for record in page:
                sys_id, count = _raw(record, "sys_id"), _raw(record, "sys_mod_count")
                stamp = _raw(record, "sys_updated_on")
                cursor = (stamp, sys_id)
                if seen.get(sys_id, [None])[0] == count:
                    continue
                seen[sys_id] = [count, stamp]
                top = stamp if top is None or stamp > top else top
                keys.append(_raw(record, "number"))
                if len(keys) >= limit:
                    done = True
                    break
            if len(page) < PAGE:
                done = True
        if top is not None:
            floor = _stamp(_time(top) - timedelta(seconds=self.settings.overlap))
            seen = {k: v for k, v in seen.items() if v[1] >= floor}
        return keys, {"t": top, "seen": dict(sorted(seen.items()))}

    def _read_marks(self, watermark: str | None) -> dict[str, dict[str, Any]]:
        """Each table's mark; a table the watermark does not know (or another instance's
        watermark) starts over. A mark of one table, as written before tables were a list
        ({"at": URL/table, "t", "seen"}), is that table's."""
        marks: dict[str, dict[str, Any]] = {t: {"t": None, "seen": {}} for t in self.tables}
        try:
            mark = json.loads(watermark) if watermark else {}
        except ValueError:
            mark = {}
        if not isinstance(mark, dict):
            return marks
        url = self.settings.url.rstrip("/")
        if mark.get("at") == url and isinstance(mark.get("tables"), dict):
            known = mark["tables"]
        else:
            known = {t: mark for t in self.tables if mark.get("at") == f"{url}/{t}"}
        for table in self.tables:
            one = known.get(table)
            if isinstance(one, dict):
                marks[table] = {"t": one.get("t"), "seen": one.get("seen") or {}}
        return marks

    # -- watching -----------------------------------------------------------------------

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        entry = (loop, wake)
        self._watchers.append(entry)
        if self._poller is None:
            self._poller = loop.create_task(self._poll(), name="servicenow:watch")

        def stop() -> None:
            if entry in self._watchers:
                self._watchers.remove(entry)
            if not self._watchers and self._poller is not None:
                self._poller.cancel()
                self._poller = None

        return stop

    async def _poll(self) -> None:
        """Look for changes every `poll` seconds. The first look only learns where things
        stand (what changed within the overlap before it counts as heard), so a watcher
        hears of changes made after it began, by anyone; this process's own writes wake
        it at once."""
        mark: str | None = None
        while True:
            try:
                if mark is None:
                    tops: dict[str, Any] = {}
                    for table in self.tables:
                        newest = await self._list(
                            table, "ORDERBYDESCsys_updated_on", "sys_updated_on", 1
                        )
                        top = _raw(newest[0], "sys_updated_on") if newest else None
                        tops[table] = {"t": top, "seen": {}}
                    url = self.settings.url.rstrip("/")
                    start = json.dumps({"at": url, "tables": tops})
                    mark = (await self.changed(start, limit=10_000)).watermark
                else:
                    found = await self.changed(mark, limit=10_000)
                    mark = found.watermark
                    if found.keys:
                        self._wake()
            except TrackerError:
                pass  # unavailable for now: the engine hears of it from its own calls
            await asyncio.sleep(self.settings.poll)

    def _wake(self) -> None:
        for loop, wake in list(self._watchers):
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake)

    # -- writing ------------------------------------------------------------------------

    async def create(
        self,
        fields: Mapping[str, Any],
        *,
        reporter: str | None = None,
        correlation: str | None = None,
        comments: Sequence[NewComment] = (),
    ) -> Ticket:
        values = self._checked(fields)
        table = self._table_for(values.get("type"))
        if "summary" not in values:
            raise TicketRefused("a ticket needs a summary: give it a short line of text", "summary")
        notes = [_checked_comment(c.body, c.author) for c in comments]
        if reporter is not None:
            _name("reporter", reporter)
        if correlation is not None:
            found = await self.find_created(correlation)
            if found is not None:
                return found
        body = await self._body(values)
        if reporter is not None:
            body["caller_id"] = await self._user("reporter", reporter)
        if correlation is not None:
            body |= {"correlation_id": correlation, "correlation_display": "exalate-tui"}
        answer = await self._send(
            "POST",
            f"/api/now/v2/table/{table}",
            table=table,
            right="create",
            json=body,
            params={"sysparm_fields": "sys_id,number"},
        )
        made = answer.json()["result"]
        for note, text in zip(comments, notes, strict=True):
            await self._journal(
                table, made["sys_id"], text, note.internal, note.author, note.origin
            )
        self._wake()
        return await self.get(made["number"])

    def _checked(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        values = checked_fields(fields)
        if "type" in values:
            self._table_for(values["type"])
        return values

    def _table_for(self, kind: str | None) -> str:
        """The table a ticket of type `kind` is made in: the first of that type."""
        if kind is None:
            return self.table
        for table in self.tables:
            if self.types[table] == kind:
                return table
        served = ", ".join(f"{t} ({self.types[t]})" for t in self.tables)
        raise TicketRefused(
            f"type {kind!r}: this tracker is the ServiceNow tables {served}; add a table of "
            f"that type with `exalate-tui tracker set servicenow ... --table TABLE`",
            "type",
        )

    async def _body(self, values: Mapping[str, Any]) -> dict[str, str]:
        """The record's fields for ticket `values` (already checked)."""
        body: dict[str, str] = {}
        for name, value in values.items():
            if name == "summary":
                body["short_description"] = value
            elif name == "description":
                body["description"] = value
            elif name == "status":
                body["state"] = STATUS_TO_STATE[value]
                if value in ("resolved", "closed"):
                    # Resolving needs a close code and notes (the incident's data policy).
                    body |= {
                        "close_code": "Solution provided",
                        "close_notes": "Synced by exalate-tui",
                    }
                elif value == "on_hold":
                    body["hold_reason"] = "1"  # Awaiting Caller
            elif name == "priority":
                body["impact"], body["urgency"] = IMPACT_URGENCY[value]
            elif name == "assignee":
                body["assigned_to"] = await self._user("assignee", value) if value else ""
            elif name == "labels":
                body[self.settings.labels_field] = ",".join(value)
        return body

    async def _user(self, what: str, name: str) -> str:
        """The sys_id of the user whose user_name or name is `name`; refused if none."""
        if name not in self._users:
            if not _plain(name, allow=" .-_@'"):
                raise TicketRefused(f"{what} {name!r} cannot be looked up in sys_user", what)
            found = await self._list("sys_user", f"user_name={name}^ORname={name}", "sys_id", 1)
            if not found:
                raise TicketRefused(
                    f"{what} {name!r} is no user of this ServiceNow instance (sys_user: "
                    "neither a user_name nor a name); give an existing user",
                    what,
                )
            self._users[name] = _raw(found[0], "sys_id")
        return self._users[name]

    async def update(self, key: str, fields: Mapping[str, Any]) -> Ticket:
        values = self._checked(fields)
        record = await self._record(key)
        current = self._ticket(record)
        changes = {name: v for name, v in values.items() if getattr(current, name) != v}
        if "type" in changes:
            raise TicketRefused(
                f"{key} is a record of {record['@table']} ({current.type}); ServiceNow does "
                "not move a record to another table: create a new ticket instead",
                "type",
            )
        if not changes:
            return (await self._whole([record]))[0]
        table = record["@table"]
        await self._send(
            "PATCH",
            f"/api/now/v2/table/{table}/{_raw(record, 'sys_id')}",
            table=table,
            right="write",
            json=await self._body(changes),
            params={"sysparm_fields": "sys_id"},
        )
        self._wake()
        return await self.get(current.key)

    async def comment(
        self,
        key: str,
        body: str,
        *,
        internal: bool = False,
        author: str | None = None,
        origin: str | None = None,
    ) -> Comment:
        text = _checked_comment(body, author)
        record = await self._record(key)
        sys_id = _raw(record, "sys_id")
        if origin is not None:
            found = await self._by_origin(sys_id, origin)
            if found is not None:
                return found
        made = await self._journal(record["@table"], sys_id, text, internal, author, origin)
        self._wake()
        return made

    async def _by_origin(self, sys_id: str, origin: str) -> Comment | None:
        needle = json.dumps({"o": origin})[1:-1]  # "o": "…", as the marker holds it
        entries = await self._list(
            "sys_journal_field",
            f"element_id={sys_id}^valueLIKE{needle}",
            "sys_id,element,element_id,value,sys_created_on,sys_created_by",
            PAGE,
        )
        for entry in entries:
            comment = _comment(entry)
            if comment.origin == origin:
                return comment
        return None

    async def _journal(
        self,
        table: str,
        sys_id: str,
        body: str,
        internal: bool,
        author: str | None,
        origin: str | None,
    ) -> Comment:
        nonce = secrets.token_hex(8)
        mark: dict[str, str] = {"n": nonce}
        if author is not None:
            mark["a"] = author
        if origin is not None:
            mark["o"] = origin
        element = "work_notes" if internal else "comments"
        value = f"[code]<!-- exalate {json.dumps(mark)} -->[/code]\n{body}"
        await self._send(
            "PATCH",
            f"/api/now/v2/table/{table}/{sys_id}",
            table=table,
            right="write",
            json={element: value},
            params={"sysparm_fields": "sys_id"},
        )
        entries = await self._list(
            "sys_journal_field",
            f"element_id={sys_id}^element={element}^valueLIKE{nonce}",
            "sys_id,element,element_id,value,sys_created_on,sys_created_by",
            1,
        )
        if not entries:
            raise TrackerError(
                f"ServiceNow took the {element} entry on {table} {sys_id} but it cannot "
                "be read back from sys_journal_field; grant the user read on sys_journal_field"
            )
        return _comment(entries[0])

    async def attach(
        self, key: str, name: str, data: bytes, *, origin: str | None = None
    ) -> Attachment:
        shown = _name("name", name)
        if not shown.strip():
            raise TicketRefused("an attachment needs a file name", "name")
        if len(data) > self.max_attachment:
            raise TicketRefused(
                f"attachment {shown!r} is {len(data):,} bytes; this ServiceNow tracker takes "
                f"attachments up to {_mib(self.max_attachment)} ({self.max_attachment:,} bytes)",
                "data",
            )
        sha256 = hashlib.sha256(data).hexdigest()
        record = await self._record(key)
        sys_id, table = _raw(record, "sys_id"), record["@table"]
        found = await self._list(
            "sys_attachment",
            f"table_name={table}^table_sys_id={sys_id}^hash={sha256}",
            "",
            1,
        )
        if found:
            return _attachment(found[0])
        kind = mimetypes.guess_type(shown)[0] or "application/octet-stream"
        if origin is not None:
            kind += f'; exalate-origin="{origin.replace(chr(34), "")}"'
        answer = await self._send(
            "POST",
            "/api/now/attachment/file",
            table=table,
            right="attach files to",
            params={"table_name": table, "table_sys_id": sys_id, "file_name": shown},
            content=data,
            headers={"Content-Type": kind},
        )
        if answer.status_code == 404:
            raise TicketNotFound(f"no ticket {key!r} in the ServiceNow table {table}")
        return _attachment(answer.json()["result"])

    @contextlib.asynccontextmanager
    async def deferred(self) -> AsyncIterator[None]:
        """Nothing to defer: ServiceNow holds each write once it answers it."""
        yield

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        self._watchers.clear()
        await self._client.aclose()


# -- the values of records ---------------------------------------------------------------


def _raw(record: Mapping[str, Any], name: str) -> str:
    """A field's raw value, from `sysparm_display_value=all` ({display_value, value}) or not."""
    value = record.get(name, "")
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)


def _shown(record: Mapping[str, Any], name: str) -> str:
    value = record.get(name, "")
    if isinstance(value, dict):
        value = value.get("display_value", "")
    return "" if value is None else str(value)


def _comment(entry: Mapping[str, Any]) -> Comment:
    value = _raw(entry, "value")
    author, origin = _raw(entry, "sys_created_by"), None
    found = _MARK.match(value)
    if found is not None:
        with contextlib.suppress(ValueError):
            mark = json.loads(found.group(1))
            author = str(mark.get("a") or author)
            origin = mark.get("o")
            value = value[found.end() :]
    return Comment(
        id=_raw(entry, "sys_id"),
        author=author,
        body=value,
        internal=_raw(entry, "element") == "work_notes",
        created=_time(_raw(entry, "sys_created_on")),
        origin=origin,
    )


def _attachment(meta: Mapping[str, Any]) -> Attachment:
    found = _ORIGIN.search(str(meta.get("content_type", "")))
    return Attachment(
        sha256=str(meta.get("hash", "")),
        name=str(meta.get("file_name", "")),
        size=int(meta.get("size_bytes") or 0),
        created=_time(str(meta["sys_created_on"])),
        origin=found.group(1) if found else None,
    )


def _after(name: str, cursor: tuple[str, str] | None) -> str:
    """The keyset condition for records after `cursor` in (name, sys_id) order."""
    if cursor is None:
        return ""
    stamp, sys_id = cursor
    return f"{name}>{stamp}^NQ{name}={stamp}^sys_id>{sys_id}^"


def _plain(text: str, allow: str = "") -> bool:
    """Whether `text` can stand in an encoded query as a value (no ^, no comma)."""
    return bool(text) and all(c.isalnum() or c in allow for c in text)


def _hex(text: str) -> str:
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else "0" * 64


def _checked_comment(body: Any, author: str | None) -> str:
    if not isinstance(body, str):
        raise TicketRefused(f"body must be text, not {type(body).__name__}", "body")
    if not body.strip():
        raise TicketRefused("a comment needs a body: give it some text", "body")
    if len(body) > MAX_TEXT:
        raise TicketRefused(
            f"body is {len(body):,} characters long; the limit is {MAX_TEXT:,}", "body"
        )
    if author is not None:
        _name("author", author)
    return body


def _name(what: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TicketRefused(f"{what} must be text, not {type(value).__name__}", what)
    if len(value) > MAX_NAME:
        raise TicketRefused(
            f"{what} is {len(value):,} characters long; the limit is {MAX_NAME}", what
        )
    return value


def _said(answer: httpx.Response) -> str:
    """ServiceNow's error body in words: "message: detail" (never a stack trace)."""
    try:
        error = answer.json().get("error") or {}
        words = ": ".join(str(error[k]) for k in ("message", "detail") if error.get(k))
    except (ValueError, AttributeError):
        words = ""
    return words or answer.reason_phrase


def _retry_after(answer: httpx.Response) -> float:
    """Seconds a 429's Retry-After asks for (a number or an HTTP date), at most 60."""
    value = answer.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = 1.0
    return max(0.0, min(60.0, seconds))
