"""Shared test setup: a still terminal for Textual, and snapshot baselines in `snapshots/`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import textual.constants
from pytest_textual_snapshot import SVGImageExtension
from syrupy.assertion import SnapshotAssertion
from syrupy.location import PyTestLocation

# No animations, so screenshots are the same every run. The snapshot plugin imports
# Textual before this file runs, so the environment variable alone comes too late for
# this process (every App reads the constant when it is created); it still reaches
# subprocesses.
os.environ["TEXTUAL_ANIMATIONS"] = "none"
textual.constants.TEXTUAL_ANIMATIONS = "none"  # type: ignore[misc]

# DESIGN.md (contract): SVG baselines live in <project>/snapshots/<test module>/.
SNAPSHOTS = Path(__file__).resolve().parent.parent / "snapshots"


class ProjectSVGExtension(SVGImageExtension):
    """pytest-textual-snapshot's SVG extension, storing under `snapshots/`."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(SNAPSHOTS / test_location.basename)


class _ProjectSnapshotAssertion(SnapshotAssertion):
    # `snap_compare` asks for the plugin's extension by class; hand it ours instead.
    def use_extension(self, extension_class: Any = None) -> SnapshotAssertion:
        if extension_class is SVGImageExtension:
            extension_class = ProjectSVGExtension
        return super().use_extension(extension_class)


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """syrupy's `snapshot`, so that `snap_compare` reads and writes `snapshots/`."""
    return _ProjectSnapshotAssertion(
        session=snapshot.session,
        extension_class=snapshot.extension_class,
        test_location=snapshot.test_location,
        update_snapshots=snapshot.update_snapshots,
    )


# -- deterministic connections -------------------------------------------------

# 2024-05-01 12:00:00 UTC: the clock handed to wizards and apps under test.
NOW = 1_714_564_800.0


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> float:
    """Connection ids ...0001, ...0002 in order, one fixed token; returns the fixed clock."""
    import itertools
    import uuid

    from exalate_tui import invitation

    counter = itertools.count(1)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(counter)))
    monkeypatch.setattr(invitation, "new_token", lambda: "T" * 43)
    return NOW
