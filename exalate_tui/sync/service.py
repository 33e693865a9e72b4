"""The engine as a background job: `run_engine(home, streams)` runs beside the
supervisor in `exalate-tui node` and in the console, whichever holds the
home's `EngineLock`; the other keeps trying, so the engine moves to it when
the first one stops."""

from __future__ import annotations

import asyncio
import logging

from exalate_tui.home.store import Home
from exalate_tui.sync.engine import Engine, EngineLock
from exalate_tui.sync.store import SyncStore
from exalate_tui.trackers import open_tracker
from exalate_tui.transport.streams import Streams

log = logging.getLogger(__name__)

# How often a process that does not hold the lock tries again.
RETRY_LOCK = 2.0


async def run_engine(home: Home, streams: Streams) -> None:
    """Sync this home's tickets until cancelled."""
    lock = EngineLock(home)
    waited = False
    while not lock.acquire():
        if not waited:
            log.info("another process syncs this home's tickets; waiting to take over")
            waited = True
        await asyncio.sleep(RETRY_LOCK)
    tracker = open_tracker(home)
    store = SyncStore(home.state_path)
    try:
        await Engine(home, streams, tracker, store).run()
    finally:
        store.close()
        await tracker.close()
        lock.release()
