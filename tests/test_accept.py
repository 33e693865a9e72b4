"""Accept invitation: the pure AcceptWizard, and `accept.accept` against the real node.

Codes are issued by the real InitiateWizard in a second home, so both halves
of the contract meet here exactly as they do between two instances.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from exalate_tui import invitation as codes
from exalate_tui.accept import AcceptError, accept
from exalate_tui.models import Connection, Instance, Mode, Role, Topology
from exalate_tui.queue import State
from exalate_tui.store import Home
from exalate_tui.wizard import AcceptStep, AcceptWizard, InitiateWizard, remaining

NOW = 1_800_000_000.0
PUBLIC_A = "http://127.0.0.1:7001"
PUBLIC_B = "http://127.0.0.1:7002"


def issue(
    home: Home,
    instance: Instance,
    *,
    dest_url: str | None,
    now: float = NOW,
    name: str = "",
    remote_name: str = "jira",
) -> tuple[str, codes.Invitation]:
    """A code from the real Initiate wizard: dest_url None means "I don't have a URL"."""
    home.save_instance(instance)
    wizard = InitiateWizard(home, instance, now=lambda: now)
    if dest_url is None:
        wizard.choose_no_url()
    else:
        wizard.set_dest_url(dest_url)
        assert wizard.next()
    wizard.set_mode(Mode.SCRIPT)
    assert wizard.next()
    if wizard.topology is Topology.PUBLIC_PRIVATE:
        assert wizard.next()  # the note
    wizard.set_remote_name(remote_name)
    if name:
        wizard.set_name(name)
    assert wizard.next(), wizard.errors
    assert wizard.issued is not None
    return wizard.issued.code, wizard.issued.invitation


@pytest.fixture
def initiator(tmp_path: Path) -> Home:
    return Home(tmp_path / "initiator")


@pytest.fixture
def acceptor(tmp_path: Path) -> Home:
    return Home(tmp_path / "acceptor")


def accept_wizard(home: Home, instance: Instance | None, now: float = NOW) -> AcceptWizard:
    return AcceptWizard(home, instance, now=lambda: now)


# -- the pure wizard ------------------------------------------------------------


def test_a_pasted_code_with_line_breaks_previews_what_it_is(
    initiator: Home, acceptor: Home
) -> None:
    code, invite = issue(initiator, Instance(short_name="snow", public_url=PUBLIC_A), dest_url=None)
    wizard = accept_wizard(acceptor, None)
    pasted = "\n".join(code[i : i + 30] for i in range(0, len(code), 30)) + "\n  "
    assert wizard.set_code(pasted) is None
    preview = wizard.preview
    assert preview is not None
    assert (preview.from_name, preview.to_name, preview.name) == ("snow", "jira", "snow_to_jira")
    assert preview.mode is Mode.SCRIPT
    assert preview.topology is Topology.PUBLIC_PRIVATE
    assert "this side has none and will poll it" in preview.topology_text
    assert preview.initiator_url == PUBLIC_A
    assert preview.expires.timestamp() == invite.exp
    assert preview.expires_in == "in 7 days"
    assert wizard.name == "snow_to_jira"


def test_damaged_code_says_so_and_does_not_advance(initiator: Home, acceptor: Home) -> None:
    code, _ = issue(initiator, Instance(short_name="snow", public_url=PUBLIC_A), dest_url=None)
    wizard = accept_wizard(acceptor, None)
    damaged = code[:20] + ("A" if code[20] != "A" else "B") + code[21:]
    problem = wizard.set_code(damaged)
    assert problem is not None and "damaged" in problem
    assert wizard.preview is None
    assert not wizard.next()
    assert wizard.step is AcceptStep.CODE


def test_empty_code_is_refused(acceptor: Home) -> None:
    wizard = accept_wizard(acceptor, None)
    assert not wizard.next()
    assert "No invitation code given" in wizard.errors["code"]


def test_expired_code_shows_the_preview_and_why(initiator: Home, acceptor: Home) -> None:
    code, invite = issue(initiator, Instance(short_name="snow", public_url=PUBLIC_A), dest_url=None)
    wizard = accept_wizard(acceptor, None, now=invite.exp + 1)
    problem = wizard.set_code(code)
    assert problem is not None
    assert problem.startswith("This invitation expired on ")
    assert "ask snow for a new code" in problem
    assert wizard.preview is not None and wizard.preview.expires_in == "expired"
    assert not wizard.next()


def test_own_code_and_already_accepted_code_are_refused(initiator: Home) -> None:
    instance = Instance(short_name="snow", public_url=PUBLIC_A)
    code, invite = issue(initiator, instance, dest_url=None)
    own = accept_wizard(initiator, instance)
    assert "This instance issued this invitation" in (own.set_code(code) or "")

    accepted_home = Home(initiator.path.parent / "accepted")
    wizard = accept_wizard(accepted_home, None)
    wizard.set_code(code)
    accepted_home.save_connection(
        Connection(
            id=invite.cid,
            name="snow_to_jira",
            mode=Mode.SCRIPT,
            topology=Topology.PUBLIC_PRIVATE,
            role=Role.ACCEPTOR,
            local_name="jira",
        )
    )
    again = accept_wizard(accepted_home, None)
    assert again.set_code(code) == (
        "This invitation was already accepted here (connection 'snow_to_jira')."
    )


@pytest.mark.parametrize("initiator_url", [PUBLIC_A, None])
def test_public_topologies_need_a_public_url_here(
    initiator: Home, acceptor: Home, initiator_url: str | None
) -> None:
    code, _ = issue(
        initiator, Instance(short_name="snow", public_url=initiator_url), dest_url=PUBLIC_B
    )
    wizard = accept_wizard(acceptor, Instance(short_name="jira"))
    problem = wizard.set_code(code)
    assert problem is not None
    assert f"public URL ({PUBLIC_B}), but this instance has none" in problem
    assert "--public-url" in problem


def test_a_different_public_url_is_a_warning_not_an_error(initiator: Home, acceptor: Home) -> None:
    code, _ = issue(initiator, Instance(short_name="snow"), dest_url=PUBLIC_B)
    wizard = accept_wizard(acceptor, Instance(short_name="jira", public_url=PUBLIC_A))
    assert wizard.set_code(code) is None
    assert wizard.warnings and PUBLIC_B in wizard.warnings[0]
    same = accept_wizard(acceptor, Instance(short_name="jira", public_url=PUBLIC_B + "/"))
    same.set_code(code)
    assert same.warnings == []


def test_details_default_to_the_instance_and_are_checked(initiator: Home, acceptor: Home) -> None:
    code, _ = issue(initiator, Instance(short_name="snow", public_url=PUBLIC_A), dest_url=None)
    acceptor.save_connection(
        Connection(
            name="SNOW_to_jira",
            mode=Mode.BASIC,
            topology=Topology.PUBLIC_PUBLIC,
            role=Role.INITIATOR,
            local_name="jira",
        )
    )
    wizard = accept_wizard(acceptor, Instance(short_name="jira"))
    wizard.set_code(code)
    assert wizard.next()
    assert wizard.step is AcceptStep.DETAILS
    assert wizard.local_name == "jira"
    assert not wizard.next()
    assert "already exists in this home" in wizard.errors["name"]
    assert wizard.set_local_name("no spaces") is not None
    wizard.set_name("snow_to_jira_2")
    wizard.set_local_name("jira")
    assert wizard.next()
    assert wizard.step is AcceptStep.ACCEPTING
    wizard.record_failure("This invitation was already used: ask snow for a new code.")
    assert wizard.step is AcceptStep.DETAILS
    assert wizard.back() and wizard.step is AcceptStep.CODE


def test_remaining_rounds_down() -> None:
    assert remaining(7 * 86400) == "in 7 days"
    assert remaining(86400 + 5) == "in 1 day"
    assert remaining(3 * 3600 + 59) == "in 3 hours"
    assert remaining(61) == "in 1 minute"
    assert remaining(30) == "in less than a minute"
    assert remaining(0) == "expired"


def test_accept_checks_before_any_io(initiator: Home, acceptor: Home) -> None:
    """An expired code is refused by accept() itself; the home stays empty."""
    _, invite = issue(
        initiator,
        Instance(short_name="snow", public_url=PUBLIC_A),
        dest_url=None,
        now=time.time() - 8 * 86400,
    )
    acceptor.ensure()
    state = State(acceptor.state_path)
    with pytest.raises(AcceptError) as error:
        asyncio.run(accept(acceptor, state, invite, "jira"))
    assert error.value.bad_input
    assert str(error.value).startswith("This invitation expired on ")
    assert acceptor.load_connections().connections == []
    assert state.last_seq(invite.cid) == 0
