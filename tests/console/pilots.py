"""Driving the console from a test: keys, then every worker they started, settled."""

from __future__ import annotations

import contextlib

from textual.pilot import Pilot
from textual.worker import WorkerError

# Runs as long as the console does (tests/console/test_app_live.py starts it).
LASTING = {"supervisor"}


async def quiet(pilot: Pilot[None]) -> None:
    """Until no worker is left twice in a row: one's end may start another by message
    (the console's start reads instance.toml in a thread, then the Connections tab
    reads the connection files in another; Done saves, then the tab reads again)."""
    idle = 0
    for _ in range(20):
        for worker in [w for w in pilot.app.workers if w.group not in LASTING]:
            with contextlib.suppress(WorkerError):  # cancelled by a newer one, or failed:
                await worker.wait()  # the test looks at what it shows
        await pilot.pause()
        busy = [w for w in pilot.app.workers if w.group not in LASTING and not w.is_finished]
        idle = 0 if busy else idle + 1
        if idle == 2:
            return


async def settle(pilot: Pilot[None], *keys: str) -> None:
    """Once the console is quiet, press `keys` in turn, then wait until the workers they
    started are done."""
    await quiet(pilot)
    for key in keys:
        await pilot.press(key)
        await pilot.pause()
    await quiet(pilot)


# The keys whose names are not the character they type.
KEY_NAMES = {" ": "space", "\n": "enter", "(": "left_parenthesis", '"': "quotation_mark"}


def typed(text: str) -> list[str]:
    """The keys that type `text`."""
    return [KEY_NAMES.get(ch, ch) for ch in text]
