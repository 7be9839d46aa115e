"""亲情电话 under row-level security: a family sees its child's school's lines and which slots are taken, never
another family's booking; staff see their own school's calls and nothing of another school's. Checked through
the API and, for what the API could hide by accident, with raw SQL in the caller's scope (PostgreSQL decides)."""

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from api.db import scoped_session
from api.scoping import SYSTEM, Principal
from api.security import read_access_token
from api.services.auth import load_principal
from tests.test_family_call_races import many_families
from tests.test_family_calls import TUE, book, code, family_world, instant, sh

DAY = {"since": "2026-11-24", "until": "2026-11-24"}


async def principal_of(app, token: str) -> Principal:
    claims = read_access_token(app.state.settings, token, app.state.clock.now())
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        return await load_principal(s, claims)


async def count(app, principal: Principal, table: str) -> int:
    async with scoped_session(app.state.sessionmaker, principal) as s:
        return int((await s.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


CALL_TABLES = ("family_call", "family_call_event", "family_call_quota", "family_call_request")


async def test_a_family_sees_the_slot_taken_but_never_another_familys_booking(client, world, app, clock):
    phone, room = await family_world(client, world, app, clock)
    [(other_child, other_token)] = await many_families(app, world, clock.now(), 1)
    other = {"Authorization": f"Bearer {other_token}"}
    r = await book(client, world, "family1", phone, sh(TUE, "12:20"), key="first-call")
    assert r.status_code == 201, r.text
    call_id = r.json()["id"]

    # The other family of the same school: the lines of its child's school, the phone's 12:20 gone, the room's
    # 12:20 still free — what is taken, it learns; by whom, it does not.
    r = await client.get(f"/children/{other_child}/family-call-slots", params=DAY, headers=other)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {line["id"] for line in body["lines"]} == {phone, room}
    free = {(s["line_id"], s["starts_at"]) for s in body["slots"]}
    at_1220 = instant(TUE, "12:20").isoformat().replace("+00:00", "Z")
    assert (phone, at_1220) not in free and (room, at_1220) in free
    assert "刘小明" not in r.text and str(world["family1_child"]) not in r.text

    # The booking itself: not found, not listed, not cancellable, and the slot refuses a second booking.
    assert (await client.get(f"/family-calls/{call_id}", headers=other)).status_code == 404
    assert (await client.post(f"/family-calls/{call_id}/cancel", json={}, headers=other)).status_code == 404
    mine = (await client.get("/me/family-calls", headers=other)).json()
    assert mine == {"upcoming": [], "past": []}
    r = await client.post(
        "/family-calls", json={"child_id": other_child, "line_id": phone, "starts_at": sh(TUE, "12:20")}, headers=other
    )
    assert code(r) == (409, "slot_taken")

    # Raw SQL in each family's scope: PostgreSQL shows the booker its call, its events, its quota and its key …
    booker = await principal_of(app, world.tokens["family1"])
    assert [await count(app, booker, t) for t in CALL_TABLES] == [1, 1, 1, 1]
    # … and the other family none of them, though the lines, hours and settings of the school are there to read.
    stranger = await principal_of(app, other_token)
    assert [await count(app, stranger, t) for t in CALL_TABLES] == [0, 0, 0, 0]
    assert await count(app, stranger, "call_line") == 2 and await count(app, stranger, "call_line_window") > 0
    # The holds function gives times and booths, on the lines the caller can see, and no column naming anyone.
    async with scoped_session(app.state.sessionmaker, stranger) as s:
        holds = await s.execute(
            sa.text(
                "SELECT * FROM family_call_holds(ARRAY(SELECT id FROM call_line), now() - interval '1 year',"
                " now() + interval '1 year')"
            )  # fmt: skip
        )
        assert list(holds.keys()) == ["line_id", "starts_at", "blocked_until", "booth"]
        assert [(str(line), booth) for line, _, _, booth in holds] == [(phone, 1)]


async def test_a_family_cannot_write_a_call_for_a_child_not_its_own(client, world, app, clock):
    """Past the service, the database refuses it: the family policy's check is the child."""
    phone, _ = await family_world(client, world, app, clock)
    [(other_child, other_token)] = await many_families(app, world, clock.now(), 1)
    family1 = await principal_of(app, world.tokens["family1"])
    async with scoped_session(app.state.sessionmaker, family1) as s:
        with pytest.raises(DBAPIError, match="row-level security"):
            await s.execute(
                sa.text(
                    "INSERT INTO family_call (id, line_id, school_id, child_id, booked_by, booth, starts_at, ends_at,"
                    " blocked_until, status, created_at, updated_at) VALUES (:id, :line, :school, :child, :by, 1,"
                    " now() + interval '3 hours', now() + interval '195 minutes', now() + interval '200 minutes',"
                    " 'booked', now(), now())"
                ),
                {
                    "id": uuid.uuid4(),
                    "line": phone,
                    "school": world["school1"],
                    "child": other_child,
                    "by": world["family1"],
                },  # fmt: skip
            )
    r = await client.post(
        "/family-calls",
        json={"child_id": other_child, "line_id": phone, "starts_at": sh(TUE, "12:20")},
        headers=world.headers("family1"),
    )
    assert code(r) == (403, "not_this_childs_family")


async def test_another_schools_teacher_finds_nothing_of_this_schools_calls(client, world, app, clock):
    phone, room = await family_world(client, world, app, clock)
    r = await book(client, world, "family1", room, sh(TUE, "12:20"))
    assert r.status_code == 201, r.text
    call_id = r.json()["id"]
    other = world.headers("teacher2")
    for method, path, body in (
        ("GET", f"/family-calls/{call_id}", None),
        ("POST", f"/family-calls/{call_id}/cancel", {"reason": "线路检修"}),
        ("POST", f"/family-calls/{call_id}/confirm", {}),
        ("GET", f"/call-lines/{phone}", None),
        ("GET", f"/call-lines/{phone}/slots", None),
        ("GET", f"/schools/{world['school1']}/family-call-slots", None),
    ):
        r = await client.request(method, path, json=body, headers=other)
        assert r.status_code == 404, (path, r.text)
    assert (await client.get("/family-calls-today", headers=other)).json() == []
    # The other school's admin, who may read a school's call log, finds no such school.
    r = await client.get(f"/schools/{world['school1']}/family-calls", headers=world.headers("admin2"))
    assert r.status_code == 404, r.text
    teacher2 = await principal_of(app, world.tokens["teacher2"])
    assert [await count(app, teacher2, t) for t in (*CALL_TABLES[:3], "call_line", "call_line_window")] == [0] * 5
    # Its own school's staff see the call.
    assert (await client.get(f"/family-calls/{call_id}", headers=world.headers("teacher1"))).status_code == 200
    teacher1 = await principal_of(app, world.tokens["teacher1"])
    assert [await count(app, teacher1, t) for t in CALL_TABLES[:3]] == [1, 1, 1]
