"""The Initiate-connection state machine, driven with no terminal at all.

Every transition, Previous at every step, every validation error, the three
topologies from step 1, the name suggestion, and what `_issue` puts on disk
and in the code.
"""

from __future__ import annotations

import base64
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.domain.topology import side
from exalate_tui.flows.initiate import InitiateWizard, Step, suggested_name
from exalate_tui.home.store import Home
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.protocol.api import UrlCheck

NOW = 1_750_000_000
PUBLIC = "https://snow.example.com"
DEST = "https://jira.example.com"
EXAMPLE = "e.g. https://example.exalate.net"


class Stored(InitiateWizard):
    """The wizard as `exalate-tui initiate` drives it: what it issues is stored at once.

    Its snapshot of the home's names is taken anew at each step, as if the
    wizard had just been opened, so a connection saved meanwhile is seen.
    """

    def __init__(self, home: Home, instance: Instance, **options: Any) -> None:
        super().__init__(instance, **options)
        self.home = home

    def next(self) -> bool:
        self._taken = frozenset(c.name.casefold() for c in self.home.load_connections().connections)
        if not super().next():
            return False
        if self.step is Step.INVITATION and self.issued is not None:
            return self.saved(save_issued(self.home, self.issued.connection, self.new_instance))
        return True

    def set_name(self, value: str) -> str | None:
        self._taken = frozenset(c.name.casefold() for c in self.home.load_connections().connections)
        return super().set_name(value)


def make(tmp_path: Path, public_url: str | None = PUBLIC, **options: Any) -> Stored:
    home = Home(tmp_path / "home")
    instance = Instance(short_name="snow", public_url=public_url)
    home.save_instance(instance)
    return Stored(home, instance, now=lambda: NOW, **options)


def existing(home: Home, name: str) -> Connection:
    connection = Connection(
        name=name,
        mode=Mode.BASIC,
        topology=Topology.PUBLIC_PUBLIC,
        role=Role.INITIATOR,
        local_name="snow",
        remote_name="other",
    )
    home.save_connection(connection)
    return connection


def to_info(wizard: InitiateWizard, dest_url: str | None) -> list[Step]:
    """Walk from step 1 to the information step; returns the steps visited."""
    visited = [wizard.step]
    if dest_url is None:
        wizard.choose_no_url()
    else:
        wizard.set_dest_url(dest_url)
        assert wizard.next(), wizard.errors
    visited.append(wizard.step)
    if wizard.step is Step.PUBLIC_URL:
        wizard.set_public_url(PUBLIC)
        assert wizard.next(), wizard.errors
        visited.append(wizard.step)
    wizard.set_mode(Mode.SCRIPT)
    assert wizard.next()
    visited.append(wizard.step)
    if wizard.step is Step.NOTE:
        assert wizard.next()
        visited.append(wizard.step)
    assert wizard.step is Step.INFO
    return visited


def issue(wizard: InitiateWizard, dest_url: str | None, **fields: str) -> list[Step]:
    visited = to_info(wizard, dest_url)
    wizard.set_remote_name(fields.get("remote_name", "jira"))
    if "name" in fields:
        wizard.set_name(fields["name"])
    wizard.set_description(fields.get("description", "Incidents to Jira"))
    assert wizard.next(), wizard.errors
    assert wizard.step is Step.INVITATION
    return [*visited, wizard.step]


# -- the start and the three topologies ------------------------------------------


def test_starts_at_the_destination_with_the_instance_prefilled(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    assert wizard.step is Step.DESTINATION
    assert wizard.local_name == "snow"
    assert wizard.public_url == PUBLIC
    assert wizard.name == "" and wizard.errors == {}
    assert wizard.destination_label == "unknown"
    assert not wizard.back()
    assert wizard.step is Step.DESTINATION


@pytest.mark.parametrize(
    ("public_url", "dest_url", "topology", "steps"),
    [
        (
            PUBLIC,
            None,
            Topology.PUBLIC_PRIVATE,
            [Step.DESTINATION, Step.CONFIG_TYPE, Step.NOTE, Step.INFO, Step.INVITATION],
        ),
        (
            None,
            None,
            Topology.PUBLIC_PRIVATE,
            [
                Step.DESTINATION,
                Step.PUBLIC_URL,
                Step.CONFIG_TYPE,
                Step.NOTE,
                Step.INFO,
                Step.INVITATION,
            ],
        ),
        (
            PUBLIC,
            DEST,
            Topology.PUBLIC_PUBLIC,
            [Step.DESTINATION, Step.CONFIG_TYPE, Step.INFO, Step.INVITATION],
        ),
        (
            None,
            DEST,
            Topology.PRIVATE_PUBLIC,
            [Step.DESTINATION, Step.CONFIG_TYPE, Step.INFO, Step.INVITATION],
        ),
    ],
    ids=["no-url", "no-url-needs-public-url", "url-and-public-url", "url-no-public-url"],
)
def test_every_topology_is_reachable_from_step_one(
    tmp_path: Path,
    public_url: str | None,
    dest_url: str | None,
    topology: Topology,
    steps: list[Step],
) -> None:
    wizard = make(tmp_path, public_url)
    visited = issue(wizard, dest_url)
    assert visited == steps
    assert wizard.steps == steps
    assert wizard.topology is topology
    assert wizard.issued is not None
    assert wizard.issued.connection.topology is topology
    assert wizard.issued.invitation.topology is topology


def test_typing_a_url_leaves_the_no_url_choice(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    wizard.choose_no_url()
    assert wizard.step is Step.CONFIG_TYPE and wizard.no_url
    assert wizard.back()
    assert wizard.step is Step.DESTINATION and wizard.no_url  # kept until changed
    wizard.set_dest_url(DEST)
    assert not wizard.no_url
    assert wizard.topology is Topology.PUBLIC_PUBLIC


def test_no_url_is_only_a_choice_on_the_destination_step(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    wizard.set_dest_url(DEST)
    assert wizard.next()
    wizard.choose_no_url()
    assert wizard.step is Step.CONFIG_TYPE
    assert not wizard.no_url and wizard.dest_url == DEST


def test_no_url_clears_a_url_and_its_error(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    wizard.set_dest_url("ftp://nope")
    assert "dest_url" in wizard.errors
    wizard.choose_no_url()
    assert wizard.dest_url == "" and wizard.errors == {}


# -- step 1: the destination URL ------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "is required"),
        ("   ", "is required"),
        ("example.exalate.net", f"must start with http:// or https://, {EXAMPLE}"),
        ("ftp://example.exalate.net", f"must start with http:// or https://, {EXAMPLE}"),
        ("javascript:alert(1)", f"must start with http:// or https://, {EXAMPLE}"),
        ("https://", f"must name a host, {EXAMPLE}"),
        ("http:///path", f"must name a host, {EXAMPLE}"),
        ("https://example.net:99999", "is not a valid URL (check the port)"),
        ("https://exa mple.net", "must not contain spaces or control characters"),
        ("https://example.net/\x1b[2J", "must not contain spaces or control characters"),
        ("https://example.net/" + "a" * 2048, "must be at most 2048 characters"),
    ],
)
def test_a_bad_destination_url_is_refused_with_the_reason(
    tmp_path: Path, url: str, reason: str
) -> None:
    wizard = make(tmp_path)
    assert wizard.set_dest_url(url) == f"Destination instance URL {reason}."
    assert not wizard.next()
    assert wizard.step is Step.DESTINATION
    assert wizard.errors == {"dest_url": f"Destination instance URL {reason}."}


def test_next_without_any_url_says_it_is_required(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    assert not wizard.next()
    assert wizard.errors["dest_url"] == "Destination instance URL is required."


def test_fixing_the_url_clears_its_error(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    wizard.set_dest_url("nope")
    assert wizard.set_dest_url(f"  {DEST}/  ") is None
    assert wizard.errors == {}
    assert wizard.next()


def test_the_url_is_stored_without_its_trailing_slash(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    issue(wizard, "http://127.0.0.1:7002/")
    assert wizard.issued is not None
    assert wizard.issued.connection.remote_url == "http://127.0.0.1:7002"
    assert wizard.issued.invitation.dest_url == "http://127.0.0.1:7002"


def test_a_verified_url_is_required_when_asked_for(tmp_path: Path) -> None:
    wizard = make(tmp_path, require_verified=True)
    wizard.set_dest_url(DEST)
    assert not wizard.next()
    assert wizard.errors["dest_url"] == "Verify the destination URL first (Next checks it)."
    wizard.record_check(UrlCheck(DEST, ok=False, reason="Unreachable: connection refused."))
    assert wizard.errors["dest_url"] == "Unreachable: connection refused."
    assert not wizard.next()
    wizard.record_check(UrlCheck(DEST, ok=True, remote_name="jira"))
    assert "dest_url" not in wizard.errors
    assert wizard.next()
    assert wizard.step is Step.CONFIG_TYPE


def test_typing_a_url_judges_its_form_only_next_wants_it_verified(tmp_path: Path) -> None:
    wizard = make(tmp_path, require_verified=True)
    assert wizard.set_dest_url(DEST) is None
    assert "dest_url" not in wizard.errors  # no nagging while typing
    assert not wizard.next()
    assert wizard.errors["dest_url"] == "Verify the destination URL first (Next checks it)."
    wizard.record_check(UrlCheck(DEST, ok=False, reason="Unreachable."))
    assert wizard.set_dest_url(DEST + "/") == "Unreachable."  # the same URL: still failed


def test_needs_check_only_for_a_well_formed_url_not_yet_verified(tmp_path: Path) -> None:
    wizard = make(tmp_path, require_verified=True)
    assert not wizard.needs_check  # nothing typed
    wizard.set_dest_url("ftp://jira")
    assert not wizard.needs_check  # refused for its form, no request
    wizard.set_dest_url(DEST)
    assert wizard.needs_check
    wizard.record_check(UrlCheck(DEST, ok=False, reason="Unreachable."))
    assert wizard.needs_check  # a retry checks again
    wizard.record_check(UrlCheck(DEST, ok=True))
    assert not wizard.needs_check
    wizard.choose_no_url()
    assert not wizard.needs_check


def test_a_check_of_an_older_url_is_ignored_and_a_new_url_drops_the_check(
    tmp_path: Path,
) -> None:
    wizard = make(tmp_path, require_verified=True)
    wizard.set_dest_url(DEST)
    wizard.record_check(UrlCheck("https://old.example.com", ok=True))
    assert wizard.url_check is None
    wizard.record_check(UrlCheck(DEST, ok=True))
    wizard.set_dest_url(DEST + "/")  # the same URL: the check stands
    assert wizard.url_check is not None
    wizard.set_dest_url("https://other.example.com")
    assert wizard.url_check is None
    assert not wizard.next()


# -- the public URL step ------------------------------------------------------


def test_public_private_without_a_public_url_asks_for_it_in_the_flow(tmp_path: Path) -> None:
    wizard = make(tmp_path, public_url=None)
    assert wizard.public_url == ""
    wizard.choose_no_url()
    assert wizard.step is Step.PUBLIC_URL and wizard.needs_public_url
    assert not wizard.next()
    assert wizard.errors == {"public_url": "This instance's public URL is required."}
    assert wizard.set_public_url("snow.example.com") == (
        "This instance's public URL must start with http:// or https://, "
        "e.g. https://example.exalate.net."
    )
    assert not wizard.next()
    assert wizard.set_public_url(f" {PUBLIC}/ ") is None
    assert wizard.next()
    assert wizard.step is Step.CONFIG_TYPE


def test_the_public_url_entered_in_the_flow_is_saved_with_the_code(tmp_path: Path) -> None:
    wizard = make(tmp_path, public_url=None)
    issue(wizard, None)
    assert wizard.issued is not None
    assert wizard.issued.invitation.url == PUBLIC
    saved = wizard.home.load_instance()
    assert saved is not None and saved.public_url == PUBLIC
    assert wizard.instance.public_url == PUBLIC


def test_the_public_url_is_not_saved_before_the_code_is_issued(tmp_path: Path) -> None:
    wizard = make(tmp_path, public_url=None)
    to_info(wizard, None)
    saved = wizard.home.load_instance()
    assert saved is not None and saved.public_url is None


# -- step 2: configuration type ------------------------------------------------


def test_next_needs_a_configuration_type(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    wizard.set_dest_url(DEST)
    wizard.next()
    assert not wizard.next()
    assert wizard.errors == {"mode": "Choose Basic or Script."}
    wizard.set_mode("basic")
    assert wizard.errors == {}
    assert wizard.mode is Mode.BASIC
    assert wizard.next()


def test_an_unknown_configuration_type_is_refused(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    with pytest.raises(ValueError, match="groovy"):
        wizard.set_mode("groovy")
    assert wizard.mode is None


@pytest.mark.parametrize("mode", [Mode.BASIC, Mode.SCRIPT])
def test_the_mode_chosen_is_the_mode_issued(tmp_path: Path, mode: Mode) -> None:
    wizard = make(tmp_path)
    wizard.set_dest_url(DEST)
    wizard.next()
    wizard.set_mode(mode)
    wizard.next()
    wizard.set_remote_name("jira")
    assert wizard.next()
    assert wizard.issued is not None
    assert wizard.issued.connection.mode is mode
    assert wizard.issued.invitation.mode is mode


# -- step 3: the note ----------------------------------------------------------


def test_the_note_only_comes_for_public_private(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    wizard.choose_no_url()
    wizard.set_mode(Mode.SCRIPT)
    assert wizard.next()
    assert wizard.step is Step.NOTE
    assert wizard.next()  # nothing to fill in
    assert wizard.step is Step.INFO


# -- step 4: connection information ---------------------------------------------


@pytest.mark.parametrize(
    ("setter", "field", "value", "message"),
    [
        ("set_local_name", "local_name", "", "Local instance short name is required."),
        (
            "set_local_name",
            "local_name",
            "a" * 33,
            "Local instance short name must be at most 32 characters (has 33).",
        ),
        (
            "set_local_name",
            "local_name",
            "snow now",
            "Local instance short name may only contain letters, digits, '-', '_' and '.'.",
        ),
        (
            "set_local_name",
            "local_name",
            "snöw",
            "Local instance short name may only contain letters, digits, '-', '_' and '.'.",
        ),
        (
            "set_local_name",
            "local_name",
            "sn\x00ow",
            "Local instance short name may only contain letters, digits, '-', '_' and '.'.",
        ),
        ("set_remote_name", "remote_name", "", "Remote instance short name is required."),
        (
            "set_remote_name",
            "remote_name",
            "b" * 33,
            "Remote instance short name must be at most 32 characters (has 33).",
        ),
        (
            "set_remote_name",
            "remote_name",
            "jira/cloud",
            "Remote instance short name may only contain letters, digits, '-', '_' and '.'.",
        ),
        ("set_name", "name", "   ", "Connection name is required."),
        (
            "set_name",
            "name",
            "Snow\x1b[31m to Jira",
            "Connection name must not contain control characters.",
        ),
        (
            "set_name",
            "name",
            "Snow\u0085Jira",  # C1 next line
            "Connection name must not contain control characters.",
        ),
        (
            "set_name",
            "name",
            "n" * 101,
            "Connection name must be at most 100 characters (has 101).",
        ),
        (
            "set_description",
            "description",
            "d" * 1001,
            "Description must be at most 1000 characters (has 1001).",
        ),
        (
            "set_description",
            "description",
            "line one\nline two",
            "Description must not contain control characters.",
        ),
        (
            "set_description",
            "description",
            "tab\there",
            "Description must not contain control characters.",
        ),
    ],
)
def test_each_information_error_is_refused_next_to_its_field(
    tmp_path: Path, setter: str, field: str, value: str, message: str
) -> None:
    wizard = make(tmp_path)
    to_info(wizard, DEST)
    wizard.set_remote_name("jira")
    wizard.set_name("Incidents")  # no longer follows the short names: one error only
    assert getattr(wizard, setter)(value) == message
    assert wizard.errors == {field: message}
    assert not wizard.next()
    assert wizard.step is Step.INFO
    assert wizard.errors == {field: message}
    assert list(wizard.home.connections_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("setter", "value"),
    [
        ("set_local_name", "a" * 32),
        ("set_local_name", "Snow-Prod_2.eu"),
        ("set_remote_name", "J"),
        ("set_name", "n" * 100),
        ("set_name", "Snow → Jira (incidents) ✓"),
        ("set_description", "d" * 1000),
        ("set_description", ""),
    ],
)
def test_values_at_the_limits_are_accepted(tmp_path: Path, setter: str, value: str) -> None:
    wizard = make(tmp_path)
    to_info(wizard, DEST)
    wizard.set_remote_name("jira")
    assert getattr(wizard, setter)(value) is None
    assert wizard.next(), wizard.errors


def test_every_field_error_shows_at_once_and_next_stays_refused_until_all_are_fixed(
    tmp_path: Path,
) -> None:
    wizard = make(tmp_path)
    to_info(wizard, DEST)
    wizard.set_local_name("")
    wizard.set_description("x" * 1001)
    assert not wizard.next()
    assert set(wizard.errors) == {"local_name", "remote_name", "name", "description"}
    wizard.set_local_name("snow")
    wizard.set_remote_name("jira")  # also fills the suggested name
    assert set(wizard.errors) == {"description"}
    assert not wizard.next()
    wizard.set_description("fine")
    assert wizard.next()


def test_a_connection_name_must_be_unique_ignoring_case(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    existing(wizard.home, "Snow_to_Jira")
    to_info(wizard, DEST)
    wizard.set_remote_name("jira")  # suggests snow_to_jira
    assert not wizard.next()
    assert wizard.errors == {
        "name": "A connection named 'snow_to_jira' already exists: choose another name."
    }
    wizard.set_name("SNOW_TO_JIRA")
    assert "already exists" in wizard.errors["name"]
    wizard.set_name("snow_to_jira incidents")
    assert wizard.errors == {}
    assert wizard.next()


def test_a_name_taken_by_another_process_meanwhile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wizard = make(tmp_path)
    to_info(wizard, DEST)
    wizard.set_remote_name("jira")
    real = Home.save_connection

    def taken_before_the_save(self: Home, connection: Connection) -> None:
        # The wizard's own check has passed; then another process saves the same name.
        monkeypatch.setattr(Home, "save_connection", real)
        existing(self, connection.name)
        real(self, connection)

    monkeypatch.setattr(Home, "save_connection", taken_before_the_save)
    assert not wizard.next()
    assert wizard.step is Step.INFO
    assert wizard.issued is None
    assert "already exists" in wizard.errors["name"]
    assert len(wizard.home.load_connections().connections) == 1


def test_inputs_are_trimmed(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    to_info(wizard, f"  {DEST}  ")
    wizard.set_local_name("  snow ")
    wizard.set_remote_name(" jira  ")
    wizard.set_description("  about  ")
    assert (wizard.local_name, wizard.remote_name, wizard.name, wizard.description) == (
        "snow",
        "jira",
        "snow_to_jira",
        "about",
    )


# -- the suggested name --------------------------------------------------------


def test_the_name_follows_both_short_names_until_edited(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    to_info(wizard, DEST)
    assert wizard.name == ""  # no remote name yet
    wizard.set_remote_name("jira")
    assert wizard.name == "snow_to_jira"
    assert wizard.destination_label == "jira"
    wizard.set_local_name("sn")
    assert wizard.name == "sn_to_jira"
    wizard.set_remote_name("")
    assert wizard.name == ""
    wizard.set_remote_name("jsm")
    assert wizard.name == "sn_to_jsm"
    wizard.set_name("Incidents")
    wizard.set_local_name("snow")
    wizard.set_remote_name("jira")
    assert wizard.name == "Incidents"


def test_typing_the_suggestion_itself_keeps_it_following(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    to_info(wizard, DEST)
    wizard.set_remote_name("jira")
    wizard.set_name("snow_to_jira")
    wizard.set_remote_name("jsm")
    assert wizard.name == "snow_to_jsm"


def test_clearing_the_name_hands_it_back_to_the_suggestion(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    to_info(wizard, DEST)
    wizard.set_remote_name("jira")
    wizard.set_name("Mine")
    wizard.set_name("")
    assert wizard.errors["name"] == "Connection name is required."
    wizard.set_remote_name("jsm")
    assert wizard.name == "snow_to_jsm"
    assert "name" not in wizard.errors


def test_a_new_suggestion_clears_the_old_ones_error(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    existing(wizard.home, "snow_to_jira")
    to_info(wizard, DEST)
    wizard.set_remote_name("jira")
    assert not wizard.next()
    assert "name" in wizard.errors
    wizard.set_remote_name("jira2")
    assert wizard.name == "snow_to_jira2"
    assert "name" not in wizard.errors


def test_suggested_name_needs_both_names() -> None:
    assert suggested_name("a", "b") == "a_to_b"
    assert suggested_name("a", "") == ""
    assert suggested_name("", "b") == ""


# -- Previous -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "dest_url"),
    [(PUBLIC, None), (None, None), (PUBLIC, DEST), (None, DEST)],
    ids=["public-private", "public-private+public-url", "public-public", "private-public"],
)
def test_back_at_every_step_keeps_everything(
    tmp_path: Path, public_url: str | None, dest_url: str | None
) -> None:
    wizard = make(tmp_path, public_url)
    visited = to_info(wizard, dest_url)
    wizard.set_local_name("snow2")
    wizard.set_remote_name("jira")
    wizard.set_name("Incidents")
    wizard.set_description("Both ways")
    kept = (
        wizard.dest_url,
        wizard.no_url,
        wizard.public_url,
        wizard.mode,
        wizard.local_name,
        wizard.remote_name,
        wizard.name,
        wizard.description,
    )

    for step in reversed(visited[:-1]):
        wizard.errors["leftover"] = "gone after back"
        assert wizard.back()
        assert wizard.step is step
        assert wizard.errors == {}
        assert (
            wizard.dest_url,
            wizard.no_url,
            wizard.public_url,
            wizard.mode,
            wizard.local_name,
            wizard.remote_name,
            wizard.name,
            wizard.description,
        ) == kept
    assert not wizard.back()

    # Forward again with Next alone: nothing has to be entered twice.
    while wizard.step is not Step.INVITATION:
        assert wizard.next(), wizard.errors
    assert wizard.issued is not None
    entered = wizard.issued.invitation
    assert (entered.from_, entered.to, entered.name, entered.desc) == (
        "snow2",
        "jira",
        "Incidents",
        "Both ways",
    )


def test_no_way_back_or_on_from_the_invitation(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    issue(wizard, DEST)
    issued = wizard.issued
    assert not wizard.back()
    assert not wizard.next()
    assert wizard.step is Step.INVITATION
    assert wizard.issued is issued
    assert len(wizard.home.load_connections().connections) == 1


# -- what is saved and what the code says ------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "dest_url"),
    [(PUBLIC, None), (PUBLIC, DEST)],
    ids=["public-private", "public-public"],
)
def test_the_receiving_initiator_keeps_only_the_hash_of_the_token(
    tmp_path: Path, public_url: str | None, dest_url: str | None
) -> None:
    wizard = make(tmp_path, public_url)
    issue(wizard, dest_url)
    assert wizard.issued is not None
    token = wizard.issued.invitation.tok
    path = wizard.home.connection_path(wizard.issued.connection.id)
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert token not in text
    saved = tomllib.loads(text)
    assert saved["token_hash"] == codes.hash_token(token)
    assert "token" not in saved and "secret" not in saved
    assert saved["token_expires"] == datetime.fromtimestamp(NOW, UTC) + timedelta(days=7)
    assert saved["status"] == "pending" and saved["role"] == "initiator"


def test_a_private_initiator_keeps_the_token_to_present_it(tmp_path: Path) -> None:
    wizard = make(tmp_path, public_url=None)
    issue(wizard, DEST)
    assert wizard.issued is not None
    token = wizard.issued.invitation.tok
    saved = tomllib.loads(wizard.home.connection_path(wizard.issued.connection.id).read_text())
    assert saved["token"] == token
    assert saved["token_hash"] == codes.hash_token(token)
    assert wizard.issued.invitation.url is None
    loaded = wizard.home.get_connection(wizard.issued.connection.id)
    assert side(loaded.topology, loaded.role).polls


def test_the_code_decodes_to_exactly_what_was_entered(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    issue(
        wizard,
        f"{DEST}/",
        remote_name="jira.prod",
        name="Snow ⇄ Jira: incidents",
        description="Priority 1 and 2, both ways — ünïcödé kept",
    )
    issued = wizard.issued
    assert issued is not None
    decoded = codes.decode(issued.code)
    assert decoded == issued.invitation
    payload = decoded.model_dump(by_alias=True)
    # The token is random: 32 bytes, base64url without padding, whose hash was saved.
    token = payload.pop("tok")
    assert len(token) == 43 and len(base64.urlsafe_b64decode(token + "=")) == 32
    assert codes.token_matches(token, issued.connection.token_hash or "")
    assert payload == {
        "v": 1,
        "cid": issued.connection.id,
        "url": PUBLIC,
        "dest_url": DEST,
        "from": "snow",
        "to": "jira.prod",
        "name": "Snow ⇄ Jira: incidents",
        "desc": "Priority 1 and 2, both ways — ünïcödé kept",
        "mode": Mode.SCRIPT,
        "exp": NOW + codes.DEFAULT_LIFETIME,
    }


def test_the_saved_connection_matches_the_code(tmp_path: Path) -> None:
    wizard = make(tmp_path)
    issue(wizard, None, description="")
    issued = wizard.issued
    assert issued is not None
    loaded = wizard.home.load_connections()
    assert loaded.problems == []
    [saved] = loaded.connections
    assert saved == issued.connection
    assert saved.status is Status.PENDING
    assert saved.created == datetime.fromtimestamp(NOW, UTC)
    assert saved.remote_url is None and saved.remote_name == "jira"
    assert saved.name == issued.invitation.name == "snow_to_jira"


def test_the_lifetime_sets_the_expiry(tmp_path: Path) -> None:
    wizard = make(tmp_path, lifetime=3600)
    issue(wizard, DEST)
    assert wizard.issued is not None
    assert wizard.issued.invitation.exp == NOW + 3600
    assert wizard.issued.connection.token_expires == datetime.fromtimestamp(NOW + 3600, UTC)


def test_each_code_has_its_own_token_and_id(tmp_path: Path) -> None:
    first, second = make(tmp_path), make(tmp_path)
    issue(first, DEST, remote_name="jira")
    issue(second, DEST, remote_name="jsm")
    assert first.issued is not None and second.issued is not None
    assert first.issued.invitation.tok != second.issued.invitation.tok
    assert first.issued.connection.id != second.issued.connection.id


def test_step_titles_count_up_by_one_and_carry_no_total() -> None:
    """ "Step N: name": N never jumps when step 1's answer adds steps (issue 11)."""
    wizard = InitiateWizard(Instance(short_name="snow"))
    titles = [wizard.step_title(wizard.step)]
    wizard.choose_no_url()
    titles.append(wizard.step_title(wizard.step))
    wizard.set_public_url("https://snow.example.com")
    for _ in range(3):  # public URL, configuration type, note
        if wizard.step is Step.CONFIG_TYPE:
            wizard.set_mode(Mode.SCRIPT)
        assert wizard.next()
        titles.append(wizard.step_title(wizard.step))
    assert titles == [
        "Step 1: Destination",
        "Step 2: Public URL",
        "Step 3: Configuration type",
        "Step 4: Note",
        "Step 5: Connection information",
    ]


def test_a_connection_to_itself_is_refused_with_the_reason() -> None:
    wizard = InitiateWizard(Instance(short_name="snow", public_url="https://snow.example.com"))
    wizard.choose_no_url()
    wizard.set_mode(Mode.SCRIPT)
    assert wizard.next() and wizard.next()
    assert wizard.step is Step.INFO
    wizard.set_remote_name("SNOW")
    assert not wizard.next()
    assert "this instance's short name: a connection to itself" in wizard.errors["remote_name"]
    wizard.set_remote_name("jira")
    assert wizard.next() and wizard.issued is not None


def test_accepting_a_code_this_instance_issued_is_refused_with_the_reason() -> None:
    from exalate_tui.flows.accept import AcceptWizard

    snow = Instance(short_name="snow", public_url="https://snow.example.com")
    wizard = InitiateWizard(snow)
    wizard.choose_no_url()
    wizard.set_mode(Mode.SCRIPT)
    assert wizard.next() and wizard.next()
    wizard.set_remote_name("jira")
    assert wizard.next() and wizard.issued is not None
    accept = AcceptWizard(snow, [])
    accept.set_code(wizard.issued.code)
    assert not accept.next()
    assert "issued by this instance (snow): a connection to itself" in accept.errors["code"]
    other = AcceptWizard(Instance(short_name="jira"), [])
    other.set_code(wizard.issued.code)
    assert other.next()
