"""Invitation codes: `exa1.<payload>.<check>`, what decodes and what is refused, and why."""

from __future__ import annotations

import base64
import hashlib
import json
import string
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Mode, Topology

CID = "0b5c3a52-8f0e-4a5b-9d43-6a7f0e2b1c9d"
TOKEN = "A" * 21 + "-_" + "z" * 20  # 43 base64url characters
CODE_ALPHABET = string.ascii_letters + string.digits + "-_."


def sample(**changes: Any) -> codes.Invitation:
    data: dict[str, Any] = {
        "cid": CID,
        "url": "https://snow.example.com",
        "dest_url": None,
        "from": "snow",
        "to": "jira",
        "name": "snow_to_jira",
        "desc": "Incidents, both ways",
        "mode": "script",
        "tok": TOKEN,
        "exp": 1_750_604_800,
    }
    data.update(changes)
    return codes.Invitation.model_validate(data)


def seal(data: object) -> str:
    """A code with correct check digits around any payload: only its content can fail."""
    payload = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    body = f"exa1.{payload}"
    return f"{body}.{hashlib.sha256(body.encode()).hexdigest()[:8]}"


def refused(text: str) -> str:
    with pytest.raises(codes.InvitationError) as caught:
        codes.decode(text)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


CODE = codes.encode(sample())
DAMAGED = "The code is damaged (its check digits do not match): copy it again, whole."


# -- the format --------------------------------------------------------------------


def test_the_format_is_prefix_payload_and_check() -> None:
    prefix, payload, check = CODE.split(".")
    assert prefix == "exa1"
    assert set(payload) <= set(string.ascii_letters + string.digits + "-_")
    assert check == hashlib.sha256(f"exa1.{payload}".encode()).hexdigest()[:8]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert json.loads(raw) == {
        "v": 1,
        "cid": CID,
        "url": "https://snow.example.com",
        "dest_url": None,
        "from": "snow",
        "to": "jira",
        "name": "snow_to_jira",
        "desc": "Incidents, both ways",
        "mode": "script",
        "tok": TOKEN,
        "exp": 1_750_604_800,
    }
    assert raw.decode() == json.dumps(json.loads(raw), separators=(",", ":"))  # compact


def test_round_trip() -> None:
    assert codes.decode(CODE) == sample()


short_names = st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True)
# What the wizard lets through: no control characters (Cc), no lone surrogates (Cs), no
# invisible format characters (Cf, but for the joiners), no line separators (Zl, Zp).
texts = st.characters(exclude_categories=["Cc", "Cs", "Cf", "Zl", "Zp"]) | st.sampled_from(
    "\u200c\u200d"
)
urls = st.sampled_from([None, "https://snow.example.com", "http://127.0.0.1:7917"])


@given(
    cid=st.uuids(version=4),
    url=urls,
    dest_url=urls,
    from_=short_names,
    to=short_names,
    name=st.text(texts, min_size=1, max_size=100).filter(str.strip),
    desc=st.text(texts, max_size=1000),
    mode=st.sampled_from(Mode),
    exp=st.integers(0, 253_402_300_799),
)
@settings(max_examples=300, deadline=None)
def test_any_valid_invitation_round_trips(
    cid: uuid.UUID,
    url: str | None,
    dest_url: str | None,
    from_: str,
    to: str,
    name: str,
    desc: str,
    mode: Mode,
    exp: int,
) -> None:
    invite = codes.Invitation.model_validate(
        {
            "cid": str(cid),
            "url": url,
            "dest_url": dest_url,
            "from": from_,
            "to": to,
            "name": name,
            "desc": desc,
            "mode": mode,
            "tok": codes.new_token(),
            "exp": exp,
        }
    )
    code = codes.encode(invite)
    assert code.isascii() and code.isprintable() and " " not in code
    assert codes.decode(code) == invite


@given(
    st.lists(
        st.tuples(st.integers(0, len(CODE)), st.sampled_from([" ", "\n", "\r\n", "\t", "  \n  "])),
        max_size=20,
    )
)
def test_whitespace_and_line_breaks_anywhere_are_ignored(cuts: list[tuple[int, str]]) -> None:
    text = CODE
    for at, blank in sorted(cuts, reverse=True):
        text = text[:at] + blank + text[at:]
    assert codes.decode(text) == sample()


def test_a_code_wrapped_at_64_columns_as_mail_does() -> None:
    wrapped = "\n".join(CODE[i : i + 64] for i in range(0, len(CODE), 64))
    assert codes.decode(f"\n  {wrapped}\n\n") == sample()


# -- damage is caught by the check, before anything is read -----------------------------


def test_every_truncation_is_refused() -> None:
    for end in range(len(CODE)):
        message = refused(CODE[:end])
        assert "copy" in message or "paste" in message or "start with 'exa1.'" in message, (
            end,
            message,
        )
    for start in range(1, len(CODE)):
        refused(CODE[start:])


def test_truncated_messages_say_what_to_do() -> None:
    assert refused("") == "No invitation code given: paste the code your partner sent."
    assert refused(" \n ") == "No invitation code given: paste the code your partner sent."
    assert refused(CODE[:30]) == "The code is incomplete: copy the whole code again."
    assert refused(CODE.rsplit(".", 1)[0] + ".") == (
        "The code is incomplete: copy the whole code again."
    )
    assert refused(CODE[:-1]) == DAMAGED
    assert refused(CODE[:-10] + CODE[-9:]) == DAMAGED  # a payload character lost


def test_every_single_character_change_is_refused() -> None:
    for at, original in enumerate(CODE):
        for replacement in CODE_ALPHABET:
            if replacement != original:
                refused(CODE[:at] + replacement + CODE[at + 1 :])


def test_every_single_character_deletion_and_insertion_is_refused() -> None:
    for at in range(len(CODE)):
        refused(CODE[:at] + CODE[at + 1 :])
    for at in range(len(CODE) + 1):
        for extra in "aZ0-_.":
            refused(CODE[:at] + extra + CODE[at:])


@pytest.mark.parametrize("at", [5, 40, 100])
def test_a_typo_in_the_payload_says_the_code_is_damaged(at: int) -> None:
    typo = "B" if CODE[at] != "B" else "C"
    assert refused(CODE[:at] + typo + CODE[at + 1 :]) == DAMAGED


def test_check_digits_are_compared_exactly() -> None:
    body, check = CODE.rsplit(".", 1)
    assert check != check.upper()  # the sample's check has a letter to change the case of
    assert refused(f"{body}.{check.upper()}") == DAMAGED
    assert refused(f"{body}.{check}0") == DAMAGED
    assert refused(f"{body}.{check[:-1]}") == DAMAGED


def test_swapping_two_characters_is_refused() -> None:
    for at in range(len(CODE) - 1):
        if CODE[at] != CODE[at + 1]:
            refused(CODE[:at] + CODE[at + 1] + CODE[at] + CODE[at + 2 :])


@given(st.text(max_size=200))
def test_anything_else_is_refused_with_one_line_never_another_exception(text: str) -> None:
    refused(text)


def test_not_a_code_at_all() -> None:
    assert refused("hello") == "Not an invitation code: it should start with 'exa1.'."
    assert refused("https://snow.example.com") == (
        "Not an invitation code: it should start with 'exa1.'."
    )


def test_a_huge_paste_is_refused_before_decoding() -> None:
    assert refused("exa1." + "A" * 9000 + ".00000000") == (
        "This is far too long to be an invitation code."
    )
    assert refused(" " * 40_000) == "This is far too long to be an invitation code."


# -- content refused even with correct check digits --------------------------------


def payload(**changes: Any) -> dict[str, Any]:
    data = sample().model_dump(mode="json", by_alias=True)
    data.update(changes)
    return data


def test_a_newer_code_prefix_says_to_update() -> None:
    _, rest = CODE.split(".", 1)
    body = "exa2." + rest.rsplit(".", 1)[0]
    code = f"{body}.{hashlib.sha256(body.encode()).hexdigest()[:8]}"
    assert refused(code) == (
        "Unsupported code version 'exa2': this app reads exa1 codes; update exalate-tui."
    )


@pytest.mark.parametrize(
    ("version", "shown"), [(2, "2"), (0, "0"), ("1", "'1'"), (True, "True"), (1.0, "1.0")]
)
def test_a_wrong_payload_version_is_refused(version: object, shown: str) -> None:
    assert refused(seal(payload(v=version))) == (
        f"Unsupported invitation version {shown}: update exalate-tui."
    )


def test_a_missing_version_is_refused() -> None:
    data = payload()
    del data["v"]
    assert refused(seal(data)) == "Unsupported invitation version None: update exalate-tui."


@pytest.mark.parametrize("key", ["cid", "url", "dest_url", "from", "to", "name", "desc", "mode"])
def test_a_missing_key_is_named(key: str) -> None:
    data = payload()
    del data[key]
    assert refused(seal(data)) == (
        f"The code's field {key!r} is invalid (Field required): ask for a new code."
    )


@pytest.mark.parametrize("key", ["tok", "exp"])
def test_a_missing_token_or_expiry_is_named(key: str) -> None:
    data = payload()
    del data[key]
    assert f"field {key!r} is invalid (Field required)" in refused(seal(data))


def test_an_extra_key_is_refused() -> None:
    assert refused(seal(payload(admin=True))) == (
        "The code's field 'admin' is invalid (Extra inputs are not permitted): ask for a new code."
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cid", "not-a-uuid"),
        ("url", "ftp://snow.example.com"),
        ("dest_url", "https://"),
        ("from", "snow now"),
        ("to", "x" * 33),
        ("name", ""),
        ("name", "evil\x1b]52;c;payload\x07"),
        ("desc", "d" * 1001),
        ("mode", "groovy"),
        ("tok", "short"),
        ("tok", "A" * 42 + "="),
        ("exp", "1750604800"),
        ("exp", 1.5),
        ("exp", True),
        ("exp", -1),
        ("exp", 10**20),
    ],
)
def test_a_bad_value_names_its_key(key: str, value: object) -> None:
    message = refused(seal(payload(**{key: value})))
    assert message.startswith(f"The code's field {key!r} is invalid (")
    assert message.endswith("): ask for a new code.")


@pytest.mark.parametrize("data", [[1, 2], "exa1", 1, None])
def test_a_payload_that_is_not_an_object_is_unreadable(data: object) -> None:
    assert refused(seal(data)) == "The code's contents are unreadable: ask for a new code."


def test_a_payload_that_is_not_json_is_unreadable() -> None:
    payload_text = base64.urlsafe_b64encode(b"\xff\xfe not json").rstrip(b"=").decode()
    body = f"exa1.{payload_text}"
    code = f"{body}.{hashlib.sha256(body.encode()).hexdigest()[:8]}"
    assert refused(code) == "The code's contents are unreadable: ask for a new code."


def test_a_payload_of_impossible_length_is_unreadable() -> None:
    body = "exa1.AAAAA"  # 5 base64 characters cannot be whole bytes
    code = f"{body}.{hashlib.sha256(body.encode()).hexdigest()[:8]}"
    assert refused(code) == "The code's contents are unreadable: ask for a new code."


def test_a_value_shown_in_a_message_is_inert() -> None:
    message = refused(seal(payload(v="\x1b[2J" + "x" * 100)))
    assert "\x1b" not in message
    assert len(message) < 120


# -- the decoded invitation -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "dest_url", "topology"),
    [
        ("https://snow.example.com", None, Topology.PUBLIC_PRIVATE),
        ("https://snow.example.com", "https://jira.example.com", Topology.PUBLIC_PUBLIC),
        (None, "https://jira.example.com", Topology.PRIVATE_PUBLIC),
    ],
)
def test_the_topology_follows_the_urls(
    url: str | None, dest_url: str | None, topology: Topology
) -> None:
    invite = codes.decode(codes.encode(sample(url=url, dest_url=dest_url)))
    assert invite.topology is topology


def test_expiry_is_inclusive_of_the_deadline() -> None:
    invite = sample(exp=1000)
    assert not invite.expired(999.9)
    assert invite.expired(1000)
    assert invite.expired(2000)


def test_tokens_are_32_random_bytes_and_only_their_hash_matches() -> None:
    token = codes.new_token()
    assert len(token) == 43
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert token != codes.new_token()
    digest = codes.hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert codes.token_matches(token, digest)
    assert not codes.token_matches(codes.new_token(), digest)
    assert not codes.token_matches(token[:-1], digest)
