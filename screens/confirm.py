"""Questions with two answers, each on a key and a button; Escape answers neither.

They dismiss with True (the first answer), False (the second) or None (Escape:
the admin changed their mind, nothing happens). ConfirmDeleteScreen keeps its
own look; these ask the other questions: a new code, leaving a pending connection.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static

from exalate_tui.domain.live import NodeNeed
from exalate_tui.domain.models import Connection
from exalate_tui.home.store import NodeRecord

from .widgets import ButtonBar


class ConfirmScreen(ModalScreen[bool | None]):
    """Subclasses bind their two keys to `answer(True)` and `answer(False)`."""

    CSS_PATH = "confirm.tcss"
    AUTO_FOCUS = "#no"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "answer(None)", "Cancel", id="confirm.cancel", tooltip="Do nothing"),
    ]

    def __init__(self, question: str, consequence: str, yes: str, no: str) -> None:
        super().__init__()
        self.question = question
        self.consequence = consequence
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            # Text: a question names a connection, never to be read as markup.
            yield Label(Text(self.question), id="question")
            yield Static(Text(self.consequence), id="consequence")
            with ButtonBar(id="answers"):
                yield Button(self.yes, id="yes", compact=True)
                yield Button(self.no, id="no", compact=True)
        yield Footer(show_command_palette=False)

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool | None) -> None:
        self.dismiss(answer)


class ConfirmNewCodeScreen(ConfirmScreen):
    """Before `g` invalidates a pending connection's code: True issues a new one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "New code", id="new_code.yes", tooltip="Issue a new code"),
        Binding("n", "answer(False)", "Keep", id="new_code.no", tooltip="Keep the old code"),
    ]

    def __init__(self, connection: Connection) -> None:
        partner = connection.remote_name or "your partner"
        super().__init__(
            f"Issue a new invitation code for {connection.name}?",
            f"The code issued before stops working at once: if {partner} has it and has "
            "not accepted it yet, send them the new one.",
            "New code (y)",
            "Keep the old code (n)",
        )


class LeavePendingScreen(ConfirmScreen):
    """Escape on the invitation step: True discards the pending connection, False keeps it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "d",
            "answer(True)",
            "Discard",
            id="leave_pending.discard",
            tooltip="Delete the pending connection; its code stops working",
        ),
        Binding(
            "k",
            "answer(False)",
            "Keep",
            id="leave_pending.keep",
            tooltip="Keep the pending connection; its code stays valid",
        ),
    ]

    def __init__(self, connection: Connection, expires: str) -> None:
        partner = connection.remote_name or "your partner"
        super().__init__(
            f"Keep {connection.name} pending?",
            f"It is saved as Pending: its code stays valid until {expires}, for {partner} "
            "to accept; the Connections tab shows it and can issue a new code. "
            "Discarding deletes it and the code stops working.",
            "Discard (d)",
            "Keep pending (k)",
        )


class ConfirmUnexalateScreen(ConfirmScreen):
    """Before `u` stops syncing a ticket: True unexalates it, False keeps it syncing."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "y",
            "answer(True)",
            "Unexalate",
            id="unexalate.yes",
            tooltip="Stop syncing this ticket over this connection; both copies are kept",
        ),
        Binding("n", "answer(False)", "Keep syncing", id="unexalate.no", tooltip="Change nothing"),
    ]

    def __init__(self, key: str, connection: str, remote_key: str | None, partner: str) -> None:
        theirs = f"{remote_key} at {partner}" if remote_key else f"{partner}'s copy, if made"
        super().__init__(
            f"Stop syncing {key} over {connection}?",
            f"Both copies are kept: {key} here and {theirs}. Changes stop flowing both ways, "
            f"and {partner} is told; Exalate starts the sync again.",
            "Unexalate (y)",
            "Keep syncing (n)",
        )


class ConfirmLeaveRulesScreen(ConfirmScreen):
    """Escape in the Rules editor with a rule unsaved: True leaves it unsaved."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "d",
            "answer(True)",
            "Discard",
            id="leave_rules.discard",
            tooltip="Leave the editor; the unsaved changes are lost",
        ),
        Binding(
            "k",
            "answer(False)",
            "Keep editing",
            id="leave_rules.keep",
            tooltip="Back to the editor, changes kept",
        ),
    ]

    def __init__(self, unsaved: str) -> None:
        super().__init__(
            f"Leave with {unsaved} unsaved?",
            "The changes are lost; the versions in force stay as they are. ctrl+s in the "
            "editor checks and saves a rule.",
            "Discard changes (d)",
            "Keep editing (k)",
        )


class ConfirmRevertScreen(ConfirmScreen):
    """Before a version of a rule comes back in force: True reverts."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "y",
            "answer(True)",
            "Revert",
            id="revert.yes",
            tooltip="Save this version again as the newest, in force at once",
        ),
        Binding("n", "answer(False)", "Keep", id="revert.no", tooltip="Change nothing"),
    ]

    def __init__(self, direction: str, number: int, current: int | None) -> None:
        now = f" in place of v{current}" if current is not None else ""
        after = (
            "Synced tickets whose replica it changes are re-sent."
            if direction == "outgoing"
            else "It applies to each ticket's next replica (p on the connection: to every "
            "synced ticket now)."
        )
        super().__init__(
            f"Bring {direction} v{number} back in force{now}?",
            f"It is saved again as a new version, checked first; every version stays in the "
            f"list. {after}",
            "Revert (y)",
            "Keep (n)",
        )


class ConfirmSwitchScreen(ConfirmScreen):
    """Before a Basic connection becomes a Script one: True switches it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "y",
            "answer(True)",
            "Switch",
            id="switch.yes",
            tooltip="Use Script rules on this side, starting as the Basic mapping",
        ),
        Binding("n", "answer(False)", "Keep Basic", id="switch.no", tooltip="Change nothing"),
    ]

    def __init__(self, connection: Connection) -> None:
        partner = connection.remote_name or "the partner"
        super().__init__(
            f"Switch {connection.name} to Script rules?",
            "This side's rules start as the Basic mapping, written out as Python you can "
            f"edit (e on the connection). {partner} is told and keeps its own rules. "
            "There is no way back to Basic.",
            "Switch to Script (y)",
            "Keep Basic (n)",
        )


class ConfirmStopNodeScreen(ConfirmScreen):
    """Before `N` stops this home's node: True stops it, False keeps it running."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Stop node", id="stop_node.yes", tooltip="Stop the node"),
        Binding("n", "answer(False)", "Keep running", id="stop_node.no", tooltip="Change nothing"),
    ]

    def __init__(self, record: NodeRecord | None, need: NodeNeed) -> None:
        where = f" on {record.host}:{record.port}" if record else ""
        if need.callers:
            stops = f"{_names(need.callers)} cannot reach this instance until a node runs again"
            stops += "; the console polls in its place while open." if need.polls else "."
        elif need.polls:
            stops = (
                "The console polls in its place while it is open; once it closes, nothing "
                "syncs until a node runs again."
            )
        else:
            stops = "No connection of this home needs it now."
        super().__init__(
            f"Stop this home's node{where}?",
            f"{stops} Start it again with n.",
            "Stop node (y)",
            "Keep running (n)",
        )


class QuitWithoutNodeScreen(ConfirmScreen):
    """Quitting while a node this home needs is down: True starts it first, False quits;
    Escape stays. Ctrl+Q quits at once (the App's quit sees this screen)."""

    AUTO_FOCUS = "#yes"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "s",
            "answer(True)",
            "Start node and quit",
            id="quit.start",
            tooltip="Start the node in the background (it outlives the console), then quit",
        ),
        Binding(
            "q",
            "answer(False)",
            "Quit",
            id="quit.anyway",
            tooltip="Quit without a node: syncing waits until one runs",
        ),
        Binding("escape", "answer(None)", "Stay", id="quit.stay", tooltip="Back to the console"),
    ]

    def __init__(self, need: NodeNeed) -> None:
        stops = []
        if need.polls:
            stops.append("this side's polling stops with the console: nothing syncs")
        if need.callers:
            stops.append(f"{_names(need.callers)} cannot reach this instance")
        said = "; ".join(stops)
        super().__init__(
            "No node runs for this home: start it before quitting?",
            f"While none runs, {said}. The node runs in the background and keeps going "
            "after the console closes (`exalate-tui node stop` ends it).",
            "Start node and quit (s)",
            "Quit (q)",
        )


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names[:2]) + (" and others" if len(names) > 2 else "")
