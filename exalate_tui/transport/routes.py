"""The node's routes: `/info`, `/handshake` and a connection's message streams.

docs/protocol.md is the contract for each. The long-poll is answered below
FastAPI (`long_poll.py`), through the same `fetch_batch` as its route here,
which stays for the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from exalate_tui.domain.models import Connection, Status, Topology
from exalate_tui.home.store import Home, StoreError
from exalate_tui.protocol.api import ACK_HEADER, PREFIX
from exalate_tui.protocol.wire import (
    Applied,
    Batch,
    ErrorOut,
    FetchQuery,
    HandshakeIn,
    HandshakeOut,
    Info,
    PushIn,
)
from exalate_tui.transport.errors import ApiError, problems, unavailable
from exalate_tui.transport.hooks import HandshakeRefused, invalid_invitation
from exalate_tui.transport.streams import Gap, Message, Streams, within_budget

if TYPE_CHECKING:
    from exalate_tui.transport.limits import Turn
    from exalate_tui.transport.node import Node

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_HANDSHAKE_BYTES = 16 * 1024
# A signed GET has an empty body; anything bigger is not one of ours.
MAX_OTHER_BYTES = 16 * 1024
MESSAGES = "/connections/{cid}/messages"


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


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


@contextlib.asynccontextmanager
async def receive_body(
    receive: Receive, declared: str | None, limit: int, node: Node
) -> AsyncIterator[bytes | None]:
    """The whole body of an ASGI request, held within the node's body budget until
    the block ends; None when the client left.

    Refused with 413 as soon as it is known to pass `limit` bytes, 503 `busy`
    when the node holds too many body bytes at once or no turn to read the
    rest comes in time, 408 `timeout` when it takes longer than the node's
    body deadline to arrive, or falls behind while other bodies wait (`Turn`).
    """
    too_big = ApiError(413, "too_large", f"the request body is over {limit} bytes")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise too_big
    budget = node.bodies
    taken = 0
    # A body that came whole with its headers needs no turn (`BodyBudget.turn`).
    turn: Turn | None = None
    try:
        chunks = []
        try:
            async with asyncio.timeout(node.body_deadline):
                while True:
                    message = await (receive() if turn is None else turn.receive(receive))
                    if message["type"] == "http.disconnect":
                        body = None
                        break
                    chunk = message.get("body", b"")
                    if taken + len(chunk) > limit:
                        raise too_big
                    budget.take(len(chunk))
                    taken += len(chunk)
                    if chunk:
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        body = b"".join(chunks)
                        break
                    if turn is None:
                        turn = await budget.turn()
        except TimeoutError:
            raise ApiError(
                408, "timeout", f"the request body took over {node.body_deadline:g} s to arrive"
            ) from None
        del chunks
        yield body
    finally:
        budget.give(taken)
        if turn is not None:
            turn.end()


@contextlib.asynccontextmanager
async def _read_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    length = request.headers.get("content-length")
    async with receive_body(request.receive, length, limit, _node(request)) as body:
        if body is None:
            raise ClientDisconnect()  # as `Request.stream` would
        yield body


router = APIRouter(prefix=PREFIX)


@router.get(
    "/info",
    response_model=Info,
    summary="What this node is (URL verification)",
    responses=_errors(503),
)
async def info(request: Request) -> Response:
    # `long_poll.NodeApp` answers this on its lean path (the same `Node.info`): a flood of
    # bodies keeps FastAPI's machinery busy, and URL checks must still be quick.
    return Response(await _node(request).info(), media_type="application/json")


@router.post(
    "/handshake",
    response_model=HandshakeOut,
    summary="Present an invitation token once; get the connection secret",
    responses=_errors(400, 403, 408, 413, 503),
    openapi_extra=_body(HandshakeIn),
)
async def handshake(request: Request) -> HandshakeOut:
    node = _node(request)
    async with _read_body(request, MAX_HANDSHAKE_BYTES) as raw:
        try:
            offer = HandshakeIn.model_validate_json(raw)
        except ValidationError as error:
            raise ApiError(400, "bad_request", problems(error)) from None
    lock = node.handshaking.setdefault(offer.cid, asyncio.Lock())
    try:
        async with lock:
            connection = await _take(node, offer)
            node.burnt.add(offer.cid, offer.tok)
    finally:
        if not lock.locked():
            node.handshaking.pop(offer.cid, None)
    assert connection.secret is not None  # take_invitation stored one
    await node.record_contact(connection.id)
    # The caller accepted our invitation, or (private-public) initiated and brings ours back.
    did = "initiated" if connection.topology is Topology.PRIVATE_PUBLIC else "accepted"
    log.info("connection %s is active: %s %s it", connection.id, connection.remote_name, did)
    return HandshakeOut(
        secret=connection.secret.get_secret_value(),
        short_name=connection.local_name,
        name=connection.name,
    )


async def _take(node: Node, offer: HandshakeIn) -> Connection:
    try:
        return await asyncio.to_thread(node.hooks.take_invitation, offer, time.time())
    except HandshakeRefused as refused:
        if refused.code == "invalid_invitation" and node.burnt.used(offer.cid, offer.tok):
            raise ApiError(403, "invitation_used", "this invitation was already used") from None
        raise ApiError(403, refused.code, refused.detail) from None
    except StoreError as error:
        # A connection file that does not parse is answered as an unknown id.
        node.report(error)
        unknown = invalid_invitation()
        raise ApiError(403, unknown.code, unknown.detail) from None


@router.get(
    MESSAGES,
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
        **_errors(400, 401, 408, 409, 413, 503),
    },
)
async def fetch(request: Request, cid: str, query: Annotated[FetchQuery, Query()]) -> Response:
    # `long_poll.NodeApp` answers this route on its lean path, which calls
    # `fetch_batch` as this does; here it is described for the OpenAPI document.
    node = _node(request)
    found = await node.admit(cid, request.headers.get("authorization"))
    async with _read_body(request, MAX_OTHER_BYTES) as body:
        found = await node.authenticate(request, cid, body, found)
    buried = refuse_deactivated(found)
    return await fetch_batch(node, cid, buried, query)


def refuse_deactivated(found: tuple[Connection, bool]) -> bool:
    """409 for a deactivated live connection; whether it is a tombstone."""
    connection, buried = found
    if connection.status is Status.DEACTIVATED and not buried:
        raise ApiError(409, "deactivated", "this connection is deactivated on this side")
    return buried


async def fetch_batch(
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


def _outbox(
    state: Streams,
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
    texts = state.pending_wire(cid, after, limit)
    return texts[: within_budget([len(text) for text in texts])], state.last_seq(cid)


def _forget(home: Home, state: Streams, cid: str) -> None:
    home.drop_tombstone(cid)
    state.forget(cid)


def _batch(messages: list[str], last_seq: int, acked: int) -> Response:
    # Bodies go out as stored: the JSON text is spliced in, never decoded and re-encoded.
    text = '{"messages":[' + ",".join(messages) + f'],"last_seq":{last_seq}}}'
    # The header tells the caller this node honours `ack` (an older one prunes up to `after`).
    return Response(text, media_type="application/json", headers={ACK_HEADER: str(acked)})


@router.post(
    MESSAGES,
    response_model=Applied,
    summary="Push a batch; applied once, in order, in one transaction; signed",
    responses=_errors(400, 401, 408, 409, 410, 413, 503),
    openapi_extra=_body(PushIn),
)
async def push(request: Request, cid: str) -> Applied:
    # `long_poll.NodeApp` answers this route on its lean path, which calls `apply_batch`
    # as this does; here it is described for the OpenAPI document.
    node = _node(request)
    found = await node.admit(cid, request.headers.get("authorization"))
    # The body counts against the node's budget until the batch is applied or refused.
    async with _read_body(request, MAX_BATCH_BYTES) as raw:
        return await apply_batch(node, cid, await node.authenticate(request, cid, raw, found), raw)


async def apply_batch(node: Node, cid: str, found: tuple[Connection, bool], raw: bytes) -> Applied:
    """A pushed batch once the caller is authenticated: applied once, in order."""
    connection, buried = found
    if buried:
        raise ApiError(410, "deleted", "this connection was deleted on this side")
    try:
        batch = PushIn.model_validate_json(raw)
    except ValidationError as error:
        raise ApiError(400, "bad_request", problems(error)) from None
    if connection.status is Status.DEACTIVATED:
        # A batch sent again after it was applied gets the answer it got the first time,
        # even when applying it deactivated this side (`connection.deleted`): the
        # partner's action and its pusher race to deliver the same message.
        last = await asyncio.to_thread(node.state.last_applied, cid)
        if not batch.messages or batch.messages[-1].seq > last:
            raise ApiError(409, "deactivated", "this connection is deactivated on this side")
        return Applied(applied=last)
    messages = [Message.from_wire(m.model_dump()) for m in batch.messages]
    del batch
    hooks = node.hooks

    def effect(message: Message) -> None:
        hooks.apply(cid, message)

    try:
        applied = await asyncio.to_thread(node.state.apply, cid, messages, effect)
    except Gap as gap:
        raise ApiError(409, "gap", str(gap), last_applied=gap.last_applied) from None
    except StoreError as error:
        log.error("%s", error)
        raise unavailable() from None
    return Applied(applied=applied)
