"""Wizard step transition: Next pressed → the next step rendered, in `App.run_test`.

The clock starts when the key event is posted to the app (as its driver posts
a terminal's key) and stops when the new step's first frame has been made
(`App.post_display_hook`, which Textual calls after each frame; the callback
the new screen runs once its refresh settles is in the notes). Each pass walks
the seed's flow: "I don't have a URL" → configuration type → note →
connection information → invitation code (which issues the code; the console
saves the connection, fsync included, in a worker once the code is drawn).

Reference: the minimal Textual app (benchmarks/minimal_app.py) doing what the
console does on Next, `switch_screen` to a new screen (of its widgets),
measured the same way.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input

from exalate_tui.console.app import make_app
from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home

from .harness import Figure, summarize, versus
from .minimal_app import MinimalScreen

# Ours and the reference take turns, ROUNDS times PASSES each, so a busy moment on a
# shared machine weighs on both alike.
ROUNDS = 4
PASSES = 5
SIZE = (80, 24)
# Each step may take this many times the minimal app's own screen switch.
TARGET_RATIO = 2.0
# The key that moves on from each step, and the screen class that must follow.
FLOW = [
    ("ctrl+n", "ConfigTypeScreen"),
    ("enter", "NoteScreen"),
    ("enter", "InfoScreen"),
    ("enter", "InvitationScreen"),
]


async def _transition(app: App[None], key: str, character: str | None) -> tuple[float, float]:
    """Seconds from the key being posted to the new screen's first frame, and to the
    callback it runs after that refresh settles."""
    before = app.screen
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[float] = loop.create_future()
    frames: list[tuple[float, Screen[object]]] = []

    def recording() -> None:
        # Textual draws only the screen on top: the frame just made is `app.screen`'s.
        frames.append((time.perf_counter(), app.screen))

    app.post_display_hook = recording  # type: ignore[method-assign]
    event = events.Key(key, character)
    event.set_sender(app)
    start = time.perf_counter()
    app.post_message(event)
    deadline = start + 10
    try:
        while app.screen is before:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{key} did not move on from {type(before).__name__}")
            await asyncio.sleep(0)
        after = app.screen
        after.call_after_refresh(lambda: settled.set_result(time.perf_counter()))
        end = await asyncio.wait_for(settled, 10)
    finally:
        del app.post_display_hook  # back to the class's own (a no-op)
    first = next(when for when, screen in frames if screen is after)
    return first - start, end - start


async def _ours() -> tuple[list[float], list[float], dict[str, list[float]]]:
    home = Home(Path(tempfile.mkdtemp(prefix="bench-wizard-")) / "home")
    home.save_instance(Instance(short_name="snow", public_url="https://snow.example.com"))
    app = make_app(home, local_copy=lambda text: None, supervise=False)
    samples: list[float] = []
    settled: list[float] = []
    per_step: dict[str, list[float]] = {name: [] for _, name in FLOW}
    async with app.run_test(size=SIZE) as pilot:
        for n in range(PASSES + 1):
            await pilot.press("i")
            await pilot.pause()
            for key, expected in FLOW:
                if expected == "NoteScreen":
                    await pilot.press("down")  # choose Script, as the seed does
                    await pilot.pause()
                if expected == "InvitationScreen":
                    app.screen.query_one("#remote_name", Input).value = f"partner{n}"
                    await pilot.pause()
                seconds, later = await _transition(app, key, "\r" if key == "enter" else None)
                if type(app.screen).__name__ != expected:
                    raise RuntimeError(f"expected {expected}, got {type(app.screen).__name__}")
                if n:  # the first pass imports each screen's module
                    samples.append(seconds)
                    settled.append(later)
                    per_step[expected].append(seconds)
                await pilot.pause()
            await pilot.press("enter")  # Done: back to the Connections tab
            await pilot.pause()
    return samples, settled, per_step


class _Minimal(App[None]):
    # Priority, as in the wizard: Enter means Next even inside the Input.
    BINDINGS = [Binding("enter", "next", "Next", priority=True)]

    def on_mount(self) -> None:
        self.push_screen(MinimalScreen())

    def action_next(self) -> None:
        self.switch_screen(MinimalScreen())


async def _reference() -> list[float]:
    app = _Minimal()
    samples = []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for n in range(PASSES * len(FLOW) + 1):
            seconds, _ = await _transition(app, "enter", "\r")
            if n:
                samples.append(seconds)
            await pilot.pause()
    return samples


def measure() -> list[Figure]:
    reference: list[float] = []
    samples: list[float] = []
    settled: list[float] = []
    per_step: dict[str, list[float]] = {name: [] for _, name in FLOW}
    for _ in range(ROUNDS):
        reference += asyncio.run(_reference())
        ours, later, steps_ = asyncio.run(_ours())
        samples += ours
        settled += later
        for name, values in steps_.items():
            per_step[name] += values
    ms = [s * 1000 for s in samples]
    reference_ms = [s * 1000 for s in reference]
    steps = ", ".join(
        f"→ {name}: {summarize([s * 1000 for s in values])[0]:.3g} ms"
        for name, values in per_step.items()
    )
    return [
        versus(
            "wizard step transition",
            "ms",
            ms,
            reference_ms,
            "minimal app screen switch",
            TARGET_RATIO,
            (
                "App.run_test at 80×24: key posted to the app until the next step's first "
                "frame is made (a new screen per step, as the reference); 4 steps per pass "
                "of the seed's flow, the last one issuing the code (saved in a worker once "
                "it is drawn)"
            ),
            notes=[
                f"medians per step: {steps}",
                f"reference spread {summarize(reference_ms)[1]} ms",
                "until the callback the new screen runs after its refresh settles: median "
                f"{summarize([s * 1000 for s in settled])[0]:.3g} ms",
            ],
        )
    ]
