"""The sync tests' fixtures: a `Pair` of instances (pair.py), Basic or Script."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exalate_tui.domain.models import Mode

from .pair import Pair, make_pair


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async for made in make_pair(tmp_path, Mode.BASIC):
        yield made


@pytest.fixture
async def script_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async for made in make_pair(tmp_path, Mode.SCRIPT):
        yield made
