"""Request signatures: what is signed, and everything that must be refused."""

from __future__ import annotations

import pytest

from exalate_tui.protocol.signing import MAX_SKEW, sign, verify

SECRET = "s3cret-connection-key"
REQUEST = ("POST", "/api/v1/connections/c1/messages", "n=00ff", b'{"messages":[]}')


def test_a_fresh_signature_verifies() -> None:
    header = sign(SECRET, *REQUEST, ts=1_000)
    assert header.startswith("EXA-HMAC ts=1000,sig=")
    assert verify(SECRET, header, *REQUEST, now=1_000)


@pytest.mark.parametrize(
    "changed",
    [
        ("GET", *REQUEST[1:]),
        (REQUEST[0], "/api/v1/connections/c2/messages", *REQUEST[2:]),
        (*REQUEST[:2], "n=00fe", REQUEST[3]),
        (*REQUEST[:3], b'{"messages":[1]}'),
    ],
    ids=["method", "path", "query", "body"],
)
def test_any_change_to_the_request_breaks_the_signature(changed: tuple) -> None:
    header = sign(SECRET, *REQUEST, ts=1_000)
    assert not verify(SECRET, header, *changed, now=1_000)


def test_wrong_secret_is_refused() -> None:
    assert not verify("other", sign(SECRET, *REQUEST, ts=1_000), *REQUEST, now=1_000)


@pytest.mark.parametrize("offset", [MAX_SKEW + 1, -(MAX_SKEW + 1)], ids=["stale", "future"])
def test_timestamps_more_than_300_s_off_are_refused(offset: int) -> None:
    header = sign(SECRET, *REQUEST, ts=1_000)
    assert verify(SECRET, header, *REQUEST, now=1_000 + MAX_SKEW)
    assert not verify(SECRET, header, *REQUEST, now=1_000 + offset)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer x",
        "EXA-HMAC ts=1000",
        "EXA-HMAC ts=abc,sig=" + "0" * 64,
        "EXA-HMAC ts=1000,sig=" + "0" * 63,
        "EXA-HMAC ts=1000,sig=" + "G" * 64,
    ],
)
def test_garbled_headers_are_refused(header: str | None) -> None:
    assert not verify(SECRET, header, *REQUEST, now=1_000)
