"""The Accept-invitation state machine: paste the code, review it, name this side, accept.

Pure Python, no I/O: it is handed this instance and the connections the home
holds when it opens, judges the code with `lifecycle.acceptance` (the rule
`accept.accept` checks again before it writes), and records what the accept,
run by the caller, reports (`record_stage`, `record_done`, `record_failure`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Connection, Instance, Mode, Topology
from exalate_tui.flows.form import Form
from exalate_tui.lifecycle import acceptance
from exalate_tui.lifecycle.acceptance import Stage

__all__ = ["ACCEPT_LABELS", "AcceptStep", "AcceptWizard", "Preview", "Stage", "remaining"]


class AcceptStep(StrEnum):
    CODE = "code"
    DETAILS = "details"
    ACCEPTING = "accepting"
    DONE = "done"


ACCEPT_LABELS = acceptance.LABELS
_TOPOLOGY_WORDS = {
    Topology.PUBLIC_PRIVATE: (
        "public-private: the initiator has a URL, this side has none and will poll it"
    ),
    Topology.PUBLIC_PUBLIC: "public-public: both sides have a URL and push to each other",
    Topology.PRIVATE_PUBLIC: (
        "private-public: the initiator has no URL and will connect to this instance"
    ),
}


def remaining(seconds: float) -> str:
    """A short, rounded-down "in N days" for an expiry."""
    if seconds <= 0:
        return "expired"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"in {count} {unit}{'s' if count != 1 else ''}"
    return "in less than a minute"


@dataclass(frozen=True)
class Preview:
    """What a decoded code says, in the words the Accept screen shows."""

    from_name: str
    to_name: str
    name: str
    description: str
    mode: Mode
    topology: Topology
    topology_text: str
    initiator_url: str | None
    dest_url: str | None
    expires: datetime
    expires_in: str


class AcceptWizard(Form):
    """Accept an invitation: paste the code, review it, name this side, accept.

    The network half is `accept.accept`, run by the caller with `invitation`,
    `local_name` and `name`; its outcome comes back through `record_stage`,
    `record_done` and `record_failure`.
    """

    def __init__(
        self,
        instance: Instance | None,
        known: Sequence[Connection] = (),
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self.known = list(known)
        self._now = now
        self.step = AcceptStep.CODE
        self.errors: dict[str, str] = {}
        self.code = ""
        self.invitation: codes.Invitation | None = None
        self.local_name = instance.short_name if instance else ""
        self.name = ""
        # Once the admin edits the name, a new paste no longer replaces it.
        self._name_chosen = False
        self.stages: list[Stage] = []
        self.connection: Connection | None = None

    # -- derived ------------------------------------------------------------

    @property
    def preview(self) -> Preview | None:
        invite = self.invitation
        if invite is None:
            return None
        return Preview(
            from_name=invite.from_,
            to_name=invite.to,
            name=invite.name,
            description=invite.desc,
            mode=invite.mode,
            topology=invite.topology,
            topology_text=_TOPOLOGY_WORDS[invite.topology],
            initiator_url=invite.url,
            dest_url=invite.dest_url,
            expires=datetime.fromtimestamp(invite.exp, UTC),
            expires_in=remaining(invite.exp - self._now()),
        )

    @property
    def public_url(self) -> str | None:
        """The URL this side gives the initiator (public acceptors only)."""
        return self.instance.public_url if self.instance else None

    @property
    def warnings(self) -> list[str]:
        """Things worth knowing that do not stop the accept."""
        invite = self.invitation
        if invite is None or invite.dest_url is None or not self.public_url:
            return []
        code_host = urlsplit(invite.dest_url).netloc
        our_host = urlsplit(self.public_url).netloc
        if code_host.casefold() == our_host.casefold():
            return []
        return [
            f"The code was made for {invite.dest_url}, this instance's public URL is "
            f"{self.public_url}: the initiator will call the former, so it must reach "
            "this node too."
        ]

    # -- input --------------------------------------------------------------

    def set_code(self, text: str) -> str | None:
        """Decode a paste (line breaks and spaces are fine); the preview follows."""
        self.code = text
        self.invitation = None
        try:
            invitation = codes.decode(text)
        except codes.InvitationError as error:
            self.errors["code"] = str(error)
            return self.errors["code"]
        return self.set_invitation(invitation)

    def set_invitation(self, invitation: codes.Invitation) -> str | None:
        """An already decoded code (the CLI's path); same checks as a paste."""
        self.invitation = invitation
        if not self._name_chosen:
            self.name = invitation.name
        return self.revalidate("code")

    def set_local_name(self, value: str) -> str | None:
        self.local_name = value.strip()
        return self.revalidate("local_name")

    def set_name(self, value: str) -> str | None:
        self.name = value.strip()
        self._name_chosen = bool(self.name)
        return self.revalidate("name")

    def validate(self, field: str) -> str | None:
        match field:
            case "code":
                invite = self.invitation
                if invite is None:
                    return self.errors.get("code") or (
                        "No invitation code given: paste the code your partner sent."
                    )
                problem = acceptance.code_problem(invite, self.known, self.public_url, self._now())
                own = self.instance.short_name.casefold() if self.instance else None
                if problem is None and invite.from_.casefold() == own:
                    problem = (
                        f"This code was issued by this instance ({invite.from_}): a "
                        "connection to itself cannot be made. Send it to your partner "
                        "to accept on their instance."
                    )
                return problem
            case "local_name":
                problem = acceptance.local_name_problem(self.local_name)
                invite = self.invitation
                if (
                    problem is None
                    and invite
                    and invite.from_.casefold() == self.local_name.casefold()
                ):
                    problem = (
                        f"The initiator is {invite.from_} too: this side needs its own short "
                        "name, not the partner's."
                    )
                return problem
            case "name":
                return acceptance.name_problem(self.name, self.known)
        raise KeyError(field)

    # -- moving -------------------------------------------------------------

    ACCEPT_FIELDS = {
        AcceptStep.CODE: ("code",),
        AcceptStep.DETAILS: ("local_name", "name"),
    }

    def next(self) -> bool:
        """CODE → DETAILS → ACCEPTING when each step is clean; then the caller accepts."""
        fields = self.ACCEPT_FIELDS.get(self.step)
        if fields is None:
            return False
        if self.step is AcceptStep.DETAILS:
            # The code may have expired or been accepted elsewhere meanwhile.
            fields = ("code", *fields)
        problems = [self.revalidate(field) for field in fields]
        if any(problems):
            return False
        self.errors.pop("accept", None)
        if self.step is AcceptStep.CODE:
            self.step = AcceptStep.DETAILS
        else:
            self.stages = []
            self.step = AcceptStep.ACCEPTING
        return True

    def problems(self) -> dict[str, str]:
        """Every field re-checked now, as `accept.accept` does before any I/O."""
        # The connection name comes from the code: say nothing of it until the code reads.
        fields = ("code", "local_name", "name") if self.invitation else ("code", "local_name")
        for field in fields:
            self.revalidate(field)
        return {f: self.errors[f] for f in fields if f in self.errors}

    def back(self) -> bool:
        if self.step is not AcceptStep.DETAILS:
            return False
        self.errors.clear()
        self.step = AcceptStep.CODE
        return True

    def record_stage(self, stage: Stage) -> None:
        self.stages.append(stage)

    def record_done(self, connection: Connection) -> None:
        self.connection = connection
        self.step = AcceptStep.DONE

    def record_failure(self, reason: str) -> None:
        """Back to the details with the one-line reason; nothing was stored."""
        self.errors["accept"] = reason
        self.step = AcceptStep.DETAILS
