"""Faults between two real nodes (issue 3, "How we will know"), seed topology.

The private node is killed with SIGKILL while 1,000 messages stream each way
and restarted: every message is applied exactly once, in order. The public
node restarts under a running poller: the poller backs off, recovers, and
nothing is lost.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from .conftest import Instance, MakeInstance, wait_for
from .test_e2e_topologies import connect

N = 1000
CHUNK = 10


def seed(instances: MakeInstance) -> tuple[Instance, Instance, str]:
    """snow (public) and jira (private), a node each, connected with the CLI."""
    public = instances("snow", public=True)
    private = instances("jira", public=False)
    public.start()
    private.start()
    public.serving()
    private.serving()
    cid, _ = connect(public, private, "public-private")
    return public, private, cid


def streamer(sender: Instance, cid: str, gate: threading.Event) -> threading.Thread:
    """Enqueue pings 0..N-1 in small commits, as an app would; past 70 % it waits for
    `gate`, so the stream is certain to still be running when the fault comes."""

    def stream() -> None:
        for start in range(0, N, CHUNK):
            if start == N * 7 // 10:
                assert gate.wait(60), "the fault never came"
            chunk = [
                ("ping", {"from": sender.short_name, "n": n}) for n in range(start, start + CHUNK)
            ]
            sender.state.enqueue_many(cid, chunk)
            time.sleep(0.002)  # a stream, not one burst: the kill lands mid-flow

    thread = threading.Thread(target=stream, name=f"stream:{sender.short_name}", daemon=True)
    thread.start()
    return thread


def applied_exactly_once(receiver: Instance, sender: Instance, cid: str) -> None:
    """The receiver's inbox: hello, then pings 0..N-1, each once, in order."""
    inbox = receiver.state.inbox(cid, limit=N + 10)
    assert [m.seq for m in inbox] == list(range(1, N + 2))
    assert inbox[0].kind == "hello"
    assert [m.body for m in inbox[1:]] == [{"from": sender.short_name, "n": n} for n in range(N)]


@pytest.mark.e2e
def test_private_node_killed_mid_stream_applies_every_message_once(
    instances: MakeInstance,
) -> None:
    public, private, cid = seed(instances)
    gate = threading.Event()
    threads = [streamer(public, cid, gate), streamer(private, cid, gate)]
    try:
        # Both directions are flowing: kill the private node (it makes every request).
        wait_for(
            lambda: private.state.last_applied(cid) > 100 and public.state.last_applied(cid) > 100,
            "both directions flowing",
        )
        private.kill()
        at_kill = (private.state.last_applied(cid), public.state.last_applied(cid))
    finally:
        gate.set()
        for thread in threads:
            thread.join(timeout=60)
    assert at_kill[0] < N + 1 and at_kill[1] < N + 1  # mid-stream, both ways

    private.start()
    private.serving()
    wait_for(lambda: private.state.last_applied(cid) == N + 1, "jira applied all of snow's")
    wait_for(lambda: public.state.last_applied(cid) == N + 1, "snow applied all of jira's")
    applied_exactly_once(private, public, cid)
    applied_exactly_once(public, private, cid)
    # Acknowledged everywhere: both outboxes drain.
    wait_for(
        lambda: public.state.pending(cid) == [] and private.state.pending(cid) == [],
        "both outboxes drained",
    )


class Impostor:
    """Holds the public node's port while it is down and counts who knocks.

    It accepts and hangs up at once, so each request the poller makes shows up as
    one connection: a poller that did not back off would knock hundreds of times.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.sock.settimeout(0.05)
        self.knocks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.knocks += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.mark.e2e
def test_poller_backs_off_while_the_public_node_restarts_and_recovers(
    instances: MakeInstance,
) -> None:
    """`systemctl restart` of the public node (its SIGKILL: tests/transport/test_supervisor.py)."""
    public, private, cid = seed(instances)
    public.state.enqueue(cid, "ping", {"n": "before"})
    wait_for(lambda: private.state.last_applied(cid) == 2, "the first ping")

    stopped_at = time.time()
    assert public.stop() == 0  # graceful: open long-polls are answered at once
    impostor = Impostor(public.port)
    try:
        # Both sides keep talking while the public node is away.
        public.state.enqueue_many(cid, [("ping", {"n": n}) for n in range(100)])
        private.state.enqueue_many(cid, [("ping", {"n": n}) for n in range(100)])
        wait_for(lambda: impostor.knocks >= 2, "the private side retried")
        time.sleep(1.0)  # a window to count knocks in: no event says "did not knock"
        knocks = impostor.knocks
        contact = private.state.contact(cid)
    finally:
        impostor.close()
    # Full-jitter backoff (0.5 s doubling) allows a handful of knocks from the poller
    # and the pusher in this time; a retry loop without backoff makes hundreds.
    assert knocks <= 15, knocks
    assert contact.last_error and contact.error_since is not None
    assert contact.error_since >= stopped_at - 1

    public.start()
    public.serving()
    wait_for(lambda: private.state.last_applied(cid) == 102, "jira got snow's queued pings")
    wait_for(lambda: public.state.last_applied(cid) == 101, "snow got jira's queued pings")
    assert [m.body for m in private.state.inbox(cid, after=2)] == [{"n": n} for n in range(100)]
    assert [m.body for m in public.state.inbox(cid, after=1)] == [{"n": n} for n in range(100)]
    wait_for(lambda: private.state.contact(cid).last_error is None, "the error clears")
    wait_for(
        lambda: public.state.pending(cid) == [] and private.state.pending(cid) == [],
        "both outboxes drained",
    )
