"""The bodies the node's routes take and answer, as pydantic models (docs/protocol.md).

They validate requests on the node and make its OpenAPI document
(`/api/v1/openapi.json`); the limits below are part of the contract.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator

from exalate_tui import __version__
from exalate_tui.domain.models import ShortName, Url
from exalate_tui.protocol.api import API_VERSION, PRODUCT

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
MAX_WAIT = 30.0
# SQLite integers are 64-bit; refusing larger numbers keeps them out of the store.
MAX_SEQ = 2**62


class Info(BaseModel):
    product: str = PRODUCT
    version: str = __version__
    api: int = API_VERSION
    api_version: int = API_VERSION
    short_name: str | None


class HandshakeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cid: str = Field(max_length=64)
    tok: str = Field(max_length=128)
    short_name: ShortName
    url: Url | None = None
    # `invitation.digest` of the code the token came in; required when the receiver holds one.
    sum: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class HandshakeOut(BaseModel):
    secret: str
    short_name: str
    name: str


def _finite(value: JsonValue) -> JsonValue:
    """Refuse Infinity and NaN anywhere in a body (`1e400` parses as Infinity):
    stored, they would go out as text that is not JSON."""
    todo = [value]
    while todo:  # a loop, not recursion: a body may nest deep
        item = todo.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (JSON has no Infinity or NaN)")
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return value


class WireMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=1, le=MAX_SEQ)
    # No NUL: PostgreSQL's text cannot hold one (a store must take every kind it is sent).
    kind: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00]+$")
    body: Annotated[JsonValue, AfterValidator(_finite)] = None


class Batch(BaseModel):
    messages: list[WireMessage]
    last_seq: int


class PushIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[WireMessage] = Field(max_length=MAX_LIMIT)

    @field_validator("messages")
    @classmethod
    def _increasing(cls, messages: list[WireMessage]) -> list[WireMessage]:
        if any(b.seq <= a.seq for a, b in zip(messages, messages[1:], strict=False)):
            raise ValueError("seq must increase strictly within a batch")
        return messages


class Applied(BaseModel):
    applied: int


class ErrorOut(BaseModel):
    error: str
    detail: str


class FetchQuery(BaseModel):
    """The long-poll's query: validated alike on the lean path and in the OpenAPI route."""

    after: int = Field(
        0,
        ge=0,
        le=MAX_SEQ,
        description="answer messages after this seq; also the acknowledgement when `ack` is absent",
    )
    ack: int | None = Field(
        None,
        ge=0,
        le=MAX_SEQ,
        description="the caller applied every seq ≤ this (default: `after`); lets a caller "
        "fetch the next batch while it still applies the last",
    )
    wait: float = Field(0, ge=0, le=MAX_WAIT, description="seconds to wait for a message")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    n: str | None = Field(None, max_length=64, description="random nonce (part of the signature)")
