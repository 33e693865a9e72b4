"""The Initiate-connection state machine, step by step as the seed walks it.

Pure Python: the console's screens render `InitiateWizard.step` and forward
input to it, the headless `exalate-tui initiate` drives the very same object.
Network checks happen outside (a worker, or the CLI) and are handed in with
`record_check`, so nothing here blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit

from pydantic import SecretStr

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import (
    CONNECTION_NAME_MAX,
    DESCRIPTION_MAX,
    Connection,
    Instance,
    Mode,
    Role,
    Topology,
    check_short_name,
    check_text,
    check_url,
    normalize_url,
)
from exalate_tui.home.store import Home, NameTaken
from exalate_tui.protocol.api import UrlCheck


class Step(StrEnum):
    DESTINATION = "destination"
    PUBLIC_URL = "public-url"
    CONFIG_TYPE = "config-type"
    NOTE = "note"
    INFO = "info"
    INVITATION = "invitation"


LABELS = {
    "dest_url": "Destination instance URL",
    "public_url": "This instance's public URL",
    "mode": "Configuration type",
    "local_name": "Local instance short name",
    "remote_name": "Remote instance short name",
    "name": "Connection name",
    "description": "Description",
}


@dataclass(frozen=True)
class Issued:
    connection: Connection
    invitation: codes.Invitation
    code: str


def _problem(field: str, check: Callable[[str], object], value: str) -> str | None:
    try:
        check(value)
    except ValueError as error:
        return f"{LABELS[field]} {error}."
    return None


def suggested_name(local: str, remote: str) -> str:
    return f"{local}_to_{remote}" if local and remote else ""


class _Form:
    """Per-field errors, kept current as fields change; `_validate` says what is wrong."""

    errors: dict[str, str]

    def _validate(self, field: str) -> str | None:
        raise NotImplementedError

    def _revalidate(self, field: str) -> str | None:
        problem = self._validate(field)
        if problem:
            self.errors[field] = problem
        else:
            self.errors.pop(field, None)
        return problem


class InitiateWizard(_Form):
    """Initiate a connection: destination, configuration type, note, information, code."""

    def __init__(
        self,
        home: Home,
        instance: Instance,
        *,
        require_verified: bool = False,
        now: Callable[[], float] = time.time,
        lifetime: int = codes.DEFAULT_LIFETIME,
    ) -> None:
        self.home = home
        self.instance = instance
        self.require_verified = require_verified
        self._now = now
        self._lifetime = lifetime
        self.step = Step.DESTINATION
        self._history: list[Step] = []
        self.errors: dict[str, str] = {}

        self.dest_url = ""
        self.no_url = False
        self.url_check: UrlCheck | None = None
        self.public_url = instance.public_url or ""
        self._had_public_url = bool(instance.public_url)
        self.mode: Mode | None = None
        self.local_name = instance.short_name
        self.remote_name = ""
        self.name = ""
        self.description = ""
        self._name_edited = False
        self.issued: Issued | None = None
        # The instance to write with the code (the public URL entered on the way), if any.
        self._new_instance: Instance | None = None
        # A code shown but not saved: its name was taken meanwhile (`saved`).
        self.refused: Issued | None = None

    # -- derived ------------------------------------------------------------

    @property
    def topology(self) -> Topology:
        if self.no_url:
            return Topology.PUBLIC_PRIVATE
        if self.instance.public_url:
            return Topology.PUBLIC_PUBLIC
        return Topology.PRIVATE_PUBLIC

    @property
    def needs_public_url(self) -> bool:
        """A private partner will call us, so this instance must have a URL.

        Judged on the instance as the walk began: saving the URL when the code is
        issued must not drop the step from the walk ("step 6 of 6", not "of 5").
        """
        return self.topology is Topology.PUBLIC_PRIVATE and not self._had_public_url

    @property
    def steps(self) -> list[Step]:
        """The steps this walk goes through, for "step N of M"."""
        steps = [Step.DESTINATION]
        if self.needs_public_url:
            steps.append(Step.PUBLIC_URL)
        steps.append(Step.CONFIG_TYPE)
        if self.topology is Topology.PUBLIC_PRIVATE:
            steps.append(Step.NOTE)
        steps += [Step.INFO, Step.INVITATION]
        return steps

    @property
    def needs_check(self) -> bool:
        """A well-formed destination URL without a successful verification yet.

        The console verifies on Next when this is True (and on a retry after
        a failed check); a URL that is not even well-formed is refused inline.
        """
        if self.no_url or _problem("dest_url", check_url, self.dest_url):
            return False
        return self.url_check is None or not self.url_check.ok

    @property
    def destination_label(self) -> str:
        """How the invitation step names the other side."""
        return self.remote_name or "unknown"

    # -- input --------------------------------------------------------------

    def set_dest_url(self, value: str) -> str | None:
        """Typing a URL means there is one: it leaves the "no URL" choice.

        As it is typed only its form is judged (and a failed check of this very
        URL stands); that it is verified is required by `next`, which says so.
        """
        self.dest_url = value.strip()
        self.no_url = False
        if self.url_check and self.url_check.url != normalize_url(self.dest_url):
            self.url_check = None
        problem = _problem("dest_url", check_url, self.dest_url)
        if problem is None and self.url_check is not None and not self.url_check.ok:
            problem = self.url_check.reason
        if problem:
            self.errors["dest_url"] = problem
        else:
            self.errors.pop("dest_url", None)
        return problem

    def record_check(self, check: UrlCheck) -> None:
        """Hand in a verification result; a result for an older URL is ignored."""
        if check.url == normalize_url(self.dest_url):
            self.url_check = check
            self.errors.pop("dest_url", None)
            if not check.ok:
                self.errors["dest_url"] = check.reason

    def choose_no_url(self) -> None:
        """ "I don't have a URL": the destination is private; go straight on."""
        if self.step is not Step.DESTINATION:
            return
        self.no_url = True
        self.dest_url = ""
        self.url_check = None
        self.errors.pop("dest_url", None)
        self._advance()

    def set_public_url(self, value: str) -> str | None:
        self.public_url = value.strip()
        return self._revalidate("public_url")

    def set_mode(self, mode: Mode | str) -> None:
        self.mode = Mode(mode)
        self.errors.pop("mode", None)

    def set_local_name(self, value: str) -> str | None:
        self.local_name = value.strip()
        self._refresh_suggestion()
        return self._revalidate("local_name")

    def set_remote_name(self, value: str) -> str | None:
        self.remote_name = value.strip()
        self._refresh_suggestion()
        return self._revalidate("remote_name")

    def set_name(self, value: str) -> str | None:
        self.name = value.strip()
        # Clearing the name hands it back to the suggestion.
        self._name_edited = bool(self.name) and self.name != suggested_name(
            self.local_name, self.remote_name
        )
        return self._revalidate("name")

    def set_description(self, value: str) -> str | None:
        self.description = value.strip()
        return self._revalidate("description")

    def _refresh_suggestion(self) -> None:
        if not self._name_edited:
            self.name = suggested_name(self.local_name, self.remote_name)
            if "name" in self.errors:
                self._revalidate("name")

    def _validate(self, field: str) -> str | None:
        match field:
            case "dest_url":
                problem = _problem(field, check_url, self.dest_url)
                if problem or not self.require_verified:
                    return problem
                check = self.url_check
                if check is None:
                    return "Verify the destination URL first (Next checks it)."
                return None if check.ok else check.reason
            case "public_url":
                return _problem(field, check_url, self.public_url)
            case "mode":
                return None if self.mode else "Choose Basic or Script."
            case "local_name":
                return _problem(field, check_short_name, self.local_name)
            case "remote_name":
                return _problem(field, check_short_name, self.remote_name)
            case "name":
                problem = _problem(
                    field,
                    lambda v: check_text(v, limit=CONNECTION_NAME_MAX, required=True),
                    self.name,
                )
                if problem is None and self.home.name_taken(self.name):
                    problem = (
                        f"A connection named {self.name!r} already exists: choose another name."
                    )
                return problem
            case "description":
                return _problem(
                    field,
                    lambda v: check_text(v, limit=DESCRIPTION_MAX, required=False),
                    self.description,
                )
        raise KeyError(field)

    # -- moving -------------------------------------------------------------

    FIELDS = {
        Step.DESTINATION: ("dest_url",),
        Step.PUBLIC_URL: ("public_url",),
        Step.CONFIG_TYPE: ("mode",),
        Step.NOTE: (),
        Step.INFO: ("local_name", "remote_name", "name", "description"),
        Step.INVITATION: (),
    }

    def next(self, *, save: bool = True) -> bool:
        """Validate this step; advance (issuing the code after INFO) when it is clean.

        Issuing saves the connection, unless `save` is False: the console shows the
        code first and calls `save` in a worker (an fsync is most of a frame).
        """
        if self.step is Step.INVITATION:
            return False
        if self.step is Step.DESTINATION and not self.dest_url and self.no_url:
            self._advance()
            return True
        problems = [self._revalidate(field) for field in self.FIELDS[self.step]]
        if any(problems):
            return False
        if self.step is Step.INFO:
            self._issue()
            if save:
                return self.saved(self.save())
            return True
        self._advance()
        return True

    def back(self) -> bool:
        """One step back with everything kept; False when there is nowhere to go."""
        if not self._history or self.step is Step.INVITATION:
            return False
        self.errors.clear()
        self.step = self._history.pop()
        return True

    def _advance(self) -> None:
        steps = self.steps
        self._history.append(self.step)
        self.errors.clear()
        self.step = steps[steps.index(self.step) + 1]

    def _issue(self) -> None:
        """Make the connection and its code, and move to the invitation step; no I/O."""
        now = int(self._now())
        public_url = normalize_url(self.public_url) if self.public_url else None
        topology = self.topology
        token = codes.new_token()
        expires = now + self._lifetime
        connection = Connection(
            name=self.name,
            description=self.description,
            mode=self.mode or Mode.SCRIPT,
            topology=topology,
            role=Role.INITIATOR,
            local_name=self.local_name,
            remote_name=self.remote_name,
            remote_url=None if self.no_url else normalize_url(self.dest_url),
            token_hash=codes.hash_token(token),
            token=SecretStr(token) if topology is Topology.PRIVATE_PUBLIC else None,
            token_expires=datetime.fromtimestamp(expires, UTC),
            # The wizard's clock, so "created" and the expiry agree (and tests can fix both).
            created=datetime.fromtimestamp(now, UTC),
        )
        invite = codes.for_connection(connection, url=public_url, token=token, expires=expires)
        connection.code_digest = codes.digest(invite)
        self._new_instance = None
        if public_url != self.instance.public_url and self.needs_public_url:
            self._new_instance = self.instance.model_copy(update={"public_url": public_url})
            self.instance = self._new_instance
        self.issued = Issued(connection, invite, codes.encode(invite))
        self._advance()

    def save(self) -> bool:
        """Write the issued connection (pending), and the public URL entered on the way.

        Only I/O: it changes nothing here, so the console can run it in a thread
        while the code is on screen, and hand the outcome to `saved`. False when
        another process took the connection's name since `next` checked it.
        """
        assert self.issued is not None
        if self._new_instance is not None:
            self.home.save_instance(self._new_instance)
        try:
            self.home.save_connection(self.issued.connection)
        except NameTaken:
            return False
        return True

    def saved(self, ok: bool) -> bool:
        """The outcome of `save`; on a name taken meanwhile, back to INFO with the reason."""
        if ok:
            return True
        self.not_saved()
        self.errors["name"] = (
            f"A connection named {self.name!r} already exists: choose another name."
        )
        return False

    def not_saved(self) -> None:
        """`save` failed: the code shown is void; back to INFO, everything entered kept."""
        self.refused = self.issued
        self.issued = None
        self.step = self._history.pop()
        self.errors.clear()


# -- Accept invitation --------------------------------------------------------


class AcceptStep(StrEnum):
    CODE = "code"
    DETAILS = "details"
    ACCEPTING = "accepting"
    DONE = "done"


class Stage(StrEnum):
    """What the accept flow is doing, shown as it happens."""

    CONTACTING = "contacting"
    ACCEPTED = "accepted"
    CONNECTED = "connected"
    # A public acceptor of a private initiator: stored, the initiator calls in.
    WAITING = "waiting"


ACCEPT_LABELS = {
    "code": "Invitation code",
    "local_name": "Local instance short name",
    "name": "Connection name",
}

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


class AcceptWizard(_Form):
    """Accept an invitation: paste the code, review it, name this side, accept.

    The network half lives in `accept.accept`, which reads this object and
    reports back through `record_stage`, `record_done` and `record_failure`.
    """

    def __init__(
        self, home: Home, instance: Instance | None, *, now: Callable[[], float] = time.time
    ) -> None:
        self.home = home
        self.instance = instance
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
        return self._revalidate("code")

    def set_local_name(self, value: str) -> str | None:
        self.local_name = value.strip()
        return self._revalidate("local_name")

    def set_name(self, value: str) -> str | None:
        self.name = value.strip()
        self._name_chosen = bool(self.name)
        return self._revalidate("name")

    def _validate(self, field: str) -> str | None:
        match field:
            case "code":
                return self._code_problem()
            case "local_name":
                try:
                    check_short_name(self.local_name)
                except ValueError as error:
                    return f"{ACCEPT_LABELS[field]} {error}."
                return None
            case "name":
                try:
                    check_text(self.name, limit=CONNECTION_NAME_MAX, required=True)
                except ValueError as error:
                    return f"{ACCEPT_LABELS[field]} {error}."
                if self.home.name_taken(self.name):
                    return (
                        f"A connection named {self.name!r} already exists in this home: "
                        "choose another name for it here."
                    )
                return None
        raise KeyError(field)

    def _code_problem(self) -> str | None:
        invite = self.invitation
        if invite is None:
            return self.errors.get("code") or (
                "No invitation code given: paste the code your partner sent."
            )
        if invite.expired(self._now()):
            when = datetime.fromtimestamp(invite.exp, UTC).strftime("%Y-%m-%d %H:%M UTC")
            return f"This invitation expired on {when}: ask {invite.from_} for a new code."
        existing = next(
            (c for c in self.home.load_connections().connections if c.id == invite.cid), None
        )
        if existing is not None:
            if existing.role is Role.INITIATOR:
                return (
                    "This instance issued this invitation: send the code to your partner, "
                    "who accepts it on their side."
                )
            return f"This invitation was already accepted here (connection {existing.name!r})."
        if invite.topology is not Topology.PUBLIC_PRIVATE and not self.public_url:
            return (
                f"This code is for an instance with a public URL ({invite.dest_url}), but "
                "this instance has none: set it with `exalate-tui init --short-name NAME "
                "--public-url URL`, or ask for a code made with 'I don't have a URL'."
            )
        return None

    # -- moving -------------------------------------------------------------

    ACCEPT_FIELDS = {
        AcceptStep.CODE: ("code",),
        AcceptStep.DETAILS: ("local_name", "name"),
    }

    def next(self) -> bool:
        """CODE → DETAILS → ACCEPTING when each step is clean; then `accept.accept` runs."""
        fields = self.ACCEPT_FIELDS.get(self.step)
        if fields is None:
            return False
        if self.step is AcceptStep.DETAILS:
            # The code may have expired or been accepted elsewhere meanwhile.
            fields = ("code", *fields)
        problems = [self._revalidate(field) for field in fields]
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
            self._revalidate(field)
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
