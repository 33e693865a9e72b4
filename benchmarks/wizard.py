"""Wizard step transition: Next pressed → the next step rendered, in `App.run_test`.

The clock starts when the key event is handed to the app's driver (as a
terminal's key would be) and stops when the new step's first frame is written
(`App._display`; the callback it runs once its refresh settles is in the
notes). Each pass walks the seed's flow: "I don't have a URL" →
configuration type → note → connection information → invitation code (which
issues the code; the console saves the connection, fsync included, in a
worker once the code is drawn). Reference: the minimal Textual app switching
between two screens of the same widgets, measured the same way.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input

from exalate_tui.console.app import make_app
from exalate_tui.domain.models import Instance
from exalate_tui.home.store import Home

from .harness import Figure, summarize

PASSES = 20
SIZE = (80, 24)
# The key that moves on from each step, and the screen class that must follow.
FLOW = [
    ("ctrl+n", "ConfigTypeScreen"),
    ("enter", "NoteScreen"),
    ("enter", "InfoScreen"),
    ("enter", "InvitationScreen"),
]


async def _transition(app: App[None], key: str, character: str | None) -> tuple[float, float]:
    """Seconds from the key reaching the driver to the new screen's first frame written
    to the terminal, and to the callback it runs after that refresh settles."""
    before = app.screen
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[float] = loop.create_future()
    frames: list[tuple[float, object]] = []
    display = app._display

    def recording(screen: Screen[object], renderable: object) -> None:
        frames.append((time.perf_counter(), screen))
        display(screen, renderable)  # type: ignore[arg-type]

    app._display = recording  # type: ignore[method-assign]
    event = events.Key(key, character)
    event.set_sender(app)
    start = time.perf_counter()
    assert app._driver is not None
    app._driver.send_message(event)
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
        app._display = display  # type: ignore[method-assign]
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


class _Step(Screen[None]):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="https://example.exalate.net")
        yield Button("Next")
        yield Button("Cancel")
        yield Footer()


class _Minimal(App[None]):
    # Priority, as in the wizard: Enter means Next even inside the Input.
    BINDINGS = [Binding("enter", "next", "Next", priority=True)]

    def on_mount(self) -> None:
        self.push_screen(_Step())

    def action_next(self) -> None:
        self.switch_screen(_Step())


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
    reference = asyncio.run(_reference())
    samples, settled, per_step = asyncio.run(_ours())
    ms = [s * 1000 for s in samples]
    value, spread = summarize(ms)
    ref, ref_spread = summarize([s * 1000 for s in reference])
    steps = ", ".join(
        f"→ {name}: {summarize([s * 1000 for s in values])[0]:.3g} ms"
        for name, values in per_step.items()
    )
    return [
        Figure(
            name="wizard step transition",
            unit="ms",
            value=value,
            reference=ref,
            reference_name="minimal app screen switch",
            target="< 16 ms (one frame)",
            met=value < 16,
            method=(
                "App.run_test at 80×24: key handed to the driver until the next step's "
                "first frame is written; 4 steps per pass of the seed's flow, the last one "
                "issuing the code (saved in a worker once it is drawn)"
            ),
            runs=len(samples),
            spread=spread,
            notes=[
                f"medians per step: {steps}",
                f"reference spread {ref_spread} ms",
                "until the callback the new screen runs after its refresh settles: median "
                f"{summarize([s * 1000 for s in settled])[0]:.3g} ms",
            ],
        )
    ]
