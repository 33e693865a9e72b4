"""Invitation codes: `exa1.<payload>.<check>`, as docs/protocol.md (Invitation codes) specifies.

`payload` is base64url (no padding) of compact JSON, `check` the first 8 hex
digits of SHA-256 over `exa1.<payload>`. Decoding never raises anything but
`InvitationError`, whose message is one line a person can act on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from exalate_tui.domain.models import (
    Connection,
    ConnectionName,
    Description,
    Mode,
    ShortName,
    Topology,
    Url,
)
from exalate_tui.domain.topology import topology_for
from exalate_tui.errors import ExalateError

PREFIX = "exa1"
DEFAULT_LIFETIME = 7 * 24 * 3600
# A real code is well under 2 KB; refuse huge pastes before decoding them.
MAX_CODE_LENGTH = 8192
_WHITESPACE = re.compile(r"\s+")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN = r"^[A-Za-z0-9_-]{43}$"  # 32 bytes, base64url, no padding


class InvitationError(ExalateError, ValueError):
    """A code that cannot be used; str() is the one-line reason."""

    bad_input = True


class Invitation(BaseModel):
    """The payload of an invitation code, key for key."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    v: Literal[1] = 1
    cid: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    url: Url | None
    dest_url: Url | None
    from_: ShortName = Field(alias="from")
    to: ShortName
    name: ConnectionName
    desc: Description
    mode: Mode
    tok: str = Field(pattern=_TOKEN)
    # Year 9999 at most: later stamps overflow datetime on some platforms.
    exp: StrictInt = Field(ge=0, le=253_402_300_799)

    @property
    def topology(self) -> Topology:
        return topology_for(
            initiator_has_url=self.url is not None, acceptor_has_url=self.dest_url is not None
        )

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.exp


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def digest(invitation: Invitation) -> str:
    """SHA-256 over what the code says, its token aside: the handshake presents it.

    The side holding the token's hash also holds this digest, so a code whose
    payload was changed (and re-sealed with good check digits) is refused
    even though its token is right. Canonical JSON: a re-encoding of the same
    payload has the same digest.
    """
    data = invitation.model_dump(mode="json", by_alias=True, exclude={"tok"})
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Constant-time comparison of a presented token against a stored hash."""
    return hmac.compare_digest(hash_token(token), token_hash)


def for_connection(
    connection: Connection, *, url: str | None, token: str, expires: int
) -> Invitation:
    """The payload for a connection this side initiated: the wizard's code, or a regenerated one.

    `url` is this instance's public URL; a private initiator's code carries none.
    """
    return Invitation.model_validate(
        {
            "cid": connection.id,
            "url": None if connection.topology is Topology.PRIVATE_PUBLIC else url,
            "dest_url": connection.remote_url,
            "from": connection.local_name,
            "to": connection.remote_name,
            "name": connection.name,
            "desc": connection.description,
            "mode": connection.mode,
            "tok": token,
            "exp": expires,
        }
    )


def _brief(value: object) -> str:
    """A repr short enough for a one-line message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:8]


def encode(invitation: Invitation) -> str:
    data = invitation.model_dump(mode="json", by_alias=True)
    compact = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    payload = base64.urlsafe_b64encode(compact.encode()).rstrip(b"=").decode()
    body = f"{PREFIX}.{payload}"
    return f"{body}.{_check(body)}"


def decode(text: str) -> Invitation:
    """Parse a pasted code; whitespace and line breaks anywhere are ignored."""
    if len(text) > 4 * MAX_CODE_LENGTH:
        raise InvitationError("This is far too long to be an invitation code.")
    code = _WHITESPACE.sub("", text)
    if not code:
        raise InvitationError("No invitation code given: paste the code your partner sent.")
    if len(code) > MAX_CODE_LENGTH:
        raise InvitationError("This is far too long to be an invitation code.")
    parts = code.split(".")
    if parts[0] != PREFIX:
        if parts[0].startswith("exa") and len(parts) == 3:
            raise InvitationError(
                f"Unsupported code version {parts[0]!r}: this app reads {PREFIX} codes; "
                "update exalate-tui."
            )
        raise InvitationError("Not an invitation code: it should start with 'exa1.'.")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise InvitationError("The code is incomplete: copy the whole code again.")
    _, payload, check = parts
    if not _B64URL.fullmatch(payload) or not hmac.compare_digest(
        check, _check(f"{PREFIX}.{payload}")
    ):
        raise InvitationError(
            "The code is damaged (its check digits do not match): copy it again, whole."
        )
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvitationError("The code's contents are unreadable: ask for a new code.") from None
    if not isinstance(data, dict):
        raise InvitationError("The code's contents are unreadable: ask for a new code.")
    version = data.get("v")
    if type(version) is not int or version != 1:  # True == 1 in Python: refuse it
        raise InvitationError(
            f"Unsupported invitation version {_brief(version)}: update exalate-tui."
        )
    try:
        return Invitation.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise InvitationError(
            f"The code's field {where!r} is invalid ({first['msg']}): ask for a new code."
        ) from None
