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
from collections.abc import Iterator
from pathlib import Path

import pytest

from exalate_tui.client import verify_url


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
