"""Promise 1: every damaged invitation code is refused with a one-line reason.

Hypothesis builds valid codes, then damages them the ways codes get damaged
(strategies in damage.py): truncated, bit-flipped, re-encoded, wrong version,
oversized, non-UTF-8, wrong types, missing or extra keys, odd or past expiry.
Three ways in are checked: `invitation.decode`, the `AcceptWizard` the
console's Accept screen drives (`set_code`, then `next`), and
`exalate-tui accept` as a process. A code changed anywhere in its payload and
re-sealed is never accepted by a real node's /handshake.

RELIABILITY_SCALE scales the example counts: at 1 (CI) decode sees over
10,000 damaged codes, the wizard 2,000, the CLI 200 (in one process that runs
`cli.main` for each, five of them also as a process of their own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import NonInteractiveExampleWarning

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Instance, Mode, Status
from exalate_tui.flows.accept import AcceptStep, AcceptWizard
from exalate_tui.flows.initiate import InitiateWizard
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import runtime
from exalate_tui.lifecycle.accept import AcceptError, accept
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.transport.sqlite_streams import SqliteStreams

from . import damage
from .damage import examples, invitations, seal

NOW = time.time()
DECODE = examples(2_500, least=50)


def _refused(text: str) -> str:
    try:
        codes.decode(text)
    except codes.InvitationError as error:
        reason = str(error)
        assert reason and "\n" not in reason and len(reason) < 300, reason
        return reason
    raise AssertionError(f"accepted a damaged code: {text[:120]!r}")


# -- decode ------------------------------------------------------------------------------


@DECODE
@given(damage.truncated(invitations()))
def test_truncated_codes_are_refused(code: str) -> None:
    _refused(code)


@DECODE
@given(damage.bit_flipped(invitations()))
def test_any_changed_character_is_refused(code: str) -> None:
    _refused(code)


@DECODE
@given(damage.bad_fields(invitations()))
def test_wrong_types_missing_and_extra_keys_are_refused(code: str) -> None:
    _refused(code)


@DECODE
@given(damage.garbage)
def test_non_json_and_non_utf8_payloads_are_refused(code: str) -> None:
    _refused(code)


@examples(500)
@given(damage.bad_expiry(invitations()))
def test_expiry_out_of_range_is_refused(code: str) -> None:
    _refused(code)


def test_oversized_codes_are_refused_quickly() -> None:
    for code in damage.oversized():
        started = time.perf_counter()
        assert "too long" in _refused(code)
        assert time.perf_counter() - started < 0.5


# -- the console's Accept screen: the wizard it drives ----------------------------------


@pytest.fixture(scope="module")
def acceptor(tmp_path_factory: pytest.TempPathFactory) -> Home:
    home = Home(tmp_path_factory.mktemp("acceptor") / "home")
    home.save_instance(Instance(short_name="jira", public_url="https://jira.example.com"))
    return home


def _files(home: Home) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(home.path)), p.stat().st_size) for p in home.path.rglob("*"))


@examples(2_000)
@given(damage.damaged_codes(NOW))
def test_the_accept_screen_refuses_every_damaged_code(acceptor: Home, code: str) -> None:
    before = _files(acceptor)
    wizard = AcceptWizard(
        acceptor.load_instance(), acceptor.load_connections().connections, now=lambda: NOW
    )
    reason = wizard.set_code(code)
    assert reason and "\n" not in reason and len(reason) < 300, reason
    assert wizard.errors["code"] == reason
    assert not wizard.next()
    assert wizard.step is AcceptStep.CODE
    assert _files(acceptor) == before


@examples(20)
@given(invitations(exp=st.just(int(NOW) + 3600)))
def test_the_accept_screen_takes_an_intact_code_pasted_over_lines(
    acceptor: Home, invite: codes.Invitation
) -> None:
    code = codes.encode(invite)
    wizard = AcceptWizard(
        acceptor.load_instance(), acceptor.load_connections().connections, now=lambda: NOW
    )
    assert wizard.set_code("\n".join(code[i : i + 60] for i in range(0, len(code), 60))) is None
    assert wizard.next() and wizard.step is AcceptStep.DETAILS


# -- exalate-tui accept, as a process ------------------------------------------------------

CLI_CASES = max(20, int(200 * damage.SCALE))


def _cli_cases() -> list[str]:
    strategy = damage.damaged_codes(NOW)
    seen: list[str] = list(damage.oversized())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        while len(seen) < CLI_CASES:
            seen.append(strategy.example())
    return seen


# Each process imports the CLI once and tries many codes; one process per code for a sample.
_RUNNER = """
import contextlib, io, json, sys
from exalate_tui import cli
results = []
for code in json.load(sys.stdin):
    err = io.StringIO()
    sys.stdin = io.StringIO(code)
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        status = cli.main(["--home", sys.argv[1], "accept", "-"])
    results.append([status, err.getvalue(), out.getvalue()])
json.dump(results, sys.__stdout__)
"""


def _assert_refused(status: int, stderr: str, stdout: str, code: str) -> None:
    lines = stderr.splitlines()
    assert status == 2, (code[:120], stderr)
    assert len(lines) == 1 and lines[0].startswith("exalate-tui accept: CODE: "), stderr
    assert "Traceback" not in stderr and stdout == ""


def test_exalate_tui_accept_refuses_every_damaged_code(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.save_instance(Instance(short_name="jira", public_url="https://jira.example.com"))
    before = _files(home)
    cases = _cli_cases()
    # The first five (three of them about a megabyte) as separate processes, as a user runs it.
    for code in cases[:5]:
        done = subprocess.run(
            [sys.executable, "-m", "exalate_tui.cli", "--home", str(home.path), "accept", "-"],
            input=code,
            capture_output=True,
            text=True,
            timeout=60,
        )
        _assert_refused(done.returncode, done.stderr, done.stdout, code)
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(home.path)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == len(cases)
    for code, (status, stderr, stdout) in zip(cases, results, strict=True):
        _assert_refused(status, stderr, stdout, code)
    assert _files(home) == before  # not even state.sqlite3


# -- the node: a code changed anywhere in its payload is never accepted -----------------


class Initiator:
    """A public node that issued one invitation (public-private), served in-process."""

    def __init__(self, root: Path) -> None:
        self.home = Home(root / "initiator")
        self.home.save_instance(Instance(short_name="snow", public_url="http://snow.test"))
        self.state = SqliteStreams(self.home.state_path)
        self.app = runtime.node_app(self.home, self.state)
        instance = self.home.load_instance()
        assert instance is not None
        wizard = InitiateWizard(instance, self.home.load_connections().connections)
        wizard.choose_no_url()
        wizard.set_mode(Mode.SCRIPT)
        wizard.set_remote_name("jira")
        wizard.set_description("the desk")
        while wizard.issued is None:
            assert wizard.next(), wizard.errors
        assert save_issued(self.home, wizard.issued.connection, wizard.new_instance)
        self.code = wizard.issued.code
        self.invite = wizard.issued.invitation
        self.cid = wizard.issued.connection.id


@pytest.fixture
def initiator(tmp_path: Path) -> Iterator[Initiator]:
    side = Initiator(tmp_path)
    yield side
    side.state.close()


def _changed(payload: dict[str, object], key: str, data: st.DataObject) -> object:
    """Another value for `key` that still validates."""
    old = payload[key]
    if key == "exp":
        return data.draw(st.integers(int(NOW) + 60, 253_402_300_799).filter(lambda v: v != old))
    if key in ("from", "to"):
        return data.draw(damage.short_names.filter(lambda v: v != old))
    if key == "mode":
        return "basic" if old == "script" else "script"
    if key in ("url", "dest_url"):
        return data.draw(st.sampled_from(["http://evil.test", None]).filter(lambda v: v != old))
    if key == "tok":
        return codes.new_token()
    if key == "cid":
        return str(uuid.uuid4())
    return data.draw(st.text(min_size=1, max_size=30).filter(lambda v: v.strip() and v != old))


async def _accept(initiator: Initiator, code_or_invite: str | codes.Invitation, root: Path) -> None:
    home = Home(root)
    home.save_instance(Instance(short_name="jira"))
    invite = codes.decode(code_or_invite) if isinstance(code_or_invite, str) else code_or_invite
    state = SqliteStreams(home.state_path)
    try:
        await accept(home, state, invite, transport=httpx.ASGITransport(app=initiator.app))
    finally:
        state.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@examples(60, least=12)
@given(data=st.data())
async def test_a_node_never_accepts_a_code_changed_anywhere(
    initiator: Initiator, tmp_path: Path, data: st.DataObject
) -> None:
    payload = damage.payload_of(initiator.invite)
    key = data.draw(st.sampled_from(sorted(set(payload) - {"v"})))
    payload[key] = _changed(payload, key, data)
    try:
        tampered = codes.decode(seal(json.dumps(payload).encode()))
    except codes.InvitationError:
        return  # refused before any network call
    where = tmp_path / f"acceptor-{os.urandom(4).hex()}"
    with pytest.raises(AcceptError):
        await _accept(initiator, tampered, where)
    assert initiator.home.get_connection(initiator.cid).status is Status.PENDING


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_same_code_untouched_is_accepted(initiator: Initiator, tmp_path: Path) -> None:
    await _accept(initiator, initiator.code, tmp_path / "acceptor")
    assert initiator.home.get_connection(initiator.cid).status is Status.ACTIVE
