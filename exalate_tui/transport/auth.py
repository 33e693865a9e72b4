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
# past this many live ones the node refuses signed calls rather than forget any.
REPLAY_CAPACITY = 200_000

_STAMP = re.compile(r"ts=(\d+),sig=([0-9a-f]{64})$")
# Verified against when the connection is unknown, so that takes as long as a bad signature.
_NO_SECRET = secrets.token_urlsafe(32)


class ReplayCache:
    """Signatures accepted in the last `window` s: a second use is a replay.

    An entry lives until its timestamp is too old to pass the clock check
    anyway, so the cache never holds more than `capacity` live entries; when
    full, `admit` refuses (503) rather than forget one that could be replayed.
    """

    def __init__(self, window: int = signing.MAX_SKEW, capacity: int = REPLAY_CAPACITY) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: set[bytes] = set()
        self._expiry: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, signature: bytes, ts: int, now: float) -> bool:
        """False for a signature seen before; remember it otherwise."""
        while self._expiry and self._expiry[0][0] < now:
            _, old = heapq.heappop(self._expiry)
            self._seen.discard(old)
        if signature in self._seen:
            return False
        if len(self._seen) >= self.capacity:
            raise busy("too many signed requests at once; retry shortly")
        self._seen.add(signature)
        heapq.heappush(self._expiry, (ts + self.window, signature))
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
        secret: str | None,
        header: str | None,
        method: str,
        path: str,
        query: bytes,
        body: bytes,
        now: float,
    ) -> None:
        """Raise 401 unless `header` signs this request under `secret`, freshly, for the
        first time; an unknown connection (`secret` None) costs the same work."""
        valid = signing.verify(
            secret or _NO_SECRET, header, method, path, query.decode("latin-1"), body, now=now
        )
        if not (valid and secret and header):
            raise unauthorized()
        stamp = _STAMP.search(header.strip())
        assert stamp is not None  # verify() accepted the header's form
        if not self.replays.admit(bytes.fromhex(stamp.group(2)), int(stamp.group(1)), now):
            raise unauthorized()
