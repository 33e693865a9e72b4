"""Hypothesis strategies for promise 1: valid invitations, and the ways codes get damaged.

Shared by the decode-level tests (test_bad_codes.py), the Accept paths (the
wizard the console's Accept screen drives, and `exalate-tui accept`) and the
node's handshake. RELIABILITY_SCALE scales every example count.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from exalate_tui.domain import invitation as codes

SCALE = float(os.environ.get("RELIABILITY_SCALE", "1"))


def examples(full: int, least: int = 20) -> settings:
    """Hypothesis settings running `full` examples at scale 1 (never fewer than `least`)."""
    return settings(
        max_examples=max(least, int(full * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


short_names = st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True)
urls = st.sampled_from([None, "https://snow.example.com", "http://127.0.0.1:7917"])
# What a name or description may hold: no controls, no bidi overrides (models.check_text).
_BIDI = "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
# Cf: bidi marks and other invisible format characters; Zl, Zp: line separators. All refused.
_printable = st.characters(
    codec="utf-8", exclude_categories=["Cc", "Cs", "Cf", "Zl", "Zp"], exclude_characters=_BIDI
)


@st.composite
def invitations(draw: st.DrawFn, *, exp: st.SearchStrategy[int] | None = None) -> codes.Invitation:
    return codes.Invitation.model_validate(
        {
            "cid": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4)),
            "url": draw(urls),
            "dest_url": draw(urls),
            "from": draw(short_names),
            "to": draw(short_names),
            "name": draw(st.text(_printable, min_size=1, max_size=40).filter(str.strip)),
            "desc": draw(st.text(_printable, max_size=80)),
            "mode": draw(st.sampled_from(["basic", "script"])),
            "tok": codes.new_token(),
            "exp": draw(exp if exp is not None else st.integers(0, 4_000_000_000)),
        }
    )


def seal(payload: bytes) -> str:
    """A code whose check digits are right: only content validation can refuse it."""
    body = "exa1." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{body}.{hashlib.sha256(body.encode()).hexdigest()[:8]}"


def payload_of(invite: codes.Invitation) -> dict[str, Any]:
    return invite.model_dump(mode="json", by_alias=True)


@st.composite
def truncated(draw: st.DrawFn, invite: st.SearchStrategy[codes.Invitation]) -> str:
    code = codes.encode(draw(invite))
    return code[: draw(st.integers(0, len(code) - 1))]


@st.composite
def bit_flipped(draw: st.DrawFn, invite: st.SearchStrategy[codes.Invitation]) -> str:
    """One character changed by one bit (never into whitespace, which pastes ignore)."""
    code = codes.encode(draw(invite))
    where = draw(st.integers(0, len(code) - 1))
    bit = draw(st.integers(0, 6))
    flipped = chr(ord(code[where]) ^ (1 << bit))
    if flipped.isspace():
        flipped = "!"
    return code[:where] + flipped + code[where + 1 :]


@st.composite
def bad_fields(draw: st.DrawFn, invite: st.SearchStrategy[codes.Invitation]) -> str:
    """A re-sealed payload with a key dropped, an extra key, a wrong type or version."""
    payload = payload_of(draw(invite))
    key = draw(st.sampled_from(sorted(payload)))
    damage = draw(st.sampled_from(["drop", "extra", "type", "version"]))
    if damage == "drop":
        del payload[key]
    elif damage == "extra":
        payload[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in payload))] = 1
    elif damage == "type":
        payload[key] = draw(
            st.one_of(
                st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(), st.none()),
                st.floats(allow_nan=True),
                st.booleans(),
            )
        )
    else:
        payload["v"] = draw(st.one_of(st.integers().filter(lambda v: v != 1), st.text()))
    return seal(json.dumps(payload).encode())


def _not_an_object(payload: bytes) -> bool:
    try:
        decoded = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return True
    return not isinstance(decoded, dict)


#: Sealed payloads that are not a JSON object: binary, non-UTF-8, other JSON values.
garbage = st.binary(max_size=300).filter(_not_an_object).map(seal)


@st.composite
def bad_expiry(draw: st.DrawFn, invite: st.SearchStrategy[codes.Invitation]) -> str:
    """Expiry out of range or of the wrong type (re-sealed)."""
    payload = payload_of(draw(invite))
    payload["exp"] = draw(
        st.one_of(
            st.integers(max_value=-1),
            st.integers(min_value=253_402_300_800),
            st.floats(allow_nan=False).filter(lambda f: not f.is_integer()),
            st.integers(0, 10**12).map(str),
        )
    )
    return seal(json.dumps(payload).encode())


def damaged_codes(now: float) -> st.SearchStrategy[str]:
    """Every kind of damage, plus codes that expired before `now` (valid but refused)."""
    live = invitations(exp=st.integers(int(now) + 3600, 4_000_000_000))
    expired = invitations(exp=st.integers(0, int(now) - 1)).map(codes.encode)
    return st.one_of(
        truncated(live),
        bit_flipped(live),
        bad_fields(live),
        garbage,
        bad_expiry(live),
        expired,
        # An index, not the codes: hypothesis would print megabytes on a failure.
        st.integers(0, 2).map(lambda i: oversized()[i]),
    )


@functools.cache
def oversized() -> list[str]:
    """About a megabyte each: a sealed one, an unsealed one, and one line after another."""
    return [
        seal(json.dumps({"v": 1, "desc": "x" * 1_000_000}).encode()),
        "exa1." + "A" * 1_000_000 + ".00000000",
        ("exa1.AAAA\n" * 100_000),
    ]
