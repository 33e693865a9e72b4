"""The node: this instance's HTTP API as one ASGI app (FastAPI).

`create_app(home, state, hooks)` is the app, the same one the tests drive
in-process; `server.serve` runs it on a socket. docs/protocol.md is the
contract for every route (`routes.py`): the unsigned `/info` and
`/handshake`, the signed message streams, errors as
`{"error": code, "detail": text}` (`errors.py`). The long-poll takes a
leaner path below FastAPI (`long_poll.py`).

Nothing here writes a secret or a token to a response other than the
handshake's, to an error, or to the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from exalate_tui import __version__
from exalate_tui.domain.invitation import hash_token, token_matches
from exalate_tui.domain.models import Connection
from exalate_tui.home.store import Home, StoreError
from exalate_tui.protocol import signing
from exalate_tui.protocol.api import CONNECTION_ID, PREFIX
from exalate_tui.protocol.wire import Info
from exalate_tui.transport.auth import Signatures
from exalate_tui.transport.contact import ContactThrottle
from exalate_tui.transport.errors import (
    ApiError,
    error_response,
    problems,
    store_unreachable,
    unauthorized,
    unavailable,
)
from exalate_tui.transport.hooks import Hooks
from exalate_tui.transport.limits import BODY_DEADLINE, BodyBudget
from exalate_tui.transport.long_poll import NodeApp
from exalate_tui.transport.routes import router
from exalate_tui.transport.streams import StateError, Streams
from exalate_tui.transport.wakeups import WATCH, Wakeups

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


# Burnt tokens remembered (their hashes) so their own token hears "used"; the oldest go first.
BURNT_REMEMBERED = 10_000
_NO_HASH = "0" * 64


class Burnt:
    """The hashes of tokens burnt by this node since it started, by connection id.

    A burnt invitation's file keeps no hash of its token, so a handshake that
    presents it is refused as an unknown id is (`invalid_invitation`); only
    the very token burnt here, while this process remembers it, hears
    `invitation_used`: a caller without the token learns nothing.
    """

    def __init__(self, capacity: int = BURNT_REMEMBERED) -> None:
        self.capacity = capacity
        self.hashes: dict[str, str] = {}

    def add(self, cid: str, token: str) -> None:
        self.hashes.pop(cid, None)
        self.hashes[cid] = hash_token(token)
        while len(self.hashes) > self.capacity:
            del self.hashes[next(iter(self.hashes))]

    def used(self, cid: str, token: str) -> bool:
        known = self.hashes.get(cid)
        return token_matches(token, known or _NO_HASH) and known is not None


class Node:
    """What the routes share: the home, the state, the hooks, wake-ups, signatures, contact,
    the body budget and what this process burnt."""

    def __init__(self, home: Home, state: Streams, hooks: Hooks, *, watch: float = WATCH) -> None:
        self.home = home
        self.state = state
        self.hooks = hooks
        self.wakeups = Wakeups(state, watch)
        self.signatures = Signatures()
        self.bodies = BodyBudget()
        # How long a body may take to arrive (`receive_body`).
        self.body_deadline = BODY_DEADLINE
        self.contact = ContactThrottle()
        self.burnt = Burnt()
        # One handshake at a time per id, so a loser sees the winner's burn (`Burnt`).
        self.handshaking: dict[str, asyncio.Lock] = {}
        # Damaged files already logged, with the (mtime, size, inode) they had then.
        self.reported: dict[Path, tuple[int, int, int] | None] = {}
        # This process's enqueues, and (PostgreSQL) other workers' hints, wake the polls.
        stop_enqueued = state.on_enqueue(self.wakeups.notify)
        stop_hinted = state.on_hint(self.wakeups.notify)

        def remove_listener() -> None:
            stop_enqueued()
            stop_hinted()

        self.remove_listener = remove_listener
        # `/info`'s answer and the (mtime, size, inode) of instance.toml it was read from.
        self._info: tuple[tuple[int, int, int] | None, str] | None = None

    async def info(self) -> str:
        """`/info`'s JSON: instance.toml is read again (in a thread) only once it changed.

        A stat on the loop, then the answer: no thread hop, whose return waits its turn
        behind every ready socket when a flood keeps the loop busy (docs/reliability.md,
        promise 13). A file that does not parse is logged once per change: `unavailable`.
        """
        path = self.home.instance_path
        try:
            stat = path.stat()
            version: tuple[int, int, int] | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            version = None
        except OSError:
            raise unavailable() from None
        cached = self._info
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            instance = await asyncio.to_thread(self.home.load_instance)
        except StoreError as error:
            self.report(error)
            raise unavailable() from None
        text = Info(short_name=instance.short_name if instance else None).model_dump_json()
        self._info = (version, text)
        return text

    def find(self, cid: str) -> tuple[Connection, bool] | None:
        """The connection with exactly this id, and whether it is a tombstone."""
        if not CONNECTION_ID.fullmatch(cid):
            return None
        try:
            connection = self.home.find_connection(cid)
            if connection is not None:
                return (connection, False) if connection.id == cid else None
            buried = self.home.get_tombstone(cid)
        except StoreError as error:
            # Answered as an unknown id: a 503 would tell anyone this id exists.
            self.report(error)
            return None
        return (buried, True) if buried is not None else None

    def report(self, error: StoreError) -> None:
        """Log a damaged file once per change of it, not once per request that meets it."""
        try:
            stat = error.path.stat()
            version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError:
            version = None
        if self.reported.get(error.path, ()) != version:
            self.reported[error.path] = version
            log.error("%s", error)

    async def admit(self, cid: str, header: str | None) -> tuple[Connection, bool] | None:
        """401 for what the headers alone refuse, before any body is read: no or a
        malformed `Authorization`, a clock too far off, a malformed or unknown id.

        Returns what `find` found, for `verify` to check the signature against once
        the body is in (the signature is not looked at here).
        """
        self.signatures.precheck(header, time.time())
        known = self.home.parsed_connection(cid) if CONNECTION_ID.fullmatch(cid) else None
        if known is not None and known.id == cid:
            found: tuple[Connection, bool] | None = (known, False)
        else:
            found = await asyncio.to_thread(self.find, cid)
        if found is None or found[0].secret is None:
            raise unauthorized()
        return found

    async def authenticate(
        self, request: Request, cid: str, body: bytes, found: tuple[Connection, bool] | None
    ) -> tuple[Connection, bool]:
        """The signed caller's connection (and whether it is a tombstone), or 401."""
        return await self.verify(
            cid,
            request.method,
            request.url.path,
            request.scope.get("query_string", b""),
            request.headers.get("authorization"),
            body,
            found,
        )

    async def verify(
        self,
        cid: str,
        method: str,
        path: str,
        query: bytes,
        header: str | None,
        body: bytes,
        found: tuple[Connection, bool] | None,
        *,
        record: bool = True,
    ) -> tuple[Connection, bool]:
        """`authenticate` from the request's parts (the long-poll's lean path has no Request).

        `found` is what `admit` found for `cid`. `record=False` leaves recording
        contact to the caller (`contact.due`).
        """
        connection = found[0] if found else None
        secret = connection.secret.get_secret_value() if connection and connection.secret else None
        signature, ts = self.signatures.check(
            cid, secret, header, method, path, query, body, time.time()
        )
        assert found is not None  # check() refuses a connection without a secret
        # Workers sharing the store: a signature another worker accepted is a replay too.
        if self.state.workers and not await asyncio.to_thread(
            self.state.first_use, signature, ts + signing.MAX_SKEW
        ):
            raise unauthorized()
        if record:
            await self.record_contact(cid)
        return found

    async def record_contact(self, cid: str) -> None:
        if self.contact.due(cid):
            await asyncio.to_thread(self.state.record_ok, cid)


def create_app(home: Home, state: Streams, hooks: Hooks, *, watch: float = WATCH) -> FastAPI:
    """The node's ASGI app for this home, its open state and the layer above's hooks."""
    app = NodeApp(
        title="exalate-tui node",
        version=__version__,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.node = app.node = Node(home, state, hooks, watch=watch)
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
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(400, "bad_request", problems(error)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        detail = {
            404: f"no such endpoint; see {PREFIX}/openapi.json",
            405: f"method not allowed here; see {PREFIX}/openapi.json",
        }.get(error.status_code, str(error.detail))
        response = error_response(ApiError(error.status_code, code, detail))
        if error.headers:
            response.headers.update(error.headers)
        return response

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, error: ClientDisconnect) -> JSONResponse:
        # The caller went away mid-body (killed, cut off): nobody reads this answer,
        # and nothing was applied; it resends from its cursor. Not a failure of ours.
        return error_response(ApiError(400, "bad_request", "the request body did not arrive"))

    @app.exception_handler(StateError)
    async def store_out_of_reach(request: Request, error: StateError) -> JSONResponse:
        return error_response(store_unreachable(error))

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return error_response(ApiError(500, "internal", "the node failed; see its log"))

    return app
