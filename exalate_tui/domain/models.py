"""What every layer shares about instances and connections: names, kinds, rules, models.

Validation rules for names live here so the wizard, the CLI and the files on
disk all refuse the same things with the same words; the pydantic models of
`instance.toml` and `connections/<id>.toml` apply exactly these checks.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

SHORT_NAME_MAX = 32
CONNECTION_NAME_MAX = 100
DESCRIPTION_MAX = 1000
URL_MAX = 2048

_SHORT_NAME = re.compile(r"[A-Za-z0-9._-]+")
# C0, DEL and C1 controls, and the line and paragraph separators (U+2028, U+2029,
# a line break to a terminal): never allowed in anything we store or show.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Zero-width joiners are part of how some scripts (Persian) and emoji are written.
_JOINERS = frozenset("\u200c\u200d")


def _invisible(value: str, *, joiners: bool) -> bool:
    """Whether `value` holds an invisible format character (Unicode category Cf).

    Those are the bidi embeddings, overrides, isolates and marks (U+202A–E,
    U+2066–9, U+200E, U+200F, U+061C): they reorder what follows them on
    screen ("Trojan Source"), so a partner's name or URL could show other
    than it reads; and the zero-width ones (U+200B, U+2060, U+FEFF, ...)
    that hide in it. `joiners` allows ZWNJ and ZWJ, which text needs.
    """
    return any(
        unicodedata.category(ch) == "Cf" and not (joiners and ch in _JOINERS)
        for ch in value
        if not ch.isascii()
    )


class Mode(StrEnum):
    BASIC = "basic"
    SCRIPT = "script"


class Topology(StrEnum):
    """Who has a URL. The first word is the initiator, the second the acceptor."""

    PUBLIC_PRIVATE = "public-private"
    PUBLIC_PUBLIC = "public-public"
    PRIVATE_PUBLIC = "private-public"


class Role(StrEnum):
    INITIATOR = "initiator"
    ACCEPTOR = "acceptor"


class Status(StrEnum):
    """The stored state of a connection; "unreachable" is derived live from errors."""

    PENDING = "pending"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"


class PeerState(StrEnum):
    """What the other side last said about its end (its `connection.*` messages).

    Kept apart from `Status`, which is this side's own choice: a partner's pause
    must not make this side refuse the partner's later `connection.activated`.
    """

    DEACTIVATED = "deactivated"
    DELETED = "deleted"


def check_short_name(value: str) -> str:
    """Return the problem with a short name, or raise nothing and return it."""
    if not value:
        raise ValueError("is required")
    if len(value) > SHORT_NAME_MAX:
        raise ValueError(f"must be at most {SHORT_NAME_MAX} characters (has {len(value)})")
    if not _SHORT_NAME.fullmatch(value):
        raise ValueError("may only contain letters, digits, '-', '_' and '.'")
    return value


def check_text(value: str, *, limit: int, required: bool) -> str:
    if required and not value.strip():
        raise ValueError("is required")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if _invisible(value, joiners=True):
        raise ValueError("must not contain invisible or bidirectional formatting characters")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters (has {len(value)})")
    return value


def shown(text: object) -> str:
    """Text fit for a terminal as it reads: every control, separator and invisible
    format character escaped (`\\u202e`), the joiners text needs kept."""
    return "".join(ch if ch.isprintable() or ch in _JOINERS else repr(ch)[1:-1] for ch in str(text))


def check_url(value: str) -> str:
    """An http(s) URL with a host; the reason names what is missing."""
    if not value:
        raise ValueError("is required")
    if len(value) > URL_MAX:
        raise ValueError(f"must be at most {URL_MAX} characters")
    if _CONTROL.search(value) or " " in value:
        raise ValueError("must not contain spaces or control characters")
    if _invisible(value, joiners=False):
        # In the host or the userinfo they would let a URL show as another.
        raise ValueError("must not contain invisible or bidirectional formatting characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("is not a valid URL (check the port)") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://, e.g. https://example.exalate.net")
    if not parts.hostname:
        raise ValueError("must name a host, e.g. https://example.exalate.net")
    return value


DATABASE_SCHEMES = ("postgresql", "postgres")


def check_database(value: str) -> str:
    """A PostgreSQL URL (`postgresql://user:password@host:port/database`, libpq's form;
    `?host=/run/postgresql` for a Unix socket); the reason names what is wrong."""
    value = value.strip()
    if not value:
        raise ValueError("is required, e.g. postgresql://exalate@db.example.com/exalate")
    if len(value) > URL_MAX:
        raise ValueError(f"must be at most {URL_MAX} characters")
    if _CONTROL.search(value) or " " in value or _invisible(value, joiners=False):
        raise ValueError("must not contain spaces, control or invisible characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("is not a valid URL (check the port)") from None
    if parts.scheme not in DATABASE_SCHEMES:
        raise ValueError(
            "must start with postgresql://, e.g. postgresql://exalate@db.example.com/exalate"
        )
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError(
            "must name a host (postgresql://USER@HOST/DATABASE) or a socket folder "
            "(?host=/run/postgresql)"
        )
    return value


def shown_database(url: str) -> str:
    """The database a URL names, fit to print: user, host, port and database, never the
    password (nor any other query parameter but the socket folder)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the PostgreSQL database (its URL does not parse)"
    user = f"{parts.username}@" if parts.username else ""
    port_part = f":{port}" if port else ""
    if parts.hostname:
        return shown(f"postgresql://{user}{parts.hostname}{port_part}{parts.path or '/'}")
    socket = next((p[5:] for p in parts.query.split("&") if p.startswith("host=")), "")
    return shown(f"postgresql://{user}{parts.path or '/'}?host={socket}{port_part}")


def normalize_url(value: str) -> str:
    """The URL as stored: no trailing slash, so paths join cleanly."""
    return value.strip().rstrip("/")


def loopback_port(url: object) -> int | None:
    """The explicit port of a URL on this machine's IPv4 loopback (where the node
    listens by default), else None."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
        port, host = parts.port, parts.hostname
        loopback = host == "localhost" or ipaddress.IPv4Address(host or "").is_loopback
    except ValueError:
        return None  # not an IPv4 address, or a URL whose own check says what is wrong
    return port if loopback else None


def check_instance(short_name: str, public_url: str | None) -> tuple[str | None, dict[str, str]]:
    """This instance's short name and public URL, as `cli init` and the first-run screen take them.

    Returns the public URL as stored (normalized; "" when given blank, i.e. none;
    None when not given) and, for each of "short_name" and "public_url" that is
    refused, the reason in `check_short_name`'s and `check_url`'s words.
    """
    problems: dict[str, str] = {}
    try:
        check_short_name(short_name)
    except ValueError as error:
        problems["short_name"] = str(error)
    url = None if public_url is None else normalize_url(public_url)
    if url:
        try:
            check_url(url)
        except ValueError as error:
            problems["public_url"] = str(error)
    return url, problems


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


ShortName = Annotated[str, AfterValidator(check_short_name)]
ConnectionName = Annotated[
    str, AfterValidator(lambda v: check_text(v, limit=CONNECTION_NAME_MAX, required=True))
]
Description = Annotated[
    str, AfterValidator(lambda v: check_text(v, limit=DESCRIPTION_MAX, required=False))
]
Url = Annotated[str, AfterValidator(check_url)]
# A ServiceNow table or column name.
TableName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,79}$")]
DatabaseUrl = Annotated[str, AfterValidator(check_database)]


class Instance(BaseModel):
    """This instance: `instance.toml`."""

    model_config = ConfigDict(extra="forbid")

    short_name: ShortName
    public_url: Url | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=7917, ge=1, le=65535)
    # Where the message streams live: absent, `state.sqlite3`; a PostgreSQL URL, that
    # database (`init --database`; EXALATE_TUI_DATABASE_URL overrides it).
    database: DatabaseUrl | None = None

    @model_validator(mode="before")
    @classmethod
    def _listen_where_partners_call(cls, data: object) -> object:
        """A public URL on this machine's loopback with a port (a trial, or a proxy-less
        test) is where the node must listen: partners would call a port nobody serves."""
        if isinstance(data, dict) and "listen_port" not in data:
            port = loopback_port(data.get("public_url"))
            if port is not None:
                return {**data, "listen_port": port}
        return data


class TrackerConfig(BaseModel):
    """Which tracker this instance fronts: `tracker.toml` (0600: ServiceNow's password).

    No file, or `kind = "embedded"`: the embedded tracker (`tracker.sqlite3`)."""

    # Built when first used: only the tracker's commands read tracker.toml
    # (benchmarks/README.md, headless and start-up).
    model_config = ConfigDict(extra="forbid", defer_build=True)

    kind: Literal["embedded", "servicenow"] = "embedded"
    url: Url | None = None
    # Basic authentication: the integration user and its password...
    user: str | None = Field(default=None, min_length=1, max_length=255)
    password: SecretStr | None = None
    # ...or OAuth client credentials: an OAuth application registry entry's client id and
    # secret (its OAuth Application User is whom ServiceNow acts as).
    client_id: str | None = Field(default=None, min_length=1, max_length=255)
    client_secret: SecretStr | None = None
    # The task tables whose records are tickets (`--table`, repeatable): the first is where
    # a ticket of no other table's type is created.
    tables: list[TableName] = Field(default_factory=lambda: ["incident"], min_length=1)
    poll: float = Field(default=5.0, gt=0, le=3600)  # seconds between looks for changes
    labels_field: TableName = "u_labels"
    # Each table's fields as sys_dictionary gave them when the instance was checked:
    # table → field → internal_type. Triggers and filters are checked against these.
    fields: dict[TableName, dict[TableName, str]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _one_table(cls, data: object) -> object:
        """A tracker.toml written before tables were a list says `table = "incident"`."""
        if isinstance(data, dict) and "table" in data and "tables" not in data:
            data = dict(data)
            data["tables"] = [data.pop("table")]
        return data

    @property
    def table(self) -> str:
        return self.tables[0]


class Connection(BaseModel):
    """One connection: `connections/<id>.toml` (0600, it holds secrets)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    name: ConnectionName
    description: Description = ""
    mode: Mode
    topology: Topology
    role: Role
    local_name: ShortName
    remote_name: ShortName | None = None
    # The other side's URL when it has one; None when it is private.
    remote_url: Url | None = None
    created: datetime = Field(default_factory=utcnow)
    status: Status = Status.PENDING
    # Invitation state: the side that receives the handshake holds the hash.
    token_hash: str | None = None
    # Only a private initiator keeps the token: it must present it itself.
    token: SecretStr | None = None
    token_expires: datetime | None = None
    # `invitation.digest` of the code: the handshake must present it (a changed code is refused).
    code_digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    secret: SecretStr | None = None
    # None while the other side has nothing to report (see PeerState).
    peer_state: PeerState | None = None
    # The partner's own mode once it told us it switched (`connection.mode`); each
    # side keeps its own rules, so this is shown, never applied here.
    peer_mode: Mode | None = None
    # Which local tickets sync automatically: filters in the tracker's query language,
    # checked against its fields before they are saved (sync/triggers.py).
    triggers: list[str] = Field(default_factory=list)
