"""Names, descriptions and URLs refuse what would show other than it reads: controls,
line separators, bidi controls and other invisible format characters (issue 10, item 7).
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import check_text, check_url

# RLO, LRO, PDI, RLM, LRM, ALM, ZWSP, word joiner, BOM, soft hyphen
FORMAT = ["\u202e", "\u202d", "\u2069", "\u200f", "\u200e", "\u061c", "\u200b", "\u2060", "\ufeff"]
FORMAT.append("\u00ad")
SEPARATORS = ["\u2028", "\u2029"]


@pytest.mark.parametrize("ch", FORMAT)
def test_names_refuse_invisible_format_characters(ch: str) -> None:
    with pytest.raises(ValueError, match="invisible or bidirectional formatting"):
        check_text(f"snow{ch}_to_jira", limit=100, required=True)


@pytest.mark.parametrize("ch", SEPARATORS)
def test_names_refuse_line_separators(ch: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        check_text(f"snow{ch}jira", limit=100, required=True)


def test_names_keep_the_joiners_scripts_and_emoji_need() -> None:
    for text in ("می\u200cخواهم", "👩\u200d💻 team", "Ünïcödé → ok"):
        assert check_text(text, limit=100, required=True) == text


@pytest.mark.parametrize("ch", [*FORMAT, *SEPARATORS, "\u200c", "\u200d"])
@pytest.mark.parametrize(
    "url",
    ["https://snow{}.example.com", "https://admin{}@snow.example.com", "https://snow.example/{}"],
)
def test_urls_refuse_them_anywhere_the_userinfo_included(ch: str, url: str) -> None:
    with pytest.raises(ValueError, match="formatting characters|control characters"):
        check_url(url.format(ch))


def test_a_code_whose_url_hides_a_bidi_override_is_refused() -> None:
    # Shown raw, "https://snow.example.com\u202e@evil.example" would read backwards.
    payload = {
        "v": 1,
        "cid": "6f1d7a8e-4a53-4c2e-9c5b-3f1a2b4c5d6e",
        "url": "https://bank.example\u202emoc.live@evil.example",
        "dest_url": None,
        "from": "snow",
        "to": "jira",
        "name": "snow_to_jira",
        "desc": "",
        "mode": "basic",
        "tok": "A" * 43,
        "exp": 4_000_000_000,
    }
    compact = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    body = "exa1." + base64.urlsafe_b64encode(compact.encode()).rstrip(b"=").decode()
    sealed = f"{body}.{hashlib.sha256(body.encode()).hexdigest()[:8]}"
    with pytest.raises(codes.InvitationError, match="url"):
        codes.decode(sealed)
