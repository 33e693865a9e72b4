"""A ServiceNow Table API emulator: a TEST DOUBLE for a product we cannot run.

No ServiceNow instance is reachable from CI or a developer machine, so the
ServiceNow adapter (exalate_tui/trackers/servicenow.py) is tested against this
ASGI app instead. It is not a replacement for ServiceNow and holds none of our
own logic: each behaviour follows ServiceNow's documentation, cited beside it.
Where the documentation is silent we chose the plausible reading and say so.

Pages (fetched 2025-2026, Yokohama to Australia releases):
- [TABLE] Table API
  https://www.servicenow.com/docs/r/yokohama/api-reference/rest-apis/c_TableAPI.html
- [ATTACH] Attachment API
  https://www.servicenow.com/docs/r/zurich/api-reference/rest-apis/c_AttachmentAPI.html
- [QUERY] Encoded query strings
  https://www.servicenow.com/docs/r/platform-user-interface/c_EncodedQueryStrings.html
- [RATE] Inbound REST API rate limiting
  https://www.servicenow.com/docs/r/australia/api-reference/rest-api-explorer/inbound-REST-API-rate-limiting.html
- [OAUTH] Client credentials grant workflow: `POST /oauth_token.do` with grant_type,
  client_id, client_secret; the token then goes in `Authorization: Bearer`
  https://www.servicenow.com/docs/r/zurich/platform-security/authentication/client-credentials-grant-workflow.html
  and Client credentials grant (the token acts as the entry's OAuth Application User)
  https://www.servicenow.com/docs/r/zurich/platform-security/authentication/client-credential-grant.html
  The answer's shape ({"access_token", "scope", "token_type": "Bearer", "expires_in": 1799}
  for the default 1,800 s lifespan) and a refusal's (401 {"error_description":
  "access_denied", "error": "server_error"}) are as ServiceNow instances answer, shown on
  its community forum; the docs give no example.
- [DICT] Data dictionary tables: sys_dictionary "defines every table and field", a row per
  table (no element) or column (name = the table, element = the column, internal_type its
  type); "dictionary changes automatically apply to all extended tables", so a column of
  task is one row under task that incident, problem, change_request and sc_req_item have
  https://www.servicenow.com/docs/r/zurich/platform-administration/table-administration-and-data-management/c_DataDictionaryTables.html
  https://www.servicenow.com/docs/r/australia/platform-administration/table-administration-and-data-management/c_SystemDictionary.html
  and sys_db_object, "a record for each table", whose super_class (Extends) references the
  table it extends (the same page)
- [EMPTY] a query matching nothing: v1 answers 404 "No Record found", the later
  version 200 with an empty result
  https://www.servicenow.com/community/developer-forum/404-error-in-case-of-rest-api-not-returning-any-data/m-p/3087325

Use it in process (`httpx.ASGITransport(app=Emulator().app)`) or as a process on
127.0.0.1: `python tests/servicenow/emulator.py --port 8090 [--user NAME:PASSWORD]`;
a process is steered through `/emulator/...` (users, rate-limit storms, faults),
which ServiceNow does not have.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exalate_tui.trackers.adapter import QueryError
from exalate_tui.trackers.query import DATETIME, INT, STR, Kind, parse

STAMP = "%Y-%m-%d %H:%M:%S"  # [TABLE]: raw date-time values, UTC, to the second
DEFAULT_LIMIT = 10_000  # [TABLE] sysparm_limit: "The default is 10000"
MAX_ATTACHMENT = 1024 * 1024 * 1024  # [ATTACH]: com.glide.attachment.max_size, 1024MB

SYSTEM = {
    "sys_id": STR,
    "sys_created_on": DATETIME,
    "sys_created_by": STR,
    "sys_updated_on": DATETIME,
    "sys_updated_by": STR,
    "sys_mod_count": INT,
}
# The task fields the incident, problem, change and request-item tables share (task's
# dictionary), then each table's own. Kinds: what the query compares them as.
TASK: dict[str, Kind] = {
    **SYSTEM,
    "number": STR,
    "short_description": STR,
    "description": STR,
    "state": INT,
    "priority": INT,
    "impact": INT,
    "urgency": INT,
    "active": STR,
    "assigned_to": STR,
    "opened_by": STR,
    "correlation_id": STR,
    "correlation_display": STR,
    "comments": STR,
    "work_notes": STR,
    "close_notes": STR,
}
TABLES: dict[str, dict[str, Kind]] = {
    "incident": {
        **TASK,
        "caller_id": STR,
        "close_code": STR,
        "hold_reason": INT,
        "category": STR,
        # A custom column an admin added (ServiceNow's u_ prefix): the adapter keeps labels here.
        "u_labels": STR,
    },
    "problem": {**TASK, "u_labels": STR},
    "change_request": {**TASK, "u_labels": STR},
    "sc_req_item": {**TASK, "u_labels": STR},
    "sys_user": {**SYSTEM, "user_name": STR, "name": STR, "email": STR, "active": STR},
    "sys_journal_field": {
        **SYSTEM,
        "element": STR,
        "element_id": STR,
        "name": STR,
        "value": STR,
    },
}
PREFIXES = {"incident": "INC", "problem": "PRB", "change_request": "CHG", "sc_req_item": "RITM"}
TABLES["sys_db_object"] = {**SYSTEM, "name": STR, "label": STR, "super_class": STR}
TABLES["sys_dictionary"] = {
    **SYSTEM,
    "name": STR,
    "element": STR,
    "internal_type": STR,
    "column_label": STR,
}
REFERENCES = {"assigned_to", "opened_by", "caller_id"}  # to sys_user
JOURNALS = ("comments", "work_notes")
READ_ONLY = set(SYSTEM) | {"number"}
CHOICES = {
    "state": {
        "1": "New",
        "2": "In Progress",
        "3": "On Hold",
        "6": "Resolved",
        "7": "Closed",
        "8": "Canceled",
    },
    "priority": {
        "1": "1 - Critical",
        "2": "2 - High",
        "3": "3 - Moderate",
        "4": "4 - Low",
        "5": "5 - Planning",
    },
    "impact": {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"},
    "urgency": {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"},
}
# The incident's default priority lookup: (impact, urgency) → priority. ServiceNow
# computes an incident's priority from these; a priority written directly is overwritten.
PRIORITY_MATRIX = {
    ("1", "1"): "1",
    ("1", "2"): "2",
    ("2", "1"): "2",
    ("1", "3"): "3",
    ("2", "2"): "3",
    ("3", "1"): "3",
    ("2", "3"): "4",
    ("3", "2"): "4",
    ("3", "3"): "5",
}
ATTACHMENT_FIELDS = {
    **SYSTEM,
    "table_name": STR,
    "table_sys_id": STR,
    "file_name": STR,
    "content_type": STR,
    "size_bytes": INT,
    "hash": STR,
}


# Fields a query often picks records by: narrowed to by a set before the full match, as an
# index would (the emulator's speed only; the answer is the same).
KEYS = ("sys_id", "number", "element_id", "table_sys_id", "correlation_id")


def _narrowed(rows: list[dict[str, str]], parsed: Any) -> list[dict[str, str]]:
    if len(parsed.groups) != 1:
        return rows
    for clause in parsed.groups[0]:
        if len(clause) != 1:
            continue
        [condition] = clause
        if condition.field in KEYS and condition.operator in ("=", "IN"):
            wanted = condition.value if condition.operator == "IN" else (condition.value,)
            folded = {str(v).casefold() for v in wanted}
            return [r for r in rows if r.get(condition.field, "").casefold() in folded]
    return rows


@functools.lru_cache(maxsize=65536)
def _when(raw: str) -> datetime:
    return datetime.strptime(raw, STAMP).replace(tzinfo=UTC)


def failure(status: int, message: str, detail: str, headers: Mapping[str, str] | None = None):
    """ServiceNow's error body [TABLE]: {"error": {"message", "detail"}, "status": "failure"}."""
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


@dataclass
class User:
    name: str
    password: str
    sys_id: str
    # (table, right) pairs refused: right is "read", "create", "write" or "delete". ServiceNow
    # grants by ACL and role; a refusal list is the smallest model of their outcome.
    denied: set[tuple[str, str]] = field(default_factory=set)


class Emulator:
    """One emulated instance: tables of records (every value a string, as the Table API
    shows them), users, attachments, and the faults a test asks for."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        tick: bool = False,
        max_attachment: int = MAX_ATTACHMENT,
    ) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        # tick: each write stamps at least a second after the last one, so tests that make
        # several writes within a second still see times move (ServiceNow stamps to the second).
        self._tick = tick
        self._last = datetime.min.replace(tzinfo=UTC)
        self.max_attachment = max_attachment
        # Each table's columns (an admin may add one: `add_field`), and its records.
        self.schema: dict[str, dict[str, Kind]] = {name: dict(f) for name, f in TABLES.items()}
        self.tables: dict[str, dict[str, dict[str, str]]] = {name: {} for name in TABLES}
        self.attachments: dict[str, dict[str, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.users: dict[str, User] = {}
        self._numbers: dict[str, int] = {}
        self._lock = threading.RLock()
        # Faults, consumed one request each: a list of (status, headers).
        self.faults: list[tuple[int, dict[str, str]]] = []
        # [method, path, user name, sysparm_query] of every request, and when it came
        self.calls: list[list[str]] = []
        self.times: list[float] = []
        # OAuth [OAUTH]: client id → (secret, the OAuth Application User's name), and the
        # tokens issued: token → (user name, expiry on this instance's clock).
        self.oauth_clients: dict[str, tuple[str, str]] = {}
        self.tokens: dict[str, tuple[str, datetime]] = {}
        self.token_lifespan = 1800  # seconds: an application registry entry's default
        self.add_user("admin", "admin")
        self._dictionary()
        self.app = self._make_app()

    # -- set-up from tests ----------------------------------------------------------

    def add_user(self, name: str, password: str = "", *, full_name: str | None = None) -> User:
        with self._lock:
            record = self.insert(
                "sys_user", {"user_name": name, "name": full_name or name}, by="system"
            )
            user = User(name, password, record["sys_id"])
            self.users[name] = user
            return user

    def _dictionary(self) -> None:
        """sys_db_object and sys_dictionary [DICT]: a row per table (a task table's
        super_class is task's), the task columns under task, each table's own under it."""
        task = self.insert("sys_db_object", {"name": "task", "label": "Task"}, by="system")
        for name in self.schema:
            if name != "task":
                extends = task["sys_id"] if name in PREFIXES else ""
                row = {"name": name, "label": name, "super_class": extends}
                self.insert("sys_db_object", row, by="system")
        for name in ("task", *PREFIXES):
            self.insert(
                "sys_dictionary", {"name": name, "internal_type": "collection"}, by="system"
            )
            own = (
                TASK
                if name == "task"
                else {k: v for k, v in self.schema[name].items() if k not in TASK}
            )
            for element, kind in own.items():
                self._column(name, element, kind)

    def _column(self, table: str, element: str, kind: Kind) -> None:
        internal = (
            "reference"
            if element in REFERENCES
            else "journal_input"
            if element in JOURNALS
            else "boolean"
            if element == "active"
            else "integer"
            if kind is INT
            else "glide_date_time"
            if kind is DATETIME
            else "string"
        )
        row = {"name": table, "element": element, "internal_type": internal}
        self.insert("sys_dictionary", row | {"column_label": element}, by="system")

    def add_field(self, table: str, element: str, kind: Kind = STR) -> None:
        """A column an admin adds to `table` (a u_ field), with its dictionary entry."""
        with self._lock:
            self.schema[table][element] = kind
            self._column(table, element, kind)

    def add_oauth_client(self, client_id: str, secret: str, user: str) -> None:
        """An OAuth application registry entry whose OAuth Application User is `user`."""
        self.oauth_clients[client_id] = (secret, user)

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (as once its lifespan is over)."""
        self.tokens.clear()

    def deny(self, user: str, table: str, right: str) -> None:
        self.users[user].denied.add((table, right))

    def allow(self, user: str, table: str, right: str) -> None:
        self.users[user].denied.discard((table, right))

    def storm(self, count: int, retry_after: int = 1) -> None:
        """The next `count` requests are refused by a rate-limit rule [RATE]: 429 with a
        Retry-After header (seconds)."""
        self.faults += [(429, {"Retry-After": str(retry_after)})] * count

    def fail(self, count: int, status: int = 503) -> None:
        self.faults += [(status, {})] * count

    # -- records --------------------------------------------------------------------

    def now(self) -> datetime:
        return max(self._clock(), self._last).replace(microsecond=0)

    def _write_time(self) -> datetime:
        now = self._clock().replace(microsecond=0)
        if self._tick and now <= self._last:
            now = self._last + timedelta(seconds=1)
        self._last = max(now, self._last)
        return now

    def insert(self, table: str, values: Mapping[str, Any], *, by: str) -> dict[str, str]:
        """A new record (what POST does): unknown fields ignored [TABLE], system fields set."""
        with self._lock:
            fields = self.schema[table]
            stamp = self._write_time().strftime(STAMP)
            record = {name: "" for name in fields if name not in JOURNALS}
            record |= {
                "sys_id": secrets.token_hex(16),
                "sys_created_on": stamp,
                "sys_created_by": by,
                "sys_updated_on": stamp,
                "sys_updated_by": by,
                "sys_mod_count": "0",
            }
            if table in PREFIXES:
                self._numbers[table] = self._numbers.get(table, 10000) + 1
                record["number"] = f"{PREFIXES[table]}{self._numbers[table]:07d}"
                record |= {"state": "1", "impact": "3", "urgency": "3", "active": "true"}
                if by in self.users:
                    record["opened_by"] = self.users[by].sys_id
            journal = self._assign(table, record, values)
            self._derive(table, record)
            self.tables[table][record["sys_id"]] = record
            for element, text in journal:
                self._journal(table, record["sys_id"], element, text, by, stamp)
            return record

    def update(
        self, table: str, sys_id: str, values: Mapping[str, Any], *, by: str
    ) -> dict[str, str]:
        """PATCH/PUT: only a real change (or a journal entry) counts as an update, as a
        GlideRecord update of unchanged values writes nothing."""
        with self._lock:
            record = self.tables[table][sys_id]
            before = dict(record)
            journal = self._assign(table, record, values)
            self._derive(table, record)
            if record != before or journal:
                stamp = self._write_time().strftime(STAMP)
                record["sys_updated_on"] = stamp
                record["sys_updated_by"] = by
                record["sys_mod_count"] = str(int(record["sys_mod_count"]) + 1)
                for element, text in journal:
                    self._journal(table, sys_id, element, text, by, stamp)
            return record

    def _assign(
        self, table: str, record: dict[str, str], values: Mapping[str, Any]
    ) -> list[tuple[str, str]]:
        fields = self.schema[table]
        journal = []
        for name, value in values.items():
            if name not in fields or name in READ_ONLY:
                continue  # [TABLE]: fields the table lacks are ignored, system ones kept
            text = (
                ""
                if value is None
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
            if name in JOURNALS:
                if text.strip():
                    journal.append((name, text))
            else:
                record[name] = text
        return journal

    def _derive(self, table: str, record: dict[str, str]) -> None:
        if table == "incident":
            record["priority"] = PRIORITY_MATRIX.get(
                (record["impact"], record["urgency"]), record["priority"]
            )
        if "state" in record and table in PREFIXES:
            record["active"] = "false" if record["state"] in ("6", "7", "8") else "true"

    def _journal(self, table: str, sys_id: str, element: str, text: str, by: str, stamp: str):
        entry = {
            "sys_id": secrets.token_hex(16),
            "element": element,
            "element_id": sys_id,
            "name": table,
            "value": text,
            "sys_created_on": stamp,
            "sys_created_by": by,
            "sys_updated_on": stamp,
            "sys_updated_by": by,
            "sys_mod_count": "0",
        }
        self.tables["sys_journal_field"][entry["sys_id"]] = entry

    def journal_text(self, table: str, sys_id: str, element: str) -> str:
        """What a journal field reads as on its record: every entry, newest first, each
        under a header line (the whole journal: why the adapter reads sys_journal_field)."""
        entries = [
            e
            for e in self.tables["sys_journal_field"].values()
            if e["element_id"] == sys_id and e["element"] == element
        ]
        label = "Additional comments" if element == "comments" else "Work notes"
        parts = []
        for entry in reversed(entries):
            who = (
                self._display_user(self.users[entry["sys_created_by"]].sys_id)
                if entry["sys_created_by"] in self.users
                else entry["sys_created_by"]
            )
            parts.append(f"{entry['sys_created_on']} - {who} ({label})\n{entry['value']}\n\n")
        return "".join(parts)

    def _display_user(self, sys_id: str) -> str:
        user = self.tables["sys_user"].get(sys_id)
        return user["name"] if user else ""

    # -- reading ----------------------------------------------------------------------

    def select(self, table: str, query: str, fields: Mapping[str, Kind]) -> list[dict[str, str]]:
        """Records matching an encoded query, read as ServiceNow reads it [QUERY]: a part
        naming a field the table lacks is dropped (and so may match every record)."""
        try:
            parsed = parse(query, fields, lenient=True)
        except QueryError:
            return []  # an unreadable value: ServiceNow finds nothing for it
        with self._lock:
            rows = list(self._rows(table))
        rows = _narrowed(rows, parsed)
        # Only the fields the query names are read (the rest cannot change its answer).
        named = {c.field for group in parsed.groups for clause in group for c in clause}
        named |= {order.field for order in parsed.order}
        used = {name: kind for name, kind in fields.items() if name in named}
        values = [(row, self._values(row, used)) for row in rows]
        hits = [pair for pair in values if parsed.matches(pair[1])]
        return [row for row, _ in parsed.sort(hits, lambda pair: pair[1])]

    def _rows(self, table: str) -> list[dict[str, str]]:
        if table == "sys_attachment":
            return list(self.attachments.values())
        return list(self.tables[table].values())

    def _values(self, row: Mapping[str, str], fields: Mapping[str, Kind]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, kind in fields.items():
            raw = row.get(name, "")
            if kind is INT:
                values[name] = int(raw) if raw.lstrip("-").isdigit() else None
            elif kind is DATETIME:
                values[name] = _when(raw) if raw else None
            else:
                values[name] = raw
        return values

    def shown(self, table: str, row: Mapping[str, str], request: Request) -> dict[str, Any]:
        """A record as the Table API returns it: `sysparm_fields` picks the fields [TABLE];
        `sysparm_display_value` true/false/all gives display values, raw values or both."""
        wanted = [f for f in request.query_params.get("sysparm_fields", "").split(",") if f]
        mode = request.query_params.get("sysparm_display_value", "false").lower()
        full = dict(row)
        if table in PREFIXES:
            for element in JOURNALS:
                if not wanted or element in wanted:  # (it reads every entry: only if asked)
                    full[element] = self.journal_text(table, row["sys_id"], element)
        names = [name for name in wanted if name in full] if wanted else list(full)
        out: dict[str, Any] = {}
        base = str(request.base_url).rstrip("/")
        for name in names:
            raw = full[name]
            display = self._display(name, raw)
            if mode == "all":
                value: Any = {"display_value": display, "value": raw}
                if name in REFERENCES and raw:
                    value["link"] = f"{base}/api/now/table/sys_user/{raw}"
                out[name] = value
            elif mode == "true":
                out[name] = display
            elif name in REFERENCES and raw:
                out[name] = {"link": f"{base}/api/now/table/sys_user/{raw}", "value": raw}
            else:
                out[name] = raw
        return out

    def _display(self, name: str, raw: str) -> str:
        if name in REFERENCES:
            return self._display_user(raw)
        if name in CHOICES:
            return CHOICES[name].get(raw, raw)
        return raw

    # -- the HTTP API -------------------------------------------------------------------

    def _make_app(self) -> Starlette:
        routes = [
            Route(
                "/api/now/{version:str}/table/{table:str}",
                self._list_or_create,
                methods=["GET", "POST"],
            ),
            Route("/api/now/table/{table:str}", self._list_or_create, methods=["GET", "POST"]),
            Route(
                "/api/now/{version:str}/table/{table:str}/{sys_id:str}",
                self._one,
                methods=["GET", "PUT", "PATCH", "DELETE"],
            ),
            Route(
                "/api/now/table/{table:str}/{sys_id:str}",
                self._one,
                methods=["GET", "PUT", "PATCH", "DELETE"],
            ),
            Route("/api/now/attachment/file", self._upload, methods=["POST"]),
            Route("/api/now/attachment", self._attachment_list, methods=["GET"]),
            Route("/api/now/attachment/{sys_id:str}/file", self._download, methods=["GET"]),
            Route(
                "/api/now/attachment/{sys_id:str}", self._attachment_one, methods=["GET", "DELETE"]
            ),
            Route("/oauth_token.do", self._token, methods=["POST"]),
            Route("/emulator/users", self._control_user, methods=["POST"]),
            Route("/emulator/oauth", self._control_oauth, methods=["POST"]),
            Route("/emulator/faults", self._control_faults, methods=["POST"]),
            Route("/emulator/incidents", self._control_incident, methods=["POST"]),
            Route("/emulator/calls", self._control_calls, methods=["GET"]),
            Route("/emulator/bulk", self._control_bulk, methods=["POST"]),
            Route("/emulator/looks", self._control_looks, methods=["GET"]),
        ]
        return Starlette(routes=routes)

    def _authenticate(self, request: Request) -> User | Response:
        """Basic authentication [TABLE]: "The calling user must have sufficient roles"."""
        call = [request.method, request.url.path, "", request.query_params.get("sysparm_query", "")]
        self.calls.append(call)
        self.times.append(time.time())
        if self.faults:
            status, headers = self.faults.pop(0)
            if status == 429:
                return failure(
                    429,
                    "Rate limit exceeded",
                    "The user has exceeded the rate limit of an inbound REST API rate limit rule",
                    headers,
                )
            return failure(status, "Service Unavailable", "The instance is busy", headers)
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        user = None
        if scheme.lower() == "bearer":
            name, expires = self.tokens.get(encoded, ("", self.now()))
            if expires > self._clock():
                user = self.users.get(name)
        elif scheme.lower() == "basic":
            try:
                name, _, password = base64.b64decode(encoded).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                name, password = "", ""
            found = self.users.get(name)
            if found is not None and secrets.compare_digest(found.password, password):
                user = found
        if user is None:
            return failure(401, "User Not Authenticated", "Required to provide Auth information")
        call[2] = user.name
        return user

    async def _token(self, request: Request) -> Response:
        """POST /oauth_token.do [OAUTH]: a form with grant_type=client_credentials, client_id
        and client_secret; the token acts as the entry's OAuth Application User."""
        call = [request.method, request.url.path, "", request.query_params.get("sysparm_query", "")]
        self.calls.append(call)
        self.times.append(time.time())
        # application/x-www-form-urlencoded (starlette's own form parser needs a package
        # this project does not install)
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        form = {name: values[0] for name, values in fields.items()}
        found = self.oauth_clients.get(form.get("client_id", ""))
        secret = form.get("client_secret", "")
        if (
            form.get("grant_type") != "client_credentials"
            or found is None
            or not secrets.compare_digest(found[0], secret)
            or found[1] not in self.users
        ):
            body = {"error_description": "access_denied", "error": "server_error"}
            return JSONResponse(body, status_code=401)
        token = secrets.token_urlsafe(48)
        self.tokens[token] = (found[1], self._clock() + timedelta(seconds=self.token_lifespan))
        call[2] = found[1]
        return JSONResponse(
            {
                "access_token": token,
                "scope": "useraccount",
                "token_type": "Bearer",
                "expires_in": self.token_lifespan - 1,
            }
        )

    def _refused(self, user: User, table: str, right: str) -> Response | None:
        if (table, right) not in user.denied:
            return None
        verb = {"read": "Read", "create": "Insert", "write": "Update", "delete": "Delete"}[right]
        return failure(
            403, "Operation Failed", f"ACL Exception {verb} Failed due to security constraints"
        )

    async def _list_or_create(self, request: Request) -> Response:
        user = self._authenticate(request)
        if isinstance(user, Response):
            return user
        table = request.path_params["table"]
        if table not in self.tables:
            return failure(400, "Invalid table", f"Invalid table {table}")
        if request.method == "POST":
            refused = self._refused(user, table, "create")
            if refused:
                return refused
            body = await self._json(request)
            if isinstance(body, Response):
                return body
            record = self.insert(table, body, by=user.name)
            return JSONResponse({"result": self.shown(table, record, request)}, status_code=201)
        refused = self._refused(user, table, "read")
        if refused:
            return refused
        rows = self.select(table, request.query_params.get("sysparm_query", ""), self.schema[table])
        return self._page(request, rows, lambda row: self.shown(table, row, request))

    def _page(
        self, request: Request, rows: list[dict[str, str]], show: Callable[[dict[str, str]], Any]
    ) -> Response:
        """sysparm_limit / sysparm_offset, X-Total-Count and the Link header [TABLE]."""
        params = request.query_params
        try:
            limit = max(1, int(params.get("sysparm_limit", DEFAULT_LIMIT)))
            offset = max(0, int(params.get("sysparm_offset", 0)))
        except ValueError:
            return failure(400, "Invalid parameter", "sysparm_limit and sysparm_offset are numbers")
        total = len(rows)
        page = rows[offset : offset + limit]
        version = request.path_params.get("version", "v1")
        if not page and version == "v1" and "/table/" in request.url.path:
            # [EMPTY]: the first version answers a query that finds nothing with 404.
            return failure(
                404,
                "No Record found",
                "Records matching query not found. Check query parameter or offset parameter",
            )
        headers = {"X-Total-Count": str(total)}
        links = []

        def link(at: int, rel: str) -> str:
            query = dict(params) | {"sysparm_offset": str(at), "sysparm_limit": str(limit)}
            return f'<{request.url.replace(query=urlencode(query))}>;rel="{rel}"'

        links.append(link(0, "first"))
        if offset > 0:
            links.append(link(max(0, offset - limit), "prev"))
        if offset + limit < total:
            links.append(link(offset + limit, "next"))
        links.append(link(max(0, (total - 1) // limit * limit), "last"))
        headers["Link"] = ",".join(links)
        return JSONResponse({"result": [show(row) for row in page]}, headers=headers)

    async def _one(self, request: Request) -> Response:
        user = self._authenticate(request)
        if isinstance(user, Response):
            return user
        table, sys_id = request.path_params["table"], request.path_params["sys_id"]
        if table not in self.tables:
            return failure(400, "Invalid table", f"Invalid table {table}")
        right = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
        refused = self._refused(user, table, right[request.method])
        if refused:
            return refused
        record = self.tables[table].get(sys_id)
        if record is None:
            return failure(
                404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            )
        if request.method == "DELETE":
            with self._lock:
                del self.tables[table][sys_id]
            return Response(status_code=204)
        if request.method in ("PUT", "PATCH"):
            body = await self._json(request)
            if isinstance(body, Response):
                return body
            record = self.update(table, sys_id, body, by=user.name)
        return JSONResponse({"result": self.shown(table, record, request)})

    async def _json(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return failure(400, "Exception while reading request", "The payload is not valid JSON")
        if not isinstance(body, dict):
            return failure(400, "Exception while reading request", "Expected a JSON object")
        return body

    # -- the Attachment API -------------------------------------------------------------

    def _attachment_shown(self, meta: Mapping[str, str], request: Request) -> dict[str, str]:
        base = str(request.base_url).rstrip("/")
        return dict(meta) | {"download_link": f"{base}/api/now/attachment/{meta['sys_id']}/file"}

    async def _upload(self, request: Request) -> Response:
        """POST /now/attachment/file?table_name=&table_sys_id=&file_name= [ATTACH]: the body
        is the file; its Content-Type is stored with it; it needs read and write on the
        record's table; the size limit is com.glide.attachment.max_size."""
        user = self._authenticate(request)
        if isinstance(user, Response):
            return user
        params = request.query_params
        table, sys_id = params.get("table_name", ""), params.get("table_sys_id", "")
        name = params.get("file_name", "")
        if not (table and sys_id and name):
            return failure(
                400, "Bad Request", "table_name, table_sys_id and file_name are required"
            )
        refused = self._refused(user, "sys_attachment", "create") or self._refused(
            user, table, "write"
        )
        if refused:
            return refused
        if sys_id not in self.tables.get(table, {}):
            return failure(400, "Invalid table or sys_id", f"No record {sys_id} in table {table}")
        data = await request.body()
        if len(data) > self.max_attachment:
            return failure(
                400,
                "Failed to create the attachment",
                f"The file exceeds the maximum attachment size of "
                f"{self.max_attachment} bytes (com.glide.attachment.max_size)",
            )
        with self._lock:
            stamp = self._clock().replace(microsecond=0).strftime(STAMP)
            meta = {
                "sys_id": secrets.token_hex(16),
                "table_name": table,
                "table_sys_id": sys_id,
                "file_name": name,
                "content_type": request.headers.get("content-type", "application/octet-stream"),
                "size_bytes": str(len(data)),
                "hash": hashlib.sha256(data).hexdigest(),
                "sys_created_on": stamp,
                "sys_created_by": user.name,
                "sys_updated_on": stamp,
                "sys_updated_by": user.name,
                "sys_mod_count": "0",
            }
            self.attachments[meta["sys_id"]] = meta
            self.blobs[meta["sys_id"]] = data
        return JSONResponse({"result": self._attachment_shown(meta, request)}, status_code=201)

    async def _attachment_list(self, request: Request) -> Response:
        user = self._authenticate(request)
        if isinstance(user, Response):
            return user
        refused = self._refused(user, "sys_attachment", "read")
        if refused:
            return refused
        query = request.query_params.get("sysparm_query", "")
        rows = self.select("sys_attachment", query, ATTACHMENT_FIELDS)
        return self._page(request, rows, lambda row: self._attachment_shown(row, request))

    async def _attachment_one(self, request: Request) -> Response:
        user = self._authenticate(request)
        if isinstance(user, Response):
            return user
        meta = self.attachments.get(request.path_params["sys_id"])
        if meta is None:
            return failure(404, "Record doesn't exist", "Attachment record not found")
        if request.method == "DELETE":
            refused = self._refused(user, "sys_attachment", "delete")
            if refused:
                return refused
            with self._lock:
                del self.attachments[meta["sys_id"]], self.blobs[meta["sys_id"]]
            return Response(status_code=204)
        return JSONResponse({"result": self._attachment_shown(meta, request)})

    async def _download(self, request: Request) -> Response:
        """GET /now/attachment/{sys_id}/file [ATTACH]: the bytes, with the metadata as JSON
        in the X-Attachment-Metadata header."""
        user = self._authenticate(request)
        if isinstance(user, Response):
            return user
        refused = self._refused(user, "sys_attachment", "read")
        if refused:
            return refused
        meta = self.attachments.get(request.path_params["sys_id"])
        if meta is None:
            return failure(404, "Record doesn't exist", "Attachment record not found")
        return Response(
            self.blobs[meta["sys_id"]],
            media_type=meta["content_type"],
            headers={"X-Attachment-Metadata": json.dumps(meta)},
        )

    # -- steering a process (not ServiceNow's) -----------------------------------------

    async def _control_user(self, request: Request) -> Response:
        body = await request.json()
        if body["name"] not in self.users:
            self.add_user(body["name"], body.get("password", ""))
        for table, right in body.get("deny", []):
            self.deny(body["name"], table, right)
        for table, right in body.get("allow", []):
            self.allow(body["name"], table, right)
        return JSONResponse({"ok": True})

    async def _control_oauth(self, request: Request) -> Response:
        body = await request.json()
        if "client_id" in body:
            self.add_oauth_client(body["client_id"], body["secret"], body["user"])
        if "lifespan" in body:
            self.token_lifespan = int(body["lifespan"])
        if body.get("expire"):
            self.expire_tokens()
        return JSONResponse({"ok": True, "issued": len(self.tokens)})

    async def _control_faults(self, request: Request) -> Response:
        body = await request.json()
        if body.get("status", 429) == 429:
            self.storm(int(body["count"]), int(body.get("retry_after", 1)))
        else:
            self.fail(int(body["count"]), int(body["status"]))
        return JSONResponse({"ok": True})

    async def _control_calls(self, request: Request) -> Response:
        """How many API requests were made (`?user=` one user's only), for the benchmarks."""
        who = request.query_params.get("user")
        calls = [c for c in self.calls if who is None or c[2] == who]
        return JSONResponse({"calls": len(calls), "faults_left": len(self.faults)})

    async def _control_looks(self, request: Request) -> Response:
        """When `?user=` last asked what changed in a table (a `sys_updated_on>=` query),
        as Unix times: the benchmark times its changes against these polls."""
        who = request.query_params.get("user")
        looks = [
            at
            for call, at in zip(self.calls, self.times, strict=True)
            if call[2] == who and call[0] == "GET" and call[3].startswith("sys_updated_on>=")
        ]
        return JSONResponse({"looks": looks[-50:]})

    async def _control_bulk(self, request: Request) -> Response:
        """`count` incidents with `comments` comments each, written by `by` (a benchmark's
        setup: thousands of records through the API would take minutes)."""
        body = await request.json()
        by = body.get("by", "admin")
        for n in range(int(body["count"])):
            record = self.insert(
                "incident",
                {"short_description": f"Bulk incident {n}", "description": "d" * 300}
                | body.get("fields", {}),
                by=by,
            )
            for c in range(int(body.get("comments", 0))):
                text = f"Comment {c} on {n}: " + "c" * 80
                self._journal("incident", record["sys_id"], "comments", text, by,
                              record["sys_created_on"])  # fmt: skip
        return JSONResponse({"ok": True, "incidents": len(self.tables["incident"])})

    async def _control_incident(self, request: Request) -> Response:
        body = await request.json()
        by = body.pop("by", "admin")
        record = self.insert("incident", body, by=by)
        return JSONResponse({"result": record})


class DateHeader:
    """ASGI middleware: every answer's Date is the emulated instance's clock."""

    def __init__(self, app: Any, emulator: Emulator) -> None:
        self.app, self.emulator = app, emulator

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                date = format_datetime(self.emulator.now(), usegmt=True).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                message["headers"] = [*headers, (b"date", date)]
            await send(message)

        await self.app(scope, receive, sending)


def asgi(emulator: Emulator) -> Any:
    """The emulator's ASGI app with its Date header."""
    return DateHeader(emulator.app, emulator)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD")
    parser.add_argument("--oauth-client", action="append", default=[], help="CLIENT_ID:SECRET:USER")
    args = parser.parse_args()
    emulator = Emulator()
    for spec in args.user:
        name, _, password = spec.partition(":")
        emulator.add_user(name, password)
    for spec in args.oauth_client:
        client_id, secret, user = spec.split(":", 2)
        emulator.add_oauth_client(client_id, secret, user)
    uvicorn.run(asgi(emulator), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
