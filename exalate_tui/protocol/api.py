"""The HTTP API's names and version, as both ends use them (docs/protocol.md).

`UrlCheck` is what verifying a destination URL (`GET {url}/api/v1/info`)
found: the client makes it, the Initiate wizard shows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PRODUCT = "exalate-tui"
API_VERSION = 1
PREFIX = "/api/v1"
# On a fetch's answer: the seq up to which the node acknowledged (pruned). A node
# that sends it honours the `ack` parameter, so its caller may fetch ahead.
ACK_HEADER = "Exalate-Acked"
# A connection id as the node accepts it in a path or a handshake: a lowercase UUID.
CONNECTION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class UrlCheck:
    """The outcome of verifying a destination URL (`GET {url}/api/v1/info`)."""

    url: str
    ok: bool
    reason: str = ""
    remote_name: str | None = None
    version: str | None = None
