"""The node's HTTP API, in-process through `httpx.ASGITransport`, and `serve()` for real.

Every route, every error status and its JSON shape, signatures and replays,
the single-use handshake (also raced), long-poll wake-ups from this process
and another SqliteStreams handle, idempotent pushes and gaps, size limits, and a
real uvicorn on 127.0.0.1 started and stopped by signals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from exalate_tui import __version__
from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Connection, Instance, Mode, PeerState, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import runtime
from exalate_tui.protocol import signing
from exalate_tui.transport import auth, errors, limits, routes, wakeups
from exalate_tui.transport.client import ACK_HEADER
from exalate_tui.transport.hooks import HandshakeRefused
from exalate_tui.transport.limits import BodyBudget
from exalate_tui.transport.node import create_app
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.storage import open_pg
from exalate_tui.transport.streams import Message, Streams

PUBLIC = "https://snow.example.com"
SECRET = "s" * 43
MESSAGES = "/api/v1/connections/{cid}/messages"
UNAUTHORIZED = {
    "error": "unauthorized",
    "detail": "the request is not signed for this connection (see docs/protocol.md, "
    "Signed requests)",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Node:
    """One home, its state and the node app, with a client that can sign."""

    def __init__(
        self, root: Path, short_name: str | None = "snow", database: str | None = None
    ) -> None:
        self.home = Home(root / "home")
        self.home.ensure()
        self.database = database
        if short_name:
            self.home.save_instance(
                Instance(short_name=short_name, public_url=PUBLIC, database=database)
            )
        self.state = self.other() if database else SqliteStreams(self.home.state_path)
        self.app = runtime.node_app(self.home, self.state)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://node"
        )

    def other(self) -> Streams:
        """Another handle on this node's store (another process's view, another worker)."""
        if self.database is None:
            return SqliteStreams(self.home.state_path)
        return open_pg(self.database)

    def add(self, **changes: Any) -> Connection:
        """An Active public-private connection initiated here (its partner polls us)."""
        values: dict[str, Any] = {
            "name": f"snow_to_jira_{len(self.home.load_connections().connections)}",
            "mode": Mode.SCRIPT,
            "topology": Topology.PUBLIC_PRIVATE,
            "role": Role.INITIATOR,
            "local_name": "snow",
            "remote_name": "jira",
            "status": Status.ACTIVE,
            "secret": SecretStr(SECRET),
        }
        values.update(changes)
        connection = Connection.model_validate(values)
        self.home.save_connection(connection)
        return connection

    def invite(self, **changes: Any) -> tuple[Connection, str]:
        """A Pending connection waiting for its handshake, and the token to present."""
        token = codes.new_token()
        values: dict[str, Any] = {
            "status": Status.PENDING,
            "secret": None,
            "remote_name": None,
            "token_hash": codes.hash_token(token),
            "token_expires": datetime.now(UTC) + timedelta(days=7),
        }
        values.update(changes)
        return self.add(**values), token

    async def signed(
        self,
        method: str,
        path: str,
        *,
        secret: str = SECRET,
        params: dict[str, Any] | None = None,
        body: bytes = b"",
        ts: int | None = None,
        header: str | None = None,
        tamper: Callable[[str], str] | None = None,
    ) -> httpx.Response:
        """A signed request; `tamper` alters the correct header of this very request."""
        request = self.client.build_request(
            method, path, params={**(params or {}), "n": os.urandom(8).hex()}, content=body
        )
        if header is None:
            header = signing.sign(
                secret, method, request.url.path, request.url.query.decode(), body, ts=ts
            )
            if tamper is not None:
                header = tamper(header)
        request.headers["Authorization"] = header
        return await self.client.send(request)

    async def fetch(self, cid: str, **params: Any) -> httpx.Response:
        return await self.signed("GET", MESSAGES.format(cid=cid), params=params)

    async def push(self, cid: str, messages: list[dict[str, Any]], **kw: Any) -> httpx.Response:
        body = json.dumps({"messages": messages}).encode()
        return await self.signed("POST", MESSAGES.format(cid=cid), body=body, **kw)

    async def handshake(self, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post("/api/v1/handshake", json=body)


@pytest.fixture(params=["sqlite", "postgresql"])
async def n(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    """The node on each store: state.sqlite3, and a PostgreSQL database."""
    database = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    side = Node(tmp_path, database=database)
    yield side
    await side.client.aclose()
    await side.app.state.node.wakeups.aclose()
    side.state.close()


def error_of(response: httpx.Response) -> dict[str, Any]:
    data = response.json()
    assert set(data) >= {"error", "detail"} and isinstance(data["detail"], str)
    return dict(data)


# -- info, OpenAPI, unknown routes -----------------------------------------------------


@pytest.mark.anyio
async def test_info_names_the_product_api_and_instance(n: Node) -> None:
    response = await n.client.get("/api/v1/info")
    assert response.status_code == 200
    assert response.json() == {
        "product": "exalate-tui",
        "version": __version__,
        "api": 1,
        "api_version": 1,
        "short_name": "snow",
    }


@pytest.mark.anyio
async def test_info_before_init_has_no_short_name(tmp_path: Path) -> None:
    side = Node(tmp_path, short_name=None)
    async with side.client:
        assert (await side.client.get("/api/v1/info")).json()["short_name"] is None
    side.state.close()


@pytest.mark.anyio
async def test_info_with_a_damaged_instance_file_is_unavailable(n: Node) -> None:
    n.home.instance_path.write_text("short_name = \n")
    response = await n.client.get("/api/v1/info")
    assert response.status_code == 503
    assert error_of(response)["error"] == "unavailable"
    assert "instance.toml" not in response.text  # the path is for the admin's log only


@pytest.mark.anyio
async def test_openapi_document_is_served_under_the_prefix(n: Node) -> None:
    response = await n.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert set(document["paths"]) == {
        "/api/v1/info",
        "/api/v1/handshake",
        "/api/v1/connections/{cid}/messages",
    }
    fetch = document["paths"]["/api/v1/connections/{cid}/messages"]["get"]
    assert {p["name"] for p in fetch["parameters"]} == {"cid", "after", "ack", "wait", "limit", "n"}
    push = document["paths"]["/api/v1/connections/{cid}/messages"]["post"]
    assert "messages" in push["requestBody"]["content"]["application/json"]["schema"]["properties"]
    for off in ("/docs", "/redoc", "/openapi.json", "/api/v1/docs"):
        assert (await n.client.get(off)).status_code == 404


@pytest.mark.anyio
async def test_unknown_route_and_wrong_method_answer_json(n: Node) -> None:
    missing = await n.client.get("/api/v1/nothing")
    assert missing.status_code == 404 and error_of(missing)["error"] == "not_found"
    wrong = await n.client.delete("/api/v1/info")
    assert wrong.status_code == 405 and error_of(wrong)["error"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


# -- handshake -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_handshake_stores_a_fresh_secret_and_enqueues_hello(
    n: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    connection, token = n.invite()
    response = await n.handshake(
        {"cid": connection.id, "tok": token, "short_name": "jira", "url": None}
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["short_name"] == "snow" and answer["name"] == connection.name
    secret = answer["secret"]
    assert len(secret) >= 43 and secret != SECRET
    stored = n.home.get_connection(connection.id)
    assert stored.secret is not None and stored.secret.get_secret_value() == secret
    assert (stored.status, stored.remote_name, stored.token_hash) == (Status.ACTIVE, "jira", None)
    assert n.home.connection_path(connection.id).stat().st_mode & 0o777 == 0o600
    [hello] = n.state.pending(connection.id)
    assert (hello.kind, hello.body) == ("hello", {"short_name": "snow"})
    assert n.state.contact(connection.id).last_ok is not None
    assert secret not in caplog.text and token not in caplog.text


@pytest.mark.anyio
async def test_two_handshakes_give_two_different_secrets(n: Node) -> None:
    secrets = set()
    for _ in range(2):
        connection, token = n.invite()
        body = {"cid": connection.id, "tok": token, "short_name": "jira"}
        secrets.add((await n.handshake(body)).json()["secret"])
    assert len(secrets) == 2


@pytest.mark.anyio
async def test_a_used_token_is_refused_and_changes_nothing(n: Node) -> None:
    connection, token = n.invite()
    body = {"cid": connection.id, "tok": token, "short_name": "jira"}
    assert (await n.handshake(body)).status_code == 200
    before = n.home.connection_path(connection.id).read_bytes()
    again = await n.handshake({**body, "short_name": "thief"})
    assert again.status_code == 403
    assert error_of(again)["error"] == "invitation_used"
    assert n.home.connection_path(connection.id).read_bytes() == before
    assert len(n.state.pending(connection.id)) == 1  # one hello only


@pytest.mark.anyio
async def test_an_invitation_burns_once_whichever_worker_it_reaches(
    tmp_path: Path, pg_url: str
) -> None:
    """Two workers on one database, each with a copy of the Pending connection: the code
    accepted by one is refused by the other, as an unknown id is, and its file stays
    Pending; the same offer again (its answer lost) still gets the first worker's secret."""
    first = Node(tmp_path / "a", database=pg_url)
    second = Node(tmp_path / "b", database=pg_url)
    try:
        connection, token = first.invite()
        second.home.save_connection(connection)
        body = {"cid": connection.id, "tok": token, "short_name": "jira"}
        won = await first.handshake(body)
        assert won.status_code == 200
        lost = await second.handshake(body)
        unknown = await second.handshake({**body, "cid": str(uuid.uuid4())})
        assert _answer(lost) == _answer(unknown)
        assert error_of(lost)["error"] == "invalid_invitation"
        assert second.home.get_connection(connection.id).status is Status.PENDING
        again = await first.handshake(body)
        assert again.status_code == 200 and again.json()["secret"] == won.json()["secret"]
        assert len(first.state.pending(connection.id)) == 1  # one hello only
    finally:
        for node in (first, second):
            await node.client.aclose()
            await node.app.state.node.wakeups.aclose()
            node.state.close()


@pytest.mark.anyio
async def test_a_wrong_token_on_a_used_id_answers_as_an_unknown_id(n: Node) -> None:
    connection, token = n.invite()
    body = {"cid": connection.id, "tok": token, "short_name": "jira"}
    assert (await n.handshake(body)).status_code == 200
    wrong = await n.handshake({**body, "tok": "x" * 43})
    unknown = await n.handshake({**body, "tok": "x" * 43, "cid": str(uuid.uuid4())})
    assert _answer(wrong) == _answer(unknown)
    assert error_of(wrong)["error"] == "invalid_invitation"
    # A node started since keeps no hash of the burnt token: even the right one is
    # answered as an unknown id then.
    restarted = runtime.node_app(n.home, n.state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=restarted), base_url="http://node"
    ) as client:
        later = await client.post("/api/v1/handshake", json=body)
        assert _answer(later) == _answer(unknown)
    await restarted.state.node.wakeups.aclose()


@pytest.mark.anyio
async def test_an_expired_token_is_refused_and_changes_nothing(n: Node) -> None:
    connection, token = n.invite(token_expires=datetime.now(UTC) - timedelta(seconds=1))
    before = n.home.connection_path(connection.id).read_bytes()
    response = await n.handshake({"cid": connection.id, "tok": token, "short_name": "jira"})
    assert response.status_code == 403 and error_of(response)["error"] == "invitation_expired"
    assert n.home.connection_path(connection.id).read_bytes() == before
    assert n.state.pending(connection.id) == []


@pytest.mark.anyio
async def test_a_wrong_token_and_an_unknown_id_get_the_same_answer(n: Node) -> None:
    connection, token = n.invite()
    before = n.home.connection_path(connection.id).read_bytes()
    tampered = ("A" if token[0] != "A" else "B") + token[1:]
    wrong = await n.handshake({"cid": connection.id, "tok": tampered, "short_name": "jira"})
    unknown = await n.handshake(
        {"cid": "00000000-0000-4000-8000-000000000000", "tok": token, "short_name": "jira"}
    )
    not_an_id = await n.handshake({"cid": "../instance", "tok": token, "short_name": "jira"})
    assert wrong.status_code == unknown.status_code == not_an_id.status_code == 403
    assert wrong.json() == unknown.json() == not_an_id.json()
    assert wrong.json()["error"] == "invalid_invitation"
    assert tampered not in wrong.text
    assert n.home.connection_path(connection.id).read_bytes() == before


@pytest.mark.anyio
async def test_only_the_side_holding_the_hash_takes_a_handshake(n: Node) -> None:
    # A private initiator keeps its own token to present it; it must not accept it.
    connection, token = n.invite(
        topology=Topology.PRIVATE_PUBLIC, remote_url="https://jira.example.com"
    )
    response = await n.handshake({"cid": connection.id, "tok": token, "short_name": "jira"})
    assert response.status_code == 403 and response.json()["error"] == "invalid_invitation"
    assert n.home.get_connection(connection.id).status is Status.PENDING


@pytest.mark.anyio
async def test_concurrent_handshakes_with_one_token_exactly_one_wins(n: Node) -> None:
    connection, token = n.invite()
    bodies = [{"cid": connection.id, "tok": token, "short_name": f"jira{i}"} for i in range(8)]
    responses = await asyncio.gather(*(n.handshake(body) for body in bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [403] * 7
    [winner] = [r for r in responses if r.status_code == 200]
    assert {r.json()["error"] for r in responses if r.status_code == 403} == {"invitation_used"}
    stored = n.home.get_connection(connection.id)
    assert stored.secret is not None
    assert stored.secret.get_secret_value() == winner.json()["secret"]
    assert len(n.state.pending(connection.id)) == 1


def test_handshakes_from_two_processes_with_one_token_exactly_one_wins(tmp_path: Path) -> None:
    side = Node(tmp_path)
    connection, token = side.invite()
    side.state.close()
    script = """
import asyncio, json, sys
import httpx
from exalate_tui.lifecycle import runtime
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.home.store import Home
home = Home.resolve(sys.argv[1]); state = SqliteStreams(home.state_path)
async def main():
    transport = httpx.ASGITransport(app=runtime.node_app(home, state))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        # Each a different offer: the same one repeated is answered again (the grace period).
        bodies = [{"cid": sys.argv[2], "tok": sys.argv[3], "short_name": f"jira{i}"}
                  for i in range(4)]
        results = await asyncio.gather(*(client.post("/api/v1/handshake", json=body)
                                         for body in bodies))
        print(json.dumps([r.status_code for r in results]))
asyncio.run(main())
"""
    args = [sys.executable, "-c", script, str(side.home.path), connection.id, token]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    statuses = [s for run in runs for s in json.loads(run.communicate(timeout=60)[0])]
    assert sorted(statuses) == [200] + [403] * 11


@pytest.mark.anyio
async def test_public_public_handshake_keeps_the_verified_url(n: Node) -> None:
    verified = "https://jira.example.com"
    kept, token = n.invite(topology=Topology.PUBLIC_PUBLIC, remote_url=verified)
    body = {"cid": kept.id, "tok": token, "short_name": "jira", "url": "https://other.example"}
    assert (await n.handshake(body)).status_code == 200
    assert n.home.get_connection(kept.id).remote_url == verified
    filled, token = n.invite(topology=Topology.PUBLIC_PUBLIC)
    body = {"cid": filled.id, "tok": token, "short_name": "jira", "url": verified + "/"}
    assert (await n.handshake(body)).status_code == 200
    assert n.home.get_connection(filled.id).remote_url == verified
    # The partner of a public-private connection has no URL, whatever it claims.
    private, token = n.invite()
    body = {"cid": private.id, "tok": token, "short_name": "jira", "url": verified}
    assert (await n.handshake(body)).status_code == 200
    assert n.home.get_connection(private.id).remote_url is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b'{"cid": "x", "short_name": "jira"}', "tok"),
        (b'{"cid": "x", "tok": "SECRETTOKEN", "short_name": "bad name"}', "short_name"),
        (b'{"cid": "x", "tok": "SECRETTOKEN", "short_name": "j", "url": "ftp://x"}', "url"),
        (b'{"cid": "x", "tok": "SECRETTOKEN", "short_name": "j", "extra": 1}', "extra"),
    ],
)
async def test_a_malformed_handshake_is_400_without_echoing_values(
    n: Node, content: bytes, where: str
) -> None:
    response = await n.client.post("/api/v1/handshake", content=content)
    assert response.status_code == 400
    error = error_of(response)
    assert error["error"] == "bad_request" and where in error["detail"]
    assert "SECRETTOKEN" not in response.text


@pytest.mark.anyio
async def test_a_huge_handshake_is_413(n: Node) -> None:
    big = json.dumps({"cid": "x", "tok": "t" * 20_000, "short_name": "jira"}).encode()
    response = await n.client.post("/api/v1/handshake", content=big)
    assert response.status_code == 413 and error_of(response)["error"] == "too_large"


# -- signatures ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_good_signature_is_served_and_records_contact(n: Node) -> None:
    connection = n.add()
    n.state.enqueue(connection.id, "ping", {"x": 1})
    response = await n.fetch(connection.id)
    assert response.status_code == 200
    assert response.json() == {
        "messages": [{"seq": 1, "kind": "ping", "body": {"x": 1}}],
        "last_seq": 1,
    }
    first = n.state.contact(connection.id).last_ok
    assert first is not None and time.time() - first < 5
    # At most one contact write per second per connection.
    await n.fetch(connection.id)
    assert n.state.contact(connection.id).last_ok == first


def _change_digit(header: str, index: int) -> str:
    """The header with one hex digit of its signature changed (still well-formed)."""
    prefix, sig = header.split(",sig=")
    digit = "0123456789abcdef"[(int(sig[index], 16) + 1) % 16]
    return f"{prefix},sig={sig[:index]}{digit}{sig[index + 1 :]}"


@pytest.mark.anyio
async def test_every_bad_signature_is_401_with_one_body_and_changes_nothing(n: Node) -> None:
    connection = n.add()
    other = n.add(secret=SecretStr("o" * 43))
    n.state.enqueue(connection.id, "ping")
    path = MESSAGES.format(cid=connection.id)
    now = int(time.time())
    batch = json.dumps({"messages": [{"seq": 1, "kind": "ping", "body": None}]}).encode()
    attempts: dict[str, dict[str, Any]] = {
        "unsigned": dict(header=""),
        "garbled": dict(header="EXA-HMAC ts=1,sig=zz"),
        "other scheme": dict(header="Bearer " + SECRET),
        # The correct signature of the very request sent, altered: only the value is wrong.
        "first digit changed": dict(tamper=lambda h: _change_digit(h, 0)),
        "ninth digit changed": dict(tamper=lambda h: _change_digit(h, 8)),
        "last digit changed": dict(tamper=lambda h: _change_digit(h, 63)),
        "truncated": dict(tamper=lambda h: h[:-1]),
        "another body's signature": dict(
            tamper=lambda h: (
                h.split(",sig=")[0]
                + ",sig="
                + signing.sign(SECRET, "POST", path, "", b"{}", ts=now).split(",sig=")[1]
            )
        ),
        "wrong secret": dict(secret="w" * 43),
        "another connection's secret": dict(secret="o" * 43),
    }
    for why, changes in attempts.items():
        for method in ("GET", "POST"):
            body = batch if method == "POST" else b""
            params = {"after": 1} if method == "GET" else {}
            response = await n.signed(method, path, params=params, body=body, **changes)
            assert response.status_code == 401, why
            assert response.json() == UNAUTHORIZED, why
            assert response.headers["www-authenticate"] == "EXA-HMAC"
    # Signed for one connection, sent to another: the path is part of the signature.
    request = n.client.build_request("GET", MESSAGES.format(cid=other.id))
    request.headers["Authorization"] = signing.sign(SECRET, "GET", path, "", b"")
    assert (await n.client.send(request)).json() == UNAUTHORIZED
    # Unknown connections say exactly the same.
    unknown = MESSAGES.format(cid="00000000-0000-4000-8000-000000000000")
    assert (await n.signed("GET", unknown)).json() == UNAUTHORIZED
    assert (await n.signed("GET", MESSAGES.format(cid=connection.id[:8]))).json() == UNAUTHORIZED
    # Nothing was acknowledged, applied or recorded.
    assert [m.seq for m in n.state.pending(connection.id)] == [1]
    assert n.state.last_applied(connection.id) == 0
    assert n.state.contact(connection.id).last_ok is None


@pytest.mark.anyio
async def test_a_clock_too_far_off_is_401_saying_by_how_much_for_any_id(n: Node) -> None:
    connection = n.add()
    n.state.enqueue(connection.id, "ping")
    batch = json.dumps({"messages": [{"seq": 1, "kind": "ping", "body": None}]}).encode()
    now = int(time.time())
    answers = []
    for cid in (connection.id, "00000000-0000-4000-8000-000000000000"):
        path = MESSAGES.format(cid=cid)
        for off, way in ((-signing.MAX_SKEW - 60, "behind"), (signing.MAX_SKEW + 60, "ahead of")):
            for method in ("GET", "POST"):
                body = batch if method == "POST" else b""
                response = await n.signed(method, path, body=body, ts=now + off)
                assert response.status_code == 401
                assert response.headers["www-authenticate"] == "EXA-HMAC"
                error = error_of(response)
                assert error["error"] == "unauthorized"
                said = re.match(rf"your clock is (\d+) s {way} this node's", error["detail"])
                assert said is not None and abs(int(said.group(1)) - abs(off)) <= 2
                assert abs(error["skew"] - off) <= 2
                assert SECRET not in response.text and connection.id not in response.text
                answers.append((off, method, {k: v for k, v in error.items() if k != "skew"}))
    # A known and an unknown id get the same answer: the clock is checked before the id.
    assert answers[:4] == answers[4:]
    assert [m.seq for m in n.state.pending(connection.id)] == [1]
    assert n.state.last_applied(connection.id) == 0


@pytest.mark.anyio
async def test_a_replayed_request_is_refused(n: Node) -> None:
    connection = n.add()
    request = n.client.build_request(
        "POST",
        MESSAGES.format(cid=connection.id),
        content=b'{"messages":[{"seq":1,"kind":"ping","body":null}]}',
    )
    request.headers["Authorization"] = signing.sign(
        SECRET, "POST", request.url.path, "", request.content
    )
    assert (await n.client.send(request)).json() == {"applied": 1}
    n.state.forget(connection.id)  # were it accepted again, it would apply again
    replay = await n.client.send(request)
    assert replay.status_code == 401 and replay.json() == UNAUTHORIZED
    assert n.state.last_applied(connection.id) == 0


@pytest.mark.anyio
async def test_a_replay_is_refused_by_another_worker_too(tmp_path: Path, pg_url: str) -> None:
    """Two workers on one database (two homes with the same connection file): a signed
    push accepted by one, replayed to the other, is refused there as well."""
    first = Node(tmp_path / "a", database=pg_url)
    second = Node(tmp_path / "b", database=pg_url)
    try:
        connection = first.add()
        second.home.save_connection(connection)
        body = b'{"messages":[{"seq":1,"kind":"ping","body":null}]}'
        path = MESSAGES.format(cid=connection.id)
        header = signing.sign(SECRET, "POST", path, "", body)
        sent = []
        for node in (first, second):
            request = node.client.build_request("POST", path, content=body)
            request.headers["Authorization"] = header
            sent.append(await node.client.send(request))
            first.state.forget(connection.id)  # were it accepted again, it would apply again
        assert sent[0].json() == {"applied": 1}
        assert sent[1].status_code == 401 and sent[1].json() == UNAUTHORIZED
        assert second.state.last_applied(connection.id) == 0
        # A fresh signature goes through either worker.
        assert (await second.push(connection.id, wire(1))).json() == {"applied": 1}
    finally:
        for node in (first, second):
            await node.client.aclose()
            await node.app.state.node.wakeups.aclose()
            node.state.close()


def test_replay_memory_forgets_only_what_the_clock_refuses_and_is_bounded() -> None:
    cache = auth.ReplayCache(window=300, capacity=3)
    assert cache.admit("x", b"a", ts=1000, now=1000)
    assert not cache.admit("x", b"a", ts=1000, now=1299)
    assert cache.admit("x", b"b", ts=1000, now=1000) and cache.admit("x", b"c", ts=1200, now=1200)
    with pytest.raises(errors.ApiError) as full:
        cache.admit("x", b"d", ts=1200, now=1200)
    assert (full.value.status, full.value.code) == (503, "busy")
    assert full.value.headers == {"Retry-After": "1"}
    assert cache.admit("x", b"d", ts=1301, now=1301)  # a and b expired, so there is room
    assert len(cache) == 2
    assert not cache.admit("x", b"c", ts=1200, now=1301)


def test_a_replay_entry_lives_exactly_as_long_as_its_timestamp_passes_the_clock() -> None:
    cache = auth.ReplayCache(window=300, capacity=10)
    now = 10_000
    # Dated 300 s ahead: it passes the clock until now + 600, so it is kept until then.
    assert cache.admit("x", b"f", ts=now + 300, now=now)
    assert not cache.admit("x", b"f", ts=now + 300, now=now + 600)
    assert cache.admit("x", b"g", ts=now + 601, now=now + 601) and len(cache) == 1
    # Dated 300 s behind: it passes the clock no more, and is forgotten at once.
    assert cache.admit("x", b"p", ts=now + 301, now=now + 601)
    assert cache.admit("x", b"q", ts=now + 902, now=now + 902) and len(cache) == 1
    for ts in (now, now + 300, now - 300):  # what the clock accepts, signed at `now`
        assert signing.parse(signing.sign(SECRET, "GET", "/", "", b"", ts=ts)) is not None


def test_one_connection_cannot_spend_another_connections_replay_memory() -> None:
    cache = auth.ReplayCache(window=300, capacity=10, per_connection=6)
    for index in range(6):
        assert cache.admit("greedy", b"g%d" % index, ts=1000, now=1000)
    with pytest.raises(errors.ApiError):
        cache.admit("greedy", b"g6", ts=1000, now=1000)
    for index in range(4):
        assert cache.admit("honest", b"h%d" % index, ts=1000, now=1000)
    # The node is full now: whoever holds less than an even share (10 / 2) still gets in.
    assert len(cache) == 10
    assert cache.admit("honest", b"h4", ts=1000, now=1000)
    with pytest.raises(errors.ApiError):
        cache.admit("honest", b"h5", ts=1000, now=1000)
    assert cache.admit("third", b"t0", ts=1000, now=1000)
    assert len(cache) == 12  # over the capacity by at most one even share each


@pytest.mark.anyio
async def test_a_partner_signing_at_a_high_rate_does_not_make_another_busy(n: Node) -> None:
    greedy, honest = n.add(), n.add(name="other_conn", secret=SecretStr("o" * 43))
    n.app.state.node.signatures.replays = auth.ReplayCache(capacity=100, per_connection=50)
    answers: Counter[int] = Counter()
    for _ in range(150):
        answers[(await n.fetch(greedy.id)).status_code] += 1
    assert answers == Counter({200: 50, 503: 100})
    for _ in range(20):
        response = await n.signed(
            "GET", MESSAGES.format(cid=honest.id), secret="o" * 43, params={"after": 0}
        )
        assert response.status_code == 200


@pytest.mark.anyio
async def test_a_deactivated_connection_answers_409_to_signed_calls_only(n: Node) -> None:
    connection = n.add(status=Status.DEACTIVATED)
    n.state.enqueue(connection.id, "ping")
    fetched = await n.fetch(connection.id, after=1)
    assert fetched.status_code == 409 and error_of(fetched)["error"] == "deactivated"
    pushed = await n.push(connection.id, [{"seq": 1, "kind": "ping"}])
    assert pushed.status_code == 409 and error_of(pushed)["error"] == "deactivated"
    unsigned = await n.client.get(MESSAGES.format(cid=connection.id))
    assert unsigned.status_code == 401
    assert [m.seq for m in n.state.pending(connection.id)] == [1]  # the ack was not taken
    assert n.state.last_applied(connection.id) == 0


# -- long-poll -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fetch_acks_by_after_and_honours_limit(n: Node) -> None:
    connection = n.add()
    n.state.enqueue_many(connection.id, [("ping", {"n": i}) for i in range(10)])
    first = (await n.fetch(connection.id, limit=3)).json()
    assert [m["seq"] for m in first["messages"]] == [1, 2, 3] and first["last_seq"] == 10
    second = (await n.fetch(connection.id, after=3, limit=3)).json()
    assert [m["seq"] for m in second["messages"]] == [4, 5, 6]
    assert n.state.pending(connection.id)[0].seq == 4  # 1-3 acknowledged and pruned
    done = (await n.fetch(connection.id, after=10)).json()
    assert done == {"messages": [], "last_seq": 10}
    assert n.state.pending(connection.id) == []


@pytest.mark.anyio
async def test_ack_prunes_only_what_the_caller_applied(n: Node) -> None:
    """Fetching ahead: messages after `after`, but only seqs ≤ `ack` are pruned."""
    connection = n.add()
    n.state.enqueue_many(connection.id, [("ping", {"n": i}) for i in range(10)])
    plain = await n.fetch(connection.id, after=2, limit=2)
    assert plain.headers[ACK_HEADER] == "2"  # without `ack`, `after` acknowledges
    ahead = await n.fetch(connection.id, after=6, ack=4)
    assert [m["seq"] for m in ahead.json()["messages"]] == [7, 8, 9, 10]
    assert ahead.headers[ACK_HEADER] == "4"
    assert n.state.pending(connection.id)[0].seq == 5  # 5 and 6 are not applied yet
    # An `ack` above `after` only prunes more.
    beyond = (await n.fetch(connection.id, after=0, ack=8)).json()
    assert [m["seq"] for m in beyond["messages"]] == [9, 10]


@pytest.mark.anyio
async def test_bodies_go_out_exactly_as_stored(n: Node) -> None:
    connection = n.add()
    n.state.enqueue(connection.id, "ping", {"z": 1, "a": "é", "n": [1.5, None]})
    [stored] = n.state.pending(connection.id)
    response = await n.fetch(connection.id)
    assert response.text == f'{{"messages":[{stored.wire()}],"last_seq":1}}'
    assert response.headers["content-type"] == "application/json"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 5001},
        {"wait": 31},
        {"wait": "nan"},
        {"after": -1},
        {"ack": -1},
        {"ack": "x"},
    ],
)
async def test_bad_query_parameters_are_400(n: Node, params: dict[str, Any]) -> None:
    connection = n.add()
    response = await n.fetch(connection.id, **params)
    assert response.status_code == 400
    assert error_of(response)["error"] == "bad_request"
    assert next(iter(params)) in response.json()["detail"]


@pytest.mark.anyio
async def test_long_poll_returns_at_once_when_messages_wait(n: Node) -> None:
    connection = n.add()
    n.state.enqueue(connection.id, "ping")
    started = time.monotonic()
    response = await n.fetch(connection.id, wait=20)
    assert len(response.json()["messages"]) == 1
    assert time.monotonic() - started < 1


@pytest.mark.anyio
async def test_long_poll_times_out_empty(n: Node) -> None:
    connection = n.add()
    started = time.monotonic()
    response = await n.fetch(connection.id, wait=0.3)
    elapsed = time.monotonic() - started
    assert response.json() == {"messages": [], "last_seq": 0}
    assert 0.3 <= elapsed < 2


async def parked(n: Node, cid: str, timeout: float = 5.0) -> None:
    """Until the node says a long-poll of `cid` waits on it."""
    wakeups = n.app.state.node.wakeups
    deadline = time.monotonic() + timeout
    while not wakeups.parked(cid):
        assert time.monotonic() < deadline, "the long-poll never parked"
        await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_long_poll_wakes_at_once_for_an_enqueue_in_this_process(n: Node) -> None:
    connection = n.add()
    poll = asyncio.create_task(n.fetch(connection.id, wait=20))
    await parked(n, connection.id)
    assert not poll.done()
    enqueued = time.monotonic()
    await asyncio.to_thread(n.state.enqueue, connection.id, "ping")
    response = await poll
    assert time.monotonic() - enqueued < 0.5
    assert [m["kind"] for m in response.json()["messages"]] == ["ping"]


@pytest.mark.anyio
async def test_long_poll_wakes_promptly_for_another_state_handle(n: Node) -> None:
    connection = n.add()
    quiet = n.add()  # its poll must not be woken by someone else's message
    other = n.other()  # another process's view of the same file (another worker's)
    try:
        poll = asyncio.create_task(n.fetch(connection.id, wait=20))
        idle = asyncio.create_task(n.fetch(quiet.id, wait=1))
        await parked(n, connection.id)
        await parked(n, quiet.id)
        enqueued = time.monotonic()
        other.enqueue(connection.id, "ping")
        response = await poll
        assert time.monotonic() - enqueued < 0.5
        assert [m["kind"] for m in response.json()["messages"]] == ["ping"]
        assert (await idle).json()["messages"] == []
    finally:
        other.close()


@pytest.mark.anyio
async def test_many_long_polls_share_one_watcher(n: Node) -> None:
    connections = [n.add() for _ in range(20)]
    polls = [asyncio.create_task(n.fetch(c.id, wait=20)) for c in connections]
    for c in connections:
        await parked(n, c.id)
    watchers = [t for t in asyncio.all_tasks() if t.get_name() == "node:data_version"]
    assert len(watchers) == 1
    other = n.other()
    try:
        for c in connections:
            other.enqueue(c.id, "ping")
        results = await asyncio.wait_for(asyncio.gather(*polls), 5)
    finally:
        other.close()
    assert all(len(r.json()["messages"]) == 1 for r in results)


# -- push ------------------------------------------------------------------------------


def wire(*seqs: int, kind: str = "ping") -> list[dict[str, Any]]:
    return [{"seq": s, "kind": kind, "body": {"n": s}} for s in seqs]


@pytest.mark.anyio
async def test_push_applies_once_and_is_idempotent(
    n: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted where the node runs a message's effect: a redelivered message must not
    # run it again, even though today's effects would survive a second run.
    effects: list[int] = []
    real = runtime.apply_effect

    def counted(home: Home, cid: str, message: Any) -> None:
        effects.append(message.seq)
        real(home, cid, message)

    monkeypatch.setattr(runtime, "apply_effect", counted)
    connection = n.add()
    first = await n.push(connection.id, wire(1, 2, 3))
    assert first.status_code == 200 and first.json() == {"applied": 3}
    assert effects == [1, 2, 3]
    again = await n.push(connection.id, wire(2, 3, 4))
    assert again.json() == {"applied": 4}
    assert (await n.push(connection.id, wire(1, 2, 3, 4))).json() == {"applied": 4}
    assert effects == [1, 2, 3, 4]
    assert [(m.seq, m.body) for m in n.state.inbox(connection.id)] == [
        (s, {"n": s}) for s in (1, 2, 3, 4)
    ]
    assert (await n.push(connection.id, [])).json() == {"applied": 4}


@pytest.mark.anyio
async def test_a_gap_is_409_with_where_to_resend_from(n: Node) -> None:
    connection = n.add()
    await n.push(connection.id, wire(1))
    response = await n.push(connection.id, wire(3, 4))
    assert response.status_code == 409
    assert error_of(response)["error"] == "gap" and response.json()["last_applied"] == 1
    assert n.state.last_applied(connection.id) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "batch",
    [
        {"messages": [{"seq": 2, "kind": "ping"}, {"seq": 1, "kind": "ping"}]},
        {"messages": [{"seq": 1, "kind": "ping"}, {"seq": 1, "kind": "ping"}]},
        {"messages": [{"seq": 0, "kind": "ping"}]},
        {"messages": [{"seq": 1, "kind": ""}]},
        {"messages": [{"seq": 1}]},
        {"messages": "no"},
        {},
    ],
)
async def test_a_malformed_batch_is_400_and_applies_nothing(n: Node, batch: dict[str, Any]) -> None:
    connection = n.add()
    response = await n.signed(
        "POST", MESSAGES.format(cid=connection.id), body=json.dumps(batch).encode()
    )
    assert response.status_code == 400 and error_of(response)["error"] == "bad_request"
    assert n.state.last_applied(connection.id) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity", '[1, {"a": [1e999]}]'])
async def test_a_body_with_a_number_that_is_not_finite_is_400(n: Node, number: str) -> None:
    connection = n.add()
    raw = f'{{"messages":[{{"seq":1,"kind":"ping","body":{number}}}]}}'.encode()
    response = await n.signed("POST", MESSAGES.format(cid=connection.id), body=raw)
    assert response.status_code == 400 and error_of(response)["error"] == "bad_request"
    assert "finite" in error_of(response)["detail"] and "inf" not in error_of(response)["detail"]
    assert n.state.last_applied(connection.id) == 0
    # Large but finite numbers are bodies like any other.
    fine = b'{"messages":[{"seq":1,"kind":"ping","body":{"n":2.5e300}}]}'
    assert (await n.signed("POST", MESSAGES.format(cid=connection.id), body=fine)).json() == {
        "applied": 1
    }


@pytest.mark.anyio
async def test_a_kind_with_a_nul_is_400_on_every_store(n: Node) -> None:
    """PostgreSQL's text holds no NUL: the wire refuses it for every store alike, rather
    than one store answering 500."""
    connection = n.add()
    raw = b'{"messages":[{"seq":1,"kind":"pi\\u0000ng","body":"\\u0000 in a body is fine"}]}'
    response = await n.signed("POST", MESSAGES.format(cid=connection.id), body=raw)
    assert response.status_code == 400 and error_of(response)["error"] == "bad_request"
    assert n.state.last_applied(connection.id) == 0
    fine = b'{"messages":[{"seq":1,"kind":"ping","body":"\\u0000 in a body is fine"}]}'
    response = await n.signed("POST", MESSAGES.format(cid=connection.id), body=fine)
    assert response.json() == {"applied": 1}
    assert n.state.inbox(connection.id)[0].body == "\x00 in a body is fine"


@pytest.mark.anyio
async def test_a_batch_over_the_limit_is_413_before_it_is_read_whole(n: Node) -> None:
    connection = n.add()
    path = MESSAGES.format(cid=connection.id)
    big = b" " * (routes.MAX_BATCH_BYTES + 1)
    declared = await n.signed("POST", path, body=big)
    assert declared.status_code == 413 and error_of(declared)["error"] == "too_large"

    chunks_sent = 0

    async def chunked() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(100):  # 100 MiB if it were all read
            chunks_sent += 1
            yield b" " * (1024 * 1024)

    request = n.client.build_request("POST", path, content=chunked())
    request.headers["Authorization"] = signing.sign(SECRET, "POST", path, "", b"")
    assert "content-length" not in request.headers
    streamed = await n.client.send(request)
    assert streamed.status_code == 413
    assert chunks_sent <= 10
    # A signed GET carries no body.
    assert (await n.signed("GET", path, body=b"x" * 20_000)).status_code == 413


class Trickle:
    """A request body sent in chunks on demand: `pulled` counts what the node read."""

    def __init__(self, chunks: int, size: int = 64 * 1024) -> None:
        self.chunks, self.size = chunks, size
        self.pulled = 0
        self.more = asyncio.Event()  # set: the rest comes at once
        self.first = asyncio.Event()  # set once the node pulled the first chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index in range(self.chunks):
            if index == 1:
                await self.more.wait()
            self.pulled += 1
            self.first.set()
            yield b" " * self.size


@pytest.mark.anyio
async def test_what_the_headers_refuse_is_refused_before_any_body_is_read(n: Node) -> None:
    connection = n.add()
    path = MESSAGES.format(cid=connection.id)
    now = int(time.time())
    unknown = MESSAGES.format(cid="00000000-0000-4000-8000-000000000000")
    cases = {
        "no Authorization": (path, None),
        "malformed": (path, "EXA-HMAC ts=1,sig=zz"),
        "stale": (path, signing.sign(SECRET, "POST", path, "", b"", ts=now - 400)),
        "future": (path, signing.sign(SECRET, "POST", path, "", b"", ts=now + 400)),
        "unknown id": (unknown, signing.sign(SECRET, "POST", unknown, "", b"")),
        "malformed id": (
            "/api/v1/connections/x/messages",
            signing.sign(SECRET, "POST", "/x", "", b""),
        ),
    }
    for why, (target, header) in cases.items():
        for method in ("POST", "GET"):
            body = Trickle(chunks=128)  # 8 MiB if it were read
            request = n.client.build_request(method, target, content=body)
            if header is not None:
                request.headers["Authorization"] = header
            response = await n.client.send(request)
            assert response.status_code == 401, why
            assert body.pulled == 0, why
    assert n.app.state.node.bodies.held == 0


@pytest.mark.anyio
async def test_a_body_that_does_not_arrive_in_time_is_408(n: Node) -> None:
    connection = n.add()
    path = MESSAGES.format(cid=connection.id)
    node = n.app.state.node
    node.body_deadline = 0.2
    body = Trickle(chunks=4)  # never more than the first chunk: `more` is never set
    request = n.client.build_request("POST", path, content=body)
    request.headers["Authorization"] = signing.sign(SECRET, "POST", path, "", b"")
    response = await asyncio.wait_for(n.client.send(request), 10)
    assert response.status_code == 408 and error_of(response)["error"] == "timeout"
    assert body.pulled == 1 and node.bodies.held == 0
    assert n.state.last_applied(connection.id) == 0


@pytest.mark.anyio
async def test_a_pusher_gone_mid_body_logs_no_error(
    n: Node, caplog: pytest.LogCaptureFixture
) -> None:
    connection = n.add()
    path = MESSAGES.format(cid=connection.id)
    events = iter([{"type": "http.request", "body": b'{"messages": [', "more_body": True}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(events, {"type": "http.disconnect"})  # the partner was killed

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    header = signing.sign(SECRET, "POST", path, "", b"")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"authorization", header.encode())],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    with caplog.at_level(logging.INFO):
        await n.app(scope, receive, send)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert n.state.last_applied(connection.id) == 0 and n.app.state.node.bodies.held == 0


@pytest.mark.anyio
async def test_body_bytes_in_flight_are_bounded_node_wide(n: Node) -> None:
    connection = n.add()
    path = MESSAGES.format(cid=connection.id)
    node = n.app.state.node
    node.bodies.capacity = 256 * 1024
    header = signing.sign(SECRET, "POST", path, "", b"")
    holding = Trickle(chunks=4)  # 64 KiB in, then waits: the node holds it
    first = n.client.build_request("POST", path, content=holding)
    first.headers["Authorization"] = header
    pending = asyncio.ensure_future(n.client.send(first))
    await asyncio.wait_for(holding.first.wait(), 10)
    assert node.bodies.held == 64 * 1024
    over = Trickle(chunks=4)
    over.more.set()
    second = n.client.build_request("POST", path, content=over)
    second.headers["Authorization"] = header
    refused = await n.client.send(second)
    assert refused.status_code == 503 and error_of(refused)["error"] == "busy"
    assert refused.headers["retry-after"] == "1"
    holding.more.set()
    done = await pending
    assert done.status_code == 401  # the header signs an empty body
    assert node.bodies.held == 0


@pytest.mark.anyio
async def test_bodies_are_read_a_few_at_a_time_and_a_wait_too_long_is_busy(n: Node) -> None:
    """Bodies streaming in at once are what keep a node's loop from `/info` and polls:
    past `readers`, a body waits for its turn unread (its socket paused), then 503."""
    connection = n.add()
    path = MESSAGES.format(cid=connection.id)
    node = n.app.state.node
    node.bodies = BodyBudget(readers=1, wait=0.3)
    header = signing.sign(SECRET, "POST", path, "", b"")
    holding = Trickle(chunks=4)  # holds the only turn until told to go on
    first = n.client.build_request("POST", path, content=holding)
    first.headers["Authorization"] = header
    pending = asyncio.ensure_future(n.client.send(first))
    await asyncio.wait_for(holding.first.wait(), 10)
    waiting = Trickle(chunks=4)
    waiting.more.set()
    second = n.client.build_request("POST", path, content=waiting)
    second.headers["Authorization"] = header
    started = time.monotonic()
    refused = await n.client.send(second)
    assert refused.status_code == 503 and error_of(refused)["error"] == "busy"
    assert refused.headers["retry-after"] == "1"
    assert 0.3 <= time.monotonic() - started < 5
    assert waiting.pulled == 1  # only what came with the headers was read
    holding.more.set()
    assert (await pending).status_code == 401  # the header signs an empty body
    # The turn is given back: the next body is read and applied.
    assert (await n.push(connection.id, wire(1))).json() == {"applied": 1}
    assert node.bodies.held == 0 and not node.bodies.readers.locked()


@pytest.mark.anyio
async def test_a_body_that_stops_coming_while_another_waits_loses_its_turn(n: Node) -> None:
    """Else a few sockets trickling bodies for a known id would keep every push out."""
    connection = n.add()
    path = MESSAGES.format(cid=connection.id)
    node = n.app.state.node
    node.bodies = BodyBudget(readers=1, wait=10)
    header = signing.sign(SECRET, "POST", path, "", b"")
    stuck = Trickle(chunks=4)  # its first chunk, then nothing: it holds the only turn
    first = n.client.build_request("POST", path, content=stuck)
    first.headers["Authorization"] = header
    pending = asyncio.ensure_future(n.client.send(first))
    await asyncio.wait_for(stuck.first.wait(), 10)
    started = time.monotonic()
    # A push comes (chunked, so it needs a turn): the stuck body falls behind and is cut.
    pushed = await n.push(connection.id, wire(1))
    assert pushed.json() == {"applied": 1}
    assert time.monotonic() - started < limits.GRACE + 2 * limits.TICK + 2
    cut = await pending
    assert cut.status_code == 408 and "too slowly" in error_of(cut)["detail"]
    assert node.bodies.held == 0 and not node.bodies.readers.locked()


@pytest.mark.anyio
async def test_partner_connection_messages_change_this_side(n: Node) -> None:
    connection = n.add()
    await n.push(connection.id, wire(1, kind="connection.deactivated"))
    stored = n.home.get_connection(connection.id)
    assert (stored.peer_state, stored.status) == (PeerState.DEACTIVATED, Status.ACTIVE)
    # The partner's pause leaves this side serving it: its activation gets through.
    await n.push(connection.id, wire(2, kind="connection.activated"))
    stored = n.home.get_connection(connection.id)
    assert (stored.peer_state, stored.status) == (None, Status.ACTIVE)
    await n.push(connection.id, wire(3, kind="connection.deleted"))
    stored = n.home.get_connection(connection.id)
    assert (stored.peer_state, stored.status) == (PeerState.DELETED, Status.DEACTIVATED)
    assert [m.kind for m in n.state.inbox(connection.id)] == [
        "connection.deactivated",
        "connection.activated",
        "connection.deleted",
    ]


@pytest.mark.anyio
async def test_a_resent_batch_is_acknowledged_even_after_it_deactivated_this_side(
    n: Node,
) -> None:
    """The partner's `delete` and its pusher both deliver `connection.deleted`: the
    second delivery must hear "applied", not 409, or the partner reports a failure."""
    connection = n.add()
    assert (await n.push(connection.id, wire(1, 2))).json() == {"applied": 2}
    first = await n.push(connection.id, wire(3, kind="connection.deleted"))
    assert first.json() == {"applied": 3}
    assert n.home.get_connection(connection.id).status is Status.DEACTIVATED
    again = await n.push(connection.id, wire(2, 3))
    assert again.status_code == 200 and again.json() == {"applied": 3}
    # Anything new is still refused, and nothing is applied.
    newer = await n.push(connection.id, wire(3, 4))
    assert newer.status_code == 409 and error_of(newer)["error"] == "deactivated"
    assert (await n.push(connection.id, [])).status_code == 409
    assert n.state.last_applied(connection.id) == 3


# -- tombstones ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_tombstone_serves_polls_until_the_partner_has_the_news(n: Node) -> None:
    connection = n.add(status=Status.DEACTIVATED)
    n.state.enqueue_many(connection.id, [("ping", None), ("connection.deleted", None)])
    n.home.bury_connection(connection.id)
    assert n.home.load_connections().connections == []
    response = await n.fetch(connection.id, after=0)
    assert [m["kind"] for m in response.json()["messages"]] == ["ping", "connection.deleted"]
    pushed = await n.push(connection.id, wire(1))
    assert pushed.status_code == 410 and error_of(pushed)["error"] == "deleted"
    acked = await n.fetch(connection.id, after=2)
    assert acked.json() == {"messages": [], "last_seq": 2}
    assert n.home.get_tombstone(connection.id) is None
    assert n.state.last_seq(connection.id) == 0  # forgotten
    assert (await n.fetch(connection.id, after=2)).json() == UNAUTHORIZED


@pytest.mark.anyio
async def test_a_tombstone_stays_until_the_news_is_acknowledged_not_just_fetched(
    n: Node,
) -> None:
    connection = n.add(status=Status.DEACTIVATED)
    n.state.enqueue_many(connection.id, [("ping", None), ("connection.deleted", None)])
    n.home.bury_connection(connection.id)
    ahead = await n.fetch(connection.id, after=2, ack=1)  # fetched, not applied yet
    assert ahead.json() == {"messages": [], "last_seq": 2}
    assert n.home.get_tombstone(connection.id) is not None
    assert [m.seq for m in n.state.pending(connection.id)] == [2]
    await n.fetch(connection.id, after=2, ack=2)
    assert n.home.get_tombstone(connection.id) is None


# -- unexpected failures ---------------------------------------------------------------


def _answer(response: httpx.Response) -> tuple[int, str, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return response.status_code, response.text, headers


@pytest.mark.anyio
async def test_a_broken_connection_file_answers_as_an_unknown_id_and_is_logged_once(
    n: Node, caplog: pytest.LogCaptureFixture
) -> None:
    connection, token = n.invite()
    path = n.home.connection_path(connection.id)
    path.write_text('name = "half\n')
    unknown = "00000000-0000-4000-8000-000000000000"
    seen: list[tuple[int, str, dict[str, str]]] = []
    with caplog.at_level(logging.ERROR):
        for _ in range(5):
            for cid in (connection.id, unknown):
                answers = [
                    await n.fetch(cid),
                    await n.push(cid, wire(1)),
                    await n.client.get(MESSAGES.format(cid=cid)),
                    await n.handshake({"cid": cid, "tok": token, "short_name": "jira"}),
                ]
                if cid == unknown:
                    assert [_answer(r) for r in answers] == seen
                else:
                    seen = [_answer(r) for r in answers]
        assert [r[0] for r in seen] == [401, 401, 401, 403]
        logged = [r for r in caplog.records if str(path) in r.getMessage()]
        assert len(logged) == 1  # 20 requests met it: one line
        path.write_text('name = "still half\n')  # changed: logged again, once
        for _ in range(3):
            await n.fetch(connection.id)
        logged = [r for r in caplog.records if str(path) in r.getMessage()]
        assert len(logged) == 2
    assert str(n.home.path) not in "".join(r[1] for r in seen)


# -- serve() for real ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_node(home: Path, port: int) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "exalate_tui.cli", "--home", str(home), "node"]
    return subprocess.Popen(
        [*args, "--host", "127.0.0.1", "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_until_serving(port: int, process: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v1/info", timeout=1)
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_node_serves_logs_one_line_and_stops_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow", public_url=PUBLIC))
    port = free_port()
    process = start_node(home.path, port)
    try:
        info = wait_until_serving(port, process)
        assert info.json()["short_name"] == "snow"
        assert "server" not in info.headers
        # A long-poll in progress does not hold the stop back.
        side = Node(tmp_path / "unused")
        connection = Connection.model_validate(
            {**side.add().model_dump(), "id": "11111111-1111-4111-8111-111111111111"}
        )
        home.save_connection(connection)
        path = MESSAGES.format(cid=connection.id)
        query = "wait=25"
        header = signing.sign(SECRET, "GET", path, query, b"")

        def poll() -> httpx.Response:
            return httpx.get(
                f"http://127.0.0.1:{port}{path}?{query}",
                headers={"Authorization": header},
                timeout=30,
            )

        async def poll_then_stop() -> tuple[httpx.Response, float]:
            task = asyncio.create_task(asyncio.to_thread(poll))
            await asyncio.sleep(0.5)
            stopped = time.monotonic()
            process.send_signal(stop)
            return await task, stopped

        response, stopped = asyncio.run(poll_then_stop())
        assert response.status_code == 200 and response.json()["messages"] == []
        _, stderr = process.communicate(timeout=15)
        assert time.monotonic() - stopped < 5
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, stderr
    lines = stderr.splitlines()
    [started] = [line for line in lines if "listening on" in line]
    assert f"listening on http://127.0.0.1:{port}" in started and "snow" in started
    assert any(line.endswith("exalate-tui node stopped") for line in lines)
    assert "Traceback" not in stderr and SECRET not in stderr
    assert len(lines) == 2, stderr


def test_node_on_a_taken_port_says_so(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="snow"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = start_node(home.path, taken.getsockname()[1])
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "Address already in use" in stderr and "Traceback" not in stderr


@pytest.mark.anyio
async def test_closing_the_wakeups_stops_the_watch_before_the_state_closes(tmp_path: Path) -> None:
    state = SqliteStreams(tmp_path / "state.sqlite3")
    polls = wakeups.Wakeups(state, watch=0.01)
    cid = "12345678-1234-4234-8234-123456789abc"
    waiter = polls.register(cid, 0)  # a parked poll starts the data_version watch
    await asyncio.sleep(0.05)
    assert polls._watcher is not None
    await polls.aclose()
    assert polls._watcher is None and waiter.woken.done()
    polls.unregister(cid, waiter)
    state.close()


# -- the transport on its own: hooks of another layer ----------------------------------


class Recorder:
    """`transport.hooks.Hooks` that only record what the transport asked of them."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, int, str]] = []

    def take_invitation(self, offer: Any, now: float) -> Connection:
        raise HandshakeRefused("invalid_invitation", "this recorder holds no invitations")

    def handshake_answered(self, connection: Connection, secret: SecretStr, name: str) -> None:
        raise AssertionError("a node never presents a token")

    def apply(self, cid: str, message: Message) -> None:
        self.applied.append((cid, message.seq, message.kind))

    def housekeeping(self) -> list[str]:
        return []


@pytest.mark.anyio
async def test_the_node_leaves_what_messages_and_handshakes_mean_to_its_hooks(
    n: Node,
) -> None:
    hooks = Recorder()
    await n.client.aclose()
    await n.app.state.node.wakeups.aclose()
    n.app = create_app(n.home, n.state, hooks)
    n.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=n.app), base_url="http://node")
    connection = n.add()
    assert (await n.push(connection.id, wire(1, 2))).json() == {"applied": 2}
    assert hooks.applied == [(connection.id, 1, "ping"), (connection.id, 2, "ping")]
    pending, token = n.invite()
    refused = await n.handshake({"cid": pending.id, "tok": token, "short_name": "jira"})
    assert refused.status_code == 403 and error_of(refused)["error"] == "invalid_invitation"
    assert n.home.get_connection(pending.id).status is Status.PENDING
