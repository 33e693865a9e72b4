"""Tables by configuration: several task tables behind one tracker (types, keys, changes,
writes in the record's own table), and filters checked against each table's fields as
sys_dictionary gives them, stored by `tracker set`."""

from __future__ import annotations

import io
import json
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from emulator import Emulator, asgi
from serve import served
from test_servicenow_tracker import emulator_with_users

from exalate_tui.cli import main
from exalate_tui.home.store import Home
from exalate_tui.trackers import check_query, open_tracker
from exalate_tui.trackers.adapter import QueryError, TicketRefused
from exalate_tui.trackers.servicenow import ServiceNowTracker, Settings, verify

TABLES = ("incident", "problem", "change_request", "sc_req_item")


@pytest.fixture
def emulator() -> Emulator:
    return emulator_with_users()


@pytest.fixture
async def snow(emulator: Emulator) -> AsyncIterator[ServiceNowTracker]:
    transport = httpx.ASGITransport(app=asgi(emulator))
    checked = await verify(
        Settings(url="http://snow.test", user="sync", password="pw", tables=TABLES),
        transport=transport,
    )
    settings = Settings(
        url="http://snow.test", user="sync", password="pw", tables=TABLES, fields=checked.fields
    )
    tracker = ServiceNowTracker(settings, transport=transport)
    yield tracker
    await tracker.close()


@pytest.mark.anyio
async def test_each_type_lives_in_its_table_and_all_read_as_one(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    incident = await snow.create({"summary": "VPN down"})
    problem = await snow.create({"summary": "VPN flaps", "type": "problem", "priority": 2})
    change = await snow.create({"summary": "New VPN", "type": "change"})
    item = await snow.create({"summary": "A laptop", "type": "task"})
    assert [t.key[:3] for t in (incident, problem, change, item)] == ["INC", "PRB", "CHG", "RIT"]
    assert [t.type for t in (incident, problem, change, item)] == [
        "incident",
        "problem",
        "change",
        "task",
    ]
    assert {r["short_description"] for r in emulator.tables["problem"].values()} == {"VPN flaps"}
    everything = await snow.search()
    assert [t.key for t in everything] == [incident.key, problem.key, change.key, item.key]
    assert [t.key for t in await snow.search(snow.check_query("type=problem"))] == [problem.key]
    both = await snow.get_many([item.key, problem.key, "PRB9999999"])
    assert [t.key for t in both] == [item.key, problem.key]

    # Writes land in the record's own table; changes come from every table, each once.
    mark = (await snow.changed(None)).watermark
    await snow.update(problem.key, {"status": "in_progress"})
    await snow.comment(change.key, "Approved by CAB")
    found = await snow.changed(mark)
    assert sorted(found.keys) == sorted([problem.key, change.key])
    assert (await snow.changed(found.watermark)).keys == ()
    assert (await snow.get(problem.key)).status == "in_progress"
    assert [c.body for c in (await snow.get(change.key)).comments] == ["Approved by CAB"]
    with pytest.raises(TicketRefused, match="does not move a record to another table"):
        await snow.update(problem.key, {"type": "incident"})


@pytest.mark.anyio
async def test_a_type_no_table_serves_is_refused_saying_how_to_add_one(
    emulator: Emulator,
) -> None:
    transport = httpx.ASGITransport(app=asgi(emulator))
    tracker = ServiceNowTracker(
        Settings(url="http://snow.test", user="sync", password="pw"), transport=transport
    )
    try:
        with pytest.raises(TicketRefused, match="--table TABLE"):
            await tracker.create({"summary": "x", "type": "problem"})
    finally:
        await tracker.close()


@pytest.mark.anyio
async def test_a_watermark_of_one_table_from_before_is_kept(emulator: Emulator) -> None:
    transport = httpx.ASGITransport(app=asgi(emulator))
    settings = Settings(url="http://snow.test", user="sync", password="pw")
    tracker = ServiceNowTracker(settings, transport=transport)
    try:
        made = await tracker.create({"summary": "before"})
        record = next(iter(emulator.tables["incident"].values()))
        old = json.dumps(
            {
                "at": "http://snow.test/incident",
                "t": record["sys_updated_on"],
                "seen": {record["sys_id"]: [record["sys_mod_count"], record["sys_updated_on"]]},
            }
        )
        assert (await tracker.changed(old)).keys == ()  # already heard, as it said
        await tracker.update(made.key, {"summary": "after"})
        assert (await tracker.changed(old)).keys == (made.key,)
    finally:
        await tracker.close()


@pytest.mark.anyio
async def test_filters_are_checked_against_sys_dictionary(
    snow: ServiceNowTracker, emulator: Emulator
) -> None:
    # ServiceNow would drop the unknown part and match every record: refused here.
    with pytest.raises(QueryError, match="u_team"):
        snow.check_query("u_team=network")
    network = await snow.create({"summary": "Switch down"})
    await snow.create({"summary": "Printer"})
    sys_id = next(
        r["sys_id"] for r in emulator.tables["incident"].values() if r["number"] == network.key
    )
    emulator.update("incident", sys_id, {"category": "network"}, by="admin")
    query = snow.check_query("category=network")  # incident's own column, from the dictionary
    assert [t.key for t in await snow.search(query)] == [network.key]
    # A trigger's column is read with every record from then on, so it matches locally.
    assert query.matches(await snow.get(network.key))


@pytest.fixture
def url(emulator: Emulator) -> Iterator[str]:
    emulator.insert("incident", {"short_description": "there"}, by="admin")
    with served(emulator) as url:
        yield url


def _set(home: Path, url: str, monkeypatch: pytest.MonkeyPatch, *tables: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    monkeypatch.delenv("EXALATE_TUI_SERVICENOW_PASSWORD", raising=False)
    args = ["--home", str(home), "tracker", "set", "servicenow", "--url", url, "--user", "sync"]
    return main(args + [arg for table in tables for arg in ("--table", table)])


def test_set_stores_each_tables_fields_and_triggers_follow_them(
    tmp_path: Path,
    url: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _set(tmp_path, url, monkeypatch, "incident", "problem") == 0
    out = capsys.readouterr().out
    assert "fields of incident (sys_dictionary)" in out and "tables incident, problem" in out
    stored = tomllib.loads((tmp_path / "tracker.toml").read_text())
    assert stored["tables"] == ["incident", "problem"]
    assert stored["fields"]["incident"]["category"] == "string"
    assert stored["fields"]["problem"]["state"] == "integer"
    home = Home(tmp_path)
    assert check_query(home, "category=network^state=1")
    with pytest.raises(QueryError, match="u_team"):
        check_query(home, "u_team=network")
    # An admin adds the column; checking the instance again learns it.
    emulator.add_field("incident", "u_team")
    assert _set(tmp_path, url, monkeypatch, "incident", "problem") == 0
    assert check_query(home, "u_team=network")
    assert main(["--home", str(tmp_path), "tracker", "show", "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out[out.index("{") :])
    assert shown["tracker"]["tables"] == ["incident", "problem"]
    tracker = open_tracker(home)
    assert isinstance(tracker, ServiceNowTracker) and tracker.tables == ("incident", "problem")


@pytest.mark.parametrize(
    ("table", "deny", "says"),
    [
        ("sys_user", None, "sys_user is not a task table"),
        ("incident", ("sys_dictionary", "read"), "lacks read on sys_dictionary"),
        ("u_nothing", None, "check the URL and the table's name"),
    ],
)
def test_a_table_that_is_not_a_task_table_or_an_unread_dictionary_saves_nothing(
    tmp_path: Path,
    url: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    table: str,
    deny: tuple[str, str] | None,
    says: str,
) -> None:
    if deny:
        emulator.deny("sync", *deny)
    assert _set(tmp_path, url, monkeypatch, table) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "tracker.toml").exists()


def test_a_bad_table_name_is_bad_input_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _set(tmp_path, "http://127.0.0.1:9", monkeypatch, "Incident;drop") == 2
    err = capsys.readouterr().err
    assert "--table 'Incident;drop': not a ServiceNow table name" in err
    assert "cannot reach" not in err  # refused before asking anything
    assert not (tmp_path / "tracker.toml").exists()
