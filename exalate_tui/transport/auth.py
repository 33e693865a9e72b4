"""Signed requests on the node: the signature, its freshness, and replays (docs/protocol.md).

`signing.verify` checks the header under the connection's secret and the
clock; `Signatures.check` adds that a signature is accepted only once.
"""

from __future__ import annotations

import heapq
import re
import secrets

from exalate_tui.protocol import signing
from exalate_tui.transport.errors import clock_off, unauthorized
from exalate_tui.transport.limits import busy

# Accepted signatures are remembered while they could still pass the clock check;
# past this many live ones a connection's signed calls are refused rather than any forgotten:
# about 66 a second for 300 s, far above what a poller and a pusher send.
PER_CONNECTION = 20_000
# The whole node's memory of them; past it only connections over an even share are refused.
REPLAY_CAPACITY = 200_000

_STAMP = re.compile(r"ts=(\d+),sig=([0-9a-f]{64})$")
# Verified against when the connection is unknown, so that takes as long as a bad signature.
_NO_SECRET = secrets.token_urlsafe(32)


class ReplayCache:
    """Signatures accepted while they could still pass the clock check: a second use is a replay.

    An entry lives until its timestamp is `window` s old (`ts + window`): a
    signature dated `window` s ahead lives `2 * window` s, one dated now
    `window` s, and none longer than it could be replayed. Each connection
    may hold `per_connection` live entries; when the node holds `capacity`
    in all, a connection holding more than an even share (`capacity` over
    the connections holding any) is refused too. A refusal is 503 `busy`,
    never a forgotten entry, and it falls only on the connection that spent
    its share: no partner can spend another's.
    """

    def __init__(
        self,
        window: int = signing.MAX_SKEW,
        capacity: int = REPLAY_CAPACITY,
        per_connection: int = PER_CONNECTION,
    ) -> None:
        self.window = window
        self.capacity = capacity
        self.per_connection = per_connection
        self._seen: dict[str, set[bytes]] = {}
        self._size = 0
        self._expiry: list[tuple[int, str, bytes]] = []

    def __len__(self) -> int:
        return self._size

    def held(self, cid: str) -> int:
        return len(self._seen.get(cid, ()))

    def admit(self, cid: str, signature: bytes, ts: int, now: float) -> bool:
        """False for a signature seen before; remember it otherwise."""
        while self._expiry and self._expiry[0][0] < now:
            _, owner, old = heapq.heappop(self._expiry)
            owned = self._seen[owner]
            owned.discard(old)
            self._size -= 1
            if not owned:
                del self._seen[owner]
        held = self._seen.get(cid)
        if held is not None and signature in held:
            return False
        count = len(held) if held is not None else 0
        if count >= self.per_connection or (
            self._size >= self.capacity and count >= self.capacity // max(1, len(self._seen))
        ):
            raise busy("too many signed requests from this connection at once; retry shortly")
        if held is None:
            held = self._seen[cid] = set()
        held.add(signature)
        self._size += 1
        heapq.heappush(self._expiry, (ts + self.window, cid, signature))
        return True


class Signatures:
    """What the node asks of every signed request before it answers it."""

    def __init__(self, replays: ReplayCache | None = None) -> None:
        self.replays = replays if replays is not None else ReplayCache()

    def precheck(self, header: str | None, now: float) -> None:
        """401 for what the header alone refuses: its form, and a clock too far off.

        Run before the body is read; the signature itself is `check`ed after it."""
        parsed = signing.parse(header)
        if parsed is None:
            raise unauthorized()
        skew = parsed[0] - now  # the same test as `signing.verify`'s
        if abs(skew) > signing.MAX_SKEW:
            raise clock_off(round(skew))

    def check(
        self,
        cid: str,
        secret: str | None,
        header: str | None,
        method: str,
        path: str,
        query: bytes,
        body: bytes,
        now: float,
    ) -> tuple[bytes, int]:
        """Raise 401 unless `header` signs this request under `secret`, freshly, for the
        first time here; an unknown connection (`secret` None) costs the same work.
        Returns the signature and its timestamp (for the workers' shared memory)."""
        valid = signing.verify(
            secret or _NO_SECRET, header, method, path, query.decode("latin-1"), body, now=now
        )
        if not (valid and secret and header):
            raise unauthorized()
        stamp = _STAMP.search(header.strip())
        assert stamp is not None  # verify() accepted the header's form
        signature, ts = bytes.fromhex(stamp.group(2)), int(stamp.group(1))
        if not self.replays.admit(cid, signature, ts, now):
            raise unauthorized()
        return signature, ts
