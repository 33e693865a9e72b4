"""synced.py's story with snow_to_jira switched to Script rules on snow's side, for the
Rules editor: its Basic mapping written out (v1 outgoing, v2 incoming), then one
outgoing version that marks the summary (v3) and one incoming that adds a label (v4),
every version's time pinned; and a reader of a screenshot's text lines.
"""

from __future__ import annotations

import html
import re
import tomllib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import tomli_w
from conftest import NOW
from synced import CID, story

from exalate_tui.home.rules import RuleFiles
from exalate_tui.home.store import Home
from exalate_tui.sync.script import BASIC_INCOMING, BASIC_OUTGOING, save_rule, switch_to_script
from exalate_tui.transport.sqlite_streams import SqliteStreams

MARKED = BASIC_OUTGOING.replace(
    "replica.summary = ticket.summary", 'replica.summary = "[snow] " + ticket.summary'
)
LABELLED = BASIC_INCOMING + 'ticket.labels = ["from-" + connection.remote_name]\n'


def pin_rule_times(home: Home, cid: str = CID) -> None:
    """Each version saved a day apart, the last an hour before NOW."""
    files = RuleFiles(home, cid)
    data = tomllib.loads(files.index_path.read_text())
    versions = data["versions"]
    last = datetime.fromtimestamp(NOW, UTC) - timedelta(hours=1)
    for n, version in enumerate(versions):
        version["saved"] = last - timedelta(days=len(versions) - 1 - n)
    files.index_path.write_text(tomli_w.dumps(data))


async def scripted(root: Path) -> Home:
    home = await story(root)
    streams = SqliteStreams(home.state_path)
    try:
        connection, _ = switch_to_script(home, CID, streams)
    finally:
        streams.close()
    save_rule(home, connection, "outgoing", MARKED, "summary marked [snow]")
    save_rule(home, connection, "incoming", LABELLED, "label from-jira")
    pin_rule_times(home)
    return home


_TEXT = re.compile(
    r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="([\d.]+)" '
    r'clip-path="url\(#[^)]*-line-(\d+)\)">([^<]*)</text>'
)


def screen_lines(svg: str) -> list[str]:
    """A Textual SVG screenshot's rows as text (each <text> placed at its column)."""
    rows: dict[int, list[tuple[float, str]]] = defaultdict(list)
    width = 0.0  # of one cell
    for x, length, line, raw in _TEXT.findall(svg):
        text = html.unescape(raw).replace("\xa0", " ")
        width = width or float(length) / max(len(text), 1)
        rows[int(line)].append((float(x), text))
    lines = []
    for n in range(max(rows, default=-1) + 1):
        row = ""
        for x, text in sorted(rows.get(n, [])):
            row = row.ljust(round(x / width)) + text
        lines.append(row.rstrip())
    return lines
