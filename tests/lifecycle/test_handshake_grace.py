"""A repeated handshake: the same offer within the grace period gets the same secret
(a crashed acceptor can finish); any other offer, or a late one, is still refused,
as a used invitation is (issue 10, item 4; docs/protocol.md, Handshake)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Instance, Mode
from exalate_tui.flows.initiate import InitiateWizard
from exalate_tui.home.store import Home
from exalate_tui.lifecycle import handshake
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.protocol.wire import HandshakeIn
from exalate_tui.transport.hooks import HandshakeRefused
from exalate_tui.transport.sqlite_streams import SqliteStreams

NOW = time.time()


def issue(tmp_path: Path) -> tuple[Home, SqliteStreams, HandshakeIn]:
    home = Home(tmp_path / "snow")
    instance = Instance(short_name="snow", public_url="http://127.0.0.1:7001")
    home.save_instance(instance)
    wizard = InitiateWizard(instance, [])
    wizard.choose_no_url()
    wizard.set_mode(Mode.BASIC)
    wizard.next()
    wizard.next()
    wizard.set_remote_name("jira")
    assert wizard.next() and wizard.issued
    assert save_issued(home, wizard.issued.connection, wizard.new_instance)
    invite = wizard.issued.invitation
    offer = HandshakeIn(
        cid=invite.cid, tok=invite.tok, short_name="jira", url=None, sum=codes.digest(invite)
    )
    state = SqliteStreams(home.state_path)
    return home, state, offer


def test_the_same_offer_within_the_grace_period_gets_the_same_secret(tmp_path: Path) -> None:
    home, state, offer = issue(tmp_path)
    winners = handshake.Winners()
    first = handshake.take_invitation(home, state, offer, NOW, winners)
    file_after_first = home.connection_path(offer.cid).read_bytes()
    again = handshake.take_invitation(home, state, offer, NOW + handshake.GRACE - 1, winners)
    assert first.secret is not None and again.secret is not None
    assert again.secret.get_secret_value() == first.secret.get_secret_value()
    assert home.connection_path(offer.cid).read_bytes() == file_after_first
    assert [m.kind for m in state.pending(offer.cid)] == ["hello"]  # one hello only


@pytest.mark.parametrize(
    "change",
    [{"short_name": "thief"}, {"url": "http://127.0.0.1:7002"}, {"sum": "0" * 64}],
)
def test_any_other_offer_is_still_refused(tmp_path: Path, change: dict[str, str]) -> None:
    home, state, offer = issue(tmp_path)
    winners = handshake.Winners()
    handshake.take_invitation(home, state, offer, NOW, winners)
    before = home.connection_path(offer.cid).read_bytes()
    with pytest.raises(HandshakeRefused) as refused:
        handshake.take_invitation(home, state, offer.model_copy(update=change), NOW + 1, winners)
    assert refused.value.code == "invalid_invitation"
    assert home.connection_path(offer.cid).read_bytes() == before


def test_after_the_grace_period_the_same_offer_is_refused(tmp_path: Path) -> None:
    home, state, offer = issue(tmp_path)
    winners = handshake.Winners()
    handshake.take_invitation(home, state, offer, NOW, winners)
    with pytest.raises(HandshakeRefused) as refused:
        handshake.take_invitation(home, state, offer, NOW + handshake.GRACE, winners)
    assert refused.value.code == "invalid_invitation"
