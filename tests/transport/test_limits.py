"""The body budget's pace: while a body waits for a turn, the turns are read at a rate."""

from __future__ import annotations

import asyncio

import pytest

from exalate_tui.transport.limits import BodyBudget


@pytest.mark.anyio
async def test_while_a_body_waits_the_turns_together_are_read_at_most_rate() -> None:
    """16 hostile bodies read as fast as they came kept the node's loop busy every moment of
    a flood (docs/reliability.md, promise 13); with nobody waiting there is no pace."""
    budget = BodyBudget(readers=1, wait=10, rate=1_000_000)
    loop = asyncio.get_running_loop()
    turn = await budget.turn()
    started = loop.time()
    await budget.pace(500_000)
    assert loop.time() - started < 0.1  # nobody waits: read as it comes
    waiter = asyncio.ensure_future(budget.turn())
    while not budget.waiting:
        await asyncio.sleep(0)
    started = loop.time()
    await asyncio.gather(budget.pace(200_000), budget.pace(200_000))
    assert 0.38 <= loop.time() - started < 1.5  # 400 kB at 1 MB/s, whoever reads them
    turn.end()
    (await waiter).end()
    started = loop.time()
    await budget.pace(500_000)
    assert loop.time() - started < 0.1
