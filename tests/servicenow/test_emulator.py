"""The emulator itself behaves as the ServiceNow pages it cites say (a double must be right
before anything is tested against it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from emulator import Emulator, asgi

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Emulator:
    instance = Emulator(tick=True)
    instance.add_user("sync", "pw")
    return instance


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=asgi(emulator))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://snow.test", auth=("sync", "pw")
    ) as client:
        yield client


async def test_create_read_update_with_system_fields(client: httpx.AsyncClient) -> None:
    made = await client.post(
        "/api/now/table/incident", json={"short_description": "Disk full", "bogus": "x"}
    )
    assert made.status_code == 201
    record = made.json()["result"]
    assert record["number"] == "INC0010001" and record["sys_mod_count"] == "0"
    assert "bogus" not in record and len(record["sys_updated_on"]) == 19
    patched = await client.patch(
        f"/api/now/v2/table/incident/{record['sys_id']}", json={"impact": "1", "urgency": "1"}
    )
    after = patched.json()["result"]
    assert (after["priority"], after["sys_mod_count"]) == ("1", "1")
    again = await client.patch(
        f"/api/now/v2/table/incident/{record['sys_id']}", json={"impact": "1"}
    )
    assert again.json()["result"]["sys_mod_count"] == "1"  # nothing changed, nothing written


async def test_unknown_fields_in_a_query_are_ignored(client: httpx.AsyncClient) -> None:
    for text in ("a", "b"):
        await client.post("/api/now/table/incident", json={"short_description": text})
    listed = await client.get("/api/now/v2/table/incident", params={"sysparm_query": "bogus=1"})
    assert len(listed.json()["result"]) == 2
    one = await client.get(
        "/api/now/v2/table/incident", params={"sysparm_query": "short_description=b^bogus=1"}
    )
    assert [r["short_description"] for r in one.json()["result"]] == ["b"]


async def test_paging_headers_and_v1_v2_empty_answers(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await client.post("/api/now/table/incident", json={"short_description": f"t{n}"})
    page = await client.get(
        "/api/now/v2/table/incident",
        params={"sysparm_limit": "2", "sysparm_offset": "2", "sysparm_fields": "number"},
    )
    assert page.headers["X-Total-Count"] == "5"
    assert 'rel="next"' in page.headers["Link"] and 'rel="prev"' in page.headers["Link"]
    assert page.json()["result"] == [{"number": "INC0010003"}, {"number": "INC0010004"}]
    none = {"sysparm_query": "short_description=nothing"}
    assert (await client.get("/api/now/v2/table/incident", params=none)).json() == {"result": []}
    v1 = await client.get("/api/now/v1/table/incident", params=none)
    assert v1.status_code == 404 and v1.json()["status"] == "failure"


async def test_journal_entries_and_display_values(client: httpx.AsyncClient) -> None:
    made = (await client.post("/api/now/table/incident", json={"short_description": "x"})).json()
    sys_id = made["result"]["sys_id"]
    await client.patch(f"/api/now/v2/table/incident/{sys_id}", json={"comments": "hello"})
    await client.patch(f"/api/now/v2/table/incident/{sys_id}", json={"work_notes": "secret"})
    entries = (
        await client.get(
            "/api/now/v2/table/sys_journal_field",
            params={"sysparm_query": f"element_id={sys_id}^ORDERBYsys_created_on"},
        )
    ).json()["result"]
    assert [(e["element"], e["value"], e["sys_created_by"]) for e in entries] == [
        ("comments", "hello", "sync"),
        ("work_notes", "secret", "sync"),
    ]
    shown = (
        await client.get(
            f"/api/now/v2/table/incident/{sys_id}",
            params={"sysparm_display_value": "all", "sysparm_fields": "state,comments,opened_by"},
        )
    ).json()["result"]
    assert shown["state"] == {"display_value": "New", "value": "1"}
    assert "hello" in shown["comments"]["value"]  # the whole journal, as ServiceNow shows it
    assert shown["opened_by"]["display_value"] == "sync"


async def test_attachments_by_hash(client: httpx.AsyncClient, emulator: Emulator) -> None:
    made = (await client.post("/api/now/table/incident", json={"short_description": "x"})).json()
    sys_id = made["result"]["sys_id"]
    up = await client.post(
        "/api/now/attachment/file",
        params={"table_name": "incident", "table_sys_id": sys_id, "file_name": "a.txt"},
        content=b"abc",
        headers={"Content-Type": "text/plain"},
    )
    assert up.status_code == 201
    listed = await client.get(
        "/api/now/attachment", params={"sysparm_query": f"table_sys_id={sys_id}"}
    )
    meta = listed.json()["result"][0]
    assert meta["size_bytes"] == "3" and len(meta["hash"]) == 64
    assert (await client.get(f"/api/now/attachment/{meta['sys_id']}/file")).content == b"abc"
    emulator.max_attachment = 2
    too_big = await client.post(
        "/api/now/attachment/file",
        params={"table_name": "incident", "table_sys_id": sys_id, "file_name": "b"},
        content=b"abc",
    )
    assert too_big.status_code == 400


async def test_auth_acl_and_rate_limits(client: httpx.AsyncClient, emulator: Emulator) -> None:
    wrong = await client.get("/api/now/table/incident", auth=("sync", "nope"))
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "User Not Authenticated"
    emulator.deny("sync", "incident", "create")
    refused = await client.post("/api/now/table/incident", json={"short_description": "x"})
    assert refused.status_code == 403 and "Insert" in refused.json()["error"]["detail"]
    emulator.storm(2, retry_after=3)
    assert (await client.get("/api/now/table/incident")).headers["Retry-After"] == "3"
    assert (await client.get("/api/now/table/incident")).status_code == 429
    assert (await client.get("/api/now/v2/table/incident")).status_code == 200
