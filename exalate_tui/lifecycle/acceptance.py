"""Whether an invitation code can be accepted in this home: the rule, once.

Pure: it judges a decoded invitation against this instance's public URL and
the connections the home holds (a snapshot handed in). The Accept wizard
calls it to show what is wrong as the admin types; `accept.accept` calls it
again on a fresh reading of the home, before any I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import (
    CONNECTION_NAME_MAX,
    Connection,
    Role,
    Topology,
    check_short_name,
    check_text,
)

LABELS = {
    "code": "Invitation code",
    "local_name": "Local instance short name",
    "name": "Connection name",
}


class Stage(StrEnum):
    """What accepting is doing, shown as it happens."""

    CONTACTING = "contacting"
    ACCEPTED = "accepted"
    CONNECTED = "connected"
    # A public acceptor of a private initiator: stored, the initiator calls in.
    WAITING = "waiting"


def code_problem(
    invite: codes.Invitation,
    known: Sequence[Connection],
    public_url: str | None,
    now: float,
) -> str | None:
    """Why this code cannot be accepted here (expired, issued or accepted here, no URL)."""
    if invite.expired(now):
        when = datetime.fromtimestamp(invite.exp, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"This invitation expired on {when}: ask {invite.from_} for a new code."
    existing = next((c for c in known if c.id == invite.cid), None)
    if existing is not None:
        if existing.role is Role.INITIATOR:
            return (
                "This instance issued this invitation: send the code to your partner, "
                "who accepts it on their side."
            )
        return f"This invitation was already accepted here (connection {existing.name!r})."
    if invite.topology is not Topology.PUBLIC_PRIVATE and not public_url:
        return (
            f"This code is for an instance with a public URL ({invite.dest_url}), but "
            "this instance has none: set it with `exalate-tui init --short-name NAME "
            "--public-url URL`, or ask for a code made with 'I don't have a URL'."
        )
    return None


def local_name_problem(local_name: str) -> str | None:
    try:
        check_short_name(local_name)
    except ValueError as error:
        return f"{LABELS['local_name']} {error}."
    return None


def name_problem(name: str, known: Sequence[Connection]) -> str | None:
    """A connection name that is not well-formed, or that another connection here has."""
    try:
        check_text(name, limit=CONNECTION_NAME_MAX, required=True)
    except ValueError as error:
        return f"{LABELS['name']} {error}."
    wanted = name.casefold()
    if any(c.name.casefold() == wanted for c in known):
        return (
            f"A connection named {name!r} already exists in this home: "
            "choose another name for it here."
        )
    return None


def problems(
    invite: codes.Invitation,
    local_name: str,
    name: str,
    known: Sequence[Connection],
    public_url: str | None,
    now: float,
) -> dict[str, str]:
    """Everything that stops this accept, by field ("code", "local_name", "name")."""
    found = {
        "code": code_problem(invite, known, public_url, now),
        "local_name": local_name_problem(local_name),
        "name": name_problem(name, known),
    }
    return {field: problem for field, problem in found.items() if problem}
