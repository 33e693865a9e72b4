"""Handshake: accept → Active on both sides, against a real public node on 127.0.0.1.

Each run issues an invitation with the CLI (`initiate --no-url`, not timed),
then times `accept.accept` in this process (what the console's Accept and
`exalate-tui accept` run): the handshake, storing the secret, the hello
pushed and applied. The public node stores its side Active before it answers,
so when `accept` returns both connection files say Active (checked after the
clock stops). Reference: one GET /api/v1/info on a fresh connection to the
same node, the floor of any call. The CLI's wall time (process start-up
included) is in the notes.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Status
from exalate_tui.home.store import Home
from exalate_tui.lifecycle.accept import accept
from exalate_tui.transport.sqlite_streams import SqliteStreams

from .harness import Check, Figure, summarize
from .nodes import HOST, cli, free_port, init_public, initiate, node

RUNS = 20
CLI_RUNS = 5


async def _info(url: str) -> float:
    start = time.perf_counter()
    async with httpx.AsyncClient() as client:
        (await client.get(f"{url}/api/v1/info")).raise_for_status()
    return time.perf_counter() - start


def measure() -> list[Figure]:
    root = Path(tempfile.mkdtemp(prefix="bench-handshake-"))
    public, private = root / "public", root / "private"
    port = free_port()
    init_public(public, port)
    cli(private, "init", "--short-name", "priv")
    samples, reference, cli_samples = [], [], []
    with node(public, port):
        url = f"http://{HOST}:{port}"
        home = Home(private)
        home.ensure()
        state = SqliteStreams(home.state_path)
        try:
            for n in range(RUNS + 1):
                cid, code = initiate(public, f"priv{n}")
                invite = codes.decode(code)
                reference.append(asyncio.run(_info(url)))
                start = time.perf_counter()
                connection = asyncio.run(accept(home, state, invite, short_name="priv"))
                elapsed = time.perf_counter() - start
                theirs = Home(public).get_connection(cid)
                if connection.status is not Status.ACTIVE or theirs.status is not Status.ACTIVE:
                    raise RuntimeError(f"run {n}: not Active on both sides")
                if n:  # the first run loads httpx's connection machinery
                    samples.append(elapsed)
        finally:
            state.close()
        for n in range(CLI_RUNS):
            _, code = initiate(public, f"cli{n}")
            start = time.perf_counter()
            out = json.loads(cli(private, "accept", code, "--json"))
            cli_samples.append(time.perf_counter() - start)
            if out["connection"]["status"] != "active":
                raise RuntimeError("the CLI accept did not go Active")
    ms = [s * 1000 for s in samples]
    value, spread = summarize(ms)
    ref, _ = summarize([s * 1000 for s in reference[1:]])
    cli_median, cli_spread = summarize([s * 1000 for s in cli_samples])
    return [
        Figure(
            name="handshake, accept → Active both sides",
            unit="ms",
            value=value,
            reference=ref,
            reference_name="GET /info, fresh connection",
            checks=[Check("median", value, "≤", 100, "ms")],
            method=(
                "accept.accept in-process against an exalate-tui node process on 127.0.0.1: "
                "handshake, secret stored (fsync), hello pushed and applied on both sides"
            ),
            runs=len(samples),
            spread=spread,
            notes=[
                f"`exalate-tui accept CODE --json` wall time, process start included: "
                f"median {cli_median:.4g} ms, {cli_spread} ms over {CLI_RUNS} runs"
            ],
        )
    ]
