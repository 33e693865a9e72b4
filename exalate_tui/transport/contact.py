"""How often "last contact" is written: once a second per connection at most.

A busy stream succeeds hundreds of times a second, and the console shows
"last contact N s ago": one write a second is all it needs. The node (its
signed requests) and the supervisor (its calls) share this rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CONTACT_EVERY = 1.0


class ContactThrottle:
    def __init__(
        self, every: float = CONTACT_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self._clock = clock
        self._written: dict[str, float] = {}

    def due(self, cid: str, *, anyway: bool = False) -> bool:
        """Whether to write `cid`'s contact now (`anyway`: yes); when it is, it counts as
        written."""
        now = self._clock()
        if not anyway and now - self._written.get(cid, -self.every) < self.every:
            return False
        self._written[cid] = now
        return True

    def reset(self, cid: str) -> None:
        """The next contact is written at once (after a failure, it clears the error)."""
        self._written.pop(cid, None)
