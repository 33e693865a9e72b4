"""The client: URL verification outcomes and the signed calls, against real servers.

Failures are produced for real on 127.0.0.1 (a closed port, a plain HTTP
server, a socket that never answers); the node is the real FastAPI app,
in-process through `httpx.ASGITransport`.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from exalate_tui import __version__
from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Instance, Mode
from exalate_tui.flows.initiate import InitiateWizard
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import runtime
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.protocol.api import UrlCheck
from exalate_tui.transport import client
from exalate_tui.transport.client import Remote, RemoteError, verify_url
from exalate_tui.transport.sqlite_streams import SqliteStreams
from exalate_tui.transport.streams import Message


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Html(http.server.BaseHTTPRequestHandler):
    """Some other web server: HTML at every path."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = b"<html><body>Welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def html_server() -> Iterator[str]:
    yield from _serve(_Html)


@pytest.fixture
def files_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)  # SimpleHTTPRequestHandler serves the working directory
    yield from _serve(_Quiet)


def test_closed_port_is_unreachable() -> None:
    check = asyncio.run(verify_url(f"http://127.0.0.1:{free_port()}"))
    assert not check.ok
    assert check.reason.startswith("Cannot reach 127.0.0.1:")
    assert "connection refused" in check.reason
    assert "`exalate-tui node` is running" in check.reason


def test_silent_server_times_out_as_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # the kernel completes the connect; nobody ever answers
        port = sock.getsockname()[1]
        check = asyncio.run(verify_url(f"http://127.0.0.1:{port}/", timeout=0.3))
    assert not check.ok
    assert check.url == f"http://127.0.0.1:{port}"
    assert "no answer within 0.3 s" in check.reason


def test_https_against_plain_http_is_a_tls_problem(html_server: str) -> None:
    check = asyncio.run(verify_url(f"https://{html_server}"))
    assert not check.ok
    assert check.reason.startswith(f"TLS problem with {html_server}:")
    assert "plain http://" in check.reason


def test_html_server_is_not_a_node(html_server: str) -> None:
    check = asyncio.run(verify_url(f"http://{html_server}"))
    assert not check.ok
    assert check.reason == (
        f"{html_server} is not an exalate-tui node (it does not answer in JSON); "
        "check the URL points at the node (`exalate-tui node`), not another service."
    )


def test_server_without_the_api_is_not_a_node(files_server: str) -> None:
    check = asyncio.run(verify_url(f"http://{files_server}"))
    assert not check.ok
    assert "is not an exalate-tui node (it has no /api/v1/info)" in check.reason


def test_malformed_url_is_refused_before_any_request() -> None:
    check = asyncio.run(verify_url("ftp://example"))
    assert not check.ok
    assert check.reason.startswith("The URL must start with http:// or https://")


# -- against the real node app (in-process) ----------------------------------------

URL = "http://127.0.0.1:7001"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Public:
    home: Home
    state: SqliteStreams
    transport: httpx.ASGITransport


@pytest.fixture
def public(tmp_path: Path) -> Public:
    home = Home(tmp_path / "snow")
    home.save_instance(Instance(short_name="snow", public_url=URL))
    state = SqliteStreams(home.state_path)
    return Public(home, state, httpx.ASGITransport(app=runtime.node_app(home, state)))


def invite(public: Public) -> codes.Invitation:
    instance = public.home.load_instance()
    assert instance is not None
    wizard = InitiateWizard(instance, public.home.load_connections().connections)
    wizard.choose_no_url()
    wizard.set_mode(Mode.BASIC)
    wizard.next()
    wizard.next()
    wizard.set_remote_name("jira")
    assert wizard.next() and wizard.issued
    assert save_issued(public.home, wizard.issued.connection, wizard.new_instance)
    return wizard.issued.invitation


@pytest.mark.anyio
async def test_a_node_verifies_with_its_name_and_version(public: Public) -> None:
    check = await verify_url(URL + "/", transport=public.transport)
    assert check == UrlCheck(URL, ok=True, remote_name="snow", version=__version__)


@pytest.mark.anyio
async def test_another_api_version_is_incompatible(
    public: Public, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This client is one API version ahead of the (real) node it asks.
    monkeypatch.setattr(client, "API_VERSION", client.API_VERSION + 1)
    check = await verify_url(URL, transport=public.transport)
    assert not check.ok
    assert check.reason == (
        f"127.0.0.1:7001 runs exalate-tui {__version__} with API version 1, this one speaks 2: "
        "update the older of the two."
    )


@pytest.mark.anyio
async def test_handshake_then_signed_fetch_and_push(public: Public) -> None:
    invitation = invite(public)
    async with Remote(URL, transport=public.transport) as remote:
        answer = await remote.handshake(
            invitation.cid, SecretStr(invitation.tok), "jira", None, digest=codes.digest(invitation)
        )
        assert (answer.short_name, answer.name) == ("snow", "snow_to_jira")
        stored = public.home.get_connection(invitation.cid).secret
        assert stored is not None and answer.secret.get_secret_value() == stored.get_secret_value()

        batch = await remote.fetch(invitation.cid, answer.secret, after=0)
        assert [(m.seq, m.kind) for m in batch.messages] == [(1, "hello")]
        assert batch.last_seq == 1

        sent = [Message(1, "hello", '{"short_name":"jira"}'), Message(2, "ping", '{"n":1}')]
        assert await remote.push(invitation.cid, answer.secret, sent) == 2
        # The same batch again: a fresh nonce, so not a replay; applied once only.
        assert await remote.push(invitation.cid, answer.secret, sent) == 2
        assert [m.seq for m in public.state.inbox(invitation.cid)] == [1, 2]

        # Fetching after 1 acknowledges the hello: the node prunes it.
        batch = await remote.fetch(invitation.cid, answer.secret, after=1)
        assert batch.messages == [] and public.state.pending(invitation.cid) == []


@pytest.mark.anyio
async def test_long_poll_returns_when_a_message_is_enqueued(public: Public) -> None:
    invitation = invite(public)
    async with Remote(URL, transport=public.transport) as remote:
        answer = await remote.handshake(
            invitation.cid, SecretStr(invitation.tok), "jira", None, digest=codes.digest(invitation)
        )
        started = time.monotonic()
        waiting = asyncio.create_task(remote.fetch(invitation.cid, answer.secret, 1, wait=20))
        wakeups = public.transport.app.state.node.wakeups  # type: ignore[attr-defined]
        while not wakeups.parked(invitation.cid):  # until the node says the poll waits
            assert time.monotonic() - started < 5
            await asyncio.sleep(0.01)
        assert not waiting.done()
        public.state.enqueue(invitation.cid, "ping", {"n": 1})
        batch = await asyncio.wait_for(waiting, 5)
        assert [m.kind for m in batch.messages] == ["ping"]
        assert time.monotonic() - started < 5


@pytest.mark.anyio
async def test_refusals_are_remote_errors_without_secrets(public: Public) -> None:
    invitation = invite(public)
    async with Remote(URL, transport=public.transport) as remote:
        answer = await remote.handshake(
            invitation.cid, SecretStr(invitation.tok), "jira", None, digest=codes.digest(invitation)
        )
        with pytest.raises(RemoteError) as used:
            await remote.handshake(  # another offer: the same one would get the same answer
                invitation.cid,
                SecretStr(invitation.tok),
                "thief",
                None,
                digest=codes.digest(invitation),
            )
        assert (used.value.status, used.value.code) == (403, "invitation_used")
        assert str(used.value).startswith("127.0.0.1:7001 refused the request (403 ")

        wrong = SecretStr("x" * 43)
        with pytest.raises(RemoteError) as refused:
            await remote.fetch(invitation.cid, wrong, after=0)
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
        for error in (used.value, refused.value):
            text = f"{error} {error.detail}"
            assert invitation.tok not in text
            assert answer.secret.get_secret_value() not in text
            assert "x" * 43 not in text


@pytest.mark.anyio
async def test_a_get_the_node_closed_unread_is_sent_once_more(tmp_path: Path) -> None:
    """A kept-alive connection closed by the node as it is reused: the GET goes again.

    The first connection reads the request and closes without an answer, as a node
    ending an idle kept-alive connection does; the second answers. A push (POST) is
    never sent twice.
    """
    connections: list[bytes] = []
    info = b'{"product":"exalate-tui","version":"1","api":1,"short_name":"snow"}'

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        connections.append(request.split(b" ", 1)[0])
        if len(connections) % 2 == 1:
            writer.close()  # unread, unanswered
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(info), info)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Remote(f"http://127.0.0.1:{port}") as remote:
            assert (await remote.info()).short_name == "snow"
            assert connections == [b"GET", b"GET"]
            with pytest.raises(RemoteError):
                await remote.push("00000000-0000-4000-8000-000000000001", SecretStr("s" * 43), [])
            assert connections == [b"GET", b"GET", b"POST"]
    finally:
        server.close()
        await server.wait_closed()
