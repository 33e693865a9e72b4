"""The long-poll (`GET .../messages`) answered below FastAPI's per-request machinery.

It serves one figure: ten thousand idle long-polls held by one node at
≤ 20 KB each (benchmarks/README.md, capacity). A parked poll here holds
only its coroutine, the wait's future and timer, and uvicorn's own request
cycle: no Request, dependency resolution, exit stacks or middleware frames.
The checks and answers are the route's own (`routes.fetch`, which FastAPI
still documents in the OpenAPI document): same query model, signature
check, deactivation refusal and `fetch_batch`.
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
    MAX_OTHER_BYTES,
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
        if scope["type"] == "http" and scope["method"] == "GET":
            if scope["path"] == _INFO_PATH:
                await info(self.node, scope, receive, send)
                return
            match = _POLL_PATH.fullmatch(scope["path"])
            if match is not None:
                await long_poll(self.node, match.group(1), scope, receive, send)
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
        header = length = None
        for key, value in scope["headers"]:
            if key == b"authorization" and header is None:
                header = value.decode("latin-1")
            elif key == b"content-length" and length is None:
                length = value.decode("latin-1")
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
    except ApiError as error:
        response = error_response(error)
    except StateError as error:
        response = error_response(store_unreachable(error))
    except Exception as error:  # noqa: BLE001 - answered 500 and logged, as FastAPI's handler does
        log.error("GET %s failed", scope["path"], exc_info=error)
        response = error_response(ApiError(500, "internal", "the node failed; see its log"))
    await response(scope, receive, send)
