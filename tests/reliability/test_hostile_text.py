"""Promise 4: text from the other side is shown inert, on screen and in the CLI.

What a partner controls: the code's names and description (connection name
and description carry any printable text, short names only letters, digits
and `._-`), and the words of its node's errors. Control characters and bidi
overrides are refused where the text enters (models.check_text, the client's
`_shown`); what is left, markup above all, must show as typed: the console
renders it with no markup interpreted (a snapshot, and the raw bytes the real
console writes to a pty), the CLI prints it escaped.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pilots import quiet

from exalate_tui.console.app import make_app
from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.transport.sqlite_streams import SqliteStreams

from .damage import seal
from .nodes import cli

NOW = 1_714_564_800.0
# Markup that would click, link, restyle or swallow text if it were interpreted.
NAME = "[@click=app.quit]pwn[/] [link=http://evil.example/x]here[/link] [bold red]B"
DESC = "[/][reverse]desc[/reverse] \\[escaped] [on red]" + "W" * 300
ERROR = "peer said: [link=http://evil.example/e]fix[/link] [@click=app.bell]now[/]"


def _hostile_home(root: Path) -> tuple[Home, str]:
    home = Home(root / "home")
    home.save_instance(Instance(short_name="jira", public_url="http://jira.test"))
    cid = str(uuid.UUID(int=7))
    home.save_connection(
        Connection(
            id=cid,
            name=NAME,
            description=DESC,
            mode=Mode.SCRIPT,
            topology=Topology.PRIVATE_PUBLIC,
            role=Role.ACCEPTOR,
            local_name="jira",
            remote_name="snow",
            created=datetime.fromtimestamp(NOW, UTC),
            status=Status.ACTIVE,
        )
    )
    state = SqliteStreams(home.state_path)
    state.record_error(cid, ERROR, NOW - 60)
    state.close()
    return home, cid


def test_a_code_carries_markup_but_never_controls_or_bidi_overrides() -> None:
    payload = {
        "v": 1,
        "cid": str(uuid.uuid4()),
        "url": None,
        "dest_url": "http://jira.test",
        "from": "snow",
        "to": "jira",
        "name": NAME,
        "desc": DESC,
        "mode": "script",
        "tok": codes.new_token(),
        "exp": int(NOW) + 3600,
    }
    invite = codes.decode(seal(json.dumps(payload).encode()))
    assert (invite.name, invite.desc) == (NAME, DESC)  # stored as typed, shown inert
    for bad in ("\x1b]52;c;aGk=\x07", "\x1b[2J", "\u202eevil", "a\u2066b", "\x9b31m"):
        for key in ("name", "desc"):
            with pytest.raises(codes.InvitationError, match=key):
                codes.decode(seal(json.dumps(payload | {key: bad}).encode()))
    for key in ("from", "to"):
        with pytest.raises(codes.InvitationError, match=key):
            codes.decode(seal(json.dumps(payload | {key: "[bold]x"}).encode()))


@pytest.mark.parametrize("where", ["connections", "detail"])
def test_the_console_shows_a_partners_markup_as_typed(
    tmp_path: Path, snap_compare: Any, where: str
) -> None:
    home, _ = _hostile_home(tmp_path)
    app = make_app(home, now=lambda: NOW, supervise=False)
    assert snap_compare(app, terminal_size=(80, 24), press=["enter"] if where == "detail" else [])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_rendered_screen_holds_the_markup_literally(tmp_path: Path) -> None:
    home, _ = _hostile_home(tmp_path)
    app = make_app(home, now=lambda: NOW, supervise=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await quiet(pilot)  # the first screen and its rows come from workers
        await pilot.press("enter")
        await pilot.pause()
        text = _screen_text(app)
    for literal in (
        "[@click=app.quit]pwn[/]",
        "[link=http://evil.example/x]here[/link]",
        "[link=http://evil.example/e]fix[/link]",
        "[reverse]desc[/reverse]",
    ):
        assert literal in text, literal


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_long_name_leaves_every_column_on_an_80_column_screen(tmp_path: Path) -> None:
    """The partner's long name is cut, not the status: the tab still says it is failing."""
    home, _ = _hostile_home(tmp_path)
    app = make_app(home, now=lambda: NOW, supervise=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await quiet(pilot)  # the first screen and its rows come from workers
        text = _screen_text(app)
    for column in ("Topology / mode", "Status", "Created", "Unreachable", "2024-05-01"):
        assert column in text, column
    assert "jira → snow" in text  # the name's second line is not pushed out by the name


def _screen_text(app: Any) -> str:
    """The screen as plain text, from Textual's own SVG export."""
    import html
    import re

    svg = app.export_screenshot()
    lines = re.findall(r"<text[^>]*>(.*?)</text>", svg)
    return html.unescape("".join(lines)).replace("\xa0", " ")


class _Hostile(BaseHTTPRequestHandler):
    """A peer whose node answers every call with escapes, bidi and markup in its error."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps(
            {
                "error": "invitation_used\x1b]52;c;aGFjaw==\x07",
                "detail": "\x1b[2J\x1b]0;pwned\x07\u202e[bold]desrever[/bold] " + "Z" * 5000,
            }
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_cli_prints_a_hostile_nodes_error_escaped_and_bounded(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        invite = codes.Invitation.model_validate(
            {
                "cid": str(uuid.uuid4()),
                "url": url,
                "dest_url": None,
                "from": "snow",
                "to": "jira",
                "name": NAME,
                "desc": DESC,
                "mode": "script",
                "tok": codes.new_token(),
                "exp": int(time.time()) + 3600,
            }
        )
        home = tmp_path / "jira"
        cli(home, "init", "--short-name", "jira")
        done = cli(home, "accept", codes.encode(invite), check=False)
    finally:
        server.shutdown()
    out = done.stdout + done.stderr
    assert done.returncode == 1, out  # not an answer of ours: "could not contact"
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert "desrever" in done.stderr and len(done.stderr.splitlines()[-1]) < 600
    listed = cli(home, "connections", "--json").stdout
    assert json.loads(listed)["connections"] == []  # a refused accept stores nothing


def _read(fd: int, seconds: float) -> bytes:
    data = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_no_escape_from_a_partner_reaches_the_terminal(tmp_path: Path) -> None:
    """The real console under a pty: every byte it writes, with the partner's text on screen."""
    home, _ = _hostile_home(tmp_path)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "TEXTUAL_ANIMATIONS": "none",
        "COLORTERM": "truecolor",
    }
    console = subprocess.Popen(
        [sys.executable, "-m", "exalate_tui.cli", "--home", str(home.path)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    try:
        output = _read(master, 8)
        os.write(master, b"\r")  # open the connection's details
        output += _read(master, 4)
        os.write(master, b"\x11")  # ctrl+q: no node runs, so it asks (start one first?)
        output += _read(master, 3)
        os.write(master, b"q")  # quit without it
        output += _read(master, 5)
        console.wait(20)
    finally:
        if console.poll() is None:
            console.kill()
        os.close(master)
    assert b"pwn" in output and b"evil.example" in output  # the partner's text was drawn
    assert b"\x1b]52" not in output  # no clipboard write
    assert b"\x1b]8;" not in output  # no hyperlink: the [link=...] was not interpreted
    assert b"\x1b]0;" not in output and b"\x1b]2;" not in output  # no title set
    assert "\u202e".encode() not in output
