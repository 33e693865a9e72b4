"""The Rules editor's state: a Script connection's outgoing and incoming rules as two
tabs, what is unsaved, the refusal of a save (its line), the Test run's ticket and
report, and the versions with a diff against the one in force.

Pure Python, no I/O: the screens read and save the rules (sync/script.py's
`save_rule`, `revert_rule`, `try_rules`) in workers and hand the outcome in;
the words and diff lines shown are made here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "DIRECTIONS",
    "TITLES",
    "Buffer",
    "Refusal",
    "ReportLine",
    "RulesEditor",
    "TestRun",
    "VersionRow",
    "Versions",
    "report_lines",
]

DIRECTIONS = ("outgoing", "incoming")
TITLES = {"outgoing": "Outgoing", "incoming": "Incoming"}
# What each rule does, said under the tabs.
ROLES = {"outgoing": "ticket → replica", "incoming": "replica → ticket"}


@dataclass(frozen=True)
class Refusal:
    """Why a rule was not saved (or not run): the message, and the line it names."""

    message: str
    line: int | None = None


@dataclass
class Buffer:
    """One direction: the version in force and its source, and the text being edited."""

    version: int | None = None
    saved: str = ""
    text: str = ""
    refusal: Refusal | None = None

    @property
    def dirty(self) -> bool:
        return self.text != self.saved


class RulesEditor:
    """Which tab shows, each tab's text against the version in force, a save's refusal."""

    def __init__(self, direction: str = "outgoing") -> None:
        if direction not in DIRECTIONS:
            raise ValueError(direction)
        self.direction = direction
        self.buffers = {d: Buffer() for d in DIRECTIONS}
        self.loaded = False
        self.saving: str | None = None  # the direction whose save runs now

    @property
    def current(self) -> Buffer:
        return self.buffers[self.direction]

    @property
    def dirty(self) -> bool:
        return any(b.dirty for b in self.buffers.values())

    def show(self, direction: str) -> bool:
        """Switch to `direction`'s tab; True when it changed."""
        if direction not in DIRECTIONS:
            raise ValueError(direction)
        changed = direction != self.direction
        self.direction = direction
        return changed

    def load(self, direction: str, version: int, source: str) -> bool:
        """The version in force of `direction`, as read; a tab with unsaved changes keeps
        its text. True when the tab's text was replaced."""
        buffer = self.buffers[direction]
        keep = self.loaded and buffer.dirty
        buffer.version, buffer.saved = version, source
        if not keep:
            buffer.text = source
        return not keep

    def loaded_all(self) -> None:
        self.loaded = True

    def edit(self, text: str, direction: str | None = None) -> None:
        self.buffers[direction or self.direction].text = text

    def to_save(self) -> tuple[str, str] | None:
        """(direction, text) to check and save, or None: nothing changed, or a save runs."""
        if self.saving is not None or not self.current.dirty:
            return None
        self.saving = self.direction
        return self.direction, self.current.text

    def saved(self, direction: str, version: int, text: str) -> None:
        buffer = self.buffers[direction]
        buffer.version, buffer.saved, buffer.refusal = version, text, None
        self.saving = None

    def refused(self, direction: str, message: str, line: int | None) -> None:
        """Not saved: the version in force stays; the tab says why, at which line."""
        self.buffers[direction].refusal = Refusal(message, line)
        self.saving = None

    def failed(self) -> None:
        """The save did not happen for another reason (the disk): said by the caller."""
        self.saving = None

    def drafts(self) -> dict[str, str]:
        """Each tab's unsaved text, for a Test run of what is being edited."""
        return {d: b.text for d, b in self.buffers.items() if b.dirty}

    def title(self, direction: str) -> str:
        buffer = self.buffers[direction]
        version = f" v{buffer.version}" if buffer.version is not None else ""
        return f"{TITLES[direction]}{version}{' ●' if buffer.dirty else ''}"

    def status(self) -> str:
        """The line under the tabs: what this rule is, and whether it is saved."""
        buffer = self.current
        if not self.loaded:
            return "Reading the rules…"
        if self.saving == self.direction:
            return "Checking and saving…"
        state = (
            f"unsaved: v{buffer.version} stays in force until ctrl+s"
            if buffer.dirty
            else f"v{buffer.version} in force"
        )
        return f"{self.direction}.py · {ROLES[self.direction]} · {state}"

    def unsaved_words(self) -> str:
        names = [f"{d}.py" for d, b in self.buffers.items() if b.dirty]
        return " and ".join(names)


# -- the Test run -----------------------------------------------------------------


class TestRun:
    """Which ticket to try the rules on (typed, or picked from the synced ones), and the
    report or why there is none."""

    __test__ = False  # not a pytest class, for all its name

    def __init__(self, synced: Sequence[tuple[str, str]] = ()) -> None:
        self.key = ""
        self.synced = list(synced)  # (local key, remote key or "pending")
        self.error: str | None = None
        self.report: dict[str, Any] | None = None
        self.running: str | None = None

    def set_key(self, text: str) -> None:
        self.key = text.strip().upper()
        self.error = None

    def submit(self, key: str | None = None) -> str | None:
        """The key to run on (typed, or `key` picked), or None with `error` set."""
        chosen = (key or self.key).strip().upper()
        if not chosen:
            self.error = "Type a ticket's key, e.g. SNOW-1, or pick a synced ticket below."
            return None
        self.key, self.error, self.report, self.running = chosen, None, None, chosen
        return chosen

    def finished(self, report: dict[str, Any]) -> None:
        self.report, self.running = report, None

    def refused(self, message: str) -> None:
        self.error, self.running = message, None


@dataclass(frozen=True)
class ReportLine:
    """One line of a Test run's report; `kind` says how it is shown: heading, text,
    added, error, dim."""

    kind: str
    text: str


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def report_lines(report: Mapping[str, Any]) -> list[ReportLine]:
    """A Test run's report (`try_rules`) in words, as `exalate-tui rules test` says it."""
    lines = [
        ReportLine("dim", f"{report['key']} · {report['rules']} · nothing sent, nothing written"),
        ReportLine("heading", "Outgoing: the replica it would send"),
    ]
    out, inc = report["outgoing"], report["incoming"]
    if "error" in out:
        lines.append(ReportLine("error", f"  {out['error']}"))
    else:
        replica = out["replica"]
        lines += [
            ReportLine("text", f"  {name} = {_short(value)}")
            for name, value in replica["fields"].items()
        ] or [ReportLine("dim", "  (no fields)")]
        lines.append(
            ReportLine(
                "dim",
                f"  {len(replica['comments'])} comments, {len(replica['attachments'])} attachments",
            )
        )
    lines += _printed(out)
    lines.append(ReportLine("heading", "Incoming: what the last replica received would change"))
    if inc is None:
        lines.append(ReportLine("dim", f"  nothing received for {report['key']} yet"))
        return lines
    if "error" in inc:
        lines.append(ReportLine("error", f"  {inc['error']}"))
        return lines + _printed(inc)
    for name, (old, new) in inc["fields"].items():
        lines.append(ReportLine("text", f"  {name}: {_short(old, 34)} → {_short(new, 34)}"))
    if not inc["fields"]:
        lines.append(ReportLine("dim", "  no field changes"))
    for comment in inc["comments"]:
        kind = "work note" if comment["internal"] else "comment"
        body = comment["body"].replace("\n", " ")
        body = body if len(body) <= 50 else body[:49] + "…"
        lines.append(ReportLine("added", f"  + {kind} by {comment['author']}: {body}"))
    lines += [ReportLine("added", f"  + attachment {name}") for name in inc["attachments"]]
    return lines + _printed(inc)


def _printed(part: Mapping[str, Any]) -> list[ReportLine]:
    printed = str(part.get("printed") or "").rstrip()
    if not printed:
        return []
    return [ReportLine("dim", "  printed:")] + [
        ReportLine("text", f"    {line}") for line in printed.splitlines()
    ]


# -- versions -----------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRow:
    number: int
    direction: str
    saved: datetime
    note: str
    in_force: bool

    @property
    def when(self) -> str:
        return self.saved.strftime("%Y-%m-%d %H:%M")


@dataclass
class Versions:
    """Every saved version, newest first, the highlighted one, and its diff against the
    version of its direction in force (for the one in force: against the one before)."""

    rows: list[VersionRow] = field(default_factory=list)
    sources: dict[int, str] = field(default_factory=dict)
    selected: int = 0

    @classmethod
    def of(
        cls,
        versions: Sequence[tuple[int, str, datetime, str]],
        sources: Mapping[int, str],
    ) -> Versions:
        """`versions` oldest first, as `RuleFiles.versions()`: (number, direction, saved, note)."""
        in_force = {direction: number for number, direction, _, _ in versions}
        rows = [
            VersionRow(number, direction, saved, note, in_force[direction] == number)
            for number, direction, saved, note in reversed(versions)
        ]
        return cls(rows, dict(sources))

    def select(self, index: int) -> None:
        self.selected = min(max(index, 0), max(len(self.rows) - 1, 0))

    @property
    def row(self) -> VersionRow | None:
        return self.rows[self.selected] if self.rows else None

    def in_force(self, direction: str) -> VersionRow | None:
        return next((r for r in self.rows if r.direction == direction and r.in_force), None)

    def _before(self, row: VersionRow) -> VersionRow | None:
        return next(
            (r for r in self.rows if r.direction == row.direction and r.number < row.number),
            None,
        )

    def can_revert(self) -> bool:
        row = self.row
        return row is not None and not row.in_force

    def diff(self) -> tuple[str, list[str]]:
        """(what is compared, the unified diff's lines) for the highlighted version."""
        row = self.row
        if row is None:
            return "No versions saved.", []
        if row.in_force:
            base = self._before(row)
            if base is None:
                return f"v{row.number} is in force, the first {row.direction} version.", []
            heading = (
                f"v{row.number} is in force: what it changed from v{base.number} "
                f"(- v{base.number}, + v{row.number})"
            )
            old, new = base, row
        else:
            current = self.in_force(row.direction)
            if current is None:  # pragma: no cover - every direction has one in force
                return f"v{row.number}", []
            heading = (
                f"Reverting brings v{row.number} back: - v{current.number} in force, "
                f"+ v{row.number}"
            )
            old, new = current, row
        lines = list(
            difflib.unified_diff(
                self.sources.get(old.number, "").splitlines(),
                self.sources.get(new.number, "").splitlines(),
                f"{old.direction}.py v{old.number}",
                f"{new.direction}.py v{new.number}",
                lineterm="",
            )
        )
        if not lines:
            return heading + " · the same text", []
        return heading, lines
