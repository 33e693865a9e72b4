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
def test_any_change_to_the_request_breaks_the_signature(
    changed: tuple[str, str, str, bytes],
) -> None:
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


def _flip(char: str) -> str:
    """Another lowercase hex digit: the header stays well-formed, only the value is wrong."""
    return "0123456789abcdef"[("0123456789abcdef".index(char) + 1) % 16]


def _tampered(header: str) -> dict[str, str]:
    """A correct header with its signature altered in each way that must be refused."""
    prefix, sig = header.split("sig=")
    assert len(sig) == 64
    changed = {
        f"char {i} changed": prefix + "sig=" + sig[:i] + _flip(sig[i]) + sig[i + 1 :]
        # The first digits, one just past the first 8 (a check of a prefix), the middle,
        # the last: every position counts.
        for i in (0, 7, 8, 31, 32, 62, 63)
    }
    changed["truncated to 63"] = prefix + "sig=" + sig[:-1]
    changed["truncated to 8"] = prefix + "sig=" + sig[:8]
    changed["upper case"] = prefix + "sig=" + sig.upper()
    # Right length, right secret, right time: signed for another body.
    other = sign(SECRET, *REQUEST[:3], b'{"messages":[{}]}', ts=1_000)
    changed["another body's signature"] = other
    return changed


def test_a_correct_signature_altered_in_any_way_is_refused() -> None:
    header = sign(SECRET, *REQUEST, ts=1_000)
    assert verify(SECRET, header, *REQUEST, now=1_000)
    for why, bad in _tampered(header).items():
        assert bad != header, why
        assert not verify(SECRET, bad, *REQUEST, now=1_000), why
