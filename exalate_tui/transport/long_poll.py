"""The messages routes and `/info` answered below FastAPI's per-request machinery.

The long-poll (`GET .../messages`) serves one figure: ten thousand idle
long-polls held by one node at ≤ 20 KB each (benchmarks/README.md,
capacity). A parked poll here holds only its coroutine, the wait's future
and timer, and uvicorn's own request cycle: no Request, dependency
resolution, exit stacks or middleware frames. `/info` and the push
(`POST .../messages`) serve another: `/info` and an honest partner's poll
answered within 50 ms at p99 while hundreds of hostile bodies are refused
(docs/reliability.md, promise 13), where FastAPI's handling of each refused
push was the largest share of the node's one busy core. The checks and
answers are the routes' own (`routes.fetch`, `routes.push`, which FastAPI
still documents in the OpenAPI document): same query model, signature
check, deactivation refusal, `fetch_batch` and `apply_batch`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from exalate_tui.protocol.api import PREFIX
from exalate_tui.protocol.wire import FetchQuery
from exalate_tui.transport.errors import ApiError, error_response, problems, store_unreachable
from exalate_tui.transport.routes import (
    MAX_BATCH_BYTES,
    MAX_OTHER_BYTES,
    apply_batch,
    fetch_batch,
    receive_body,
    refuse_deactivated,
)
from exalate_tui.transport.streams import StateError

if TYPE_CHECKING:
    from exalate_tui.transport.node import Node

log = logging.getLogger(__name__)

_POLL_PATH = re.compile(rf"{PREFIX}/connections/([^/]+)/messages")
_INFO_PATH = f"{PREFIX}/info"


class NodeApp(FastAPI):
    """FastAPI, but the long-poll is answered on the lean path below.

    Everything else, the OpenAPI document included, goes through FastAPI.
    """

    node: Node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "GET" and scope["path"] == _INFO_PATH:
                await info(self.node, scope, receive, send)
                return
            match = _POLL_PATH.fullmatch(scope["path"])
            if match is not None and method == "GET":
                await long_poll(self.node, match.group(1), scope, receive, send)
                return
            if match is not None and method == "POST":
                await push(self.node, match.group(1), scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def info(node: Node, scope: Scope, receive: Receive, send: Send) -> None:
    """`GET /info` in the loop iteration that read it: the route's answer (`Node.info`),
    without FastAPI's per-request machinery, which a flood of refused bodies keeps busy."""
    try:
        response: Response = Response(await node.info(), media_type="application/json")
    except ApiError as error:
        response = error_response(error)
    await response(scope, receive, send)


async def long_poll(node: Node, cid: str, scope: Scope, receive: Receive, send: Send) -> None:
    """`GET .../messages` from the bare ASGI request: the route's checks and answers."""
    try:
        try:
            query = FetchQuery.model_validate(
                dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
            )
        except ValidationError as error:
            raise ApiError(400, "bad_request", problems(error, "query")) from None
        header, length = _authorization_and_length(scope)
        found = await node.admit(cid, header)
        async with receive_body(receive, length, MAX_OTHER_BYTES, node) as body:
            if body is None:
                return  # the caller went away
            # Only a flag is kept: a parked poll must not hold a copy of the connection.
            found = await node.verify(
                cid, "GET", scope["path"], scope["query_string"], header, body, found, record=False
            )
        del header, body
        # Contact is recorded with the first look at the outbox (one thread hop less).
        contact = node.contact.due(cid)
        try:
            buried = refuse_deactivated(found)
        except ApiError:
            if contact:
                await asyncio.to_thread(node.state.record_ok, cid)
            raise
        del found
        fetching = fetch_batch(node, cid, buried, query, contact=contact)
        del query
        response = await fetching
    except Exception as error:  # noqa: BLE001 - answered as FastAPI's handlers do
        response = _failed(scope, error)
    await response(scope, receive, send)


async def push(node: Node, cid: str, scope: Scope, receive: Receive, send: Send) -> None:
    """`POST .../messages` from the bare ASGI request: the route's checks and answers."""
    try:
        header, length = _authorization_and_length(scope)
        found = await node.admit(cid, header)
        # The body counts against the node's budget until the batch is applied or refused.
        async with receive_body(receive, length, MAX_BATCH_BYTES, node) as body:
            if body is None:
                return  # the caller went away: nothing was applied, it sends again
            found = await node.verify(
                cid, "POST", scope["path"], scope["query_string"], header, body, found
            )
            applied = await apply_batch(node, cid, found, body)
        response = Response(applied.model_dump_json(), media_type="application/json")
    except Exception as error:  # noqa: BLE001 - answered as FastAPI's handlers do
        response = _failed(scope, error)
    await response(scope, receive, send)


def _authorization_and_length(scope: Scope) -> tuple[str | None, str | None]:
    """The first `Authorization` and `Content-Length` headers of a bare ASGI request."""
    header = length = None
    for key, value in scope["headers"]:
        if key == b"authorization" and header is None:
            header = value.decode("latin-1")
        elif key == b"content-length" and length is None:
            length = value.decode("latin-1")
    return header, length


def _failed(scope: Scope, error: Exception) -> Response:
    """The answer to a request that raised: its `ApiError`, else 500, logged (node.py's
    handlers, for the routes FastAPI serves)."""
    if isinstance(error, ApiError):
        return error_response(error)
    if isinstance(error, StateError):
        return error_response(store_unreachable(error))
    log.error("%s %s failed", scope["method"], scope["path"], exc_info=error)
    return error_response(ApiError(500, "internal", "the node failed; see its log"))
