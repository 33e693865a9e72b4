"""The sync engine: local tickets out as replicas, the partner's replicas in as changes.

One engine per home (`EngineLock`), in the node or, when no node runs, in
the console. Each `step`:

1. takes the admins' requests (Exalate, Unexalate, Bulk, Retry, Resolve);
2. processes each connection's inbox after its sync cursor: a first replica
   creates the local ticket (found again by its correlation after a crash,
   never made twice) and links the two keys; a later one changes only what
   changed on the remote side since the previous replica; comments and
   attachments are merged once (each remembers its origin);
3. runs the outgoing rules for tickets the tracker says changed (and links
   due a replica), for each connection they sync over or whose trigger
   matches, and enqueues a replica only when it differs from what the
   partner holds.

A batch of inbox messages is processed with the tracker's writes made
durable once at its end and the sync store's records of it committed in one
transaction after them (`Tracker.deferred`, `SyncStore.deferred`: the bulk
exalate figure); the writes are safe to repeat, so a crash inside a batch
only processes it again.

No echo: after applying a replica, the fields it changed count as held by
the partner already, so the tracker's report of that write sends nothing.
Concurrent edits of the same field (both sides changed it before seeing the
other's replica) keep the initiator's value on both sides, so they converge.

An error on one ticket (a rule's, a tracker's refusal, a bad replica) is
recorded and holds back only that ticket; a tracker that cannot be used at
all stops the step, is shown as the connections' Error, and is retried with
backoff until it works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from exalate_tui.domain.models import Connection, PeerState, Role, Status
from exalate_tui.home.store import Home, Loaded
from exalate_tui.sync import replica as wire
from exalate_tui.sync.replica import Content, Replica, ReplicaError
from exalate_tui.sync.rules import Incoming, RuleError, Rules, rules_for
from exalate_tui.sync.storage import open_sync_store
from exalate_tui.sync.store import Link, SyncStore
from exalate_tui.trackers.adapter import (
    Changed,
    NewComment,
    Query,
    QueryError,
    Ticket,
    TicketNotFound,
    Tracker,
    TrackerError,
)
from exalate_tui.transport.streams import LeaseLost, Message, StateError, Streams
from exalate_tui.transport.supervisor import FileLock

log = logging.getLogger(__name__)

WATERMARK = "tracker.watermark"
TRACKER_ERROR = "tracker.error"
TRACKER_ERROR_SINCE = "tracker.error_since"
# The engine looks again this often even when nothing woke it: requests from
# another process and applies by another process's poller arrive this way.
RESCAN = 1.0
# How long the engine trusts a polling tracker's watcher before it looks itself.
LOOK_ANYWAY = 60.0
# The engine reads `connections/` again at least this often, changed or not.
RELOAD = 30.0
# How often the engine drops what it kept for connections deleted since.
TIDY_EVERY = 60.0
BATCH = 200
BACKOFF_CAP = 30.0


class EngineLock(FileLock):
    """One engine per home: `<home>/locks/sync.lock`, held while it runs."""

    def __init__(self, home: Home) -> None:
        super().__init__(home.path / "locks" / "sync.lock")


def syncs(connection: Connection) -> bool:
    """Whether tickets flow (or queue, while deactivated) on this connection."""
    return (
        connection.status is not Status.PENDING
        and connection.secret is not None
        and connection.peer_state is not PeerState.DELETED
    )


@dataclass
class _Outgoing:
    """What one step enqueues on one connection, recorded once enqueued."""

    items: list[tuple[str, Any]]
    sent: list[tuple[Link, int, Content]]  # seq filled in after the enqueue


class Engine:
    def __init__(
        self,
        home: Home,
        streams: Streams,
        tracker: Tracker,
        store: SyncStore,
        *,
        rules: Callable[[Connection], Rules] | None = None,
    ) -> None:
        self.home = home
        self.streams = streams
        self.tracker = tracker
        self.store = store
        self._rules_for = rules or functools.partial(rules_for, home=home)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queries: dict[str, Query | QueryError] = {}
        self._tidied = 0.0
        self._loaded: Loaded | None = None
        self._stamp: int | None = None
        self._loaded_at = 0.0
        self.reporter = "sync"
        # A tracker that polls (ServiceNow) is asked what changed only when its watcher
        # rang, when the last answer was a full batch, or after LOOK_ANYWAY: each look is
        # a request, and the watcher looks every poll interval already.
        self._rang = False
        self._more = False
        self._looked: float | None = None
        # The tickets a batch of inbox messages is about, read in one `get_many` (each is
        # used once: a second message about the same ticket reads it again).
        self._prefetched: dict[str, Ticket] = {}

    # -- running -------------------------------------------------------------------

    def _tracker_rang(self) -> None:
        self._rang = True
        self.wake()

    def wake(self, *_: object) -> None:
        """Look again now; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Sync until cancelled; never dies of an error (each is logged and retried)."""
        self._loop = asyncio.get_running_loop()
        stop_watch = self.tracker.watch(self._tracker_rang)
        stop_apply = self.streams.on_apply(self.wake)
        delay = 0.5
        try:
            while True:
                self._wake.clear()
                try:
                    busy = await self.step()
                    delay = 0.5
                except asyncio.CancelledError:
                    raise
                except TrackerError as error:
                    if not error.unavailable:
                        raise
                    await asyncio.to_thread(self._tracker_down, str(error))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_CAP)
                    continue
                except LeaseLost as error:  # another worker's engine runs now: stop here
                    log.warning("sync engine stopped: %s", error)
                    return
                except StateError as error:  # the streams' database out of reach: an outage
                    log.warning("sync step: %s; retrying in %.0f s", error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_CAP)
                    continue
                except Exception:
                    log.exception("sync step failed; retrying in %.0f s", delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_CAP)
                    continue
                if not busy:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), RESCAN)
        finally:
            stop_watch()
            stop_apply()

    def _tracker_down(self, reason: str) -> None:
        if self.store.meta(TRACKER_ERROR) != reason:
            log.warning("the tracker cannot be used: %s", reason)
            self.store.set_meta(TRACKER_ERROR, reason)
        if self.store.meta(TRACKER_ERROR_SINCE) is None:
            self.store.set_meta(TRACKER_ERROR_SINCE, str(time.time()))

    def _tracker_up(self) -> None:
        if self.store.meta(TRACKER_ERROR) is not None:
            log.info("the tracker works again")
            self.store.set_meta(TRACKER_ERROR, None)
            self.store.set_meta(TRACKER_ERROR_SINCE, None)

    async def _connections(self) -> Loaded:
        """The home's connections, read again only when their store's stamp moved (the
        folder's mtime, a database's change counter).

        Reading 10,000 files costs ~150 ms even from the parse cache: once a second
        on the node's event loop it held every request up (the capacity figure). A
        rename in the folder moves its mtime; one within the last second may share
        a clock tick with the read before it, so the folder is read again until it
        has settled, and every `RELOAD` s regardless."""
        store = self.home.connections
        stamp = await asyncio.to_thread(store.stamp)
        settled = store.settled(stamp)
        fresh = time.monotonic() - self._loaded_at < RELOAD
        if self._loaded is None or stamp != self._stamp or not settled or not fresh:
            self._stamp, self._loaded_at = stamp, time.monotonic()
            self._loaded = await asyncio.to_thread(self.home.load_connections)
        return self._loaded

    async def step(self) -> bool:
        """One pass over requests, inboxes and tracker changes; True if it did anything."""
        loaded = await self._connections()
        connections = {c.id: c for c in loaded.connections if syncs(c)}
        if time.monotonic() - self._tidied > TIDY_EVERY:
            self.tidy(loaded)
        busy = await self._requests(connections)
        # Only connections with messages past the cursor: one read each of two tables,
        # not two queries per connection (a node may hold thousands of idle ones).
        applied, cursors = await asyncio.to_thread(self.streams.applied), self.store.cursors()
        for cid, connection in connections.items():
            if applied.get(cid, 0) > cursors.get(cid, 0):
                busy |= await self._incoming(connection)
        busy |= await self._outgoing(connections)
        self._tracker_up()
        return busy

    def tidy(self, loaded: Loaded | None = None) -> None:
        """Drop the links, cursor and errors of connections deleted here (a tombstone
        counts as deleted: nothing syncs over it again). History stays, and the tickets
        on both sides. A connection file that does not parse keeps everything.

        On a store other workers share, only a connection this home has a tombstone
        for: the connection files are each worker's home's, and one that lacks a
        file (copied before the connection was made) must not drop the links the
        other workers' homes still sync."""
        self._tidied = time.monotonic()
        if loaded is None:
            loaded = self.home.load_connections()
        if loaded.problems:
            return
        gone = self.store.cids() - {c.id for c in loaded.connections}
        if self.streams.workers:
            gone &= {cid for cid, _ in self.home.tombstones()}
        for cid in gone:
            log.info("connection %s was deleted: its sync links are dropped", cid)
            self.store.forget(cid)

    async def settle(self, limit: int = 10_000) -> None:
        """Step until there is nothing left to do (tests, the CLI without a node)."""
        for _ in range(limit):
            if not await self.step():
                return

    # -- requests ------------------------------------------------------------------

    async def _requests(self, connections: dict[str, Connection]) -> bool:
        requests = self.store.requests()
        for request_id, action, cid, key, arg in requests:
            connection = connections.get(cid or "")
            try:
                if action == "retry":
                    await self._retry(int(arg or 0), connections)
                elif action == "resolve":
                    self.store.resolve(int(arg or 0))
                elif connection is None:
                    log.info("request %s for connection %s: it does not sync here", action, cid)
                elif action == "exalate" and key:
                    self._exalate(connection, key)
                elif action == "unexalate" and key:
                    self._unexalate(connection, key)
                elif action == "bulk":
                    await self._bulk(connection, None if arg is None else int(arg))
                elif action == "rules":
                    await self._rules_changed(connection)
                elif action == "reapply":
                    await self._reapply(connection)
            finally:
                self.store.done(request_id)
        return bool(requests)

    def _exalate(self, connection: Connection, key: str) -> None:
        link = self.store.link(connection.id, key)
        if link is None:
            self.store.save_link(Link(connection.id, key, None, True, "local", created=time.time()))
        elif not link.active:
            self.store.save_link(replace(link, active=True, restart=True))
            self.store.record_change(
                connection.id,
                local_key=key,
                remote_key=link.remote_key,
                version=None,
                rules=self._rules_for(connection).name,
                changes={},
                note="Exalated again: syncing resumes",
            )

    def _unexalate(self, connection: Connection, key: str) -> None:
        link = self.store.link(connection.id, key)
        if link is None or not link.active:
            return
        self.store.save_link(replace(link, active=False, restart=False, due=False))
        self.streams.enqueue(connection.id, wire.UNEXALATE, {"key": key})
        self.store.record_change(
            connection.id,
            local_key=key,
            remote_key=link.remote_key,
            version=None,
            rules=self._rules_for(connection).name,
            changes={},
            note="Unexalated here: this ticket no longer syncs (both copies kept)",
        )

    async def _bulk(self, connection: Connection, trigger: int | None) -> int:
        """Exalate every ticket a trigger (all of them when None) matches now."""
        texts = connection.triggers if trigger is None else [connection.triggers[trigger - 1]]
        keys: dict[str, None] = {}
        for text in texts:
            query = self._query(text)
            if not isinstance(query, QueryError):
                for ticket in await self.tracker.search(query):
                    keys[ticket.key] = None
        with self.store.deferred():  # one transaction for all (the bulk exalate figure)
            for key in keys:
                self._exalate(connection, key)
        return len(keys)

    async def _retry(self, error_id: int, connections: dict[str, Connection]) -> None:
        error = self.store.error(error_id)
        if error is None:
            return
        connection = connections.get(error.cid)
        if connection is None:
            self.store.resolve(error_id)
            return
        if error.direction == "out":
            link = self.store.link(error.cid, error.local_key or "")
            if link is None:
                self.store.resolve(error_id)
            else:  # sent now, changed or not; a success resolves the error
                self.store.save_link(replace(link, due=True))
            return
        # Incoming: replay what the error held back, in order; a new failure counts
        # another attempt on the same error, a full replay resolves it.
        seq = (error.seq or 1) - 1
        cursor = self.store.cursor(error.cid)
        while seq < cursor:
            batch = self.streams.inbox(error.cid, after=seq, limit=BATCH)
            if not batch:
                break
            for message in batch:
                if message.seq > cursor:
                    break
                body = message.body
                ours = isinstance(body, dict) and body.get("key") == error.remote_key
                if ours and not await self._receive(connection, message, replaying=True):
                    return
            seq = batch[-1].seq
        self.store.resolve(error_id)

    async def _rules_changed(self, connection: Connection) -> None:
        """A new outgoing version: every synced ticket whose replica it changes is due."""
        rules = self._rules_for(connection)
        for link in self.store.links(connection.id):
            if not link.active or not link.out_version or link.due:
                continue
            try:
                ticket = await self.tracker.get(link.local_key)
            except TicketNotFound:
                continue
            try:
                same = rules.outgoing(ticket).same(link.out_doc)
            except RuleError:
                same = False  # sending records the error on its ticket
            if not same:
                self.store.save_link(replace(link, due=True))

    async def _reapply(self, connection: Connection) -> None:
        """ "Apply to synced tickets now": the incoming rules in force on the last replica
        received for each synced ticket; what they want differently is written."""
        rules = self._rules_for(connection)
        for link in self.store.links(connection.id):
            if not link.active or link.in_doc is None or link.remote_key is None:
                continue
            try:
                wanted = rules.incoming(link.in_doc, first_sync=False)
                before = await self.tracker.get(link.local_key)
                fields = {
                    name: [getattr(before, name, None), value]
                    for name, value in wanted.fields.items()
                    if getattr(before, name, _MISSING) != value
                }
                current = before
                if fields:
                    current = await self.tracker.update(
                        link.local_key, {name: new for name, (_, new) in fields.items()}
                    )
                comments, attachments = await self._merge(
                    connection, current, link.remote_key, wanted
                )
            except TicketNotFound:
                continue
            except (RuleError, TrackerError) as error:
                if isinstance(error, TrackerError) and error.unavailable:
                    raise
                self.store.fail(
                    connection.id,
                    "in",
                    f"re-applying {link.remote_key}: {error}",
                    local_key=link.local_key,
                    remote_key=link.remote_key,
                    holds=False,
                )
                continue
            self.store.save_link(
                replace(link, out_doc=self._absorb(rules, link.out_doc, before, fields))
            )
            if fields or comments or attachments:
                self.store.record_change(
                    connection.id,
                    local_key=link.local_key,
                    remote_key=link.remote_key,
                    version=link.in_version,
                    rules=rules.name,
                    changes={"fields": fields, "comments": comments, "attachments": attachments},
                    note=f"Re-applied {link.remote_key}'s last replica under {rules.name}",
                )

    # -- incoming ------------------------------------------------------------------

    async def _incoming(self, connection: Connection) -> bool:
        cid = connection.id
        cursor = self.store.cursor(cid)
        messages = await asyncio.to_thread(self.streams.inbox, cid, cursor, BATCH)
        if not messages:
            return False
        # The tracker's writes durable first (the inner block ends first), then the records.
        async with self._deferred(), self.tracker.deferred():
            self._prefetched = await self._prefetch(cid, messages)
            try:
                for message in messages:
                    if message.kind in wire.KINDS:
                        await self._receive(connection, message)
                    else:
                        self.store.processed(cid, message.seq)
            finally:
                self._prefetched = {}
        await asyncio.to_thread(self._prune, cid)  # by the cursor now committed
        return True

    async def _prefetch(self, cid: str, messages: list[Message]) -> dict[str, Ticket]:
        """The linked tickets a batch's replicas are about, in one read: for ServiceNow a
        few requests per 50 tickets instead of a few per ticket (the partner's reply to
        each first replica of a bulk exalate). A failure here reads them one by one."""
        keys: dict[str, None] = {}
        for message in messages:
            if message.kind != wire.REPLICA:
                continue  # (an attachment's body is megabytes: not parsed here)
            body = message.body
            if not isinstance(body, dict):
                continue
            link = self.store.link_by_remote(cid, str(body.get("key")))
            if link is None and isinstance(body.get("your_key"), str):
                link = self.store.link(cid, body["your_key"])
            if link is not None and link.active:
                keys[link.local_key] = None
        if len(keys) < 2:
            return {}
        try:
            return {t.key: t for t in await self.tracker.get_many(list(keys))}
        except TrackerError:
            return {}

    def _prune(self, cid: str) -> None:
        """The inbox keeps the engine's messages only while Retry may replay them: those
        from the first held back on, and none before the cursor otherwise (attachments
        are megabytes; the stash keeps their bytes until their replica)."""
        held = [e.seq for e in self.store.errors(cid) if e.direction == "in" and e.seq]
        upto = min([self.store.cursor(cid), *(seq - 1 for seq in held)])
        if upto > 0:
            self.streams.prune_inbox(cid, upto, wire.KINDS)

    @contextlib.asynccontextmanager
    async def _deferred(self) -> AsyncIterator[None]:
        """The sync store's writes of this block in one transaction at its end, committed
        off the event loop (`SyncStore.deferred`: the bulk exalate figure)."""
        self.store.defer()
        try:
            yield
        finally:
            if self.store.pending:
                await asyncio.to_thread(self.store.flush)
            else:
                self.store.flush()  # nothing to write: only ends the block

    async def _receive(
        self, connection: Connection, message: Message, *, replaying: bool = False
    ) -> bool:
        """Process one sync message; False when it failed on its ticket (recorded)."""
        cid = connection.id
        body = message.body
        remote_key = str(body.get("key"))[: wire.KEY_MAX] if isinstance(body, dict) else "?"
        if not replaying and self.store.holding(cid, "in", remote_key):
            self.store.processed(cid, message.seq)  # held: Retry replays it from the inbox
            return True
        try:
            if message.kind == wire.ATTACHMENT:
                data = wire.parse_attachment(body)
                self.store.processed(
                    cid, message.seq, stash=(data.key, data.sha256, data.name, data.data)
                )
            elif message.kind == wire.UNEXALATE:
                self._partner_unexalated(connection, message.seq, remote_key)
            else:
                await self._apply(connection, message.seq, wire.parse(body, message.seq))
        except (ReplicaError, RuleError) as error:
            self._hold(connection, message.seq, remote_key, str(error))
            return False
        except TrackerError as error:
            if error.unavailable:
                raise
            self._hold(connection, message.seq, remote_key, f"the tracker refused: {error}")
            return False
        return True

    def _hold(self, connection: Connection, seq: int, remote_key: str, reason: str) -> None:
        link = self.store.link_by_remote(connection.id, remote_key)
        self.store.fail(
            connection.id,
            "in",
            reason,
            local_key=link.local_key if link else None,
            remote_key=remote_key,
            seq=seq,
        )
        self.store.processed(connection.id, seq)

    def _partner_unexalated(self, connection: Connection, seq: int, remote_key: str) -> None:
        link = self.store.link_by_remote(connection.id, remote_key)
        if link is None or not link.active:
            self.store.processed(connection.id, seq)
            return
        self.store.processed(
            connection.id,
            seq,
            link=replace(link, active=False, restart=False, due=False),
            change={
                "local_key": link.local_key,
                "remote_key": remote_key,
                "version": seq,
                "rules": self._rules_for(connection).name,
                "changes": {},
                "note": f"{connection.remote_name or 'The partner'} unexalated {remote_key}: "
                "this ticket no longer syncs (both copies kept)",
            },
        )

    async def _apply(self, connection: Connection, seq: int, replica: Replica) -> None:
        cid = connection.id
        rules = self._rules_for(connection)
        link = self.store.link_by_remote(cid, replica.key)
        if link is None and replica.your_key:
            link = self.store.link(cid, replica.your_key)
            if link is not None and link.remote_key not in (None, replica.key):
                raise ReplicaError(
                    f"the partner's {replica.key} claims {replica.your_key}, which syncs with "
                    f"{link.remote_key}"
                )
        if link is not None and not link.active:
            if not replica.restart:
                self.store.processed(cid, seq)  # sent before it heard of the unexalate
                return
            link = replace(link, active=True)
        if link is None:
            await self._create(connection, rules, seq, replica)
            return

        before = self._prefetched.pop(link.local_key, None) or await self.tracker.get(
            link.local_key
        )
        previous = link.in_doc
        note = ""
        fields: dict[str, list[Any]] = {}
        # What is taken from them: the replica, less the fields this side kept in a
        # concurrent edit (so their later replica saying the same again is a change).
        effective = replica.content
        current = before
        if previous is not None:
            effective, conflicts = self._concurrent(
                connection, rules, link, replica, previous, before
            )
            if conflicts:
                note = "Concurrent edit of " + ", ".join(sorted(conflicts)) + ": "
                note += "kept this side's value" if self._wins(connection) else "took theirs"
            incoming = rules.incoming(effective, first_sync=False, previous=previous)
            new = incoming.fields
            if replica.content.changed:
                # What they changed on their side (by stamp), less what this side kept,
                # under the local field of the same name, and (rules that name local
                # fields otherwise) each local field whose wanted value follows from it.
                kept = conflicts if self._wins(connection) else set()
                theirs = _theirs(previous, replica.content) - kept
                delta = {name: value for name, value in new.items() if name in theirs}
                if not rules.by_name:
                    delta |= _following(rules, effective, previous, theirs, new)
            else:  # a sender without stamps: what changed by value
                old = rules.incoming(previous, first_sync=False).fields
                delta = {n: v for n, v in new.items() if old.get(n, _MISSING) != v}
            fields = {
                name: [getattr(before, name, None), value]
                for name, value in delta.items()
                if getattr(before, name, _MISSING) != value
            }
            if fields:
                current = await self.tracker.update(
                    link.local_key, {name: new for name, (_, new) in fields.items()}
                )
        else:
            incoming = rules.incoming(replica.content, first_sync=False)
        comments, attachments = await self._merge(connection, current, replica.key, incoming)
        link = replace(
            link,
            remote_key=replica.key,
            in_version=seq,
            in_doc=effective,
            out_doc=self._absorb(rules, link.out_doc, before, fields),
            last_synced=time.time(),
        )
        change = None
        if fields or comments or attachments or note:
            change = {
                "local_key": link.local_key,
                "remote_key": replica.key,
                "version": seq,
                "rules": replica.rules or rules.name,
                "changes": {"fields": fields, "comments": comments, "attachments": attachments},
                "note": note,
            }
        self.store.processed(
            cid, seq, link=link, seen=replica.seen, change=change, unstash=replica.key
        )

    async def _create(
        self, connection: Connection, rules: Rules, seq: int, replica: Replica
    ) -> None:
        """The partner's first replica of a ticket: make it here, exactly once."""
        cid = connection.id
        correlation = f"{cid}/{replica.key}"
        incoming = rules.incoming(replica.content, first_sync=True)
        # Made with its comments in one write (the bulk exalate figure). After a crash
        # between creating and recording, `create` finds it by its correlation instead;
        # the comments it made then count here, where that earlier run recorded nothing.
        notes = [
            NewComment(c.body, internal, c.author, f"{cid}/{c.id}")
            for c, internal in incoming.comments
        ]
        ticket = await self.tracker.create(
            incoming.fields,
            reporter=connection.remote_name or self.reporter,
            correlation=correlation,
            comments=notes,
        )
        made = len({note.origin for note in notes} & {c.origin for c in ticket.comments})
        comments, attachments = await self._merge(connection, ticket, replica.key, incoming)
        comments += made
        link = Link(
            cid,
            ticket.key,
            replica.key,
            True,
            "remote",
            in_version=seq,
            in_doc=replica.content,
            created=time.time(),
            last_synced=time.time(),
        )
        self.store.processed(
            cid,
            seq,
            link=link,
            seen=replica.seen,
            unstash=replica.key,
            change={
                "local_key": ticket.key,
                "remote_key": replica.key,
                "version": seq,
                "rules": replica.rules or rules.name,
                "changes": {
                    "fields": {name: [None, value] for name, value in incoming.fields.items()},
                    "comments": comments,
                    "attachments": attachments,
                },
                "note": f"Created from {connection.remote_name or 'the partner'}'s {replica.key}",
            },
        )

    def _wins(self, connection: Connection) -> bool:
        """Which side keeps its value when both edited a field at once: the initiator."""
        return connection.role is Role.INITIATOR

    def _concurrent(
        self,
        connection: Connection,
        rules: Rules,
        link: Link,
        replica: Replica,
        previous: Content,
        before: Ticket,
    ) -> tuple[Content, set[str]]:
        """The replica as applied here, and the fields both sides changed at once.

        Ours: what we sent after the version of ours the partner had seen
        (`replica.seen`), and local edits not sent yet. Theirs: what changed
        since their previous replica. Where both changed a field, the
        initiator's value stays on both sides.
        """
        ours: set[str] = set()
        if replica.seen < link.out_version:
            seen = self.store.sent_since(link.cid, link.local_key, replica.seen)
            if seen:
                before_seen, latest = seen[0].changed, seen[-1].changed
                ours |= {n for n, stamp in latest.items() if stamp > before_seen.get(n, 0)}
        if link.out_doc is not None:
            with contextlib.suppress(RuleError):
                ours |= _differ(link.out_doc.fields, rules.outgoing(before).fields)
        theirs = _theirs(previous, replica.content)
        conflicts = ours & theirs
        if not conflicts or not self._wins(connection):
            return replica.content, conflicts
        fields = dict(replica.content.fields)
        for name in conflicts:
            if name in previous.fields:
                fields[name] = previous.fields[name]
        # Their stamps stay: the same stamp again later is not a new change of theirs.
        return replace(replica.content, fields=fields), conflicts

    def _absorb(
        self, rules: Rules, held: Content | None, before: Ticket, written: dict[str, list[Any]]
    ) -> Content | None:
        """What the partner holds of ours once its replica is applied: what the engine
        wrote (`written`: field → [old, new]) counts as the partner's already (no echo).

        Judged on `before` with only those writes, never on the ticket read back: a
        local edit made meanwhile by another process (the CLI, the console) must still
        differ, and go out."""
        values: dict[str, Any] = {
            n: tuple(v) if isinstance(v, list) else v for n, (_, v) in written.items()
        }
        try:
            was, now = rules.outgoing(before), rules.outgoing(replace(before, **values))
        except RuleError:
            return held
        if held is None:
            return None
        fields = dict(held.fields)
        for name, value in now.fields.items():
            if was.fields.get(name, _MISSING) != value:
                fields[name] = value
        return replace(held, fields=fields)

    async def _merge(
        self, connection: Connection, ticket: Ticket, remote_key: str, incoming: Incoming
    ) -> tuple[int, list[str]]:
        """Add the remote comments and attachments not yet on `ticket` (as it is now);
        (comments added, names)."""
        cid = connection.id
        key = ticket.key
        have_comments = {c.origin for c in ticket.comments if c.origin}
        added = 0
        for comment, internal in incoming.comments:
            origin = f"{cid}/{comment.id}"
            if origin in have_comments:
                continue
            await self.tracker.comment(
                key, comment.body, internal=internal, author=comment.author, origin=origin
            )
            added += 1
        have_files = {a.sha256 for a in ticket.attachments}
        names = []
        for attachment in incoming.attachments:
            if attachment.sha256 in have_files:
                continue
            data = self.store.stashed(cid, remote_key, attachment.sha256)
            if data is None:
                continue  # too large to cross, or sent before: its error is on the other side
            await self.tracker.attach(
                key, attachment.name, data, origin=f"{cid}/{attachment.sha256}"
            )
            names.append(attachment.name)
        return added, names

    # -- outgoing ------------------------------------------------------------------

    def _query(self, text: str) -> Query | QueryError:
        if text not in self._queries:
            try:
                self._queries[text] = self.tracker.check_query(text)
            except QueryError as error:
                self._queries[text] = error
        return self._queries[text]

    def _triggered(self, connection: Connection, ticket: Ticket) -> bool:
        for text in connection.triggers:
            query = self._query(text)
            if not isinstance(query, QueryError) and query.matches(ticket):
                return True
        return False

    async def _outgoing(self, connections: dict[str, Connection]) -> bool:
        for connection in connections.values():
            for text in connection.triggers:
                # Checked before any ticket is read: ServiceNow then reads the columns a
                # trigger names with each record, so the trigger can be matched.
                self._query(text)
        watermark = self.store.meta(WATERMARK)
        now = time.monotonic()
        if (
            not self.tracker.polls
            or self._rang
            or self._more
            or self._looked is None
            or watermark is None
            or now - self._looked >= LOOK_ANYWAY
        ):
            self._rang = False
            changed = await self.tracker.changed(watermark, limit=BATCH)
            self._looked, self._more = now, len(changed.keys) >= BATCH
        else:
            changed = Changed((), watermark)
        keys = dict.fromkeys(changed.keys)
        # Links due a replica come BATCH at a time, so a bulk exalate flows while it is sent.
        due = self.store.due(limit=BATCH + 1)
        more = sum(len(keys) for keys in due.values()) > BATCH
        for cid, due_keys in due.items():
            if cid in connections:
                keys.update(dict.fromkeys(due_keys))
        batches: dict[str, _Outgoing] = {}
        async with self._deferred():
            for ticket in await self.tracker.get_many(list(keys)):  # one read for the step
                for connection in connections.values():
                    await self._send(
                        connection, ticket, batches.setdefault(connection.id, _Outgoing([], []))
                    )
            for cid, batch in batches.items():
                if batch.items:
                    seqs = await asyncio.to_thread(self.streams.enqueue_many, cid, batch.items)
                    # The replicas are the last of their ticket's messages: their seqs, in order.
                    replica_seqs = [
                        s for s, (k, _) in zip(seqs, batch.items, strict=True) if k == wire.REPLICA
                    ]
                    self.store.sent_many(
                        [
                            (link, seq, content)
                            for (link, _, content), seq in zip(
                                batch.sent, replica_seqs, strict=True
                            )
                        ]
                    )
        if changed.watermark != watermark:
            self.store.set_meta(WATERMARK, changed.watermark)
        return bool(changed.keys) or more or any(batch.items for batch in batches.values())

    async def _send(self, connection: Connection, ticket: Ticket, batch: _Outgoing) -> None:
        cid = connection.id
        link = self.store.link(cid, ticket.key)
        if link is None:
            if not self._triggered(connection, ticket):
                return
            link = Link(cid, ticket.key, None, True, "local", created=time.time())
            self.store.save_link(link)
        if not link.active or (self.store.holding(cid, "out", ticket.key) and not link.due):
            return
        rules = self._rules_for(connection)
        try:
            content = rules.outgoing(ticket)
        except RuleError as error:
            self.store.fail(
                cid, "out", str(error), local_key=ticket.key, remote_key=link.remote_key
            )
            if link.due:  # a Retry is one attempt: the next waits for the next Retry
                self.store.save_link(replace(link, due=False))
            return
        content = await self._attachments(connection, link, ticket, content, batch)
        if content.same(link.out_doc) and link.out_version and not (link.restart or link.due):
            return
        known = link.out_doc
        stamps = dict(known.changed) if known else {}
        for name, value in content.fields.items():
            if known is None or known.fields.get(name, _MISSING) != value:
                stamps[name] = link.out_version + 1  # above every earlier stamp of this link
        content = replace(content, changed=stamps)
        body = Replica(
            key=ticket.key,
            version=0,  # the receiver takes the message's seq as the version
            seen=link.in_version,
            your_key=link.remote_key,
            content=content,
            rules=rules.name,
            restart=link.restart,
        ).doc()
        batch.items.append((wire.REPLICA, body))
        batch.sent.append((link, 0, content))
        if held := self.store.holding(cid, "out", ticket.key):
            self.store.resolve(held.id)

    async def _attachments(
        self, connection: Connection, link: Link, ticket: Ticket, content: Content, batch: _Outgoing
    ) -> Content:
        """Queue the bytes of attachments the partner lacks; too large ones stay home."""
        held = {a.sha256 for a in link.out_doc.attachments} if link.out_doc else set()
        kept = []
        for attachment in content.attachments:
            if attachment.sha256 in held:
                kept.append(attachment)
                continue
            if attachment.size > wire.MAX_ATTACHMENT:
                self.store.fail(
                    connection.id,
                    "out",
                    f"attachment {attachment.name!r} is {attachment.size:,} bytes; at most "
                    f"{wire.MAX_ATTACHMENT:,} cross a connection, so it stays on this side",
                    local_key=ticket.key,
                    remote_key=link.remote_key,
                    holds=False,
                )
                continue
            data = await self.tracker.attachment_bytes(ticket.key, attachment.sha256)
            batch.items.append(
                (
                    wire.ATTACHMENT,
                    wire.attachment_body(ticket.key, attachment.sha256, attachment.name, data),
                )
            )
            kept.append(attachment)
        return replace(content, attachments=tuple(kept))


_MISSING = object()


def _theirs(previous: Content, content: Content) -> set[str]:
    """The fields the partner changed on its side since its previous replica."""
    if not content.changed:  # a sender without stamps: by value
        return _differ(previous.fields, content.fields)
    return {n for n, stamp in content.changed.items() if stamp > previous.changed.get(n, 0)}


def _following(
    rules: Rules, effective: Content, previous: Content, theirs: set[str], new: dict[str, Any]
) -> dict[str, Any]:
    """The local fields whose wanted value follows from what the partner changed: those
    the rules want otherwise once the partner's changes are undone (a Script rule may
    map their `priority` to this side's `labels`)."""
    undone = dict(effective.fields)
    for name in theirs:
        if name in previous.fields:
            undone[name] = previous.fields[name]
        else:
            undone.pop(name, None)
    if undone == effective.fields:
        return {}
    base = rules.incoming(replace(effective, fields=undone), False, previous).fields
    return {name: value for name, value in new.items() if base.get(name, _MISSING) != value}


def _differ(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """The names whose value is not the same in both."""
    return {
        name
        for name in old.keys() | new.keys()
        if old.get(name, _MISSING) != new.get(name, _MISSING)
    }


def engine_for(home: Home, streams: Streams, tracker: Tracker) -> Engine:
    return Engine(home, streams, tracker, open_sync_store(home))
