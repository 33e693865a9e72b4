"""What every layer shares about instances and connections: names, kinds, and the rules.

Validation rules for names live here so the wizard, the CLI and the files on
disk all refuse the same things with the same words.

The pydantic models (`Instance`, `Connection` and the constrained string
types) are in `pydantic_models` and are reached through this module as usual
(`from .models import Connection`): they load on first use. Importing pydantic
and building their schemas costs ~100 ms, which the console's first screen
does without (benchmarks/README.md); the enums and checks here cost nothing.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

SHORT_NAME_MAX = 32
CONNECTION_NAME_MAX = 100
DESCRIPTION_MAX = 1000
URL_MAX = 2048

_SHORT_NAME = re.compile(r"[A-Za-z0-9._-]+")
# C0, DEL and C1 controls: never allowed in anything we store or show.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Bidi embeddings, overrides and isolates: they reorder what follows them on screen
# ("Trojan Source"), so a name from a partner could show other than it reads.
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")


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
    if _BIDI.search(value):
        raise ValueError("must not contain bidirectional override characters")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters (has {len(value)})")
    return value


def check_url(value: str) -> str:
    """An http(s) URL with a host; the reason names what is missing."""
    if not value:
        raise ValueError("is required")
    if len(value) > URL_MAX:
        raise ValueError(f"must be at most {URL_MAX} characters")
    if _CONTROL.search(value) or " " in value:
        raise ValueError("must not contain spaces or control characters")
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


def normalize_url(value: str) -> str:
    """The URL as stored: no trailing slash, so paths join cleanly."""
    return value.strip().rstrip("/")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


if TYPE_CHECKING:  # for mypy; at run time, __getattr__ below
    from exalate_tui.domain.pydantic_models import (  # noqa: F401
        Connection,
        ConnectionName,
        Description,
        Instance,
        ShortName,
        Url,
    )

_PYDANTIC = frozenset(
    {"Connection", "ConnectionName", "Description", "Instance", "ShortName", "Url"}
)


def __getattr__(name: str) -> Any:
    """The pydantic models, imported (and their schemas built) on first use."""
    if name in _PYDANTIC:
        from exalate_tui.domain import pydantic_models

        value = getattr(pydantic_models, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pydantic_loaded() -> bool:
    """Whether the pydantic models are built: from then on, validating costs ~5 µs a file."""
    return "exalate_tui.domain.pydantic_models" in sys.modules
