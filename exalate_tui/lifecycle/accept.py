"""Accepting an invitation: the I/O half of the Accept flow, for the console and the CLI.

`acceptance` says whether a code can be accepted here; `accept` checks it
again on the home as it is now, then does it. A private acceptor and a
public-public acceptor perform the handshake with the initiator at once; a
public acceptor of a private initiator stores the token's hash and waits for
the initiator to call. Every check happens before the first write, so a
refused accept leaves the home as it was.
"""

from __future__ import annotations

import asyncio
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
from exalate_tui.lifecycle.handshake import greet
from exalate_tui.transport.client import Remote, RemoteError
from exalate_tui.transport.delivery import deliver
from exalate_tui.transport.sqlite_streams import SqliteStreams

Progress = Callable[[Stage], object]
# The console passes its open SqliteStreams; the CLI passes an opener, so that a
# refused accept does not even create `state.sqlite3`.
StateSource = SqliteStreams | Callable[[], SqliteStreams]


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

    if invite.topology is Topology.PRIVATE_PUBLIC:
        connection = _wait_for_initiator(home, invite, local_name, name)
        stage(Stage.WAITING)
        return connection
    return await _handshake(home, state, invite, local_name, name, public_url, stage, transport)


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
        stage(Stage.ACCEPTED)
        connection = _acceptor(
            invite,
            name,
            local_name,
            remote_name=answer.short_name or invite.from_,
            remote_url=invite.url,
            secret=answer.secret,
            status=Status.ACTIVE,
        )
        state = state_source if isinstance(state_source, SqliteStreams) else state_source()
        # hello first: once the file says Active anything may be enqueued, and hello is seq 1.
        await asyncio.to_thread(greet, state, connection)
        connection = await asyncio.to_thread(_save, home, connection)
        # Delivering the hello proves the secret works both ways; when it cannot be
        # delivered now, the supervisor keeps trying and the contact shows why.
        try:
            pending = await asyncio.to_thread(state.pending, connection.id)
            await deliver(remote, state, connection.id, answer.secret, pending)
        except RemoteError as error:
            await asyncio.to_thread(state.record_error, connection.id, str(error))
        else:
            await asyncio.to_thread(state.record_ok, connection.id)
            stage(Stage.CONNECTED)
    return connection
