"""`exalate-tui tracker`: set up ServiceNow against the emulator on 127.0.0.1, each check's
failure in words, the password never shown, and `open_tracker` picking the adapter."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator import Emulator
from serve import served

from exalate_tui.cli import main
from exalate_tui.home.store import Home
from exalate_tui.trackers import check_query, open_tracker, tracker_exists
from exalate_tui.trackers.servicenow import ServiceNowTracker

SECRET = "s3cret-pw"


@pytest.fixture
def emulator() -> Emulator:
    emulator = Emulator()
    emulator.add_user("sync", SECRET)
    emulator.insert("incident", {"short_description": "there"}, by="admin")
    return emulator


@pytest.fixture
def url(emulator: Emulator) -> Iterator[str]:
    with served(emulator) as url:
        yield url


def _set(home: Path, url: str, monkeypatch: pytest.MonkeyPatch, password: str = SECRET) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    monkeypatch.delenv("EXALATE_TUI_SERVICENOW_PASSWORD", raising=False)
    args = ["--home", str(home), "tracker", "set", "servicenow", "--url", url, "--user", "sync"]
    return main(args)


def test_set_checks_saves_0600_and_show_hides_the_password(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _set(tmp_path, url, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "✓ credentials accepted" in out and "✓ read on sys_journal_field" in out
    path = tmp_path / "tracker.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["--home", str(tmp_path), "tracker", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["tracker"]
    assert (shown["kind"], shown["url"], shown["user"]) == ("servicenow", url, "sync")
    assert main(["--home", str(tmp_path), "tracker", "show"]) == 0
    assert SECRET not in capsys.readouterr().out + json.dumps(shown)
    home = Home(tmp_path)
    tracker = open_tracker(home)
    assert isinstance(tracker, ServiceNowTracker) and tracker_exists(home)
    assert check_query(home, "state=1^short_descriptionLIKEx")
    assert main(["--home", str(tmp_path), "tracker", "set", "local"]) == 0
    assert not isinstance(open_tracker(home), ServiceNowTracker)


@pytest.mark.parametrize(
    ("deny", "says"),
    [
        (None, "refused user 'sync'"),
        (("incident", "read"), "lacks read on incident"),
        (("incident", "write"), "lacks write on incident"),
        (("sys_journal_field", "read"), "lacks read on sys_journal_field"),
    ],
)
def test_each_failed_check_says_which_and_saves_nothing(
    tmp_path: Path,
    url: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    deny: tuple[str, str] | None,
    says: str,
) -> None:
    if deny:
        emulator.deny("sync", *deny)
    assert _set(tmp_path, url, monkeypatch, SECRET if deny else "wrong") == 2
    err = capsys.readouterr().err
    assert says in err and "grant" in err or "check both" in err
    assert SECRET not in err
    assert not (tmp_path / "tracker.toml").exists()


def test_an_unreachable_url_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _set(tmp_path, "http://127.0.0.1:9", monkeypatch) == 2
    assert "cannot reach ServiceNow" in capsys.readouterr().err
