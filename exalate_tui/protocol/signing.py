"""Request signatures after the handshake (docs/protocol.md, Signed requests).

`Authorization: EXA-HMAC ts=<unix>,sig=<hex>`, the HMAC-SHA256 of
`METHOD\\nPATH?QUERY\\nts\\nsha256(body)` under the connection secret. Both
the client and the node use these two functions, so they cannot drift apart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SCHEME = "EXA-HMAC"
MAX_SKEW = 300
_HEADER = re.compile(rf"{SCHEME} ts=(\d{{1,12}}),sig=([0-9a-f]{{64}})")


def _message(method: str, path: str, query: str, ts: int, body: bytes) -> bytes:
    target = f"{path}?{query}" if query else path
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{target}\n{ts}\n{digest}".encode()


def _signature(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(
    secret: str, method: str, path: str, query: str, body: bytes, ts: int | None = None
) -> str:
    """The Authorization header value for one request."""
    stamp = int(time.time()) if ts is None else ts
    signature = _signature(secret, _message(method, path, query, stamp, body))
    return f"{SCHEME} ts={stamp},sig={signature}"


def parse(header: str | None) -> tuple[int, str] | None:
    """The timestamp and signature of a well-formed header, else None."""
    match = _HEADER.fullmatch(header.strip()) if header else None
    return (int(match.group(1)), match.group(2)) if match else None


def verify(
    secret: str,
    header: str | None,
    method: str,
    path: str,
    query: str,
    body: bytes,
    now: float | None = None,
) -> bool:
    """True only for a well-formed, fresh (±300 s) and correct signature."""
    parsed = parse(header)
    if parsed is None:
        return False
    ts, signature = parsed
    if abs((time.time() if now is None else now) - ts) > MAX_SKEW:
        return False
    expected = _signature(secret, _message(method, path, query, ts, body))
    return hmac.compare_digest(expected, signature)
