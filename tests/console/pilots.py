"""Driving the console from a test: keys, then every worker they started, settled."""

from __future__ import annotations

from textual.pilot import Pilot


async def settle(pilot: Pilot[None], *keys: str) -> None:
    """Press `keys` in turn, then wait until the workers they started are done."""
    for key in keys:
        await pilot.press(key)
        await pilot.pause()
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


# The keys whose names are not the character they type.
KEY_NAMES = {" ": "space", "\n": "enter", "(": "left_parenthesis", '"': "quotation_mark"}


def typed(text: str) -> list[str]:
    """The keys that type `text`."""
    return [KEY_NAMES.get(ch, ch) for ch in text]
