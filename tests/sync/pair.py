"""Two instances wired back to back: each with its own home, embedded tracker,
streams, sync store and engine, and one Active connection between them (the
fixtures that make them are in conftest.py).

`Pair.settle()` runs both engines and moves each outbox into the other side's
inbox (as a poller or pusher would, with the streams' own `apply` and
`ack`) until nothing moves: the sync engine is driven directly, with every
part real but the HTTP between the two sides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home
from exalate_tui.sync.engine import Engine
from exalate_tui.sync.store import SqliteSyncStore, SyncStore
from exalate_tui.trackers import open_tracker
from exalate_tui.trackers.adapter import Tracker
from exalate_tui.transport.sqlite_streams import SqliteStreams

CID = "0b7c6c1e-3c55-4d6e-9a57-0d1f0e2a9c11"


@dataclass
class Side:
    home: Home
    streams: SqliteStreams
    tracker: Tracker
    store: SyncStore
    engine: Engine

    @property
    def connection(self) -> Connection:
        return self.home.get_connection(CID)

    def set_triggers(self, *triggers: str) -> None:
        self.home.update_connection(CID, lambda c: setattr(c, "triggers", list(triggers)))

    def set_status(self, status: Status) -> None:
        self.home.update_connection(CID, lambda c: setattr(c, "status", status))


def make_side(root: Path, name: str, other: str, role: Role, mode: Mode) -> Side:
    home = Home(root / name)
    home.save_instance(Instance(short_name=name))
    home.save_connection(
        Connection(
            id=CID,
            name=f"{name}_to_{other}" if role is Role.INITIATOR else f"{other}_to_{name}",
            mode=mode,
            topology=Topology.PUBLIC_PRIVATE,
            role=role,
            local_name=name,
            remote_name=other,
            status=Status.ACTIVE,
            secret=SecretStr("s" * 43),
            remote_url="http://127.0.0.1:9" if role is Role.ACCEPTOR else None,
        )
    )
    streams = SqliteStreams(home.state_path)
    tracker = open_tracker(home)
    store = SqliteSyncStore(home.state_path)
    return Side(home, streams, tracker, store, Engine(home, streams, tracker, store))


@dataclass
class Pair:
    a: Side  # snow, the initiator
    b: Side  # jira

    def carry(self, sender: Side, receiver: Side) -> int:
        """Deliver what `sender` has queued, as the transport would; messages moved."""
        if sender.connection.status is Status.DEACTIVATED:
            return 0  # a paused connection queues
        after = receiver.streams.last_applied(CID)
        pending = sender.streams.pending(CID, after)
        if pending:
            receiver.streams.apply(CID, pending)
            sender.streams.ack(CID, pending[-1].seq)
        return len(pending)

    async def settle(self, rounds: int = 50) -> int:
        """Run both engines and carry messages until nothing moves; messages moved."""
        moved = 0
        for _ in range(rounds):
            await self.a.engine.settle()
            step = self.carry(self.a, self.b)
            await self.b.engine.settle()
            step += self.carry(self.b, self.a)
            moved += step
            if not step:
                return moved
        raise AssertionError("the two sides never settled")


async def make_pair(tmp_path: Path, mode: Mode) -> AsyncIterator[Pair]:
    a = make_side(tmp_path, "snow", "jira", Role.INITIATOR, mode)
    b = make_side(tmp_path, "jira", "snow", Role.ACCEPTOR, mode)
    try:
        yield Pair(a, b)
    finally:
        for side in (a, b):
            side.store.close()
            side.streams.close()
            await side.tracker.close()
