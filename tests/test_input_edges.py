"""Input the database cannot hold is refused with a clear 422, never a 500: a NUL character in any text, and an
instant that falls off the calendar once converted to UTC (year 1 at +19:04 is year 0 in UTC). Both were found
by the API fuzz (``bench.fuzz_api``)."""

import json
import re

import httpx
import pytest

from tests.factories import PASSWORD
from tests.objects import Objects, add_families

NUL_REQUESTS = [
    ("POST", "/auth/login", {"json": {"username": "admin1\x00", "password": "x"}}, "body"),
    ("POST", "/auth/token", {"data": {"username": "admin1\x00", "password": "x"}}, "body"),
    ("GET", "/children?q=%E5%BC%A0%00", {}, "query"),
    ("POST", "/children", {"json": {"name": "张\x00三", "sex": "male", "birth_date": "2016-03-01"}}, "body"),
    ("PATCH", "/children/{child_id}", {"json": {"notes": "奶奶\x00腿脚不便"}}, "body"),
    ("PATCH", "/children/{child_id}", {"json": {"notes\x00": "x"}}, "body"),
    ("GET", "/audit?action=%00", {}, "query"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "where"), NUL_REQUESTS)
async def test_text_with_a_nul_character_is_refused(method, path, kwargs, where, app, client, world, clock):
    await add_families(app, world, clock.now())
    path = path.format(child_id=world["family1_child"])
    r = await client.request(method, path, headers=world.headers("admin1"), **kwargs)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "nul_character" and error["fields"][0]["loc"] == [where]
    assert error["request_id"]


# A lone UTF-16 surrogate, escaped in JSON ("\ud800"), parses into a str that UTF-8 cannot encode: bound to a
# statement it would fail in the driver. Each is refused where the body is validated.
SURROGATE_BODIES = [
    ("admin1", "POST", "/auth/login", {"username": "admin1\ud800", "password": "x"}, ["body", "username"]),
    (
        "admin1", "POST", "/children", {"name": "张\udc00三", "sex": "male", "birth_date": "2016-03-01"},
        ["body", "name"],
    ),
    ("admin1", "PATCH", "/children/{child_id}", {"notes": "奶奶\ud83d腿脚不便"}, ["body", "notes"]),
    (
        "teacher1",
        "POST",
        "/incidents",
        {"child_id": "{child_id}", "category": "injury", "severity": "moderate", "summary": "扭伤\ud800",
         "location": "操场", "occurred_at": "2026-11-24T08:00:00+08:00", "first_actions": "冰敷"},
        ["body", "summary"],
    ),
    (
        "teacher1",
        "POST",
        "/children/{child_id}/care-records",
        {"kind": "talk", "occurred_on": "2026-11-24", "content": {"place": "教室", "topics": "想念\udc00妈妈",
         "mood": "low", "follow_up_needed": True}},
        ["body", "content", "topics"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("who", "method", "path", "body", "loc"), SURROGATE_BODIES)
async def test_text_with_a_lone_surrogate_is_refused(who, method, path, body, loc, app, client, world, clock):
    await add_families(app, world, clock.now())
    child = str(world["family1_child"])
    raw = json.dumps(body).replace("{child_id}", child)  # the surrogate escaped, as a client would send it
    assert re.search(r"\\ud[89a-f][0-9a-f]{2}", raw)
    headers = {**world.headers(who), "content-type": "application/json"}
    r = await client.request(method, path.format(child_id=child), content=raw.encode(), headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["fields"][0]["loc"] == loc and error["request_id"]


async def test_an_escaped_backslash_before_u0000_is_ordinary_text(app, client, world, clock):
    await add_families(app, world, clock.now())
    notes = "路径 C:\\u0000 是文字，不是空字符"
    r = await client.patch(
        f"/children/{world['family1_child']}", json={"notes": notes}, headers=world.headers("admin1")
    )
    assert r.status_code == 200, r.text
    assert r.json()["notes"] == notes


async def test_a_roster_file_with_nul_bytes_is_still_read_as_a_file(client, world):
    # Uploaded files are not text: an XLSX (a zip) is full of NUL bytes and must reach the roster parser.
    r = await client.get("/roster/template.xlsx", headers=world.headers("admin1"))
    assert r.status_code == 200 and b"\x00" in r.content
    files = {"file": ("花名册.xlsx", r.content, r.headers["content-type"])}
    r = await client.post(
        f"/schools/{world['school1']}/roster/import?dry_run=true", files=files, headers=world.headers("admin1")
    )
    assert r.status_code != 422 or r.json()["error"]["code"] != "nul_character", r.text
    assert r.status_code < 500


async def test_a_form_body_stays_readable_for_an_endpoint_that_reads_it_raw(client):
    # The provider callbacks check a signature over the raw body after the NUL check has looked at it.
    r = await client.post(
        "/inbound/sms", content=b"event=delivered&id=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "callback_signature_invalid", r.text
    r = await client.post(
        "/inbound/sms", content=b"event=%00", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "nul_character", r.text


async def test_a_nul_in_the_path_is_refused_before_the_route_is_looked_for(client, world):
    for path in ("/children/%00", "/no-such-place/%00"):
        r = await client.get(path, headers=world.headers("admin1"))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["fields"][0]["loc"] == ["path"]


async def test_an_encoded_percent_before_00_is_ordinary_text(client, world):
    # "%2500" decodes to the three characters "%00", not to a NUL.
    r = await client.get("/children?q=%2500", headers=world.headers("admin1"))
    assert r.status_code == 200, r.text


async def _in_chunks(body: bytes, size: int = 1000):
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_a_body_sent_in_chunks_is_checked_whole_and_reaches_the_endpoint_whole(live_url, world):
    # Over a real socket, chunked: the server hands the body over in many pieces. The NUL escape is in the
    # last one; without it, the endpoint reads every byte (the password after 30 kB of padding still matches).
    padding = "x" * 30_000
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=live_url) as c:
        login = {"padding": padding, "username": "admin1", "password": PASSWORD}
        r = await c.post("/auth/login", content=_in_chunks(json.dumps(login).encode()), headers=headers)
        assert r.status_code == 200, r.text
        refused = {"padding": padding, "username": "admin1\u0000", "password": PASSWORD}
        body = json.dumps(refused).encode()
        assert b"\\u0000" in body[-100:]
        r = await c.post("/auth/login", content=_in_chunks(body), headers=headers)
        assert r.status_code == 422 and r.json()["error"]["code"] == "nul_character", r.text
        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


OFF_THE_CALENDAR = ["0001-01-01T00:04:00+19:04", "9999-12-31T23:59:00-19:04"]


@pytest.mark.parametrize("instant", OFF_THE_CALENDAR)
@pytest.mark.parametrize("name", ["since", "until"])
async def test_an_audit_filter_off_the_calendar_is_refused(instant, name, client, world):
    r = await client.get("/audit", params={name: instant}, headers=world.headers("admin1"))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"][0]["loc"] == ["query", name]


@pytest.mark.parametrize("instant", OFF_THE_CALENDAR)
async def test_an_incident_or_a_call_off_the_calendar_is_refused(instant, app, client, world, clock):
    await add_families(app, world, clock.now())
    objects = Objects(app, client, world, clock.now())
    incident, party = await objects.get("incident_id"), await objects.get("party_id")
    report = {
        "child_id": str(world["family1_child"]),
        "category": "missing",
        "severity": "severe",
        "summary": "午休后未回教室",
        "location": "学校及周边",
        "occurred_at": instant,
        "first_actions": "分组寻找",
        "time_basis": "discovered",
    }
    r = await client.post("/incidents", json=report, headers=world.headers("teacher1"))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"][0]["loc"] == ["body", "occurred_at"]
    call = {"party_id": party, "contact_label": "父亲", "called_at": instant}
    r = await client.post(f"/incidents/{incident}/calls", json=call, headers=world.headers("teacher1"))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"][0]["loc"] == ["body", "called_at"]
