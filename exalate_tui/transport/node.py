"""The node: this instance's HTTP API (FastAPI) and its serving (uvicorn).

`create_app(home, state)` is the ASGI app, the same one the tests drive
in-process; `serve(home)` runs it on a socket beside the `Supervisor` (the
requests this side makes). docs/protocol.md is the contract for every route:
the unsigned `/info` and `/handshake`, the signed message streams, errors as
`{"error": code, "detail": text}`.

Nothing here writes a secret or a token to a response other than the
handshake's, to an error, or to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import hmac
import logging
import re
import resource
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Annotated, Any
from urllib.parse import parse_qsl

import uvicorn
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    ValidationError,
    field_validator,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from exalate_tui import __version__
from exalate_tui.domain.invitation import token_matches
from exalate_tui.domain.models import (
    Connection,
    Role,
    ShortName,
    Status,
    Topology,
    Url,
    normalize_url,
)
from exalate_tui.home.store import Home, NotFound, StoreError
from exalate_tui.lifecycle.actions import apply_effect, purge_tombstones
from exalate_tui.protocol import signing
from exalate_tui.protocol.api import ACK_HEADER, API_VERSION, PREFIX, PRODUCT
from exalate_tui.transport.streams import Gap, Message, State, doorbell_address

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7917  # Instance.listen_port's default
# Thousands of pollers reconnect at once after a restart: let the kernel queue them.
BACKLOG = 4096
MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_HANDSHAKE_BYTES = 16 * 1024
# A signed GET has an empty body; anything bigger is not one of ours.
MAX_OTHER_BYTES = 16 * 1024
DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
MAX_WAIT = 30.0
# SQLite integers are 64-bit; refusing larger numbers keeps them out of the store.
MAX_SEQ = 2**62
# How often another process's enqueue is looked for while anyone long-polls.
WATCH = 0.05
# Accepted signatures are remembered while they could still pass the clock check;
# past this many live ones the node refuses signed calls rather than forget any.
REPLAY_CAPACITY = 200_000
# Contact ("last contact N s ago") is written at most this often per connection.
CONTACT_EVERY = 1.0
# A request still in progress when the node stops gets this long to finish.
GRACEFUL_STOP = 5
HOUSEKEEPING_EVERY = 3600.0

_CID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STAMP = re.compile(r"ts=(\d+),sig=([0-9a-f]{64})$")
# Verified against when the connection is unknown, so that takes as long as a bad signature.
_NO_SECRET = secrets.token_urlsafe(32)
_NO_HASH = "0" * 64


class ApiError(Exception):
    """An answer other than 2xx: `{"error": code, "detail": text, **extra}`."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


def _unauthorized() -> ApiError:
    # One body for every reason: a caller learns nothing about which connections exist.
    return ApiError(
        401,
        "unauthorized",
        "the request is not signed for this connection (see docs/protocol.md, Signed requests)",
    )


def _unavailable() -> ApiError:
    return ApiError(
        503, "unavailable", "this node cannot read its configuration; its admin must see its log"
    )


# -- request and response bodies (also the OpenAPI document) ---------------------------


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


class WireMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=1, le=MAX_SEQ)
    kind: str = Field(min_length=1, max_length=100)
    body: JsonValue = None


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


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """A request body for `openapi_extra`, with pydantic's `$defs` inlined.

    Left in place, `#/$defs/...` would point at the document's root, where
    nothing is: the push body's messages had no schema a client could follow.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return inline(defs[ref.removeprefix("#/$defs/")]) | rest
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorOut} for status in statuses}


def _problems(error: ValidationError | RequestValidationError, within: str = "") -> str:
    """Where and what, never the offending value (it may be a token)."""
    parts = []
    for item in error.errors():
        loc = (within, *item["loc"]) if within else item["loc"]
        where = ".".join(str(p) for p in loc if p != "body") or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts[:5])


# -- wake-ups for long-polls -----------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Waiter:
    """One parked long-poll: a bare future and a timer, no task of its own.

    Thousands are held at once, so each costs as little as it can
    (`asyncio.wait_for` would add a task and a coroutine per poll).
    """

    after: int
    woken: asyncio.Future[None]

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)


class Wakeups:
    """Long-polls wait here for their connection's outbox to grow.

    An enqueue through the node's own `State` wakes that connection's polls at
    once (`State.on_enqueue` → `notify`, from any thread). Another process's
    enqueue is seen within `watch` seconds: while anyone waits, one task
    watches `PRAGMA data_version` and, when it moves, wakes the polls whose
    connection's last seq passed what they have.
    """

    def __init__(self, state: State, watch: float = WATCH) -> None:
        self.state = state
        self.watch = watch
        self._waiters: dict[str, list[_Waiter]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def notify(self, cid: str) -> None:
        """Wake `cid`'s long-polls; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # nobody has waited yet
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake, cid)

    def ring_here(self, address: str | None) -> Callable[[], None]:
        """Hear enqueues of other processes at once on `address` (`queue.doorbell_address`).

        Each datagram names a cid whose outbox grew. Without it (no address,
        or another process bound it) the `data_version` watch still catches
        every enqueue, within `watch` seconds instead of a millisecond.
        Call from the serving loop; returns what stops listening.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        if address is None:
            return lambda: None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
        except OSError as error:
            log.warning("other processes' enqueues are seen within %g s: %s", self.watch, error)
            sock.close()
            return lambda: None
        sock.setblocking(False)

        def rung() -> None:
            while True:
                try:
                    cid = sock.recv(128)
                except OSError:  # drained
                    return
                self._wake(cid.decode("ascii", "replace"))

        loop.add_reader(sock.fileno(), rung)

        def stop() -> None:
            loop.remove_reader(sock.fileno())
            sock.close()

        return stop

    def close(self) -> None:
        """Answer every long-poll now, and every later one without waiting (shutdown)."""
        self._closed = True
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.wake()

    async def aclose(self) -> None:
        """`close`, then stop the `data_version` watch, so the state can close after."""
        self.close()
        watcher = self._watcher
        if watcher is not None:
            # It sees `closed` within one `watch`: let a look already in a thread end
            # there, rather than cancel the await and leave the thread on the state.
            await asyncio.wait({watcher}, timeout=1.0)
            watcher.cancel()

    def _wake(self, cid: str) -> None:
        for waiter in self._waiters.get(cid, ()):
            waiter.wake()

    def register(self, cid: str, after: int) -> _Waiter:
        """A waiter woken once `cid` may have a message after `after`.

        Register first, then look at the outbox: an enqueue in between wakes
        the waiter, so it is never missed. `unregister` it in every case.
        """
        loop = self._loop = asyncio.get_running_loop()
        waiter = _Waiter(after, loop.create_future())
        if self._closed:
            waiter.wake()
        # A list, not a set: nearly always one poll per connection, and 10,000 are held.
        self._waiters.setdefault(cid, []).append(waiter)
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="node:data_version")
        return waiter

    def unregister(self, cid: str, waiter: _Waiter) -> None:
        waiters = self._waiters.get(cid)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[cid]

    async def _watch(self) -> None:
        try:
            version = await asyncio.to_thread(self.state.data_version)
            # The first pass catches commits made before `version` was read.
            changed = True
            while self._waiters and not self._closed:
                if changed:
                    cids = list(self._waiters)
                    seqs = await asyncio.to_thread(self._last_seqs, cids)
                    for cid, seq in seqs.items():
                        for waiter in self._waiters.get(cid, ()):
                            if seq > waiter.after:
                                waiter.wake()
                await asyncio.sleep(self.watch)
                if not self._waiters or self._closed:
                    break  # everyone left while we slept: the state may be closing
                current = await asyncio.to_thread(self.state.data_version)
                changed, version = current != version, current
        finally:
            self._watcher = None

    def _last_seqs(self, cids: list[str]) -> dict[str, int]:
        return {cid: self.state.last_seq(cid) for cid in cids}


# -- signatures ------------------------------------------------------------------------


class ReplayCache:
    """Signatures accepted in the last `window` s: a second use is a replay.

    An entry lives until its timestamp is too old to pass the clock check
    anyway, so the cache never holds more than `capacity` live entries; when
    full, `admit` refuses (503) rather than forget one that could be replayed.
    """

    def __init__(self, window: int = signing.MAX_SKEW, capacity: int = REPLAY_CAPACITY) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: set[bytes] = set()
        self._expiry: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, signature: bytes, ts: int, now: float) -> bool:
        """False for a signature seen before; remember it otherwise."""
        while self._expiry and self._expiry[0][0] < now:
            _, old = heapq.heappop(self._expiry)
            self._seen.discard(old)
        if signature in self._seen:
            return False
        if len(self._seen) >= self.capacity:
            raise ApiError(503, "busy", "too many signed requests at once; retry shortly")
        self._seen.add(signature)
        heapq.heappush(self._expiry, (ts + self.window, signature))
        return True


# -- the node's shared state -----------------------------------------------------------


class Node:
    """What the routes share: the home, the state, wake-ups, replays, contact throttle."""

    def __init__(self, home: Home, state: State, *, watch: float = WATCH) -> None:
        self.home = home
        self.state = state
        self.wakeups = Wakeups(state, watch)
        self.replays = ReplayCache()
        self._contact: dict[str, float] = {}
        self.remove_listener = state.on_enqueue(self.wakeups.notify)

    def find(self, cid: str) -> tuple[Connection, bool] | None:
        """The connection with exactly this id, and whether it is a tombstone."""
        if not _CID.fullmatch(cid):
            return None
        try:
            if self.home.connection_path(cid).exists():
                connection = self.home.get_connection(cid)
                return (connection, False) if connection.id == cid else None
            buried = self.home.get_tombstone(cid)
        except NotFound:
            return None  # deleted since we looked
        except StoreError as error:
            log.error("%s", error)
            raise _unavailable() from None
        return (buried, True) if buried is not None else None

    async def authenticate(
        self, request: Request, cid: str, body: bytes
    ) -> tuple[Connection, bool]:
        """The signed caller's connection (and whether it is a tombstone), or 401."""
        return await self.verify(
            cid,
            request.method,
            request.url.path,
            request.scope.get("query_string", b""),
            request.headers.get("authorization"),
            body,
        )

    async def verify(
        self,
        cid: str,
        method: str,
        path: str,
        query: bytes,
        header: str | None,
        body: bytes,
        *,
        record: bool = True,
    ) -> tuple[Connection, bool]:
        """`authenticate` from the request's parts (the long-poll's lean path has no Request).

        `record=False` leaves recording contact to the caller (`contact_due`).
        """
        found = await asyncio.to_thread(self.find, cid)
        connection = found[0] if found else None
        secret = connection.secret.get_secret_value() if connection and connection.secret else None
        now = time.time()
        valid = signing.verify(
            secret or _NO_SECRET, header, method, path, query.decode("latin-1"), body, now=now
        )
        if not (valid and secret and found and header):
            raise _unauthorized()
        stamp = _STAMP.search(header.strip())
        assert stamp is not None  # verify() accepted the header's form
        if not self.replays.admit(bytes.fromhex(stamp.group(2)), int(stamp.group(1)), now):
            raise _unauthorized()
        if record:
            await self._record_contact(cid)
        return found

    async def _record_contact(self, cid: str) -> None:
        if self.contact_due(cid):
            await asyncio.to_thread(self.state.record_ok, cid)

    def contact_due(self, cid: str) -> bool:
        """Whether to record contact for `cid` now (at most once a second); marks it done."""
        now = time.monotonic()
        if now - self._contact.get(cid, -CONTACT_EVERY) < CONTACT_EVERY:
            return False
        self._contact[cid] = now
        return True


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to pass `limit` bytes."""
    body = await _receive_body(request.receive, request.headers.get("content-length"), limit)
    if body is None:
        raise ClientDisconnect()  # as `Request.stream` would
    return body


# -- routes ----------------------------------------------------------------------------

router = APIRouter(prefix=PREFIX)


@router.get(
    "/info",
    response_model=Info,
    summary="What this node is (URL verification)",
    responses=_errors(503),
)
async def info(request: Request) -> Info:
    try:
        instance = await asyncio.to_thread(_node(request).home.load_instance)
    except StoreError as error:
        log.error("%s", error)
        raise _unavailable() from None
    return Info(short_name=instance.short_name if instance else None)


@router.post(
    "/handshake",
    response_model=HandshakeOut,
    summary="Present an invitation token once; get the connection secret",
    responses=_errors(400, 403, 413, 503),
    openapi_extra=_body(HandshakeIn),
)
async def handshake(request: Request) -> HandshakeOut:
    node = _node(request)
    raw = await _read_body(request, MAX_HANDSHAKE_BYTES)
    try:
        offer = HandshakeIn.model_validate_json(raw)
    except ValidationError as error:
        raise ApiError(400, "bad_request", _problems(error)) from None
    connection = await asyncio.to_thread(_take_invitation, node.home, offer, time.time())
    assert connection.secret is not None  # _take_invitation stored one
    await asyncio.to_thread(
        node.state.enqueue, connection.id, "hello", {"short_name": connection.local_name}
    )
    await node._record_contact(connection.id)
    # The caller accepted our invitation, or (private-public) initiated and brings ours back.
    did = "initiated" if connection.topology is Topology.PRIVATE_PUBLIC else "accepted"
    log.info("connection %s is active: %s %s it", connection.id, connection.remote_name, did)
    return HandshakeOut(
        secret=connection.secret.get_secret_value(),
        short_name=connection.local_name,
        name=connection.name,
    )


def _receives_handshake(connection: Connection) -> bool:
    """The side that holds the token's hash: the public initiator, or a private one's acceptor."""
    if connection.topology is Topology.PRIVATE_PUBLIC:
        return connection.role is Role.ACCEPTOR
    return connection.role is Role.INITIATOR


def _take_invitation(home: Home, offer: HandshakeIn, now: float) -> Connection:
    """Check and burn the token under the home lock: of two racing handshakes one wins."""
    invalid = ApiError(
        403, "invalid_invitation", "this node has no invitation with that id and token"
    )

    def burn(connection: Connection) -> Connection:
        if connection.id != offer.cid or not _receives_handshake(connection):
            token_matches(offer.tok, _NO_HASH)  # the same work as a real check
            raise invalid
        if connection.token_hash is None:
            token_matches(offer.tok, _NO_HASH)
            raise ApiError(403, "invitation_used", "this invitation was already used")
        if not token_matches(offer.tok, connection.token_hash):
            raise invalid
        if connection.code_digest is not None and not hmac.compare_digest(
            offer.sum or "", connection.code_digest
        ):
            raise invalid  # the right token in a changed code
        expires = connection.token_expires
        if expires is not None and now >= expires.timestamp():
            raise ApiError(403, "invitation_expired", "this invitation has expired")
        connection.secret = SecretStr(secrets.token_urlsafe(32))
        connection.status = Status.ACTIVE
        connection.token_hash = None
        connection.token = None
        connection.code_digest = None
        connection.remote_name = offer.short_name
        if offer.url and connection.topology is Topology.PUBLIC_PUBLIC:
            # The URL this side verified when initiating is proven reachable from here;
            # the acceptor's own idea of its URL only fills a gap.
            connection.remote_url = connection.remote_url or normalize_url(offer.url)
        return connection

    if not _CID.fullmatch(offer.cid) or not home.connection_path(offer.cid).exists():
        token_matches(offer.tok, _NO_HASH)
        raise invalid
    try:
        return home.update_connection(offer.cid, burn)
    except NotFound:
        raise invalid from None
    except StoreError as error:
        log.error("%s", error)
        raise _unavailable() from None


_MESSAGES = "/connections/{cid}/messages"


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


@router.get(
    _MESSAGES,
    response_model=Batch,
    summary="Long-poll for messages after SEQ (acknowledging everything up to `ack`); signed",
    responses={
        200: {
            "headers": {
                ACK_HEADER: {
                    "description": "every seq ≤ this is acknowledged and pruned "
                    "(sent by nodes that honour `ack`)",
                    "schema": {"type": "integer"},
                }
            }
        },
        **_errors(400, 401, 409, 413, 503),
    },
)
async def fetch(request: Request, cid: str, query: Annotated[FetchQuery, Query()]) -> Response:
    # `NodeApp` answers this route on its lean path (`_long_poll`), which calls
    # `_fetch` as this does; here it is described for the OpenAPI document.
    node = _node(request)
    body = await _read_body(request, MAX_OTHER_BYTES)
    buried = _refuse_deactivated(await node.authenticate(request, cid, body))
    return await _fetch(node, cid, buried, query)


def _refuse_deactivated(found: tuple[Connection, bool]) -> bool:
    """409 for a deactivated live connection; whether it is a tombstone."""
    connection, buried = found
    if connection.status is Status.DEACTIVATED and not buried:
        raise ApiError(409, "deactivated", "this connection is deactivated on this side")
    return buried


async def _fetch(
    node: Node, cid: str, buried: bool, query: FetchQuery, *, contact: bool = False
) -> Response:
    """The long-poll once the caller is authenticated (and not deactivated).

    `contact`: record contact too, in the same thread hop as the first look.
    """
    after, ack, wait, limit = query.after, query.ack, query.wait, query.limit
    del query  # a parked poll keeps four numbers, not the model
    state = node.state
    pruned = after if ack is None else ack
    acked: int | None = pruned  # still to prune: done by the first look at the outbox
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    wakeups = node.wakeups
    while True:
        # Parked polls hold this frame, a waiter and a timer: no task, no extra coroutine.
        waiter = wakeups.register(cid, after) if wait else None
        try:
            # The first look also prunes what is acknowledged: one thread hop, not two.
            messages, last_seq = await asyncio.to_thread(
                _outbox, state, cid, after, limit, acked, contact
            )
            contact = False
            if acked is not None:
                if buried and acked >= last_seq:
                    # The partner has applied `connection.deleted`: nothing is left to tell it.
                    await asyncio.to_thread(_forget, node.home, state, cid)
                    log.info("connection %s: the partner has heard of its deletion", cid)
                    return _batch([], after, acked)
                acked = None
            remaining = deadline - loop.time()
            if messages or remaining <= 0 or waiter is None or wakeups.closed:
                return _batch(messages, last_seq, pruned)
            del messages
            timer = loop.call_later(remaining, waiter.wake)
            try:
                await waiter.woken
            finally:
                timer.cancel()
        finally:
            if waiter is not None:
                wakeups.unregister(cid, waiter)


_POLL_PATH = re.compile(rf"{PREFIX}/connections/([^/]+)/messages")


async def _long_poll(node: Node, cid: str, scope: Scope, receive: Receive, send: Send) -> None:
    """`GET .../messages` below FastAPI's per-request machinery (same checks, same answers).

    Ten thousand of these are parked at once on a busy node: each holds only
    this coroutine, the wait's future and timer, and uvicorn's own request
    cycle (no Request, dependency resolution, exit stacks or middleware
    frames: ~16 KB less each; benchmarks/README.md, capacity).
    """
    try:
        try:
            query = FetchQuery.model_validate(
                dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
            )
        except ValidationError as error:
            raise ApiError(400, "bad_request", _problems(error, "query")) from None
        header = length = None
        for key, value in scope["headers"]:
            if key == b"authorization" and header is None:
                header = value.decode("latin-1")
            elif key == b"content-length" and length is None:
                length = value.decode("latin-1")
        body = await _receive_body(receive, length, MAX_OTHER_BYTES)
        if body is None:
            return  # the caller went away
        # Only a flag is kept: a parked poll must not hold a copy of the connection.
        found = await node.verify(
            cid, "GET", scope["path"], scope["query_string"], header, body, record=False
        )
        del header, body
        # Contact is recorded with the first look at the outbox (one thread hop less).
        contact = node.contact_due(cid)
        try:
            buried = _refuse_deactivated(found)
        except ApiError:
            if contact:
                await asyncio.to_thread(node.state.record_ok, cid)
            raise
        del found
        fetching = _fetch(node, cid, buried, query, contact=contact)
        del query
        response = await fetching
    except ApiError as error:
        response = _error_response(error)
    except Exception as error:  # noqa: BLE001 - answered 500 and logged, as FastAPI's handler does
        log.error("GET %s failed", scope["path"], exc_info=error)
        response = _error_response(ApiError(500, "internal", "the node failed; see its log"))
    await response(scope, receive, send)


async def _receive_body(receive: Receive, declared: str | None, limit: int) -> bytes | None:
    """The whole body of a bare ASGI request (`_read_body`); None when the client left.

    Refused with 413 as soon as it is known to pass `limit` bytes.
    """
    too_big = ApiError(413, "too_large", f"the request body is over {limit} bytes")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise too_big
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_big
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _outbox(
    state: State,
    cid: str,
    after: int,
    limit: int,
    acked: int | None = None,
    contact: bool = False,
) -> tuple[list[str], int]:
    """Prune up to `acked` (when given), record contact (if asked), then the messages
    after `after` and the last seq."""
    if contact:
        state.record_ok(cid)
    if acked is not None:
        state.ack(cid, acked)
    return state.pending_wire(cid, after, limit), state.last_seq(cid)


def _forget(home: Home, state: State, cid: str) -> None:
    home.drop_tombstone(cid)
    state.forget(cid)


def _batch(messages: list[str], last_seq: int, acked: int) -> Response:
    # Bodies go out as stored: the JSON text is spliced in, never decoded and re-encoded.
    text = '{"messages":[' + ",".join(messages) + f'],"last_seq":{last_seq}}}'
    # The header tells the caller this node honours `ack` (an older one prunes up to `after`).
    return Response(text, media_type="application/json", headers={ACK_HEADER: str(acked)})


@router.post(
    _MESSAGES,
    response_model=Applied,
    summary="Push a batch; applied once, in order, in one transaction; signed",
    responses=_errors(400, 401, 409, 410, 413, 503),
    openapi_extra=_body(PushIn),
)
async def push(request: Request, cid: str) -> Applied:
    node = _node(request)
    raw = await _read_body(request, MAX_BATCH_BYTES)
    connection, buried = await node.authenticate(request, cid, raw)
    if buried:
        raise ApiError(410, "deleted", "this connection was deleted on this side")
    try:
        batch = PushIn.model_validate_json(raw)
    except ValidationError as error:
        raise ApiError(400, "bad_request", _problems(error)) from None
    if connection.status is Status.DEACTIVATED:
        # A batch sent again after it was applied gets the answer it got the first time,
        # even when applying it deactivated this side (`connection.deleted`): the
        # partner's action and its pusher race to deliver the same message.
        last = await asyncio.to_thread(node.state.last_applied, cid)
        if not batch.messages or batch.messages[-1].seq > last:
            raise ApiError(409, "deactivated", "this connection is deactivated on this side")
        return Applied(applied=last)
    messages = [Message.from_wire(m.model_dump()) for m in batch.messages]
    home = node.home

    def effect(message: Message) -> None:
        apply_effect(home, cid, message)

    try:
        applied = await asyncio.to_thread(node.state.apply, cid, messages, effect)
    except Gap as gap:
        raise ApiError(409, "gap", str(gap), last_applied=gap.last_applied) from None
    except StoreError as error:
        log.error("%s", error)
        raise _unavailable() from None
    return Applied(applied=applied)


# -- the app ---------------------------------------------------------------------------


def _error_response(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": signing.SCHEME} if error.status == 401 else None
    return JSONResponse(
        {"error": error.code, "detail": error.detail, **error.extra},
        status_code=error.status,
        headers=headers,
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class NodeApp(FastAPI):
    """FastAPI, but the long-poll (`GET .../messages`) is answered on a lean path.

    Everything else, the OpenAPI document included, goes through FastAPI.
    """

    node: Node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _POLL_PATH.fullmatch(scope["path"])
            if match is not None:
                await _long_poll(self.node, match.group(1), scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(home: Home, state: State, *, watch: float = WATCH) -> FastAPI:
    """The node's ASGI app for this home and its open state."""
    app = NodeApp(
        title="exalate-tui node",
        version=__version__,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.node = app.node = Node(home, state, watch=watch)
    app.include_router(router)
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI documents a 422 for every route with parameters; this node answers
        # 400 `bad_request` instead (declared per route), so the 422 would be a lie.
        if app.openapi_schema is None:
            document = plain_openapi()
            for route in document.get("paths", {}).values():
                for operation in route.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
        return app.openapi_schema or document

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error_response(ApiError(400, "bad_request", _problems(error)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        detail = {
            404: f"no such endpoint; see {PREFIX}/openapi.json",
            405: f"method not allowed here; see {PREFIX}/openapi.json",
        }.get(error.status_code, str(error.detail))
        response = _error_response(ApiError(error.status_code, code, detail))
        if error.headers:
            response.headers.update(error.headers)
        return response

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return _error_response(ApiError(500, "internal", "the node failed; see its log"))

    return app


# -- serving ---------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by SIGINT/SIGTERM without dying of the signal afterwards.

    uvicorn re-raises a caught signal once it has shut down, which would end
    the process before the supervisor is stopped and the state closed; here
    the signal only starts the graceful stop (a second Ctrl+C forces it).
    """

    def __init__(self, config: uvicorn.Config, wakeups: Wakeups) -> None:
        super().__init__(config)
        self._wakeups = wakeups

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only; its owner stops us
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # Long-polls answer now instead of holding the stop for up to 30 s.
        self._wakeups.close()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts: a taken port fails plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    # Without it a keep-alive answer written in two parts waits ~40 ms for the
    # caller's delayed ACK (Nagle), on every request but a connection's first.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _raise_open_files() -> None:
    """Every long-poll holds a socket: allow as many as the hard limit lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _housekeeping(home: Home, state: State) -> None:
    """Drop tombstones whose partner never came to fetch `connection.deleted`."""
    while True:
        for cid in await asyncio.to_thread(purge_tombstones, home, state):
            log.info("connection %s: the partner never heard of its deletion; forgotten", cid)
        await asyncio.sleep(HOUSEKEEPING_EVERY)


async def serve(home: Home, host: str | None = None, port: int | None = None) -> None:
    """Serve the API and run the supervisor until SIGINT or SIGTERM.

    `host` and `port` default to `instance.toml`'s `listen_host`/`listen_port`,
    else 127.0.0.1:7917. One log line says where it listens.
    """
    from exalate_tui.transport.supervisor import Supervisor

    instance = home.load_instance()
    host = host or (instance.listen_host if instance else DEFAULT_HOST)
    port = port if port is not None else (instance.listen_port if instance else DEFAULT_PORT)
    home.ensure()
    _raise_open_files()
    sock = _bind(host, port)
    state = State(home.state_path)
    try:
        app = create_app(home, state)
        node: Node = app.state.node
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            # No client addresses are used: one middleware frame less per parked poll.
            proxy_headers=False,
            backlog=BACKLOG,
            timeout_graceful_shutdown=GRACEFUL_STOP,
        )
        server = _Server(config, node.wakeups)
        address, bound = sock.getsockname()[:2]
        where = f"[{address}]" if ":" in address else address
        log.info(
            "exalate-tui node %s (%s) listening on http://%s:%d, home %s",
            __version__,
            instance.short_name if instance else "no instance.toml yet",
            where,
            bound,
            home.path,
        )
        stop_ringing = node.wakeups.ring_here(doorbell_address(home.state_path))
        supervisor = asyncio.create_task(Supervisor(home, state).run(), name="supervisor")
        # Polling nobody is no node at all: a crashed supervisor stops the node, loudly.
        supervisor.add_done_callback(lambda _: setattr(server, "should_exit", True))
        chores = asyncio.create_task(_housekeeping(home, state), name="housekeeping")
        try:
            await server.serve(sockets=[sock])
        finally:
            for task in (supervisor, chores):
                task.cancel()
            for task in (supervisor, chores):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            node.remove_listener()
            stop_ringing()
            await node.wakeups.aclose()
    finally:
        state.close()
        sock.close()
    log.info("exalate-tui node stopped")
