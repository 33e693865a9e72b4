"""The engine as a background job: `run_engine(home, streams)` runs beside the
supervisor in `exalate-tui node` and in the console, whichever holds the
home's `EngineLock` (and, on a store workers share, the store's lease for
the engine); the other keeps trying, so the engine moves to it when the
first one stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from exalate_tui.home.store import Home
from exalate_tui.sync.engine import Engine, EngineLock
from exalate_tui.sync.storage import open_sync_store
from exalate_tui.trackers import open_tracker
from exalate_tui.transport.streams import Streams

log = logging.getLogger(__name__)

# How often a process that does not hold the lock tries again.
RETRY_LOCK = 2.0
# The store's lease for the one engine across workers (a key no connection id can be).
ENGINE_LEASE = "(sync engine)"


async def run_engine(home: Home, streams: Streams) -> None:
    """Sync this home's tickets until cancelled.

    On a store other workers share (PostgreSQL), one engine runs across all of
    them: after the home's lock it takes the store's lease `ENGINE_LEASE`
    (`Streams.take_lease`), renews it, and stops when another worker has
    taken it; the others wait to take over."""
    lock = EngineLock(home)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    waited = False
    while True:
        epoch = await _claim(lock, streams, holder, waited)
        if epoch is None:
            waited = True
            await asyncio.sleep(RETRY_LOCK)
            continue
        try:
            await _run_while_held(home, streams, holder, epoch)
        finally:
            lock.release()
        waited = False


async def _claim(lock: EngineLock, streams: Streams, holder: str, waited: bool) -> int | None:
    """The home's lock and the store's lease; None (nothing held) while another has either."""
    if not lock.acquire():
        if not waited:
            log.info("another process syncs this home's tickets; waiting to take over")
        return None
    try:
        epoch = await asyncio.to_thread(streams.take_lease, ENGINE_LEASE, holder)
    except Exception as error:  # noqa: BLE001 - the store out of reach: try again later
        log.warning("the sync engine's lease cannot be taken now: %s", error)
        epoch = None
    if epoch is None:
        lock.release()
        if not waited:
            log.info("another worker syncs the tickets; waiting to take over")
    return epoch


async def _run_while_held(home: Home, streams: Streams, holder: str, epoch: int) -> None:
    """The engine, for as long as the lease stays ours (a file's lease, epoch 0, always)."""
    tracker = open_tracker(home)
    store = await asyncio.to_thread(open_sync_store, home)
    if epoch:
        store.fence(ENGINE_LEASE, epoch)  # a hung holder's writes are refused once it lost
    engine = asyncio.create_task(Engine(home, streams, tracker, store).run(), name="sync-engine")
    try:
        while epoch:
            await asyncio.wait({engine}, timeout=streams.lease_ttl / 3)
            if engine.done() or not await _renewed(streams, holder, epoch):
                break
        if not epoch or engine.done():
            await engine  # its own end (an error it does not retry) is the job's
    finally:
        engine.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await engine
        if epoch:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(streams.drop_lease, ENGINE_LEASE, holder, epoch)
        store.close()
        await tracker.close()


async def _renewed(streams: Streams, holder: str, epoch: int) -> bool:
    """Whether the lease is still ours; an outage counts as yes until another takes it."""
    try:
        kept = await asyncio.to_thread(streams.renew_lease, ENGINE_LEASE, holder, epoch)
    except Exception as error:  # noqa: BLE001 - an outage: keep going, retry
        log.warning("the sync engine's lease cannot be renewed now: %s", error)
        return True
    if not kept:
        log.warning("another worker took the sync engine's lease; stopping it here")
    return kept
