"""OAuth client credentials, the other way to sign in: the token from /oauth_token.do,
fetched again before it expires and on a 401, the secret never shown; the tracker
contract passes over it; `tracker set servicenow --client-id` checks before saving."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import test_servicenow_tracker
from emulator import Emulator, asgi
from serve import served

from exalate_tui.cli import main
from exalate_tui.home.store import Home
from exalate_tui.trackers import open_tracker
from exalate_tui.trackers.adapter import TrackerUnavailable
from exalate_tui.trackers.servicenow import ServiceNowTracker, Settings

SECRET = "cl13nt-s3cret-value"


def _oauth(url: str, secret: str = SECRET) -> Settings:
    return Settings(url=url, client_id="exalate", client_secret=secret, poll=0.2)


class TestServiceNowTrackerOverOAuth(test_servicenow_tracker.TestServiceNowTracker):
    """The whole contract again, every request with a bearer token."""

    @pytest.fixture
    def url(self) -> Iterator[str]:
        emulator = test_servicenow_tracker.emulator_with_users()
        emulator.add_oauth_client("exalate", SECRET, "sync")
        with served(emulator) as url:
            yield url

    @pytest.fixture
    async def tracker(self, url: str) -> AsyncIterator[ServiceNowTracker]:
        tracker = ServiceNowTracker(_oauth(url))
        yield tracker
        await tracker.close()


@pytest.fixture
def emulator() -> Emulator:
    emulator = test_servicenow_tracker.emulator_with_users()
    emulator.add_oauth_client("exalate", SECRET, "sync")
    return emulator


@pytest.fixture
async def snow(emulator: Emulator) -> AsyncIterator[ServiceNowTracker]:
    transport = httpx.ASGITransport(app=asgi(emulator))
    tracker = ServiceNowTracker(_oauth("http://snow.test"), transport=transport)
    yield tracker
    await tracker.close()


@pytest.mark.anyio
async def test_the_token_is_fetched_once_and_again_before_it_expires(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    made = await snow.create({"summary": "over OAuth"})
    await snow.get(made.key)
    assert snow.tokens == 1
    assert (
        emulator.tables["incident"]
        and [r for r in emulator.tables["incident"].values() if r["opened_by"]][0]["opened_by"]
        == emulator.users["sync"].sys_id
    )  # acts as the Application User
    assert snow.tokens == 1
    emulator.token_lifespan = 2  # expires_in 1 s: the next token is fetched 0.9 s later
    emulator.expire_tokens()
    await snow.get(made.key)
    assert snow.tokens == 2
    await snow.get(made.key)
    assert snow.tokens == 2
    await asyncio.sleep(1.0)
    await snow.get(made.key)
    assert snow.tokens == 3  # fetched ahead: the emulator would still take the old one
    assert emulator.calls[-1][2] == "sync"


@pytest.mark.anyio
async def test_a_token_refused_with_401_is_fetched_again_once(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    made = await snow.create({"summary": "before"})
    emulator.expire_tokens()  # revoked, or the lifespan shorter than it said
    assert (await snow.get(made.key)).summary == "before"
    assert snow.tokens == 2


@pytest.mark.anyio
async def test_a_wrong_secret_is_unavailable_saying_what_to_fix(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    transport = httpx.ASGITransport(app=asgi(emulator))
    tracker = ServiceNowTracker(_oauth("http://snow.test", "wrong-one"), transport=transport)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(TrackerUnavailable) as refused:
            await tracker.search()
    finally:
        await tracker.close()
    said = str(refused.value)
    assert "OAuth client 'exalate'" in said and "access_denied" in said
    assert "glide.oauth.inbound.client.credential.grant_type.enabled" in said
    assert "wrong-one" not in said + caplog.text + repr(tracker.settings)


@pytest.fixture
def url(emulator: Emulator) -> Iterator[str]:
    emulator.insert("incident", {"short_description": "there"}, by="admin")
    with served(emulator) as url:
        yield url


def _set(home: Path, url: str, monkeypatch: pytest.MonkeyPatch, secret: str = SECRET) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
    monkeypatch.delenv("EXALATE_TUI_SERVICENOW_CLIENT_SECRET", raising=False)
    args = ["--home", str(home), "tracker", "set", "servicenow", "--url", url]
    return main([*args, "--client-id", "exalate"])


def test_set_with_a_client_id_checks_saves_and_never_shows_the_secret(
    tmp_path: Path,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert _set(tmp_path, url, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "✓ OAuth token issued" in out and "✓ read on sys_journal_field" in out
    path = tmp_path / "tracker.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["--home", str(tmp_path), "tracker", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["tracker"]
    assert (shown["auth"], shown["client_id"], shown["url"]) == ("oauth", "exalate", url)
    assert main(["--home", str(tmp_path), "tracker", "show"]) == 0
    plain = capsys.readouterr().out
    assert "OAuth client exalate" in plain
    assert SECRET not in out + plain + json.dumps(shown) + caplog.text
    tracker = open_tracker(Home(tmp_path))
    assert isinstance(tracker, ServiceNowTracker) and tracker.settings.oauth


def test_set_with_a_wrong_secret_says_so_and_saves_nothing(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _set(tmp_path, url, monkeypatch, "not-the-secret") == 2
    err = capsys.readouterr().err
    assert "not saved" in err and "OAuth client 'exalate'" in err and "no token" in err
    assert "not-the-secret" not in err
    assert not (tmp_path / "tracker.toml").exists()


def test_user_and_client_id_are_one_or_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    args = ["--home", str(tmp_path), "tracker", "set", "servicenow", "--url", "https://a.b"]
    with pytest.raises(SystemExit) as ended:
        main([*args, "--user", "u", "--client-id", "c"])
    assert ended.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "tracker.toml").exists()
