"""The durable streams as the layers above see them: the `Streams` interface.

`sqlite_streams.SqliteStreams` (`state.sqlite3`, the embedded default) and
`pg_streams.PgStreams` (a PostgreSQL database several workers share) implement
it, both held to one contract suite (tests/transport/streams_contract.py);
`storage.open_streams` picks the one a home chose, and nothing above this layer
changes. What every implementation must keep (docs/protocol.md, Messages):

- each connection's outbox is numbered from 1, kept until acknowledged;
- `apply` applies a batch once, in order, with the cursor, in one
  transaction, running `effect` for each new message inside it (and raises
  `Gap` when the batch starts after a missing message);
- `data_version` changes whenever another process commits (PostgreSQL: when
  another worker says so, and by itself at least once a second).

`Message`, the value it hands out, lives here with it; `Contact` (what the
last attempts to reach the partner said) is the domain's (`domain/live.py`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from exalate_tui.domain.live import Contact
from exalate_tui.errors import ExalateError

# One encoder for every body: `json.dumps` with separators builds a new one per call.
compact = json.JSONEncoder(separators=(",", ":")).encode


@functools.lru_cache(maxsize=256)
def quoted(kind: str) -> str:
    """A kind as a JSON string; a stream uses a handful of kinds, so each is encoded once."""
    return json.dumps(kind)


# What one push or one long-poll answer carries at most, under the node's 8 MiB per
# request: a batch of big messages (attachments) goes out in several, never refused.
BATCH_BYTES = 6 * 1024 * 1024


def within_budget(sizes: Sequence[int], budget: int = BATCH_BYTES) -> int:
    """How many of the first messages, of these sizes, fit in `budget` (at least one)."""
    total = 0
    for count, size in enumerate(sizes):
        total += size
        if total > budget and count:
            return count
    return len(sizes)


class StateError(ExalateError):
    """The message store cannot be used (`state.sqlite3`, or the PostgreSQL database);
    str() names it and what to do."""


class Gap(ExalateError):
    """A batch starts after a missing message: resend from `last_applied + 1`."""

    def __init__(self, last_applied: int) -> None:
        self.last_applied = last_applied
        super().__init__(f"messages after {last_applied} are missing; resend from there")


class LeaseLost(ExalateError):
    """Another worker holds this connection's lease now (its epoch is newer): whatever
    this one was about to apply is refused, and its poller stops."""


@dataclass(frozen=True)
class Message:
    seq: int
    kind: str
    body_json: str = "null"

    @property
    def body(self) -> Any:
        return json.loads(self.body_json)

    def wire(self) -> str:
        """The message as JSON text, its body spliced in as stored."""
        return f'{{"seq":{self.seq},"kind":{quoted(self.kind)},"body":{self.body_json}}}'

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Message:
        return cls(int(data["seq"]), str(data["kind"]), compact(data.get("body")))


class Streams(Protocol):
    """Per connection: an outbox, an inbox with its cursor, and the last contact."""

    # How long a lease runs unless renewed (0: the store's leases never run out).
    lease_ttl: float
    # Whether other workers (processes, hosts) share this store: then `first_use` too.
    workers: bool

    @property
    def where(self) -> str:
        """The store, fit to print: the file's path, or the database (no password)."""
        ...

    def close(self) -> None: ...

    def on_enqueue(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(cid)` (in the enqueuing thread) after each enqueue here commits;
        returns what removes it."""
        ...

    def on_hint(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(cid)` when another worker sharing the store says it enqueued for
        `cid` (PostgreSQL's hints; never on a store one home owns); returns what
        removes it."""
        ...

    def on_apply(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(cid)` (in the applying thread) after a batch with new messages
        is applied here; returns what removes it."""
        ...

    # -- outbox

    def enqueue(self, cid: str, kind: str, body: Any = None) -> int: ...

    def enqueue_many(self, cid: str, items: Iterable[tuple[str, Any]]) -> list[int]: ...

    def broadcast(self, cids: Sequence[str], kind: str, body: Any = None) -> dict[str, int]: ...

    def pending(self, cid: str, after: int = 0, limit: int = 500) -> list[Message]: ...

    def pending_wire(self, cid: str, after: int = 0, limit: int = 500) -> list[str]:
        """`pending`, each message already as its JSON text (`Message.wire`)."""
        ...

    def last_seq(self, cid: str) -> int: ...

    def last_seqs(self, cids: Sequence[str]) -> dict[str, int]:
        """`last_seq` of each of `cids` in one read (the node's watch of parked polls)."""
        ...

    def backlog(self, cid: str, *, inbox_after: int | None = None) -> tuple[int, float | None]:
        """Outbox messages not yet acknowledged and when the oldest was queued; with
        `inbox_after`, inbox messages after that seq and when the oldest arrived."""
        ...

    def ack(self, cid: str, upto: int) -> int:
        """The other side applied everything up to `upto`: prune it."""
        ...

    # -- inbox

    def last_applied(self, cid: str) -> int: ...

    def applied(self) -> dict[str, int]:
        """Every stream's last applied seq, in one read (the sync engine's "what is new")."""
        ...

    def apply(
        self,
        cid: str,
        messages: Sequence[Message],
        effect: Callable[[Message], None] | None = None,
        *,
        epoch: int | None = None,
    ) -> int:
        """Apply a batch once, in order, in one transaction; returns the new cursor.

        With `epoch` (a lease's, `take_lease`), `LeaseLost` unless that lease is
        still the connection's newest, checked inside the same transaction."""
        ...

    # -- leases: one worker makes a connection's requests

    def take_lease(self, cid: str, holder: str) -> int | None:
        """The right to make `cid`'s requests for `holder`: its fencing epoch (0 where
        the store needs none: a file is one home's, and its flock fences), or None
        while another holder's lease has not run out."""
        ...

    def renew_lease(self, cid: str, holder: str, epoch: int) -> bool:
        """Keep the lease running; False once another holder has taken it."""
        ...

    def drop_lease(self, cid: str, holder: str, epoch: int) -> None:
        """Give the lease up at once (the epoch is kept: a later one is always newer)."""
        ...

    # -- handshakes

    def claim_handshake(self, cid: str, holder: str, digest: bytes) -> bool:
        """Whether `holder` (a worker: host and home) may burn `cid`'s invitation for the
        offer with this `digest`: no worker sharing the store has, or it did for that
        very offer. Always True on a store one home owns."""
        ...

    # -- signatures

    def first_use(self, signature: bytes, expires: float) -> bool:
        """Whether no worker sharing this store accepted `signature` before; remembered
        until `expires` (a replay is refused whichever worker it reaches)."""
        ...

    def inbox(self, cid: str, after: int = 0, limit: int = 1000) -> list[Message]: ...

    def prune_inbox(self, cid: str, upto: int, kinds: Iterable[str]) -> int:
        """Drop applied messages of these kinds up to `upto` (the layer above is done with
        them); the cursor is untouched. Returns how many went."""
        ...

    # -- contact

    def record_ok(self, cid: str, when: float | None = None) -> None: ...

    def record_error(self, cid: str, error: str, when: float | None = None) -> None: ...

    def contact(self, cid: str) -> Contact: ...

    # -- housekeeping

    def forget(self, cid: str) -> None:
        """Drop every trace of a deleted connection."""
        ...

    def check(self) -> None:
        """Raise (naming the store and what to do) when the store is damaged inside:
        before an action that writes elsewhere too, so it changes nothing rather than
        half. Reads the whole store: for rare actions, not per message."""
        ...

    def data_version(self) -> int:
        """Changes when another process commits: cheap to poll."""
        ...
