"""Wake-ups between workers sharing one PostgreSQL database: LISTEN/NOTIFY, as a hint.

A worker's enqueue must wake a long-poll parked on another worker within
milliseconds (docs/protocol.md, Runtime). `Hints` does it for one worker:

- **Telling.** `tell(cids)` after an append commits; a thread of its own
  sends what gathered as one `pg_notify` statement (payload: this worker's
  id and the cids), at most one each `DEBOUNCE` seconds, outside the
  append's transaction: a NOTIFYing commit takes a database-wide lock, so a
  burst of appends costs one NOTIFY, not one per message.
- **Hearing.** One connection per worker, outside the pool, LISTENs on
  `CHANNEL` in a thread of its own and hands the other workers' cids to
  `heard` (the streams' `on_hint` listeners: the node's long-polls, the
  supervisor's pushers). Its own payloads it skips.
- **Only a hint.** A NOTIFY sent while the listener's connection is down is
  lost, so `version()` (the streams' `data_version`) also moves every
  `POLL_EVERY` seconds, on every call while the listener is down, and once
  when it is back: the watchers that poll it look at the outboxes again by
  themselves. The listener reconnects with backoff, for as long as it runs.
- **Straight to PostgreSQL.** A pooler in transaction mode (PgBouncer) hands
  each transaction to any server connection: a LISTEN through it listens on a
  connection the worker no longer holds, and hears nothing. `check_listening`,
  run when the streams open with a listener, sends itself a NOTIFY and refuses
  (`StateError`, saying to set `EXALATE_TUI_DATABASE_LISTEN_URL` to a URL
  that reaches PostgreSQL directly) when it does not arrive; the pool's
  statements may keep going through the pooler.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

import psycopg

from exalate_tui.domain.models import shown_database
from exalate_tui.transport.storage import LISTEN_ENV
from exalate_tui.transport.streams import StateError

log = logging.getLogger(__name__)

CHANNEL = "exalate_tui_streams"
# At most one NOTIFY per worker per this many seconds; the first after a quiet spell
# goes at once.
DEBOUNCE = 0.002
# `version()` moves at least this often, however quiet the hints are.
POLL_EVERY = 1.0
# PostgreSQL refuses a payload of 8000 bytes or more.
PAYLOAD_BYTES = 7900
# How long the listener waits for a notification before looking whether to stop.
LISTEN_SLICE = 0.25
RECONNECT_CAP = 2.0
# How long `check_listening` waits for its own NOTIFY (it comes in a few ms when direct).
PROBE_TIMEOUT = 2.0


def check_listening(listen_url: str, url: str) -> None:
    """A LISTEN on `listen_url` hears a NOTIFY sent through `url` (the pool's), on one
    server connection; else `StateError` saying what to do (see the module's docstring)."""
    where = shown_database(listen_url)
    token = uuid.uuid4().hex
    channel = f"exalate_tui_probe_{token}"
    try:
        with psycopg.connect(
            listen_url, autocommit=True, connect_timeout=10, prepare_threshold=None
        ) as listener:
            before = listener.execute("SELECT pg_backend_pid()").fetchone()
            listener.execute(f"LISTEN {channel}")
            after = listener.execute("SELECT pg_backend_pid()").fetchone()
            heard = False
            if before == after:
                with psycopg.connect(
                    url, autocommit=True, connect_timeout=10, prepare_threshold=None
                ) as sender:
                    sender.execute("SELECT pg_notify(%s, %s)", (channel, token))
                heard = any(
                    note.payload == token
                    for note in listener.notifies(timeout=PROBE_TIMEOUT, stop_after=1)
                )
            if heard:
                listener.execute(f"UNLISTEN {channel}")
                return
    except psycopg.Error as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise StateError(
            f"{where}: the wake-up listener cannot be opened ({reason}); check {LISTEN_ENV} "
            "or the database URL"
        ) from None
    why = (
        "its statements ran on different server connections"
        if before != after
        else f"a NOTIFY sent to it did not arrive within {PROBE_TIMEOUT:g} s"
    )
    raise StateError(
        f"{where}: LISTEN does not work on this connection ({why}): a pooler in transaction "
        f"mode (PgBouncer) stands between it and PostgreSQL. Set {LISTEN_ENV} to a URL that "
        "reaches PostgreSQL directly, for the one listener connection of each worker (the "
        "other statements may keep going through the pooler)"
    )


def payloads(worker: str, cids: Iterable[str]) -> list[str]:
    """`worker cid cid ...`, split so that each stays under `PAYLOAD_BYTES`."""
    out: list[str] = []
    current = worker
    for cid in cids:
        if len(current) + 1 + len(cid.encode()) > PAYLOAD_BYTES:
            out.append(current)
            current = worker
        current += " " + cid
    if current != worker:
        out.append(current)
    return out


class Hints:
    """One worker's NOTIFY sender and LISTEN connection (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        heard: Callable[[Iterable[str]], None],
        send: Callable[[str, Sequence[str]], None],
        *,
        listen: bool = True,
    ) -> None:
        self.url = url
        self.worker = uuid.uuid4().hex[:12]
        self._heard = heard
        self._send = send
        self._lock = threading.Lock()
        self._waiting: set[str] = set()
        self._wanted = threading.Event()
        self._closed = threading.Event()
        self._count = 0
        self.listening = False
        self.sent = 0  # NOTIFY statements sent: the tests count them
        self.backend_pid: int | None = None  # the listener's, while it is connected
        self._sender = threading.Thread(target=self._send_loop, name="pg:notify", daemon=True)
        self._sender.start()
        self._listener: threading.Thread | None = None
        if listen:
            self._listener = threading.Thread(
                target=self._listen_loop, name="pg:listen", daemon=True
            )
            self._listener.start()

    def close(self, send: Callable[[str, Sequence[str]], None] | None = None) -> None:
        """Stop both threads; `send`, when given, wakes the listener at once (a payload
        of this worker's id alone) instead of at the end of its `LISTEN_SLICE`."""
        self._closed.set()
        self._wanted.set()
        if send is not None and self.listening:
            try:
                send(CHANNEL, [self.worker])
            except Exception as error:  # noqa: BLE001 - it stops within a slice anyway
                log.debug("could not wake the listener to stop: %s", error)
        self._sender.join(timeout=2)
        if self._listener is not None:
            self._listener.join(timeout=2)

    # -- telling ------------------------------------------------------------------

    def tell(self, cids: Iterable[str]) -> None:
        """These cids' outboxes grew (committed): the other workers hear it soon."""
        with self._lock:
            self._waiting.update(cids)
        self._wanted.set()

    def _send_loop(self) -> None:
        last = 0.0
        while True:
            self._wanted.wait()
            # Closing sends what is left at once: a command's enqueue just before it
            # exits must still wake the node that serves the partner.
            closing = self._closed.is_set()
            pause = last + DEBOUNCE - time.monotonic()
            if pause > 0 and not closing:
                time.sleep(pause)
            with self._lock:
                cids, self._waiting = self._waiting, set()
                self._wanted.clear()
            if cids:
                try:
                    self._send(CHANNEL, payloads(self.worker, sorted(cids)))
                    self.sent += 1
                except Exception as error:  # noqa: BLE001 - a lost hint is found by polling
                    log.debug("hint for %d connection(s) not sent: %s", len(cids), error)
                last = time.monotonic()
            if closing:
                return

    # -- hearing --------------------------------------------------------------------

    def version(self) -> int:
        """Moves with each hint heard, every `POLL_EVERY` s, and on every call while
        nothing listens (see the module's docstring)."""
        with self._lock:
            if not self.listening:
                self._count += 1
            return self._count * 1_000_000 + int(time.monotonic() / POLL_EVERY)

    def _bump(self) -> None:
        with self._lock:
            self._count += 1

    def _listen_loop(self) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                with psycopg.connect(
                    self.url,
                    autocommit=True,
                    application_name="exalate-tui listener",
                    prepare_threshold=None,
                ) as db:
                    db.execute(f"LISTEN {CHANNEL}")
                    self.backend_pid = db.info.backend_pid
                    with self._lock:
                        self.listening = True
                        # Whatever was said while nobody listened: look again.
                        self._count += 1
                    failures = 0
                    while not self._closed.is_set():
                        for note in db.notifies(timeout=LISTEN_SLICE):
                            if self._closed.is_set():
                                break
                            worker, _, rest = note.payload.partition(" ")
                            if worker == self.worker or not rest:
                                continue
                            self._bump()
                            self._heard(rest.split())
            except psycopg.Error as error:
                if self._closed.is_set():
                    break
                log.info("the wake-up listener lost the database (%s); reconnecting", error)
            finally:
                with self._lock:
                    self.listening = False
                self.backend_pid = None
            failures += 1
            self._closed.wait(min(RECONNECT_CAP, 0.05 * 2**failures))
