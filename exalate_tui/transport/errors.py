"""The node's answers other than 2xx: `{"error": code, "detail": text, **extra}`.

docs/protocol.md lists the codes. Nothing here puts a secret, a token or an
offending value into a detail.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from exalate_tui.errors import ExalateError
from exalate_tui.protocol import signing

log = logging.getLogger(__name__)


class ApiError(ExalateError):
    """An answer other than 2xx: `{"error": code, "detail": text, **extra}`."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def unauthorized() -> ApiError:
    # One body for every reason: a caller learns nothing about which connections exist.
    return ApiError(
        401,
        "unauthorized",
        "the request is not signed for this connection (see docs/protocol.md, Signed requests)",
    )


def clock_off(skew: int) -> ApiError:
    """401 for a timestamp more than the allowed skew away from this node's clock.

    It says only what the caller's own header and this node's `Date` already
    tell: nothing about the connection or its secret (it is answered before
    the connection is looked up)."""
    way = "ahead of" if skew > 0 else "behind"
    return ApiError(
        401,
        "unauthorized",
        f"your clock is {abs(skew)} s {way} this node's (its Date header); requests more "
        f"than {signing.MAX_SKEW} s off are refused: set the clock right (NTP) and retry",
        skew=skew,
    )


def unavailable() -> ApiError:
    return ApiError(
        503, "unavailable", "this node cannot read its configuration; its admin must see its log"
    )


def store_unreachable(error: Exception) -> ApiError:
    """The message store failed for now (a PostgreSQL restart, a network cut): 503, retry.

    Logged as one line, without a traceback: it is an outage, not a bug."""
    log.warning("a request met the message store out of reach: %s", error)
    return ApiError(
        503,
        "unavailable",
        "this node cannot reach its message store now; retry shortly",
        headers={"Retry-After": "1"},
    )


def error_response(error: ApiError) -> JSONResponse:
    headers = dict(error.headers)
    if error.status == 401:
        headers["WWW-Authenticate"] = signing.SCHEME
    return JSONResponse(
        {"error": error.code, "detail": error.detail, **error.extra},
        status_code=error.status,
        headers=headers,
    )


def problems(error: ValidationError | RequestValidationError, within: str = "") -> str:
    """Where and what, never the offending value (it may be a token)."""
    parts = []
    for item in error.errors():
        loc = (within, *item["loc"]) if within else item["loc"]
        where = ".".join(str(p) for p in loc if p != "body") or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts[:5])
