"""The seed as written, end to end: a ServiceNow-fronted instance initiates a public–private
Script connection in the console, and the private side (the embedded tracker) accepts.

Three real processes on 127.0.0.1 besides the test: the ServiceNow emulator
(`tests/servicenow/emulator.py`), the public node (tracker.toml names the emulator) and the
private node. The console runs in this process, driven by Pilot through the seed's steps
("I don't have a URL", Script, the note, connection information, Copy invitation code,
Done); the private side accepts headlessly. Then: an incident matching the trigger
`priority=1` appears on the private side with its comment public and its work note kept
home; a comment and a state change made there appear in ServiceNow once each; a 429 storm
and a kill -9 of either node leave no duplicate and lose nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pilots import settle
from textual.widgets import TextArea

from exalate_tui.console.app import ExalateApp
from exalate_tui.domain.models import Mode
from exalate_tui.home.store import Home
from screens.config_type import ConfigTypeScreen
from screens.connections import ConnectionsScreen
from screens.destination import DestinationScreen
from screens.info import InfoScreen
from screens.invitation import InvitationScreen
from screens.note import NoteScreen

from .conftest import Instance, MakeInstance, free_port, wait_for
from .test_e2e_sync import SYNCED_WITHIN, ticket, tickets
from .test_e2e_topologies import connect

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e"), pytest.mark.anyio]

EMULATOR = Path(__file__).resolve().parent.parent / "servicenow" / "emulator.py"
PASSWORD = "integration-pw"
CLIENT_SECRET = "oauth-client-secret"  # an OAuth client acting as the same integration user
ADMIN = ("admin", "admin")  # the emulator's own admin: a person working in ServiceNow


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ServiceNow:
    """The emulator as a process, and what a person using ServiceNow does there (through
    the Table API as `admin`, so these writes are not the integration user's)."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "servicenow.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(EMULATOR), "--port", str(self.port)]
                + ["--user", f"sync:{PASSWORD}", "--oauth-client", f"exalate:{CLIENT_SECRET}:sync"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, auth=ADMIN, timeout=10)

        def up() -> bool:
            assert self.process.poll() is None, self.log.read_text()
            try:
                return self.http.get("/emulator/calls").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "the ServiceNow emulator answering")

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """A Table API call as a person would make it, waiting out a rate limit's 429."""
        while True:
            answer = self.http.request(method, path, **kwargs)
            if answer.status_code != 429:
                answer.raise_for_status()
                return answer.json()["result"] if answer.content else None
            time.sleep(float(answer.headers.get("retry-after", "1")))

    def incident(self, summary: str, impact: int, urgency: int) -> dict[str, Any]:
        body = {"short_description": summary, "impact": impact, "urgency": urgency}
        made: dict[str, Any] = self.api("POST", "/api/now/v2/table/incident", json=body)
        return made

    def record(self, number: str) -> dict[str, Any]:
        [found] = self.api(
            "GET", "/api/now/v2/table/incident", params={"sysparm_query": f"number={number}"}
        )
        return dict(found)

    def incidents(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.api("GET", "/api/now/v2/table/incident")
        return rows

    def journal(self, sys_id: str) -> list[dict[str, Any]]:
        query = f"element_id={sys_id}^ORDERBYsys_created_on"
        rows: list[dict[str, Any]] = self.api(
            "GET", "/api/now/v2/table/sys_journal_field", params={"sysparm_query": query}
        )
        return rows

    def storm(self, count: int, retry_after: int = 1) -> None:
        self.http.post("/emulator/faults", json={"count": count, "retry_after": retry_after})

    def close(self) -> None:
        self.http.close()
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def servicenow(tmp_path: Path) -> Iterator[ServiceNow]:
    instance = ServiceNow(tmp_path)
    try:
        yield instance
    finally:
        instance.close()


async def initiate_in_the_console(home: Home) -> str:
    """The seed's steps 1-9 in the console at 80×24; the invitation code copied."""
    copied: list[str] = []

    def no_local_clipboard(text: str) -> None:  # a server over SSH: OSC 52 only
        raise RuntimeError("Pyperclip could not find a copy/paste mechanism")

    app = ExalateApp(home, local_copy=no_local_clipboard, supervise=False)
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign, assignment]
    async with app.run_test(size=(80, 24)) as pilot:

        async def press(*keys: str) -> None:
            await settle(pilot, *keys)

        await settle(pilot)  # the first screen comes from a worker
        assert isinstance(app.screen, ConnectionsScreen)
        await press("i")  # 2. Initiate connection
        assert isinstance(app.screen, DestinationScreen)
        await press("ctrl+n")  # 3. I don't have a URL
        assert isinstance(app.screen, ConfigTypeScreen)
        await press("down")  # 4. Script
        assert app.wizard is not None and app.wizard.mode is Mode.SCRIPT
        await press("enter")  # 5. Next
        assert isinstance(app.screen, NoteScreen)
        await press("enter")  # 6. Next past the note
        assert isinstance(app.screen, InfoScreen)
        await press(*"jira", "enter")  # 7. connection information (local name filled in)
        assert isinstance(app.screen, InvitationScreen)
        code = app.screen.query_one("#code", TextArea).text
        await press("c")  # 8. Copy invitation code
        await press("enter")  # 9. Done
        assert isinstance(app.screen, ConnectionsScreen)
    assert copied == [code]
    return code


def snow_side(instances: MakeInstance, servicenow: ServiceNow, auth: str = "basic") -> Instance:
    a = instances("snow", public=True)
    who, secret = (
        (["--client-id", "exalate"], CLIENT_SECRET)
        if auth == "oauth"
        else (["--user", "sync"], PASSWORD)
    )
    done = a.cli(
        "tracker", "set", "servicenow", "--url", servicenow.url, *who, "--poll", "1",
        stdin=secret + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    return a


def copies(b: Instance) -> dict[str, dict[str, Any]]:
    """The private side's tickets by the ServiceNow number they are linked to."""
    found: dict[str, dict[str, Any]] = {}
    for row in tickets(b):
        shown = ticket(b, row["key"])
        for link in shown["links"]:
            assert link["remote_key"] not in found, f"two copies of {link['remote_key']}"
            found[link["remote_key"]] = shown
    return found


def bodies(entries: list[dict[str, Any]], element: str) -> list[str]:
    """The journal entries' text as a person reads it (our marker line removed)."""
    out = []
    for entry in entries:
        if entry["element"] == element:
            value = entry["value"]
            if value.startswith("[code]<!-- exalate "):
                value = value.split("\n", 1)[1]
            out.append(value)
    return out


async def test_the_seed_with_servicenow_on_the_public_side(
    instances: MakeInstance, servicenow: ServiceNow
) -> None:
    a = snow_side(instances, servicenow)
    b = instances("jira", public=False)
    a.start()
    a.serving()

    code = await initiate_in_the_console(Home(a.home))
    accepted = b.json("accept", "-", stdin=code + "\n")["connection"]
    cid = accepted["id"]
    assert (accepted["mode"], accepted["topology"]) == ("script", "public-private")
    b.start()
    b.serving()
    wait_for(lambda: a.show(cid)["status"] == "active", "snow Active")
    a.ok("triggers", "add", "--connection", cid, "priority=1")

    # An incident matching the trigger, with a comment and a work note made in ServiceNow.
    fire = servicenow.incident("Printer on fire", impact=1, urgency=1)
    servicenow.incident("Not urgent", impact=3, urgency=3)
    sys_id = fire["sys_id"]
    path = f"/api/now/v2/table/incident/{sys_id}"
    servicenow.api("PATCH", path, json={"comments": "We are on it"})
    servicenow.api("PATCH", path, json={"work_notes": "Vendor case 42"})

    def arrived() -> bool:
        found = copies(b)
        return fire["number"] in found and len(found[fire["number"]]["comments"]) >= 1

    wait_for(arrived, "the priority 1 incident and its comment on jira", SYNCED_WITHIN)
    copy = copies(b)[fire["number"]]
    assert list(copies(b)) == [fire["number"]]  # the priority 5 one does not match
    assert (copy["summary"], copy["priority"], copy["status"]) == ("Printer on fire", 1, "new")
    # The comment public; the work note stays home (it is internal on ServiceNow's side).
    assert [(c["body"], c["internal"]) for c in copy["comments"]] == [("We are on it", False)]

    # A comment and a state change on the private side reach ServiceNow once each.
    b.ok("tickets", "comment", copy["key"], "--body", "Replaced the toner")
    b.ok("tickets", "edit", copy["key"], "--status", "in_progress")

    def came_back() -> bool:
        return servicenow.record(fire["number"])["state"] == "2" and (
            "Replaced the toner" in bodies(servicenow.journal(sys_id), "comments")
        )

    wait_for(came_back, "the comment and the state in ServiceNow", SYNCED_WITHIN)

    # A 429 storm while more happens on both sides, then a kill -9 of each node.
    servicenow.storm(40, retry_after=1)
    storm = [servicenow.incident(f"Storm {n}", impact=1, urgency=1) for n in range(3)]
    b.ok("tickets", "comment", copy["key"], "--body", "During the storm")
    b.kill()
    servicenow.api("PATCH", path, json={"comments": "While jira was down"})
    b.start()
    b.serving()
    a.kill()
    b.ok("tickets", "edit", copy["key"], "--status", "on_hold")
    late = servicenow.incident("After the restart", impact=1, urgency=1)
    a.start()
    a.serving()

    wanted = {fire["number"], late["number"], *(s["number"] for s in storm)}

    def settled() -> bool:
        found = copies(b)
        if set(found) != wanted:
            return False
        here = [c["body"] for c in found[fire["number"]]["comments"]]
        there = bodies(servicenow.journal(sys_id), "comments")
        return (
            "While jira was down" in here
            and "During the storm" in there
            and servicenow.record(fire["number"])["state"] == "3"
        )

    wait_for(settled, "everything through the storm and the restarts", 60)
    assert servicenow.http.get("/emulator/calls").json()["faults_left"] == 0  # all 40 served
    time.sleep(3)  # a few more polls: nothing may come twice
    found = copies(b)
    assert set(found) == wanted
    # Each comment once on both sides (the storm and the kills may reorder the last two).
    every = sorted(
        ["We are on it", "Replaced the toner", "During the storm", "While jira was down"]
    )
    assert sorted(c["body"] for c in found[fire["number"]]["comments"]) == every
    assert sorted(bodies(servicenow.journal(sys_id), "comments")) == every
    assert bodies(servicenow.journal(sys_id), "work_notes") == ["Vendor case 42"]
    # ServiceNow holds only what people made there: the private side created nothing.
    assert len(servicenow.incidents()) == 2 + len(storm) + 1
    assert ticket(b, copy["key"])["status"] == "on_hold"
    for node in (a, b):  # the integration user's password is in no log
        assert PASSWORD not in node.log.read_text()


@pytest.mark.parametrize("auth", ["basic", "oauth"])
def test_a_refused_right_puts_the_connection_in_error_until_it_is_granted_again(
    instances: MakeInstance, servicenow: ServiceNow, auth: str
) -> None:
    """403 on the table: the connection shows Error naming the table and the right, the
    partner's comment waits; granted again, it resumes by itself and writes it once. The
    same over OAuth client credentials (a token per node, fetched as it starts)."""
    a = snow_side(instances, servicenow, auth)
    b = instances("jira", public=False)
    for side in (a, b):
        side.start()
        side.serving()
    cid, _ = connect(a, b, "public-private")
    a.ok("triggers", "add", "--connection", cid, "priority=1")
    fire = servicenow.incident("Printer on fire", impact=1, urgency=1)
    wait_for(lambda: fire["number"] in copies(b), "the incident on jira", SYNCED_WITHIN)
    copy = copies(b)[fire["number"]]

    def status() -> dict[str, Any]:
        [state] = a.json("sync", "status", "--connection", cid)["connections"]
        return dict(state)

    servicenow.http.post("/emulator/users", json={"name": "sync", "deny": [["incident", "read"]]})
    b.ok("tickets", "comment", copy["key"], "--body", "While refused")
    wait_for(lambda: status()["status"] == "error", "snow's connection in Error", SYNCED_WITHIN)
    said = status()["error"]
    assert "403" in said and "read on incident" in said and "grant" in said
    assert "Traceback" not in said

    servicenow.http.post("/emulator/users", json={"name": "sync", "allow": [["incident", "read"]]})
    wait_for(
        lambda: (
            status()["status"] == "active"
            and "While refused" in bodies(servicenow.journal(fire["sys_id"]), "comments")
        ),
        "snow resumed by itself and wrote the comment",
        60,
    )
    assert bodies(servicenow.journal(fire["sys_id"]), "comments") == ["While refused"]
    for node in (a, b):
        assert PASSWORD not in node.log.read_text()
        assert CLIENT_SECRET not in node.log.read_text()
