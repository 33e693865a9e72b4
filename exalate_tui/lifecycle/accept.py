"""Accepting an invitation: the I/O half of the Accept flow, for the console and the CLI.

`acceptance` says whether a code can be accepted here; `accept` checks it
again on the home as it is now, then does it. A private acceptor and a
public-public acceptor perform the handshake with the initiator at once; a
public acceptor of a private initiator stores the token's hash and waits for
the initiator to call. Every check happens before the first write, so a
refused accept leaves the home as it was.

Everything that can fail here fails before the token is presented (the
token burns at the partner): the home must take a write, an existing
`state.sqlite3` must open, the name must be free. A stage is reported only
once it is true. Should storing still fail after the handshake, the same
accept run again within `handshake.GRACE` gets the same secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import CONNECTION_NAME_MAX, Connection, Role, Status, Topology
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home, NameTaken
from exalate_tui.lifecycle.acceptance import LABELS, Stage, problems
from exalate_tui.lifecycle.handshake import GRACE, greet
from exalate_tui.transport.client import Remote, RemoteError
from exalate_tui.transport.delivery import deliver
from exalate_tui.transport.storage import database_url, state_exists
from exalate_tui.transport.streams import Streams

log = logging.getLogger(__name__)

Progress = Callable[[Stage], object]
# The console passes its open streams; the CLI passes an opener, so that a
# refused accept does not even create `state.sqlite3`.
StateSource = Streams | Callable[[], Streams]


class AcceptError(ExalateError):
    """The accept did not happen; str() is one line saying why and what to do.

    `bad_input` is True when the code or the entered details are at fault
    (damaged, expired, used, a taken name): the CLI exits 2 for those.
    """

    def __init__(self, message: str, *, bad_input: bool) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def _handshake_failure(error: RemoteError, invite: codes.Invitation) -> AcceptError:
    partner = invite.from_
    match error.code:
        case "invitation_used":
            message = f"This invitation was already used: ask {partner} for a new code."
        case "invitation_expired":
            message = f"This invitation has expired: ask {partner} for a new code."
        case "invalid_invitation":
            message = (
                f"{partner}'s instance does not know this invitation (it was replaced or the "
                f"connection deleted): ask {partner} for a new code."
            )
        case _:
            return AcceptError(f"Could not contact {partner}: {error}", bad_input=False)
    return AcceptError(message, bad_input=True)


# A probe this big fails on a disk too full to take a connection file and its state.
PROBE_BYTES = 64 * 1024


def _probe(home: Home) -> None:
    """Raise AcceptError unless the home (or, not made yet, where it goes) takes a write."""
    folders = [p for p in (home.connections_dir, home.path) if p.is_dir()]
    if not folders:
        parent = home.path.parent
        while not parent.is_dir() and parent != parent.parent:
            parent = parent.parent
        folders = [parent]
    for folder in folders:
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".accept-probe-") as probe:
                probe.write(b"\0" * PROBE_BYTES)
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as error:
            raise AcceptError(
                f"Cannot write in {folder} ({error.strerror or error}): free some space or "
                "fix its permissions, then accept again; the code is still unused.",
                bad_input=False,
            ) from None


def _open_state(home: Home, state: StateSource) -> Streams | None:
    """The state, opened now when it exists (a damaged one, or a database that cannot
    be reached, fails here, before the handshake); None when it is to be made once
    there is something to store."""
    if not callable(state):
        return state
    if not state_exists(home):
        return None
    try:
        opened = state()
    except ExalateError as error:
        raise AcceptError(f"{error}; the code is still unused.", bad_input=False) from None
    if database_url(home) is not None:
        try:
            opened.check()
        except ExalateError as error:
            opened.close()
            raise AcceptError(f"{error}; the code is still unused.", bad_input=False) from None
        return opened
    problem = _damage(home)
    if problem is not None:
        opened.close()
        raise AcceptError(
            f"{home.state_path}: the message store is damaged ({problem}); move it aside "
            "and accept again (undelivered messages in it would be lost); the code is "
            "still unused.",
            bad_input=False,
        )
    return opened


def _damage(home: Home) -> str | None:
    """What SQLite's quick check finds wrong with the state (it opens, yet may not hold)."""
    uri = home.state_path.resolve().as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=30)
        try:
            row = db.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as error:
        return str(error)
    return None if row is not None and row[0] == "ok" else str(row[0] if row else "no answer")


def _save(home: Home, connection: Connection) -> Connection:
    """Store after a handshake: the token is burnt, so a name clash must not lose the secret."""
    try:
        home.save_connection(connection)
    except NameTaken:
        # Someone took the name since the wizard checked it; keep both, tell them apart.
        suffix = f" ({connection.id[:8]})"
        name = connection.name[: CONNECTION_NAME_MAX - len(suffix)] + suffix
        connection = connection.model_copy(update={"name": name})
        home.save_connection(connection)
    return connection


async def accept(
    home: Home,
    state: StateSource,
    invite: codes.Invitation,
    short_name: str | None = None,
    progress: Progress | None = None,
    *,
    name: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    now: Callable[[], float] = time.time,
) -> Connection:
    """Accept `invite` for this home; on `AcceptError` nothing was written.

    `short_name` defaults to the instance's, `name` to the code's connection name.
    """
    instance = home.load_instance()
    public_url = instance.public_url if instance else None
    local_name = short_name if short_name is not None else instance.short_name if instance else ""
    name = invite.name if name is None else name
    found = problems(
        invite, local_name, name, home.load_connections().connections, public_url, now()
    )
    if found:
        field, reason = next(iter(found.items()))
        if field == "local_name" and not local_name:
            reason = f"{LABELS[field]} is required: pass --short-name or run `init`."
        raise AcceptError(reason, bad_input=True)

    def stage(step: Stage) -> None:
        if progress is not None:
            progress(step)

    await asyncio.to_thread(_probe, home)
    if invite.topology is Topology.PRIVATE_PUBLIC:
        connection = _wait_for_initiator(home, invite, local_name, name)
        stage(Stage.WAITING)
        return connection
    opened = await asyncio.to_thread(_open_state, home, state)
    return await _handshake(
        home, opened or state, invite, local_name, name, public_url, stage, transport
    )


def _store(
    home: Home, state_source: StateSource, connection: Connection
) -> tuple[Streams, Connection]:
    """After the handshake: hello enqueued (once, even on a second try), then the file."""
    if callable(state_source):
        home.ensure()
        state = state_source()
    else:
        state = state_source
    # hello first: once the file says Active anything may be enqueued, and hello is seq 1.
    # An earlier try that stopped before the file was written left it there already.
    if not state.pending(connection.id, 0, 1):
        greet(state, connection)
    return state, _save(home, connection)


def _acceptor(invite: codes.Invitation, name: str, local_name: str, **rest: Any) -> Connection:
    """This side's connection for `invite`: what the code says, and what differs by topology."""
    return Connection(
        id=invite.cid,
        name=name,
        description=invite.desc,
        mode=invite.mode,
        topology=invite.topology,
        role=Role.ACCEPTOR,
        local_name=local_name,
        **rest,
    )


def _wait_for_initiator(
    home: Home, invite: codes.Invitation, local_name: str, name: str
) -> Connection:
    """Private-public: hold the token's hash; the initiator's supervisor calls us."""
    connection = _acceptor(
        invite,
        name,
        local_name,
        remote_name=invite.from_,
        token_hash=codes.hash_token(invite.tok),
        code_digest=codes.digest(invite),
        token_expires=datetime.fromtimestamp(invite.exp, UTC),
        status=Status.PENDING,
    )
    try:
        home.save_connection(connection)
    except NameTaken as error:
        raise AcceptError(f"{error}: choose another connection name.", bad_input=True) from None
    except OSError as error:
        raise AcceptError(
            f"Cannot store the connection ({error}): fix that and accept again; "
            "the code is still unused.",
            bad_input=False,
        ) from None
    return connection


async def _handshake(
    home: Home,
    state_source: StateSource,
    invite: codes.Invitation,
    local_name: str,
    name: str,
    public_url: str | None,
    stage: Progress,
    transport: httpx.AsyncBaseTransport | None,
) -> Connection:
    """Public-private or public-public: present the token to the initiator now."""
    assert invite.url is not None  # both topologies have an initiator URL
    our_url = public_url if invite.topology is Topology.PUBLIC_PUBLIC else None
    stage(Stage.CONTACTING)
    async with Remote(invite.url, transport=transport) as remote:
        try:
            answer = await remote.handshake(
                invite.cid,
                SecretStr(invite.tok),
                local_name,
                our_url,
                digest=codes.digest(invite),
            )
        except RemoteError as error:
            raise _handshake_failure(error, invite) from None
        connection = _acceptor(
            invite,
            name,
            local_name,
            remote_name=answer.short_name or invite.from_,
            remote_url=invite.url,
            secret=answer.secret,
            status=Status.ACTIVE,
        )
        try:
            state, connection = await asyncio.to_thread(_store, home, state_source, connection)
        except (OSError, sqlite3.Error, ExalateError) as error:
            raise AcceptError(
                f"{invite.from_} accepted the invitation, but this side could not store the "
                f"connection ({error}): fix that and run the same accept again within "
                f"{GRACE / 60:g} minutes ({invite.from_}'s node answers it again).",
                bad_input=False,
            ) from None
        stage(Stage.ACCEPTED)
        # Delivering the hello proves the secret works both ways; when it cannot be
        # delivered now, the supervisor keeps trying and the contact shows why.
        # The connection is stored: from here a local failure (the disk) is no reason to
        # fail the accept either.
        try:
            pending = await asyncio.to_thread(state.pending, connection.id)
            await deliver(remote, state, connection.id, answer.secret, pending)
            await asyncio.to_thread(state.record_ok, connection.id)
        except Exception as error:  # noqa: BLE001 - recorded; the supervisor retries
            log.warning("the hello of %s is not delivered yet: %s", connection.id, error)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(state.record_error, connection.id, str(error))
        else:
            stage(Stage.CONNECTED)
    return connection
