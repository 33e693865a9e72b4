"""The live state the consoles show: stored status, what the partner said, last contact."""

from __future__ import annotations

from exalate_tui.domain.live import POLL_SILENCE, Contact, Live, ago, live_state, when
from exalate_tui.domain.models import Connection, Mode, PeerState, Role, Status, Topology
from exalate_tui.protocol.wire import MAX_WAIT

NOW = 1_714_564_800.0  # 2024-05-01 12:00:00 UTC


def connection(status: Status, peer: PeerState | None = None) -> Connection:
    return Connection(
        name="snow_to_jira",
        mode=Mode.BASIC,
        topology=Topology.PUBLIC_PRIVATE,
        role=Role.INITIATOR,
        local_name="snow",
        remote_name="jira",
        status=status,
        peer_state=peer,
    )


def test_ago_rounds_down_in_the_largest_unit() -> None:
    assert [ago(s) for s in (-3, 0, 59, 60, 3599, 3600, 86399, 86400 * 3)] == [
        "0 s ago",
        "0 s ago",
        "59 s ago",
        "1 min ago",
        "59 min ago",
        "1 h ago",
        "23 h ago",
        "3 d ago",
    ]


def test_when_drops_the_date_within_a_day() -> None:
    assert when(NOW - 90, NOW) == "11:58:30 UTC"
    assert when(NOW - 86400, NOW) == "2024-04-30 12:00 UTC"


def test_active_shows_the_last_contact_from_the_given_clock() -> None:
    state = live_state(connection(Status.ACTIVE), Contact(last_ok=NOW - 12), NOW)
    assert (state.live, state.label, state.detail) == (
        Live.ACTIVE,
        "Active",
        "last contact 12 s ago",
    )
    assert live_state(connection(Status.ACTIVE), Contact(), NOW).detail == "no contact yet"


def test_an_error_makes_an_active_connection_unreachable_since_it_began() -> None:
    contact = Contact(last_ok=NOW - 600, last_error="Cannot reach x: refused", error_since=NOW - 90)
    state = live_state(connection(Status.ACTIVE), contact, NOW)
    assert (state.live, state.detail, state.error) == (
        Live.UNREACHABLE,
        "since 11:58:30 UTC",
        "Cannot reach x: refused",
    )


def test_what_the_partner_said_is_shown_beside_this_sides_status() -> None:
    paused = live_state(connection(Status.ACTIVE, PeerState.DEACTIVATED), Contact(), NOW)
    assert (paused.label, paused.detail) == ("Paused by partner", "deactivated there")
    deleted = live_state(connection(Status.DEACTIVATED, PeerState.DELETED), Contact(), NOW)
    assert (deleted.live, deleted.detail) == (Live.DEACTIVATED, "deleted by the partner")
    mine = live_state(connection(Status.DEACTIVATED), Contact(last_error="x"), NOW)
    assert (mine.live, mine.detail, mine.error) == (Live.DEACTIVATED, "deactivated here", "x")


def test_pending_waits_for_the_partner_whatever_the_contact() -> None:
    state = live_state(connection(Status.PENDING), Contact(last_error="403 invalid"), NOW)
    assert (state.live, state.detail) == (Live.PENDING, "waiting for jira")


def test_a_polled_connection_is_unreachable_once_no_poll_can_still_be_open() -> None:
    """The polled side records contact as each poll begins and a poll waits at most
    MAX_WAIT: past that (and a margin), nobody is polling, whatever the last contact."""
    public = connection(Status.ACTIVE)  # public-private, initiator: jira polls it
    assert POLL_SILENCE > MAX_WAIT
    quiet = live_state(public, Contact(last_ok=NOW - POLL_SILENCE), NOW)
    assert (quiet.live, quiet.detail) == (Live.ACTIVE, "last contact 35 s ago")
    gone = live_state(public, Contact(last_ok=NOW - POLL_SILENCE - 1), NOW)
    assert (gone.live, gone.label, gone.detail) == (
        Live.UNREACHABLE,
        "Unreachable",
        "no poll for 36 s",
    )
    later = live_state(public, Contact(last_ok=NOW - 600), NOW)
    assert later.detail == "no poll for 10 min"
    # The polling side's own poller stopped (its console closed, no node).
    private = public.model_copy(update={"role": Role.ACCEPTOR})
    assert live_state(private, Contact(last_ok=NOW - 120), NOW).detail == "not polling for 2 min"
    # Pushes happen only when there is something to send: silence says nothing there.
    both = public.model_copy(update={"topology": Topology.PUBLIC_PUBLIC})
    assert live_state(both, Contact(last_ok=NOW - 600), NOW).detail == "last contact 10 min ago"
    # What the partner said comes first: a paused partner does not poll.
    paused = public.model_copy(update={"peer_state": PeerState.DEACTIVATED})
    assert live_state(paused, Contact(last_ok=NOW - 600), NOW).live is Live.PAUSED
