"""The replica: the neutral document of a ticket that crosses the wire (docs/protocol.md).

Each side's outgoing rules make one from a local ticket; the other side's
incoming rules read it. A replica is partner-controlled input: `parse`
checks every part of it before the engine looks at it.

A replica travels as the body of a `sync.replica` message; its attachments'
bytes go before it in `sync.attachment` messages, so when the replica is
applied (in order, once) the bytes it names have arrived.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from exalate_tui.errors import ExalateError

# The replica format; a newer one is refused with a clear error on its ticket.
FORMAT = 1

REPLICA = "sync.replica"
ATTACHMENT = "sync.attachment"
UNEXALATE = "sync.unexalate"
KINDS = frozenset({REPLICA, ATTACHMENT, UNEXALATE})

# An attachment's bytes travel in one message, under the node's 8 MiB per push.
MAX_ATTACHMENT = 4 * 1024 * 1024
KEY_MAX = 64
TEXT_MAX = 65536


class ReplicaError(ExalateError):
    """A replica (or attachment) from the partner that cannot be used; str() says why."""


@dataclass(frozen=True)
class RemoteComment:
    id: str
    author: str
    body: str
    internal: bool
    created: str  # ISO 8601, as the sender's tracker had it


@dataclass(frozen=True)
class RemoteAttachment:
    sha256: str
    name: str
    size: int


@dataclass(frozen=True)
class Content:
    """What a replica says of its ticket: compared to decide whether to send at all."""

    fields: dict[str, Any] = field(default_factory=dict)
    comments: tuple[RemoteComment, ...] = ()
    attachments: tuple[RemoteAttachment, ...] = ()
    # Per field, the sender's stamp of its last change *made on the sender's side*
    # (rising per link): tells "they set it again" from "they still have it".
    changed: dict[str, int] = field(default_factory=dict)

    def same(self, other: Content | None) -> bool:
        """The same ticket content, stamps aside."""
        return other is not None and (self.fields, self.comments, self.attachments) == (
            other.fields,
            other.comments,
            other.attachments,
        )

    def doc(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "fields": self.fields,
            "comments": [vars(c) for c in self.comments],
            "attachments": [vars(a) for a in self.attachments],
        }


@dataclass(frozen=True)
class Replica:
    key: str  # the sender's ticket key
    # The seq of the message that carried it: set by the receiver, not on the wire.
    version: int
    seen: int  # the highest version of the receiver's replicas the sender had applied
    your_key: str | None  # the receiver's key, once the sender knows it
    content: Content
    rules: str  # which rules made it, e.g. "basic" (shown in history)
    # The first replica after an Exalate (again): revives a link the partner had stopped.
    restart: bool = False

    def doc(self) -> dict[str, Any]:
        return {
            "v": FORMAT,
            "key": self.key,
            "seen": self.seen,
            "your_key": self.your_key,
            "rules": self.rules,
            "restart": self.restart,
            **self.content.doc(),
        }


class _Comment(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=KEY_MAX)
    author: str = Field(max_length=200)
    body: str = Field(max_length=TEXT_MAX)
    internal: bool = False
    created: str = Field(max_length=40)


class _Attachment(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0)


class _Replica(BaseModel):
    # Unknown keys are ignored: a later format may add some without breaking this one.
    model_config = ConfigDict(extra="ignore")
    v: int
    key: str = Field(min_length=1, max_length=KEY_MAX)
    seen: int = Field(ge=0)
    your_key: str | None = Field(default=None, max_length=KEY_MAX)
    rules: str = Field(default="", max_length=100)
    restart: bool = False
    fields: dict[str, JsonValue] = Field(default_factory=dict, max_length=200)
    changed: dict[str, int] = Field(default_factory=dict, max_length=200)
    comments: list[_Comment] = Field(default_factory=list, max_length=10000)
    attachments: list[_Attachment] = Field(default_factory=list, max_length=1000)


def _reason(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def parse(body: Any, seq: int) -> Replica:
    """The `sync.replica` body of message `seq` as a `Replica`; `ReplicaError` saying
    what is wrong."""
    if isinstance(body, dict) and isinstance(body.get("v"), int) and body["v"] > FORMAT:
        raise ReplicaError(
            f"replica format {body['v']} is newer than this exalate-tui reads ({FORMAT}): "
            "update exalate-tui on this side"
        )
    try:
        data = _Replica.model_validate(body)
    except ValidationError as error:
        raise ReplicaError(
            f"the partner sent a replica that is not valid ({_reason(error)})"
        ) from None
    return Replica(
        key=data.key,
        version=seq,
        seen=data.seen,
        your_key=data.your_key,
        rules=data.rules,
        restart=data.restart,
        content=Content(
            fields=dict(data.fields),
            changed=dict(data.changed),
            comments=tuple(RemoteComment(**c.model_dump()) for c in data.comments),
            attachments=tuple(RemoteAttachment(**a.model_dump()) for a in data.attachments),
        ),
    )


def content_of(doc: dict[str, Any] | None) -> Content | None:
    """A `Content` back from its `doc()` (as the sync store keeps it)."""
    if doc is None:
        return None
    return Content(
        fields=dict(doc.get("fields", {})),
        changed=dict(doc.get("changed", {})),
        comments=tuple(RemoteComment(**c) for c in doc.get("comments", [])),
        attachments=tuple(RemoteAttachment(**a) for a in doc.get("attachments", [])),
    )


@dataclass(frozen=True)
class AttachmentBytes:
    key: str
    sha256: str
    name: str
    data: bytes


def attachment_body(key: str, sha256: str, name: str, data: bytes) -> dict[str, Any]:
    return {
        "key": key,
        "sha256": sha256,
        "name": name,
        "data": base64.b64encode(data).decode("ascii"),
    }


def parse_attachment(body: Any) -> AttachmentBytes:
    """A `sync.attachment` body, its bytes checked against the hash it claims."""
    import hashlib

    if not isinstance(body, dict):
        raise ReplicaError("the partner sent an attachment that is not an object")
    try:
        key, sha256, name = (str(body[k]) for k in ("key", "sha256", "name"))
        data = base64.b64decode(str(body["data"]), validate=True)
    except (KeyError, binascii.Error):
        raise ReplicaError(
            "the partner sent an attachment without key, sha256, name or data"
        ) from None
    if len(data) > MAX_ATTACHMENT:
        raise ReplicaError(f"the partner sent an attachment over {MAX_ATTACHMENT} bytes")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ReplicaError(f"attachment {name!r}: its bytes do not match its SHA-256")
    return AttachmentBytes(key, sha256, name[:255], data)
