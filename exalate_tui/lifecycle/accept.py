"""Accepting an invitation: the I/O half of the Accept flow, for the console and the CLI.

`wizard.AcceptWizard` decides whether a code can be accepted here; `accept`
does it. A private acceptor and a public-public acceptor perform the
handshake with the initiator at once; a public acceptor of a private
initiator stores the token's hash and waits for the initiator to call. Every
check happens before the first write, so a refused accept leaves the home
as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from pydantic import SecretStr

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import CONNECTION_NAME_MAX, Connection, Role, Status, Topology
from exalate_tui.flows.wizard import ACCEPT_LABELS, AcceptWizard, Stage
from exalate_tui.home.store import Home, NameTaken
from exalate_tui.transport.client import Remote, RemoteError
from exalate_tui.transport.streams import State

Progress = Callable[[Stage], None]
# The console passes its open State; the CLI passes an opener, so that a
# refused accept does not even create `state.sqlite3`.
StateSource = State | Callable[[], State]


class AcceptError(Exception):
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
    source: AcceptWizard | codes.Invitation,
    short_name: str | None = None,
    progress: Progress | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    now: Callable[[], float] = time.time,
) -> Connection:
    """Accept the code in `source` for this home; on `AcceptError` nothing was written."""
    if isinstance(source, AcceptWizard):
        wizard = source
    else:
        wizard = AcceptWizard(home, home.load_instance(), now=now)
        wizard.set_invitation(source)
    if short_name is not None:
        wizard.set_local_name(short_name)
    problems = wizard.problems()
    if problems:
        field, reason = next(iter(problems.items()))
        if field == "local_name" and not wizard.local_name:
            reason = f"{ACCEPT_LABELS[field]} is required: pass --short-name or run `init`."
        wizard.record_failure(reason)
        raise AcceptError(reason, bad_input=True)
    invite = wizard.invitation
    assert invite is not None  # problems() reports a missing code

    def stage(step: Stage) -> None:
        wizard.record_stage(step)
        if progress is not None:
            progress(step)

    try:
        if invite.topology is Topology.PRIVATE_PUBLIC:
            connection = _wait_for_initiator(home, wizard, invite)
            stage(Stage.WAITING)
        else:
            connection = await _handshake(home, state, wizard, invite, stage, transport)
    except AcceptError as error:
        wizard.record_failure(str(error))
        raise
    wizard.record_done(connection)
    return connection


def _wait_for_initiator(home: Home, wizard: AcceptWizard, invite: codes.Invitation) -> Connection:
    """Private-public: hold the token's hash; the initiator's supervisor calls us."""
    connection = Connection(
        id=invite.cid,
        name=wizard.name,
        description=invite.desc,
        mode=invite.mode,
        topology=invite.topology,
        role=Role.ACCEPTOR,
        local_name=wizard.local_name,
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
    wizard: AcceptWizard,
    invite: codes.Invitation,
    stage: Progress,
    transport: httpx.AsyncBaseTransport | None,
) -> Connection:
    """Public-private or public-public: present the token to the initiator now."""
    assert invite.url is not None  # both topologies have an initiator URL
    our_url = wizard.public_url if invite.topology is Topology.PUBLIC_PUBLIC else None
    stage(Stage.CONTACTING)
    async with Remote(invite.url, transport=transport) as remote:
        try:
            answer = await remote.handshake(
                invite.cid,
                SecretStr(invite.tok),
                wizard.local_name,
                our_url,
                digest=codes.digest(invite),
            )
        except RemoteError as error:
            raise _handshake_failure(error, invite) from None
        stage(Stage.ACCEPTED)
        # hello first: once the file says Active anything may be enqueued, and hello is seq 1.
        state = state_source if isinstance(state_source, State) else state_source()
        state.enqueue(invite.cid, "hello", {"short_name": wizard.local_name})
        connection = _save(
            home,
            Connection(
                id=invite.cid,
                name=wizard.name,
                description=invite.desc,
                mode=invite.mode,
                topology=invite.topology,
                role=Role.ACCEPTOR,
                local_name=wizard.local_name,
                remote_name=answer.short_name or invite.from_,
                remote_url=invite.url,
                secret=answer.secret,
                status=Status.ACTIVE,
            ),
        )
        # Delivering the hello proves the secret works both ways; when it cannot be
        # delivered now, the supervisor keeps trying and the contact shows why.
        try:
            applied = await remote.push(connection.id, answer.secret, state.pending(connection.id))
        except RemoteError as error:
            state.record_error(connection.id, str(error))
        else:
            state.ack(connection.id, applied)
            state.record_ok(connection.id)
            stage(Stage.CONNECTED)
    return connection
