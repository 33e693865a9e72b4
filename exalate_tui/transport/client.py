"""The httpx client for a remote node: verify, handshake, fetch, push (docs/protocol.md).

One `Remote` per peer URL keeps one pooled `httpx.AsyncClient`. Every
failure surfaces as a `RemoteError` whose str() is one line a person can act
on and never holds a secret. `verify_url` classifies a destination URL for
the Initiate wizard without raising.

A partner is not trusted to behave (docs/reliability.md, a hostile partner):
every answer is streamed and counted against a byte cap, the whole call
(connect, headers, body) runs under one deadline, so a trickling or endless
answer ends on time, and a body that does not parse (deep nesting included)
is a `RemoteError` naming the partner.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from exalate_tui import __version__
from exalate_tui.domain.models import check_short_name, check_url, normalize_url
from exalate_tui.errors import ExalateError
from exalate_tui.protocol import signing
from exalate_tui.protocol.api import ACK_HEADER, API_VERSION, PREFIX, PRODUCT, UrlCheck
from exalate_tui.transport.splice import read_batch
from exalate_tui.transport.streams import Message

VERIFY_TIMEOUT = 3.0
# Connect and write are quick or broken; a long-poll read gets `wait` on top.
TIMEOUT = httpx.Timeout(10.0)
LONG_POLL_MARGIN = 10.0
# The whole of one call, however its bytes trickle in: `timeout.read` times
# this (`verify_url` sets its 3 s as the whole); a long-poll gets `wait` on top.
DEADLINE_FACTOR = 3.0
# What an answer may hold. /info, /handshake, a push's answer and any error
# body are small; a long-poll's batch may hold `limit` messages and one as big
# as a push may carry (8 MiB, docs/protocol.md, Messages).
SMALL_ANSWER_BYTES = 64 * 1024
MESSAGE_BYTES = 8 * 1024 * 1024
BYTES_PER_MESSAGE = 16 * 1024


def batch_cap(limit: int) -> int:
    """The most bytes a long-poll answer of `limit` messages may take."""
    return MESSAGE_BYTES + limit * BYTES_PER_MESSAGE


_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")


class RemoteError(ExalateError):
    """A call to a remote node failed.

    `status` is the HTTP status (None when no answer came), `code` the
    node's error code or one of `unreachable`, `tls`, `timeout`, `protocol`,
    `not_a_node`; `detail` the node's own words when it gave some.
    """

    def __init__(
        self, message: str, *, status: int | None = None, code: str, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class RemoteInfo:
    """What `GET /api/v1/info` says about a node."""

    product: str
    version: str
    api: int
    short_name: str | None


@dataclass(frozen=True)
class Handshake:
    """The initiator's answer: the connection secret and how it names itself."""

    secret: SecretStr
    short_name: str
    name: str


@dataclass(frozen=True)
class Batch:
    """One long-poll answer: messages after the cursor, and the sender's highest seq.

    `acked` is what the node says it acknowledged (`ACK_HEADER`); None from a
    node that does not honour `ack`, which must not be fetched ahead of.
    """

    messages: list[Message]
    last_seq: int
    acked: int | None = None


_DIGITS = re.compile(r"[0-9]{1,19}")


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def _chain(error: BaseException) -> list[BaseException]:
    """The error and everything it was raised from (httpx wraps httpcore wraps OSError)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _transport_error(url: str, error: httpx.TransportError, timeout: float) -> RemoteError:
    """Name what went wrong below HTTP: TLS, DNS, refused, timeout, or garbage."""
    host = _host(url)
    chain = _chain(error)
    tls = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if tls is not None:
        if isinstance(tls, ssl.SSLCertVerificationError):
            why = f"its certificate is not trusted ({tls.verify_message or tls.reason})"
        elif tls.reason == "WRONG_VERSION_NUMBER":
            why = "it does not speak TLS there (is it plain http://?)"
        else:
            why = f"the TLS handshake failed ({tls.reason or tls})"
        return RemoteError(
            f"TLS problem with {host}: {why}; fix the certificate or the URL's scheme.",
            code="tls",
        )
    if isinstance(error, httpx.TimeoutException):
        return RemoteError(
            f"Cannot reach {host}: no answer within {timeout:g} s; check the URL, "
            "that the node is running and that no firewall is in the way.",
            code="timeout",
        )
    if any(isinstance(e, socket.gaierror) for e in chain):
        return RemoteError(
            f"Cannot reach {host}: the host name does not resolve; check the URL for typos.",
            code="unreachable",
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return RemoteError(
            f"Cannot reach {host}: connection refused; check the port and that "
            "`exalate-tui node` is running there.",
            code="unreachable",
        )
    if isinstance(error, httpx.ConnectError | httpx.NetworkError):
        return RemoteError(
            f"Cannot reach {host}: {error or 'the connection failed'}; check the URL "
            "and the network.",
            code="unreachable",
        )
    return RemoteError(
        f"{host} did not answer in HTTP ({error or type(error).__name__}); "
        "check the URL points at an exalate-tui node.",
        code="protocol",
    )


def _shown(text: str, limit: int) -> str:
    """Remote text fit for one line of a terminal: printable, first line, bounded."""
    line = "".join(ch if ch.isprintable() else " " for ch in text.strip().split("\n")[0])
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _short_name(value: object) -> str | None:
    """The peer's short name when it is a valid one; anything else is not shown or stored."""
    if not isinstance(value, str):
        return None
    try:
        return check_short_name(value)
    except ValueError:
        return None


def _parse(body: bytes) -> Any:
    """JSON, or None for anything that is not (deep nesting is not JSON we read)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True)
class _Answer:
    """An answer read whole, within its cap and deadline."""

    status_code: int
    url: httpx.URL
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def _error_from_response(response: _Answer) -> RemoteError:
    """A node's `{"error", "detail"}` answer, or a plain description of any other."""
    data = _parse(response.content)
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        code = _shown(data["error"], 40)
        detail = _shown(data["detail"], 300) if isinstance(data.get("detail"), str) else None
        text = detail or code
        return RemoteError(
            f"{_host(str(response.url))} refused the request ({response.status_code} {code}): "
            f"{text}",
            status=response.status_code,
            code=code,
            detail=detail,
        )
    return RemoteError(
        f"{_host(str(response.url))} answered HTTP {response.status_code} without an "
        "exalate-tui error; check the URL points at an exalate-tui node.",
        status=response.status_code,
        code="not_a_node",
    )


class Remote:
    """One peer node: a pooled client and the four calls of the protocol."""

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
        deadline: float | None = None,
    ) -> None:
        """`deadline`: seconds a whole call may take (a long-poll's `wait` on top);
        without, `timeout.read` × 3 (a long-poll: its margin × 3)."""
        self.url = normalize_url(url)
        self._timeout = timeout
        self._deadline = deadline
        self._client = httpx.AsyncClient(
            base_url=self.url,
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": f"{PRODUCT}/{__version__}"},
        )

    async def __aenter__(self) -> Remote:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(
        self,
        request: httpx.Request,
        read_timeout: float,
        *,
        cap: int = SMALL_ANSWER_BYTES,
        deadline: float | None = None,
    ) -> _Answer:
        """Send and read the answer whole: at most `cap` bytes, all within `deadline` s."""
        if deadline is None:
            deadline = self._deadline or read_timeout * DEADLINE_FACTOR
        host = _host(self.url)
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(deadline):
                try:
                    response = await self._client.send(request, stream=True)
                except httpx.RemoteProtocolError:
                    # A kept-alive connection the node closed as we reused it: the request
                    # went unread (RFC 9112, 9.3.1), so a GET is sent once more at once
                    # instead of counting as an outage.
                    if request.method != "GET":
                        raise
                    response = await self._client.send(request, stream=True)
                try:
                    content = await _read_capped(response, cap)
                finally:
                    await response.aclose()
        except httpx.TransportError as error:
            raise _transport_error(self.url, error, read_timeout) from None
        except TimeoutError:
            if response is None:
                raise _transport_error(
                    self.url, httpx.ReadTimeout("deadline", request=request), deadline
                ) from None
            raise RemoteError(
                f"{host} did not finish its answer within {deadline:g} s; check the URL "
                "points at an exalate-tui node and the network between you.",
                status=response.status_code,
                code="timeout",
            ) from None
        if content is None:
            raise RemoteError(
                f"{host} sent an answer over {cap:,} bytes, more than this request can "
                "take; check the URL points at an exalate-tui node.",
                status=response.status_code,
                code="too_large",
            )
        answer = _Answer(response.status_code, response.url, response.headers, content)
        if answer.status_code >= 300:
            raise _error_from_response(answer)
        return answer

    @staticmethod
    def _json(response: _Answer) -> dict[str, Any]:
        data = _parse(response.content)
        if not isinstance(data, dict):
            raise RemoteError(
                f"{_host(str(response.url))} answered something other than a JSON object; "
                "check the URL points at an exalate-tui node.",
                status=response.status_code,
                code="not_a_node",
            )
        return data

    def _signed(
        self,
        method: str,
        path: str,
        secret: SecretStr,
        params: dict[str, Any],
        body: bytes = b"",
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        # A random nonce: two honest requests never sign alike, so replay refusal is safe.
        params = {**params, "n": secrets.token_hex(8)}
        extensions = {"timeout": timeout.as_dict()} if timeout else None
        headers = {"Content-Type": "application/json"} if body else {}
        request = self._client.build_request(
            method, path, params=params, content=body, headers=headers, extensions=extensions
        )
        request.headers["Authorization"] = signing.sign(
            secret.get_secret_value(),
            method,
            request.url.path,
            request.url.query.decode("ascii"),
            body,
        )
        return request

    # -- the protocol ---------------------------------------------------------

    async def info(self) -> RemoteInfo:
        request = self._client.build_request("GET", f"{PREFIX}/info")
        response = await self._send(request, self._timeout.read or 0)
        data = self._json(response)
        return RemoteInfo(
            product=_shown(data["product"], 40) if isinstance(data.get("product"), str) else "",
            version=_shown(str(data.get("version", "?")), 40),
            api=data["api"] if isinstance(data.get("api"), int) else -1,
            short_name=_short_name(data.get("short_name")),
        )

    async def handshake(
        self,
        cid: str,
        token: SecretStr,
        short_name: str,
        url: str | None,
        *,
        digest: str | None = None,
    ) -> Handshake:
        """Present the token (and `invitation.digest` of the code it came in)."""
        offer = {"cid": cid, "tok": token.get_secret_value(), "short_name": short_name, "url": url}
        if digest is not None:
            offer["sum"] = digest
        body = json.dumps(offer).encode()
        request = self._client.build_request(
            "POST",
            f"{PREFIX}/handshake",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        data = self._json(await self._send(request, self._timeout.read or 0))
        secret = data.get("secret")
        # A secret is a short token (the node makes 43 characters); refuse anything else.
        if not isinstance(secret, str) or not _SECRET.fullmatch(secret):
            raise RemoteError(
                f"{_host(self.url)} accepted the handshake but sent no usable secret; "
                "update exalate-tui on that side.",
                status=200,
                code="protocol",
            )
        return Handshake(
            secret=SecretStr(secret),
            short_name=_short_name(data.get("short_name")) or "",
            name=_shown(str(data.get("name") or ""), 100),
        )

    async def fetch(
        self,
        cid: str,
        secret: SecretStr,
        after: int,
        wait: float = 0,
        limit: int = 500,
        *,
        ack: int | None = None,
    ) -> Batch:
        """Long-poll for messages after `after`, acknowledging everything up to `ack`.

        Without `ack`, `after` is the acknowledgement too. Send an `ack` below
        `after` only to a node whose last answer had `acked` (an older node
        ignores `ack` and prunes up to `after`).
        """
        read = wait + LONG_POLL_MARGIN
        params: dict[str, Any] = {"after": after}
        if ack is not None:
            params["ack"] = ack
        params |= {"wait": f"{wait:g}", "limit": limit}
        request = self._signed(
            "GET",
            f"{PREFIX}/connections/{cid}/messages",
            secret,
            params,
            timeout=httpx.Timeout(self._timeout.connect, read=read),
        )
        whole = wait + (self._deadline or LONG_POLL_MARGIN * DEADLINE_FACTOR)
        response = await self._send(request, read, cap=batch_cap(limit), deadline=whole)
        acked_header = response.headers.get(ACK_HEADER, "")
        acked = int(acked_header) if _DIGITS.fullmatch(acked_header) else None
        spliced = read_batch(response.text)
        if spliced is not None:
            return Batch(*spliced, acked)
        data = self._json(response)
        try:
            messages = [Message.from_wire(item) for item in data["messages"]]
            last_seq = int(data.get("last_seq", 0))
        except (KeyError, TypeError, ValueError, RecursionError):
            raise RemoteError(
                f"{_host(self.url)} sent a malformed message batch; update exalate-tui there.",
                status=200,
                code="protocol",
            ) from None
        return Batch(messages, last_seq, acked)

    async def push(self, cid: str, secret: SecretStr, messages: Sequence[Message]) -> int:
        """Deliver a batch; returns the receiver's last applied seq (prune up to it)."""
        body = ('{"messages":[' + ",".join(m.wire() for m in messages) + "]}").encode()
        request = self._signed("POST", f"{PREFIX}/connections/{cid}/messages", secret, {}, body)
        data = self._json(await self._send(request, self._timeout.read or 0))
        applied = data.get("applied")
        if not isinstance(applied, int):
            raise RemoteError(
                f"{_host(self.url)} did not say what it applied; update exalate-tui there.",
                status=200,
                code="protocol",
            )
        return applied


async def _read_capped(response: httpx.Response, cap: int) -> bytes | None:
    """The body, or None once it passes `cap` bytes (nothing more is read)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        return None
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)


async def verify_url(
    url: str,
    *,
    timeout: float = VERIFY_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> UrlCheck:
    """Check that `url` is a compatible exalate-tui node; never raises."""
    url = normalize_url(url)
    try:
        check_url(url)
    except ValueError as error:
        return UrlCheck(url, ok=False, reason=f"The URL {error}.")
    host = _host(url)
    not_a_node = "is not an exalate-tui node"
    fix = "check the URL points at the node (`exalate-tui node`), not another service."
    try:
        async with Remote(
            url, transport=transport, timeout=httpx.Timeout(timeout), deadline=timeout
        ) as remote:
            info = await remote.info()
    except RemoteError as error:
        if error.code in ("unreachable", "timeout", "tls"):
            return UrlCheck(url, ok=False, reason=str(error))
        if error.status is not None and 300 <= error.status < 400:
            return UrlCheck(
                url,
                ok=False,
                reason=f"{host} {not_a_node} there: it redirects elsewhere; "
                "enter the URL it redirects to.",
            )
        if error.status == 404:
            why = f"it has no {PREFIX}/info"
        elif error.status == 200:
            why = "it does not answer in JSON"
        elif error.status is None:
            why = "it does not speak HTTP"
        elif error.code == "not_a_node":
            why = f"it answered HTTP {error.status}"
        else:
            why = f"it answered {error.status} {error.code}"
        return UrlCheck(url, ok=False, reason=f"{host} {not_a_node} ({why}); {fix}")
    if info.product != PRODUCT:
        what = f"it is {info.product!r}" if info.product else "it does not name its product"
        return UrlCheck(url, ok=False, reason=f"{host} {not_a_node} ({what}); {fix}")
    if info.api != API_VERSION:
        spoken = "no API version" if info.api < 0 else f"API version {info.api}"
        return UrlCheck(
            url,
            ok=False,
            reason=f"{host} runs exalate-tui {info.version} with {spoken}, this one speaks "
            f"{API_VERSION}: update the older of the two.",
        )
    return UrlCheck(url, ok=True, remote_name=info.short_name, version=info.version)
