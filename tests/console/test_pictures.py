"""The README's pictures (docs/pictures/) are the snapshot baselines of today's screens:
`make pictures` copies them, and this fails when a baseline moved without them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_picture_is_its_screens_current_baseline() -> None:
    makefile = (ROOT / "Makefile").read_text()
    names = re.search(r"PICTURES := (.*?)\npictures:", makefile, re.S)
    assert names is not None
    pictures = {
        f"{name}.svg": ROOT / "snapshots" / "test_screens_snapshots" / f"test_{name}[80x24].svg"
        for name in names.group(1).replace("\\", " ").split()
    }
    pictures["tickets.svg"] = (
        ROOT / "snapshots" / "test_tickets_snapshots" / "test_tickets_several[80x24].svg"
    )
    readme = (ROOT / "README.md").read_text()
    for picture, baseline in pictures.items():
        assert f"docs/pictures/{picture}" in readme, picture
        shown = ROOT / "docs" / "pictures" / picture
        assert shown.read_bytes() == baseline.read_bytes(), f"{picture}: run `make pictures`"
