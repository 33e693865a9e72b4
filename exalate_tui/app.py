"""The Textual console: screen routing, app-wide keys, the clipboard, codes printed on exit.

Screens are imported when they first open, so starting the console loads only
what the first screen needs (and never the node's FastAPI/uvicorn).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from .models import Instance
from .store import Home, StoreError
from .wizard import InitiateWizard, Issued, Step

if TYPE_CHECKING:
    from screens.first_run import FirstRunScreen
    from screens.wizard_step import WizardStep

# A local clipboard helper (xclip, pbcopy...) that hangs must not hide the toast for long.
LOCAL_COPY_TIMEOUT = 3.0

# "module:Class" for each wizard step, imported when the step opens.
STEP_SCREENS: dict[Step, str] = {
    Step.DESTINATION: "screens.destination:DestinationScreen",
    Step.PUBLIC_URL: "screens.public_url:PublicUrlScreen",
    Step.CONFIG_TYPE: "screens.config_type:ConfigTypeScreen",
    Step.NOTE: "screens.note:NoteScreen",
    Step.INFO: "screens.info:InfoScreen",
    Step.INVITATION: "screens.invitation:InvitationScreen",
}


def copy_locally(text: str) -> None:
    """The machine's own clipboard via pyperclip; raises where there is none (SSH, no display)."""
    import pyperclip

    pyperclip.copy(text)


def _load(target: str) -> type[WizardStep]:
    module, name = target.split(":")
    screen: type[WizardStep] = getattr(importlib.import_module(module), name)
    return screen


class ExalateApp(App[None]):
    """Connections tab, first-run setup and the Initiate-connection wizard."""

    CSS_PATH = "app.tcss"
    TITLE = "exalate-tui"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            priority=True,
            id="app.quit",
            tooltip="Leave exalate-tui; invitation codes issued are printed on exit",
        ),
    ]

    def __init__(
        self,
        home: Home,
        *,
        local_copy: Callable[[str], None] = copy_locally,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.home = home
        self.local_copy = local_copy
        self.now = now
        self.instance: Instance | None = None
        self.wizard: InitiateWizard | None = None
        # Every code issued while the console was open, printed on exit.
        self.issued: list[Issued] = []

    def on_mount(self) -> None:
        self._start()

    def _start(self) -> None:
        """The first screen: setup, a broken instance.toml, or the Connections tab."""
        try:
            instance = self.home.load_instance()
        except StoreError as error:
            from screens.instance_error import InstanceErrorScreen

            self.push_screen(InstanceErrorScreen(error))
            return
        if instance is None:
            from screens.first_run import FirstRunScreen

            self.push_screen(FirstRunScreen(self.home))
            return
        self._open_connections(instance)

    def _open_connections(self, instance: Instance) -> None:
        from screens.connections import ConnectionsScreen

        self.instance = instance
        self.push_screen(ConnectionsScreen(self.home))

    def action_reload_home(self) -> None:
        """Read instance.toml again (after the admin fixed it in another terminal)."""
        self.pop_screen()
        self._start()

    def on_first_run_screen_saved(self, event: FirstRunScreen.Saved) -> None:
        self.pop_screen()
        self._open_connections(event.instance)

    # -- the Initiate-connection wizard -------------------------------------

    def action_initiate(self) -> None:
        """Open the wizard on its first step (bound to `i` on the Connections tab)."""
        if self.instance is None:
            return
        # URL verification against a live node comes with the node: it will run in a
        # worker and hand its result to `wizard.record_check`.
        self.wizard = InitiateWizard(self.home, self.instance, require_verified=False, now=self.now)
        self.push_screen(self._step_screen())

    def _step_screen(self) -> Screen[None]:
        assert self.wizard is not None
        return _load(STEP_SCREENS[self.wizard.step])(self.wizard)

    def on_wizard_step_moved(self, event: WizardStep.Moved) -> None:
        """Replace the wizard screen with the one for the wizard's current step."""
        wizard = self.wizard
        if wizard is None:
            return
        if wizard.issued is not None and wizard.issued not in self.issued:
            self.issued.append(wizard.issued)
        self.switch_screen(self._step_screen())

    def on_wizard_step_closed(self, event: WizardStep.Closed) -> None:
        """Back to the Connections tab, which reloads and shows any new connection."""
        if self.wizard is not None:
            self.instance = self.wizard.instance
        self.wizard = None
        self.pop_screen()

    # -- clipboard ----------------------------------------------------------

    def action_copy_code(self) -> None:
        """OSC 52 to the admin's terminal, then the local clipboard, then say what happened."""
        issued = self.wizard.issued if self.wizard else None
        if issued is None:
            return
        self.copy_to_clipboard(issued.code)
        self._copy_locally(issued.code)

    @work(exclusive=True, group="clipboard", exit_on_error=False)
    async def _copy_locally(self, text: str) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self.local_copy, text), LOCAL_COPY_TIMEOUT)
        # pyperclip raises its own error without a display; helpers fail with OSError or hang.
        except Exception:
            self.notify(
                "Sent with OSC 52 (terminal clipboard); no local clipboard here: "
                "if it did not arrive, select it on screen or press w to write it to a file.",
                title="Invitation code",
                severity="warning",
                timeout=8,
            )
        else:
            self.notify(
                "Copied with OSC 52 (terminal clipboard) and to the local clipboard.",
                title="Invitation code",
            )


def make_app(
    home: Home,
    *,
    local_copy: Callable[[str], None] = copy_locally,
    now: Callable[[], float] = time.time,
) -> ExalateApp:
    """The console for `home`; tests pass a stand-in clipboard and a fixed clock."""
    return ExalateApp(home, local_copy=local_copy, now=now)


def run_console(home: Home) -> int:
    """Run the console; print every invitation code issued, so none is lost with the screen."""
    app = make_app(home)
    app.run()
    if app.issued:
        print("Invitation codes issued in this session:")
        for issued in app.issued:
            print(f"\n{issued.connection.name}:\n{issued.code}")
    return app.return_code or 0
