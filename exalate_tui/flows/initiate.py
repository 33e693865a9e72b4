"""The Initiate-connection state machine, step by step as the seed walks it.

Pure Python, no I/O: the console's screens render `InitiateWizard.step` and
forward input to it, the headless `exalate-tui initiate` drives the very same
object. What it needs from outside is handed in: the connections the home
holds when the walk begins (for the name check as the admin types), and the
destination's verification (`record_check`). Storing what it issues is the
caller's (`lifecycle.initiate.save_issued`, then `saved`), under the home's
lock, where a name taken meanwhile is caught.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

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
from exalate_tui.flows.form import Form, problem
from exalate_tui.protocol.api import UrlCheck


class Step(StrEnum):
    DESTINATION = "destination"
    PUBLIC_URL = "public-url"
    CONFIG_TYPE = "config-type"
    NOTE = "note"
    INFO = "info"
    INVITATION = "invitation"


# What the title bar calls each step. It shows "Step N: name" without a total: how many
# steps there are depends on the destination step's answer, and a total that changes
# after step 1 ("Step 1 of 4", then "Step 2 of 5") reads as a mistake.
STEP_NAMES = {
    Step.DESTINATION: "Destination",
    Step.PUBLIC_URL: "Public URL",
    Step.CONFIG_TYPE: "Configuration type",
    Step.NOTE: "Note",
    Step.INFO: "Connection information",
    Step.INVITATION: "Invitation code",
}

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
    return problem(LABELS[field], check, value)


def suggested_name(local: str, remote: str) -> str:
    return f"{local}_to_{remote}" if local and remote else ""


class InitiateWizard(Form):
    """Initiate a connection: destination, configuration type, note, information, code."""

    def __init__(
        self,
        instance: Instance,
        known: Sequence[Connection] = (),
        *,
        require_verified: bool = False,
        now: Callable[[], float] = time.time,
        lifetime: int = codes.DEFAULT_LIFETIME,
    ) -> None:
        self.instance = instance
        # The names of the home's connections when the walk began, casefolded.
        self._taken = frozenset(c.name.casefold() for c in known)
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
        self.new_instance: Instance | None = None
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

    def step_title(self, step: Step) -> str:
        """ "Step N: name"; N counts the steps before it on this walk, which never change."""
        return f"Step {self.steps.index(step) + 1}: {STEP_NAMES[step]}"

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
        return self.revalidate("public_url")

    def set_mode(self, mode: Mode | str) -> None:
        self.mode = Mode(mode)
        self.errors.pop("mode", None)

    def set_local_name(self, value: str) -> str | None:
        self.local_name = value.strip()
        self._refresh_suggestion()
        return self.revalidate("local_name")

    def set_remote_name(self, value: str) -> str | None:
        self.remote_name = value.strip()
        self._refresh_suggestion()
        return self.revalidate("remote_name")

    def set_name(self, value: str) -> str | None:
        self.name = value.strip()
        # Clearing the name hands it back to the suggestion.
        self._name_edited = bool(self.name) and self.name != suggested_name(
            self.local_name, self.remote_name
        )
        return self.revalidate("name")

    def set_description(self, value: str) -> str | None:
        self.description = value.strip()
        return self.revalidate("description")

    def _refresh_suggestion(self) -> None:
        if not self._name_edited:
            self.name = suggested_name(self.local_name, self.remote_name)
            if "name" in self.errors:
                self.revalidate("name")

    def validate(self, field: str) -> str | None:
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
                problem = _problem(field, check_short_name, self.remote_name)
                if problem is None and self.remote_name.casefold() == self.local_name.casefold():
                    problem = (
                        f"{self.remote_name!r} is this instance's short name: a connection "
                        "to itself cannot be made. Give the partner's short name."
                    )
                return problem
            case "name":
                problem = _problem(
                    field,
                    lambda v: check_text(v, limit=CONNECTION_NAME_MAX, required=True),
                    self.name,
                )
                if problem is None and self.name.casefold() in self._taken:
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

    def next(self) -> bool:
        """Validate this step; advance (issuing the code after INFO) when it is clean.

        Issuing stores nothing: the caller stores `issued` (and `new_instance`),
        then hands the outcome to `saved`.
        """
        if self.step is Step.INVITATION:
            return False
        if self.step is Step.DESTINATION and not self.dest_url and self.no_url:
            self._advance()
            return True
        problems = [self.revalidate(field) for field in self.FIELDS[self.step]]
        if any(problems):
            return False
        if self.step is Step.INFO:
            self._issue()
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
        self.new_instance = None
        if public_url != self.instance.public_url and self.needs_public_url:
            self.new_instance = self.instance.model_copy(update={"public_url": public_url})
            self.instance = self.new_instance
        self.issued = Issued(connection, invite, codes.encode(invite))
        self._advance()

    def saved(self, ok: bool) -> bool:
        """The outcome of storing `issued`; on a name taken meanwhile, back to INFO, saying so."""
        if ok:
            return True
        # The store knows better than the snapshot the walk began with: the name is taken.
        self._taken |= {self.name.casefold()}
        self.not_saved()
        self.errors["name"] = (
            f"A connection named {self.name!r} already exists: choose another name."
        )
        return False

    def not_saved(self) -> None:
        """Storing `issued` failed: the code shown is void; back to INFO, everything kept."""
        self.refused = self.issued
        self.issued = None
        self.step = self._history.pop()
        self.errors.clear()
