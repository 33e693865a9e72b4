"""Push, then acknowledge: how a side that calls its partner empties its outbox.

One rule for every pusher (the supervisor's, an admin's action, an accept's
hello): prune only what the partner applied, and never beyond what was sent,
whatever the partner claims.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import SecretStr

from exalate_tui.transport.streams import Message, Streams

if TYPE_CHECKING:
    from exalate_tui.transport.client import Remote


async def deliver(
    remote: Remote, state: Streams, cid: str, secret: SecretStr, pending: Sequence[Message]
) -> int:
    """Push `pending` (a run of the outbox, in order) and prune what the partner applied.

    Returns the partner's last applied seq. A partner that applied none of
    them is not speaking the protocol (a node applies a batch or refuses it):
    `RemoteError`, so the caller backs off instead of sending them again at once.
    """
    from exalate_tui.transport.client import RemoteError  # loaded with `remote`

    applied = await remote.push(cid, secret, pending)
    if pending:
        if applied < pending[0].seq:
            raise RemoteError("the partner applied none of the messages sent", code="protocol")
        await asyncio.to_thread(state.ack, cid, min(applied, pending[-1].seq))
    return applied
