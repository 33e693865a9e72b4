"""The Accept screen's preview and "Contacting … at" line show a partner's text escaped,
never raw (issue 10, item 7). The code's checks refuse such text already; these build
an invitation past them (`model_construct`) to hold the screen to its own promise."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from exalate_tui.domain import invitation as codes
from exalate_tui.domain.models import Mode, shown
from exalate_tui.flows.accept import AcceptWizard, Stage
from screens.accept import preview_table, stages_text

HOSTILE = ["\u202e", "\u2066", "\u200f", "\u061c", "\u2028", "\x1b]52;c;aGk=\x07", "\u200b"]


def rendered(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None, legacy_windows=False).print(renderable)
    return out.getvalue()


@pytest.mark.parametrize("bad", HOSTILE)
def test_the_preview_and_the_contacting_line_escape_partner_text(bad: str) -> None:
    invite = codes.Invitation.model_construct(
        v=1,
        cid="6f1d7a8e-4a53-4c2e-9c5b-3f1a2b4c5d6e",
        url=f"https://admin{bad}@bank.example",
        dest_url=None,
        from_=f"snow{bad}",
        to="jira",
        name=f"snow{bad}_to_jira",
        desc=f"about{bad}",
        mode=Mode.BASIC,
        tok="A" * 43,
        exp=4_000_000_000,
    )
    wizard = AcceptWizard(None, [])
    wizard.invitation = invite
    wizard.stages = [Stage.CONTACTING]
    for text in (rendered(preview_table(wizard)), rendered(stages_text(wizard, None))):
        assert bad not in text and "\x1b" not in text
        assert shown(bad) in text
    assert f"Contacting snow{shown(bad)} at https://admin{shown(bad)}@bank.example" in rendered(
        stages_text(wizard, None)
    )


def test_joiners_stay_as_written() -> None:
    assert shown("می\u200cخواهم") == "می\u200cخواهم"
