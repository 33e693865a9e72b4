"""Promise 1: every damaged invitation code is refused with a one-line reason.

Hypothesis builds valid codes, then damages them the ways codes get damaged
(truncated, bit-flipped, re-encoded, wrong version, oversized, non-UTF-8,
wrong types, missing or extra keys, odd expiry). RELIABILITY_SCALE scales the
example counts (CI default 1.0 = at least 10,000 damaged codes per run).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exalate_tui import invitation as codes

SCALE = float(os.environ.get("RELIABILITY_SCALE", "1"))
FAST = settings(
    max_examples=max(50, int(2_500 * SCALE)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

short_names = st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True)
urls = st.sampled_from([None, "https://snow.example.com", "http://127.0.0.1:7917"])


@st.composite
def invitations(draw: st.DrawFn) -> codes.Invitation:
    return codes.Invitation(
        cid=str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4)),
        url=draw(urls),
        dest_url=draw(urls),
        **{"from": draw(short_names)},
        to=draw(short_names),
        name=draw(
            st.text(
                st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]),
                min_size=1,
                max_size=40,
            ).filter(str.strip)
        ),
        desc=draw(
            st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=80)
        ),
        mode=draw(st.sampled_from(["basic", "script"])),
        tok=codes.new_token(),
        exp=draw(st.integers(0, 4_000_000_000)),
    )


def _seal(payload: bytes) -> str:
    """A code whose check digits are right: only content validation can refuse it."""
    body = "exa1." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{body}.{hashlib.sha256(body.encode()).hexdigest()[:8]}"


def _refused(text: str) -> str:
    try:
        codes.decode(text)
    except codes.InvitationError as error:
        reason = str(error)
        assert reason and "\n" not in reason and len(reason) < 300, reason
        return reason
    raise AssertionError(f"accepted a damaged code: {text[:120]!r}")


@FAST
@given(invitations(), st.data())
def test_truncated_codes_are_refused(invite: codes.Invitation, data: st.DataObject) -> None:
    code = codes.encode(invite)
    cut = data.draw(st.integers(0, len(code) - 1))
    _refused(code[:cut])


@FAST
@given(invitations(), st.data())
def test_any_changed_character_is_refused(invite: codes.Invitation, data: st.DataObject) -> None:
    code = codes.encode(invite)
    where = data.draw(st.integers(0, len(code) - 1))
    bit = data.draw(st.integers(0, 6))
    flipped = chr(ord(code[where]) ^ (1 << bit))
    damaged = code[:where] + flipped + code[where + 1 :]
    if flipped.isspace() or damaged == code:
        return  # whitespace is ignored by design
    _refused(damaged)


@FAST
@given(invitations(), st.data())
def test_wrong_types_missing_and_extra_keys_are_refused(
    invite: codes.Invitation, data: st.DataObject
) -> None:
    payload = invite.model_dump(mode="json", by_alias=True)
    key = data.draw(st.sampled_from(sorted(payload)))
    damage = data.draw(st.sampled_from(["drop", "extra", "type", "version"]))
    if damage == "drop":
        del payload[key]
    elif damage == "extra":
        payload[data.draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in payload))] = 1
    elif damage == "type":
        payload[key] = data.draw(
            st.one_of(
                st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(), st.none()),
                st.floats(allow_nan=True),
                st.booleans(),
            )
        )
    else:
        payload["v"] = data.draw(st.one_of(st.integers().filter(lambda v: v != 1), st.text()))
    _refused(_seal(json.dumps(payload).encode()))


@FAST
@given(st.binary(max_size=300))
def test_non_json_and_non_utf8_payloads_are_refused(payload: bytes) -> None:
    try:
        decoded = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        decoded = None
    if isinstance(decoded, dict):
        return  # a JSON object is the other test's business
    _refused(_seal(payload))


def test_oversized_codes_are_refused_quickly() -> None:
    huge = _seal(json.dumps({"v": 1, "desc": "x" * 1_000_000}).encode())
    assert "too long" in _refused(huge)
    assert "too long" in _refused("exa1." + "A" * 1_000_000 + ".00000000")


def test_expiry_out_of_range_is_refused() -> None:
    invite = codes.Invitation(
        cid=str(uuid.uuid4()),
        url="https://a.example",
        dest_url=None,
        **{"from": "a"},
        to="b",
        name="a_to_b",
        desc="",
        mode="script",
        tok=codes.new_token(),
        exp=1,
    )
    payload = invite.model_dump(mode="json", by_alias=True)
    for exp in (-1, 10**20, 1.5, "1"):
        _refused(_seal(json.dumps(payload | {"exp": exp}).encode()))
