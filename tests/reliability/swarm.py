"""Many private connections long-polling one node at once (promise 7), as one process.

Run by test_load.py: `python swarm.py URL CONNECTIONS.json SECONDS OUT.json`.
Each connection is a task that long-polls with `client.Remote.fetch`, as a
private side's poller does, acknowledging what it got, until SECONDS pass.
One pooled transport without the default 100-connection cap, so every poll
is open at the same time (test_load.py counts them at the node). Writes what
happened to OUT.json.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import httpx
from pydantic import SecretStr

from exalate_tui.transport.client import Remote, RemoteError

WAIT = 25.0


async def main(url: str, connections: list[dict[str, str]], seconds: float) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * len(connections) + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None)
    )
    remote = Remote(url, transport=transport)
    stats = {"polls": 0, "messages": 0, "errors": 0}
    errors: list[str] = []
    end = time.monotonic() + seconds

    async def poll(cid: str, secret: SecretStr) -> None:
        after = 0
        while time.monotonic() < end:
            try:
                batch = await remote.fetch(cid, secret, after, wait=WAIT)
            except RemoteError as error:
                stats["errors"] += 1
                errors.append(str(error))
                await asyncio.sleep(0.5)
                continue
            stats["polls"] += 1
            stats["messages"] += len(batch.messages)
            if batch.messages:
                after = batch.messages[-1].seq

    tasks = [asyncio.create_task(poll(c["cid"], SecretStr(c["secret"]))) for c in connections]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await remote.aclose()
    return {**stats, "first_errors": errors[:5]}


if __name__ == "__main__":
    url, listing, seconds, out = sys.argv[1:5]
    with open(listing) as file:
        result = asyncio.run(main(url, json.load(file), float(seconds)))
    with open(out, "w") as file:
        json.dump(result, file)
