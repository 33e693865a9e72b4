"""Promise 3: secrets never leak, and what is refused about signatures and tokens.

The refusals themselves are tested where the node is (tests/test_node.py):
replayed, stale, future-dated, wrong-connection and wrong-secret requests
(`test_every_bad_signature_is_401_with_one_body_and_changes_nothing`,
`test_a_replayed_request_is_refused`), used and expired tokens
(`test_a_used_token_is_refused_and_changes_nothing`,
`test_an_expired_token_is_refused_and_changes_nothing`), raced handshakes.

Here: real flows (initiate, accept with its handshake, polls and pushes, the
errors on the way) while everything a person or a log could see is kept:
log records at DEBUG, the `--json` and plain output of the CLI, exception
messages and reprs, the console's screens, and the logs of real node
processes. Neither the handshake token nor the connection secret may appear
in any of it; the invitation code (which carries the token) only where it is
shown on purpose: `initiate`'s output.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from pilots import quiet
from pydantic import SecretStr

from exalate_tui import cli
from exalate_tui.console.app import make_app
from exalate_tui.domain import invitation as codes
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import runtime
from exalate_tui.lifecycle.accept import AcceptError, accept
from exalate_tui.lifecycle.runtime import Supervisor
from exalate_tui.protocol import signing
from exalate_tui.transport.client import Remote, RemoteError
from exalate_tui.transport.sqlite_streams import SqliteStreams

from .nodes import NodeProcess, cli_json, free_port
from .nodes import cli as run_cli


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _run_cli(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        cli.main(list(args))
    return out.getvalue() + err.getvalue()


def _secrets_of(home: Home, cid: str) -> list[str]:
    connection = home.get_connection(cid)
    found = []
    if connection.secret is not None:
        found.append(connection.secret.get_secret_value())
    if connection.token is not None:
        found.append(connection.token.get_secret_value())
    return found


@pytest.mark.anyio
async def test_no_secret_in_logs_output_errors_or_screens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []  # everything shown to a person or written to a log
    a, b = tmp_path / "snow", tmp_path / "jira"
    seen.append(
        _run_cli(
            "--home", str(a), "init", "--short-name", "snow", "--public-url", "http://snow.test"
        )
    )
    seen.append(_run_cli("--home", str(b), "init", "--short-name", "jira"))
    issued = _run_cli(
        "--home",
        str(a),
        "initiate",
        "--no-url",
        "--mode",
        "script",
        "--local-name",
        "snow",
        "--remote-name",
        "jira",
        "--json",
    )
    code = json.loads(issued)["code"]
    invite = codes.decode(code)
    token = invite.tok
    home_a, home_b = Home(a), Home(b)
    state_a, state_b = SqliteStreams(home_a.state_path), SqliteStreams(home_b.state_path)
    app = runtime.node_app(home_a, state_a)
    transport = httpx.ASGITransport(app=app)
    try:
        connection = await accept(home_b, state_b, invite, transport=transport)
        secret = home_b.get_connection(invite.cid).secret
        assert secret is not None and secret.get_secret_value() in _secrets_of(home_a, invite.cid)
        seen += [repr(connection), str(connection), repr(home_b.get_connection(invite.cid))]
        # Traffic both ways through the private side's supervisor.
        state_a.enqueue(invite.cid, "ping", {"n": 1})
        state_b.enqueue(invite.cid, "ping", {"n": 2})
        supervisor = Supervisor(home_b, state_b, transport=transport, wait=0.2, rescan=0.1)
        task = asyncio.create_task(supervisor.run())
        deadline = time.monotonic() + 20
        while state_a.last_applied(invite.cid) < 2 or state_b.last_applied(invite.cid) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Errors on the way: a used code, a wrong secret, a replay, a handshake gone wrong.
        with pytest.raises(AcceptError) as used:
            await accept(
                Home(tmp_path / "other"),
                SqliteStreams(tmp_path / "o.sqlite3"),
                invite,
                "other",
                transport=transport,
            )
        seen += [str(used.value), repr(used.value)]
        async with Remote("http://snow.test", transport=transport) as remote:
            for attempt in (
                remote.fetch(invite.cid, SecretStr("w" * 43), 0),
                remote.handshake(invite.cid, SecretStr(token), "jira", None),
                remote.push(invite.cid, SecretStr(secret.get_secret_value()[::-1]), []),
            ):
                with pytest.raises(RemoteError) as refused:
                    await attempt
                seen += [str(refused.value), repr(refused.value), repr(refused.value.detail)]
        async with httpx.AsyncClient(transport=transport, base_url="http://snow.test") as raw:
            path = f"/api/v1/connections/{invite.cid}/messages"
            header = signing.sign(secret.get_secret_value(), "GET", path, "", b"")
            for _ in range(2):  # the second is a replay
                answer = await raw.get(path, headers={"Authorization": header})
                seen.append(answer.text)
            seen.append((await raw.post("/api/v1/handshake", content=b"{" + token.encode())).text)
            seen.append(
                (
                    await raw.post(
                        "/api/v1/handshake",
                        json={"cid": invite.cid, "tok": token, "short_name": "x" * 99},
                    )
                ).text
            )
    finally:
        # Long-polls answered and the node's watcher gone before its state closes.
        app.state.node.remove_listener()
        await app.state.node.wakeups.aclose()
        state_a.close()
        state_b.close()
    for folder in (a, b):
        seen.append(_run_cli("--home", str(folder), "connections", "--json"))
        seen.append(_run_cli("--home", str(folder), "connections"))
        seen.append(_run_cli("--home", str(folder), "connections", "show", invite.cid, "--json"))
        seen.append(_run_cli("--home", str(folder), "connections", "show", invite.cid))
    # The consoles: the Connections tab and the connection's details, on both sides.
    for home in (home_a, home_b):
        console = make_app(home, supervise=False)
        async with console.run_test(size=(120, 40)) as pilot:
            await quiet(pilot)  # the first screen and its rows come from workers
            seen.append(console.export_screenshot())
            await pilot.press("enter")
            await pilot.pause()
            assert type(console.screen).__name__ == "ConnectionDetailScreen"
            seen.append(console.export_screenshot())
    seen.append(caplog.text)
    seen += [r.getMessage() + repr(r.args) for r in caplog.records]

    everything = "\n".join(seen)
    for name, value in (
        ("token", token),
        ("secret", secret.get_secret_value()),
        ("invitation code", code),
    ):
        assert value not in everything, f"the {name} leaked"
    assert token not in issued and code in issued  # initiate prints the code, and only that


@pytest.mark.e2e
def test_no_secret_in_the_logs_of_real_node_processes(tmp_path: Path) -> None:
    public = NodeProcess(tmp_path / "snow", free_port(), tmp_path / "snow.log")
    private = NodeProcess(tmp_path / "jira", free_port(), tmp_path / "jira.log")
    run_cli(public.home, "init", "--short-name", "snow", "--public-url", public.url)
    run_cli(private.home, "init", "--short-name", "jira")
    issued = cli_json(
        public.home,
        "initiate",
        "--no-url",
        "--mode",
        "basic",
        "--local-name",
        "snow",
        "--remote-name",
        "jira",
    )
    code, cid = issued["code"], issued["connection"]["id"]
    token = codes.decode(code).tok
    public.start()
    outputs = [run_cli(private.home, "accept", code).stdout]
    private.start()
    try:
        state = SqliteStreams(public.home / "state.sqlite3")
        state.enqueue(cid, "ping", {"n": 1})
        deadline = time.monotonic() + 30
        while SqliteStreams(private.home / "state.sqlite3").last_applied(cid) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        state.close()
        again = run_cli(tmp_path / "other", "accept", code, "--short-name", "x", check=False)
        outputs += [again.stdout, again.stderr]
        secret = Home(public.home).get_connection(cid).secret
        assert secret is not None
        with httpx.Client(base_url=public.url) as raw:
            path = f"/api/v1/connections/{cid}/messages"
            header = signing.sign(secret.get_secret_value()[::-1], "GET", path, "", b"")
            outputs.append(raw.get(path, headers={"Authorization": header}).text)
    finally:
        assert public.stop() == 0 and private.stop() == 0
    logs = public.log.read_text() + private.log.read_text()
    assert "listening on" in logs  # the logs were written
    everything = logs + "\n".join(outputs)
    for name, value in (("token", token), ("secret", secret.get_secret_value()), ("code", code)):
        assert value not in everything, f"the {name} leaked"
