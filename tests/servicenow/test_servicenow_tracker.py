"""The ServiceNow adapter: the tracker contract against the emulator, then what only it
promises (paging while records change, de-duplication, 429 storms, ACL refusals)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
from contract import TrackerContract
from emulator import Emulator, asgi
from serve import served

from exalate_tui.trackers.adapter import QueryError, TrackerUnavailable
from exalate_tui.trackers.servicenow import ServiceNowTracker, Settings

# Another writer of the same instance: a person in ServiceNow's UI, another integration.
_WRITER = """
import sys, httpx
answer = httpx.post(sys.argv[1] + "/api/now/table/incident", auth=("admin", "admin"),
                    json={"short_description": sys.argv[2]})
answer.raise_for_status()
print(answer.json()["result"]["number"])
"""


def emulator_with_users() -> Emulator:
    # ServiceNow stamps to the second; the contract's writes come milliseconds apart, so
    # this instance's clock moves a second per write for their times to move at all.
    emulator = Emulator(tick=True, max_attachment=64 * 1024 * 1024)
    emulator.add_user("sync", "pw")
    for name in ("ada", "grace"):
        emulator.add_user(name)
    return emulator


def _settings(url: str, **changes: object) -> Settings:
    return Settings(url=url, user="sync", password="pw", poll=0.2, **changes)  # type: ignore[arg-type]


class TestServiceNowTracker(TrackerContract):
    @pytest.fixture
    def url(self) -> Iterator[str]:
        with served(emulator_with_users()) as url:
            yield url

    @pytest.fixture
    async def tracker(self, url: str) -> AsyncIterator[ServiceNowTracker]:
        tracker = ServiceNowTracker(_settings(url))
        yield tracker
        await tracker.close()

    @pytest.fixture
    def elsewhere(self, url: str) -> Callable[[str], Awaitable[str]]:
        async def write(summary: str) -> str:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _WRITER, url, summary, stdout=subprocess.PIPE
            )
            out, _ = await process.communicate()
            assert process.returncode == 0
            return out.decode().strip()

        return write


# -- what only the ServiceNow adapter promises (the emulator in process) ------------------

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Emulator:
    return emulator_with_users()


class Sleeps:
    """Stands in for asyncio.sleep: records each wait, waits for none."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def snow(emulator: Emulator, sleeps: Sleeps) -> AsyncIterator[ServiceNowTracker]:
    transport = httpx.ASGITransport(app=asgi(emulator))
    tracker = ServiceNowTracker(_settings("http://snow.test"), transport=transport, sleep=sleeps)
    yield tracker
    await tracker.close()


async def test_the_record_carries_the_mapping(snow: ServiceNowTracker, emulator: Emulator) -> None:
    made = await snow.create(
        {"summary": "VPN down", "status": "on_hold", "priority": 2, "assignee": "ada"},
        correlation="c1/JIRA-1",
    )
    (record,) = emulator.tables["incident"].values()
    assert (record["number"], record["short_description"]) == (made.key, "VPN down")
    assert (record["state"], record["impact"], record["urgency"]) == ("3", "1", "2")
    assert record["priority"] == "2" and record["hold_reason"] == "1"
    assert record["assigned_to"] == emulator.users["ada"].sys_id
    assert record["correlation_id"] == "c1/JIRA-1"
    await snow.update(made.key, {"status": "resolved"})
    assert record["close_code"] and record["state"] == "6"


async def test_comments_come_from_the_journal_each_once(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    made = await snow.create({"summary": "x"})
    sys_id = next(iter(emulator.tables["incident"]))
    emulator.update("incident", sys_id, {"comments": "from the UI"}, by="ada")
    await snow.comment(made.key, "ours", author="ann", origin="c1/9")
    await snow.comment(made.key, "a note", internal=True)
    comments = (await snow.get(made.key)).comments
    assert [(c.author, c.body, c.internal, c.origin) for c in comments] == [
        ("ada", "from the UI", False, None),
        ("ann", "ours", False, "c1/9"),
        ("sync", "a note", True, None),
    ]
    entries = [
        e for e in emulator.tables["sys_journal_field"].values() if e["element_id"] == sys_id
    ]
    assert entries[1]["element"] == "comments" and entries[2]["element"] == "work_notes"


async def test_paging_loses_nothing_while_records_change(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    ids = [emulator.insert("incident", {"short_description": f"t{n}"}, by="admin")["sys_id"]
           for n in range(450)]  # fmt: skip
    seen: set[str] = set()
    mark = None
    real_list = snow._list
    pages = 0

    async def changing_list(*args: object, **kwargs: object) -> list[dict[str, object]]:
        nonlocal pages
        page = await real_list(*args, **kwargs)  # type: ignore[arg-type]
        pages += 1
        if pages == 1:  # while the pages are read, early records change
            for sys_id in ids[:5]:
                emulator.update("incident", sys_id, {"description": "edited"}, by="admin")
        return page

    snow._list = changing_list  # type: ignore[method-assign]
    while True:
        found = await snow.changed(mark, limit=100)
        seen |= set(found.keys)
        if not found.keys:
            break
        mark = found.watermark
    assert len(seen) == 450


async def test_each_change_is_reported_once_across_the_overlap(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    made = await snow.create({"summary": "x"})
    first = await snow.changed(None)
    assert first.keys == (made.key,)
    # Within the overlap the same record is read again, and not reported again...
    assert (await snow.changed(first.watermark)).keys == ()
    # ...until it changes (its sys_mod_count moves).
    await snow.update(made.key, {"summary": "y"})
    again = await snow.changed(first.watermark)
    assert again.keys == (made.key,)
    assert (await snow.changed(again.watermark)).keys == ()


async def test_a_429_storm_is_waited_out_as_retry_after_says(
    snow: ServiceNowTracker, emulator: Emulator, sleeps: Sleeps
) -> None:
    emulator.storm(4, retry_after=7)
    made = await snow.create({"summary": "through the storm"})
    assert sleeps.waits == [7, 7, 7, 7]
    assert len(emulator.tables["incident"]) == 1 and made.summary == "through the storm"


async def test_a_storm_past_the_attempts_is_unavailable_and_then_passes(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    emulator.storm(6, retry_after=1)
    with pytest.raises(TrackerUnavailable, match="429"):
        await snow.search()
    assert await snow.search() == []


async def test_5xx_backs_off_then_succeeds(
    snow: ServiceNowTracker, emulator: Emulator, sleeps: Sleeps
) -> None:
    emulator.fail(3, status=503)
    assert await snow.search() == []
    assert len(sleeps.waits) == 3 and all(0 <= w <= 30 for w in sleeps.waits)


async def test_acl_refusals_name_the_table_and_the_right(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    emulator.deny("sync", "incident", "create")
    with pytest.raises(TrackerUnavailable) as refused:
        await snow.create({"summary": "x"})
    text = str(refused.value)
    assert "create on incident" in text and "ACL Exception Insert Failed" in text
    assert "Traceback" not in text and refused.value.unavailable
    emulator.allow("sync", "incident", "create")
    await snow.create({"summary": "x"})  # resumes once granted
    emulator.deny("sync", "sys_journal_field", "read")
    with pytest.raises(TrackerUnavailable, match="read on sys_journal_field"):
        await snow.search()


async def test_wrong_credentials_say_how_to_fix(emulator: Emulator) -> None:
    transport = httpx.ASGITransport(app=asgi(emulator))
    settings = Settings(url="http://snow.test", user="sync", password="wrong")
    tracker = ServiceNowTracker(settings, transport=transport)
    try:
        with pytest.raises(TrackerUnavailable) as refused:
            await tracker.search()
        assert "User Not Authenticated" in str(refused.value)
        assert "tracker set servicenow" in str(refused.value)
    finally:
        await tracker.close()


async def test_filters_in_servicenow_names_run_in_servicenow(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    urgent = await snow.create({"summary": "a", "priority": 1})
    await snow.create({"summary": "b", "priority": 4})
    query = snow.check_query("priority=1^state=1")
    assert [t.key for t in await snow.search(query)] == [urgent.key]
    assert query.matches(urgent)
    with pytest.raises(QueryError, match="bogus"):
        snow.check_query("bogus=1")  # ServiceNow would match every record
