"""The two-instance walk-through, for each topology, with the headless CLI only.

Two homes, an `exalate-tui node` each on 127.0.0.1; initiate on one, accept on
the other; both report Active within seconds; messages flow both ways; a used
code is refused; deactivate, activate and delete reach the partner.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from exalate_tui.home.store import Home
from exalate_tui.transport.streams import Message
from exalate_tui.transport.supervisor import ConnectionLock

from .conftest import Instance, MakeInstance, run_cli, wait_for

# (initiator public, acceptor public) per topology, as domain/topology.py's table.
TOPOLOGIES = {
    "public-private": (True, False),
    "public-public": (True, True),
    "private-public": (False, True),
}
SECRETS = {"secret", "token", "token_hash"}
# "Active within seconds": generous for a loaded machine, far below any backoff cap.
ACTIVE_WITHIN = 15.0


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """The home's files an accept would write, with size and mtime: to prove it wrote none.

    (state.sqlite3 is left out: the running node writes it all the time.)
    """
    files = [path / "instance.toml", *sorted(path.glob("connections/*"))]
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in files
        if p.is_file()
    }


def initiate(a: Instance, b: Instance) -> str:
    """`initiate` on `a` towards `b`, as its admin would: --url when `b` has one."""
    where = ["--url", b.url] if b.public else ["--no-url"]
    code = a.ok(
        "initiate", *where, "--mode", "script",
        "--local-name", a.short_name, "--remote-name", b.short_name,
    ).strip()  # fmt: skip
    assert code.startswith("exa1.") and "\n" not in code
    return code


def connect(a: Instance, b: Instance, topology: str) -> tuple[str, str]:
    """Initiate on `a`, accept on `b`, wait until both say Active; the id and the code."""
    code = initiate(a, b)
    # Pasted the way mail clients fold it: the line breaks do not matter.
    folded = "\n".join(code[i : i + 64] for i in range(0, len(code), 64)) + "\n"
    accepted = b.json("accept", "-", stdin=folded)
    connection = accepted["connection"]
    cid: str = connection["id"]
    assert connection["topology"] == topology and connection["role"] == "acceptor"
    assert not SECRETS & connection.keys()
    if topology == "private-public":
        # Nothing to call: the private initiator's node calls in with the token.
        assert accepted["stages"] == ["waiting"] and connection["status"] == "pending"
    else:
        assert accepted["stages"] == ["contacting", "accepted", "connected"]
        assert connection["status"] == "active"

    def both_active() -> bool:
        return a.show(cid)["status"] == "active" and b.show(cid)["status"] == "active"

    wait_for(both_active, "both sides Active", timeout=ACTIVE_WITHIN)
    here, there = a.show(cid), b.show(cid)
    assert (here["role"], here["remote_name"]) == ("initiator", b.short_name)
    assert (there["remote_name"], there["topology"]) == (a.short_name, topology)
    assert not SECRETS & (here.keys() | there.keys())
    # Each side's node handed the other a `hello` (seq 1 of each stream).
    wait_for(lambda: a.state.last_applied(cid) >= 1 and b.state.last_applied(cid) >= 1, "hellos")
    assert a.state.inbox(cid)[0] == Message(1, "hello", f'{{"short_name":"{b.short_name}"}}')
    assert b.state.inbox(cid)[0] == Message(1, "hello", f'{{"short_name":"{a.short_name}"}}')
    return cid, code


def exchange(a: Instance, b: Instance, cid: str, count: int, tag: str) -> None:
    """`count` pings each way, enqueued by this process; each arrives once, in order."""
    sent_a = a.state.enqueue_many(cid, pings(a, count, tag))
    sent_b = b.state.enqueue_many(cid, pings(b, count, tag))
    for sender, receiver, seqs in ((a, b, sent_a), (b, a, sent_b)):

        def arrived(r: Instance = receiver, last: int = seqs[-1]) -> bool:
            return r.state.last_applied(cid) >= last

        wait_for(arrived, f"{receiver.short_name} applied {tag} pings up to {seqs[-1]}")
        got = receiver.state.inbox(cid, after=seqs[0] - 1, limit=count + 10)
        assert [m.seq for m in got] == seqs
        assert [m.body for m in got] == [body for _, body in pings(sender, count, tag)]


def pings(sender: Instance, count: int, tag: str) -> list[tuple[str, dict[str, Any]]]:
    return [("ping", {"from": sender.short_name, "tag": tag, "n": n}) for n in range(count)]


def lock_free(instance: Instance, cid: str) -> bool:
    """Whether no process runs the connection's requests (polls, pushes) now."""
    lock = ConnectionLock(Home(instance.home), cid)
    free = lock.acquire()
    lock.release()
    return free


def kinds(instance: Instance, cid: str, after: int) -> list[str]:
    return [m.kind for m in instance.state.inbox(cid, after=after)]


@pytest.mark.e2e
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_two_instances_connect_talk_pause_and_delete(
    instances: MakeInstance, tmp_path: Path, topology: str
) -> None:
    a_public, b_public = TOPOLOGIES[topology]
    a = instances("snow", public=a_public)
    b = instances("jira", public=b_public)
    a.start()
    b.start()
    a.serving()
    b.serving()

    cid, code = connect(a, b, topology)
    exchange(a, b, cid, 25, "first")

    # -- the code was single-use --------------------------------------------------
    before = tree(b.home)
    again = b.cli("accept", code)
    assert again.returncode == 2 and "accept" in again.stderr and again.stdout == ""
    assert tree(b.home) == before
    if topology != "private-public":
        # A third instance presents the burnt token: the initiator's node refuses it.
        other = tmp_path / "conf"
        if b_public:  # a public-public code wants an acceptor the initiator can call
            run_cli("--home", str(other), "init", "--short-name", "conf", "--public-url", b.url)
        written = tree(other) if other.exists() else None
        used = run_cli("--home", str(other), "accept", code, "--short-name", "conf")
        assert used.returncode == 2, used.stderr
        assert "already used" in used.stderr
        assert (tree(other) if other.exists() else None) == written
    # (A private initiator's code names no URL to ask: a third public instance would
    # wait for a call that never comes. Nothing to refuse there.)

    # -- deactivate on the acceptor, activate again ----------------------------------
    # The acceptor calls the initiator unless the initiator is private (it polls).
    acceptor_calls = topology != "private-public"
    mark_a = a.state.last_applied(cid)
    paused = b.json("connections", "deactivate", cid)
    assert paused["connection"]["status"] == "deactivated"
    assert paused["partner"] == ("delivered" if acceptor_calls else "queued")
    if acceptor_calls:
        assert a.show(cid)["peer_state"] == "deactivated"
    else:
        # The initiator's polls meet 409 `deactivated` until the acceptor activates.
        wait_for(
            lambda: "deactivated" in (a.state.contact(cid).last_error or ""),
            "the initiator sees the pause",
        )
    # The acceptor's node has stopped its requests (it holds no link's lock), and
    # messages queue on both sides instead of flowing.
    wait_for(lambda: lock_free(b, cid), "the acceptor's node stops calling")
    mark_b = b.state.last_applied(cid)
    a.state.enqueue(cid, "ping", {"while": "paused"})
    b.state.enqueue(cid, "ping", {"while": "paused"})
    held = time.monotonic() + 0.5  # a bounded look: nothing has an event for "did not arrive"
    while time.monotonic() < held:
        # A long-poll open at the moment of the pause may carry the news itself.
        assert kinds(a, cid, mark_a) in ([], ["connection.deactivated"])
        assert b.state.last_applied(cid) == mark_b
        time.sleep(0.05)
    resumed = b.json("connections", "activate", cid)
    assert resumed["connection"]["status"] == "active"
    wait_for(lambda: a.stored(cid).peer_state is None, "the initiator sees the resume")
    assert a.show(cid)["peer_state"] is None
    wait_for(lambda: a.state.last_applied(cid) >= mark_a + 3, "the news and the queued ping")
    assert kinds(a, cid, mark_a) == ["connection.deactivated", "ping", "connection.activated"]
    wait_for(lambda: b.state.last_applied(cid) == mark_b + 1, "the initiator's queued ping")
    assert b.state.inbox(cid, after=mark_b)[0].body == {"while": "paused"}

    # -- the same from the initiator's side ------------------------------------------------
    initiator_calls = topology != "public-private"
    mark_b = b.state.last_applied(cid)
    paused = a.json("connections", "deactivate", cid)
    assert paused["partner"] == ("delivered" if initiator_calls else "queued")
    if initiator_calls:
        assert b.show(cid)["peer_state"] == "deactivated"
    a.ok("connections", "activate", cid)
    wait_for(lambda: b.state.last_applied(cid) >= mark_b + 2, "both news applied")
    assert kinds(b, cid, mark_b) == ["connection.deactivated", "connection.activated"]
    assert b.show(cid)["peer_state"] is None
    exchange(a, b, cid, 10, "after the pauses")
    wait_for(
        lambda: a.state.contact(cid).last_error is None and b.state.contact(cid).last_error is None,
        "no error left on either side",
    )

    # -- delete: the partner hears of it --------------------------------------------------
    # One deleting side per topology covers both paths: the public initiator of a
    # polling partner leaves a tombstone; the others push `connection.deleted`.
    deleter, partner = (b, a) if topology == "public-public" else (a, b)
    told = "queued" if topology == "public-private" else "delivered"
    deleted = deleter.json("connections", "delete", cid)
    assert deleted["deleted"]["id"] == cid
    assert deleted["partner"] == told, deleted["partner_error"]
    assert deleter.cli("connections", "show", cid).returncode == 2
    wait_for(lambda: partner.stored(cid).peer_state == "deleted", "the partner sees the delete")
    shown = partner.show(cid)
    assert (shown["peer_state"], shown["status"]) == ("deleted", "deactivated")
    # Nothing is left behind on the deleting side once the partner has heard.
    wait_for(
        lambda: (
            not (deleter.home / "tombstones").exists()
            or not os.listdir(deleter.home / "tombstones")
        ),
        "the tombstone is dropped",
    )
    assert deleter.state.last_seq(cid) == 0 and deleter.state.inbox(cid) == []
    # The partner's admin can only delete it too; there is nobody left to tell.
    last = partner.json("connections", "delete", cid)
    assert last["partner"] == "nobody"
    assert partner.json("connections")["connections"] == []
    assert deleter.json("connections")["connections"] == []

    # The node that took the handshake says so, with the partner's part in it.
    caller, taker = (a, b) if topology == "private-public" else (b, a)
    did = "initiated" if topology == "private-public" else "accepted"
    assert f"connection {cid} is active: {caller.short_name} {did} it" in taker.log.read_text()
    # The nodes' logs (the journal, under systemd) hold their own lines, not one per request.
    for instance in (a, b):
        lines = instance.log.read_text().splitlines()
        assert lines and "listening on" in lines[0]
        assert not [line for line in lines if "httpx" in line or "Traceback" in line], lines
