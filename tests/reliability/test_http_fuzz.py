"""Promise 2: the node against its own OpenAPI document, fuzzed by schemathesis.

Every operation of `/api/v1/openapi.json`, with valid and invalid inputs
(schemathesis' positive and negative modes), through the node's ASGI app
in-process: no 5xx, every status declared, every body matching its schema.
Then what a fuzzer does not judge: bodies over the limit are refused before
they are read whole, and an unauthenticated caller gets the same answer for
a connection that exists and one that does not.

RELIABILITY_SCALE scales the example counts (CI: 1).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette would rather have httpx2; httpx is what we use
    from starlette.testclient import TestClient

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import runtime
from exalate_tui.protocol import signing
from exalate_tui.transport import routes
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.storage import open_pg
from exalate_tui.transport.streams import Streams

from .damage import SCALE, examples

MESSAGES = "/api/v1/connections/{cid}/messages"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
SECRET = "s" * 43


def _home(root: Path, database: str | None = None) -> tuple[Home, Streams, Connection]:
    home = Home(root / "home")
    home.save_instance(
        Instance(short_name="snow", public_url="http://snow.test", database=database)
    )
    connection = Connection(
        name="snow_to_jira",
        mode=Mode.SCRIPT,
        topology=Topology.PUBLIC_PRIVATE,
        role=Role.INITIATOR,
        local_name="snow",
        remote_name="jira",
        status=Status.ACTIVE,
        secret=SecretStr(SECRET),
    )
    home.save_connection(connection)
    state = open_pg(database) if database else SqliteStreams(home.state_path)
    state.enqueue(connection.id, "ping", {"n": 1})
    return home, state, connection


class Fuzzed:
    """The node under the fuzzer: its app, a client into it, and a connection to sign for."""

    def __init__(self, root: Path, database: str | None = None) -> None:
        self.database = database
        self.home, self.state, self.connection = _home(root, database)
        self.app = runtime.node_app(self.home, self.state)
        # Long-polls answer at once: a fuzzed `wait` must not hold each case for 30 s.
        self.app.state.node.wakeups.close()
        self.client = TestClient(self.app, base_url="http://node", raise_server_exceptions=False)
        self.statuses: Counter[tuple[str, str, int]] = Counter()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fuzzed]:
    """The node on each store: state.sqlite3, and a PostgreSQL database."""
    database = None
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres").database()
    target = Fuzzed(tmp_path_factory.mktemp("fuzz"), database)
    yield target
    target.client.close()
    target.state.close()
    # The figure docs/reliability.md reports: cases per operation and status.
    print("\nschemathesis cases:", sum(target.statuses.values()), dict(target.statuses))


@pytest.fixture(scope="module")
def node_schema(fuzzed: Fuzzed) -> Any:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", fuzzed.app)
    # A third as many on PostgreSQL: the HTTP inputs are the same, and what the
    # database adds (the store behind each route) every operation reaches in 100.
    full = 100 if fuzzed.database else 300
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=max(30, int(full * SCALE)),
    )
    return schema


schema = schemathesis.pytest.from_fixture("node_schema")

CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
]


def _send(fuzzed: Fuzzed, case: Any, signed: bool) -> httpx.Response:
    """The case as schemathesis serialises it; signed for the known connection if asked."""
    kwargs = case.as_transport_kwargs()
    body = kwargs.get("content", kwargs.get("data"))
    if "json" in kwargs:
        body = json.dumps(kwargs["json"]).encode()
    url, params = kwargs["url"], dict(kwargs.get("params") or {})
    if signed:
        # A fresh nonce, as the client sends: a repeated case must not meet replay refusal.
        url, params["n"] = MESSAGES.format(cid=fuzzed.connection.id), os.urandom(8).hex()
    request = fuzzed.client.build_request(
        kwargs["method"], url, params=params, headers=kwargs["headers"], content=body
    )
    if signed:
        request.headers["Authorization"] = signing.sign(
            SECRET,
            request.method,
            request.url.path,
            request.url.query.decode("ascii"),
            request.content,
        )
    return fuzzed.client.send(request)


@schema.parametrize()
def test_the_node_keeps_to_its_own_openapi_document(case: Any, fuzzed: Fuzzed) -> None:
    # Signed cases reach past authentication into validation and the stores.
    signed = case.path == MESSAGES and case.method in ("GET", "POST")
    for sign in (False, True) if signed else (False,):
        response = _send(fuzzed, case, sign)
        where = case.path + (" signed" if sign else "")
        fuzzed.statuses[(case.method, where, response.status_code)] += 1
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
        case.validate_response(response, checks=CHECKS)


# -- what the document cannot say ---------------------------------------------------------


class Side:
    def __init__(self, root: Path, database: str | None = None) -> None:
        self.database = database
        self.home, self.state, self.connection = _home(root, database)
        self.app = runtime.node_app(self.home, self.state)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://node"
        )


@pytest.fixture
async def side(tmp_path: Path) -> AsyncIterator[Side]:
    s = Side(tmp_path)
    yield s
    await s.client.aclose()
    s.state.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Counted:
    """A request body that counts what the server pulled from it."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b"x" * self.chunk


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("route", "limit"),
    [("handshake", routes.MAX_HANDSHAKE_BYTES), ("messages", routes.MAX_BATCH_BYTES)],
)
async def test_bodies_over_the_limit_are_refused_before_being_read_whole(
    side: Side, route: str, limit: int
) -> None:
    # A push for a real connection with a fresh header gets as far as reading its body
    # (the signature is checked once the body is in); anything less is 401 before it.
    path = "/api/v1/handshake"
    headers: dict[str, str] = {}
    if route == "messages":
        path = MESSAGES.format(cid=side.connection.id)
        headers["Authorization"] = signing.sign(SECRET, "POST", path, "", b"")
    # Declared too big: refused at once, nothing read.
    declared = Counted(limit * 8)
    request = side.client.build_request(
        "POST", path, content=declared, headers={**headers, "Content-Length": str(limit * 8)}
    )
    response = await side.client.send(request)
    assert (response.status_code, response.json()["error"]) == (413, "too_large")
    assert declared.sent <= 64 * 1024
    # Streamed without a length: refused once the count passes the limit.
    streamed = Counted(limit * 8)
    response = await side.client.post(path, content=streamed, headers=headers)
    assert (response.status_code, response.json()["error"]) == (413, "too_large")
    assert streamed.sent <= limit + 2 * streamed.chunk


requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST"]),
        "authorization": st.one_of(
            st.none(),
            st.text(max_size=80),
            st.from_regex(r"EXA-HMAC ts=\d{1,12},sig=[0-9a-f]{64}", fullmatch=True),
        ),
        "params": st.dictionaries(
            st.sampled_from(["after", "wait", "limit", "n", "x"]),
            st.one_of(st.integers(-5, 10**6).map(str), st.text(max_size=10)),
            max_size=3,
        ),
        "body": st.one_of(
            st.binary(max_size=200),
            st.just(b'{"messages":[{"seq":1,"kind":"ping","body":null}]}'),
        ),
    }
)


@pytest.mark.anyio
@examples(300)
@given(attempt=requests)
async def test_unauthenticated_callers_learn_nothing_about_which_connections_exist(
    side: Side, attempt: dict[str, Any]
) -> None:
    answers = []
    for cid in (side.connection.id, UNKNOWN):
        headers = {"Authorization": attempt["authorization"]} if attempt["authorization"] else {}
        try:
            request = side.client.build_request(
                attempt["method"],
                MESSAGES.format(cid=cid),
                params=attempt["params"],
                content=attempt["body"] if attempt["method"] == "POST" else b"",
                headers=headers,
            )
        except (UnicodeEncodeError, httpx.InvalidURL):
            return  # not a request an HTTP client can send
        response = await side.client.send(request)
        answers.append((response.status_code, response.content, dict(response.headers)))
    assert answers[0] == answers[1]
    assert answers[0][0] in (400, 401, 413)
    # Nothing was acknowledged or applied for the real one.
    assert side.state.last_seq(side.connection.id) == 1
    assert len(side.state.pending(side.connection.id)) == 1
    assert side.state.last_applied(side.connection.id) == 0
