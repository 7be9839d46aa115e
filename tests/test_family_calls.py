"""亲情电话 through the API: a school opens its family phone and video room, families book within the rules,
every refusal has its code, a call lives its life and keeps its history, and each reader sees its view.

The clock stands on Tuesday 2026-11-24, 10:00 in Asia/Shanghai. The races are in test_family_call_races.py.
"""

import uuid
from datetime import UTC, date, datetime, time, timedelta

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from api.clock import SHANGHAI, FrozenClock
from api.db import scoped_session
from api.models.accounts import Account, Role
from api.models.children import Child, Sex
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.notifications import OutboundMessage
from api.scoping import SYSTEM
from tests.factories import World, login_token
from tests.objects import add_families

TUE = date(2026, 11, 24)
EVERY_DAY = [{"weekday": d, "starts": "12:00", "ends": "13:30"} for d in range(7)] + [
    {"weekday": d, "starts": "18:00", "ends": "19:00"} for d in range(7)
]
SATURDAY_NIGHT = [{"weekday": 5, "starts": "22:00", "ends": "01:00"}]


def sh(day: date, hhmm: str) -> str:
    return datetime.combine(day, time.fromisoformat(hhmm), SHANGHAI).isoformat()


def instant(day: date, hhmm: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), SHANGHAI).astimezone(UTC)


async def open_lines(client: httpx.AsyncClient, world: World, *, room_capacity: int = 3) -> tuple[str, str]:
    """School 1's family phone (one booth, open at noon and at 18:00 daily, and Saturday night past midnight)
    and its video room (``room_capacity`` booths, same hours)."""
    ids = []
    for name, kind, capacity, extra in (
        ("亲情电话", "phone", 1, SATURDAY_NIGHT),
        ("视频室", "video", room_capacity, []),
    ):
        body = {
            "name": name,
            "kind": kind,
            "room": "留守儿童之家",
            "number": "0739-1234567" if kind == "phone" else None,
            "capacity": capacity,
            "slot_minutes": 15,
            "buffer_minutes": 5,
            "min_notice_minutes": 120,
            "horizon_days": 14,
            "windows": EVERY_DAY + extra,
        }
        r = await client.post(f"/schools/{world['school1']}/call-lines", json=body, headers=world.headers("admin1"))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids[0], ids[1]


async def family_world(client: httpx.AsyncClient, world: World, app: FastAPI, clock: FrozenClock) -> tuple[str, str]:
    await add_families(app, world, clock.now())
    return await open_lines(client, world)


async def book(
    client: httpx.AsyncClient, world: World, who: str, line: str, start: str, child: str | None = None, **extra: object
) -> httpx.Response:
    headers = world.headers(who)
    if key := extra.pop("key", None):
        headers["Idempotency-Key"] = str(key)
    body = {"child_id": child or str(world["family1_child"]), "line_id": line, "starts_at": start, **extra}
    return await client.post("/family-calls", json=body, headers=headers)


async def move(app: FastAPI, world: World, clock: FrozenClock, moment: datetime) -> None:
    """Set the clock and sign everyone in again (access tokens last 15 minutes)."""
    clock.set(moment)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        for who in list(world.tokens):
            world.tokens[who] = await login_token(s, app, await s.get_one(Account, world[who]), moment)


def code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


async def test_a_family_sees_the_free_slots_and_books_one(client, world, app, clock):
    phone, room = await family_world(client, world, app, clock)
    child = world["family1_child"]
    r = await client.get(
        f"/children/{child}/family-call-slots",
        params={"since": "2026-11-24", "until": "2026-11-24"},
        headers=world.headers("family1"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert {line["name"] for line in body["lines"]} == {"亲情电话", "视频室"}
    phone_slots = [s for s in body["slots"] if s["line_id"] == phone]
    # 10:00 now, two hours' notice: from 12:00 on; 12:00–13:30 has 12:00, 12:20, 12:40, 13:00; 18:00–19:00 three.
    assert [s["starts_at"] for s in phone_slots][:2] == [
        instant(TUE, "12:00").isoformat().replace("+00:00", "Z"),
        instant(TUE, "12:20").isoformat().replace("+00:00", "Z"),
    ]
    assert len(phone_slots) == 4 + 3 and {s["free"] for s in phone_slots} == {1}
    assert {s["free"] for s in body["slots"] if s["line_id"] == room} == {3}

    r = await book(client, world, "family1", room, sh(TUE, "12:20"))
    assert r.status_code == 201, r.text
    call = r.json()
    assert call["status"] == "booked" and call["booth"] == 1 and call["room"] == "留守儿童之家"
    assert call["guardian_id"] == str(world["family1_guardian"])
    assert [e["kind"] for e in call["events"]] == ["booked"]

    slots = (
        await client.get(
            f"/call-lines/{room}/slots",
            params={"since": "2026-11-24", "until": "2026-11-24"},
            headers=world.headers("admin1"),
        )
    ).json()
    assert {s["starts_at"][11:16]: s["free"] for s in slots}["04:20"] == 2  # 12:20 in Shanghai: one booth taken

    mine = (await client.get("/me/family-calls", headers=world.headers("family1"))).json()
    assert [c["id"] for c in mine["upcoming"]] == [call["id"]] and mine["past"] == []
    assert (await client.get("/me/family-calls", headers=world.headers("family2"))).json()["upcoming"] == []

    today = (await client.get("/family-calls-today", headers=world.headers("teacher1"))).json()
    assert [(t["child_name"], t["room"], t["class_name"]) for t in today] == [("刘小明", "留守儿童之家", "3年级1班")]
    assert (await client.get("/family-calls-today", headers=world.headers("teacher1b"))).json() == []


async def test_every_refusal_has_its_code(client, world, app, clock):
    phone, room = await family_world(client, world, app, clock)
    cases = [
        (sh(TUE, "11:00"), (422, "outside_hours")),
        (sh(TUE, "13:30"), (422, "outside_hours")),  # the close itself
        (sh(TUE, "12:10"), (422, "not_a_slot")),
        (sh(TUE, "12:00") if False else sh(TUE, "11:59"), (422, "outside_hours")),
        (sh(TUE + timedelta(days=15), "12:00"), (422, "too_far_ahead")),
    ]
    for start, expected in cases:
        assert code(await book(client, world, "family1", phone, start)) == expected, start
    clock.advance(timedelta(minutes=1))  # 10:01: 12:00 is less than two hours away
    assert code(await book(client, world, "family1", phone, sh(TUE, "12:00"))) == (422, "too_soon")
    assert code(await book(client, world, "family1", phone, sh(TUE, "12:20"), child=str(world["family2_child"]))) == (
        403,
        "not_this_childs_family",
    )
    assert code(await book(client, world, "family2", phone, sh(TUE, "12:20"))) == (403, "not_this_childs_family")
    # Staff book on a family's behalf, naming only a guardian of that child.
    r = await book(client, world, "admin1", phone, sh(TUE, "12:20"), guardian_id=str(world["family2_guardian"]))
    assert code(r) == (422, "not_this_childs_family")
    assert code(await book(client, world, "admin2", phone, sh(TUE, "12:20"))) == (404, "not_found")  # not its child

    assert (await book(client, world, "family1", phone, sh(TUE, "12:20"))).status_code == 201
    # The same child cannot be on the video room at the same time…
    assert code(await book(client, world, "family1", room, sh(TUE, "12:20"))) == (409, "child_busy")
    # …nor on another slot that overlaps (the room's 12:20 slot is 12:20–12:35; the phone's call is the same).
    # The phone's 12:20 slot is now taken for everyone else.
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        other = Child(
            school_id=world["school1"],
            class_id=world["class11"],
            name="王芳",
            sex=Sex.female,
            birth_date=date(2016, 5, 1),
        )
        s.add(other)
        await s.flush()
        other_id = str(other.id)
    assert code(await book(client, world, "teacher1", phone, sh(TUE, "12:20"), child=other_id)) == (409, "slot_taken")
    # Weekly quota (2 by default): a second call this week, then no third.
    assert (await book(client, world, "family1", phone, sh(TUE, "18:00"))).status_code == 201
    assert code(await book(client, world, "family1", phone, sh(TUE + timedelta(days=1), "12:00"))) == (
        409,
        "quota_reached",
    )
    # Next week (Monday 2026-11-30 in Shanghai) is a new week.
    assert (await book(client, world, "family1", phone, sh(date(2026, 11, 30), "12:00"))).status_code == 201

    r = await client.patch(f"/call-lines/{room}", json={"is_active": False}, headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    assert code(await book(client, world, "teacher1", room, sh(TUE, "18:00"), child=other_id)) == (409, "line_closed")


async def test_hours_past_midnight_overrides_and_festival_days(client, world, app, clock):
    phone, _ = await family_world(client, world, app, clock)
    sat, sun = date(2026, 11, 28), date(2026, 11, 29)
    # Saturday's 22:00–01:00 window: 00:40 on Sunday is one of its slots; Sunday night is not open.
    assert (await book(client, world, "family1", phone, sh(sun, "00:40"))).status_code == 201
    assert code(await book(client, world, "family1", phone, sh(sun, "23:00"))) == (422, "outside_hours")
    slots = (
        await client.get(
            f"/call-lines/{phone}/slots",
            params={"since": sun.isoformat(), "until": sun.isoformat()},
            headers=world.headers("admin1"),
        )
    ).json()
    # The Saturday window's slots after midnight are Sunday's (00:00, 00:20; 00:40 is booked).
    assert [s["starts_at"] for s in slots][:2] == [
        instant(sun, "00:00").isoformat().replace("+00:00", "Z"),
        instant(sun, "00:20").isoformat().replace("+00:00", "Z"),
    ]
    del sat

    thu = date(2026, 11, 26)
    r = await client.put(
        f"/call-lines/{phone}/overrides",
        json={"day": thu.isoformat(), "windows": [], "reason": "期中考试"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200, r.text
    assert code(await book(client, world, "teacher1", phone, sh(thu, "12:00"))) == (422, "outside_hours")
    r = await client.put(
        f"/call-lines/{phone}/overrides",
        json={"day": thu.isoformat(), "windows": [{"starts": "16:00", "ends": "16:30"}], "reason": "改到下午"},
        headers=world.headers("admin1"),
    )
    assert [o["windows"] for o in r.json()] == [[{"starts": "16:00", "ends": "16:30"}]]
    assert (await book(client, world, "teacher1", phone, sh(thu, "16:00"))).status_code == 201

    # The county bureau declares a festival hotline day for all its schools: extra hours on every line.
    fri = date(2026, 11, 27)
    festival = {"day": fri.isoformat(), "name": "感恩节亲情热线", "windows": [{"starts": "20:00", "ends": "21:00"}]}
    r = await client.post(f"/counties/{world['county']}/festival-days", json=festival, headers=world.headers("bureau"))
    assert r.status_code == 201, r.text
    assert (
        await client.post(f"/counties/{world['county']}/festival-days", json=festival, headers=world.headers("admin1"))
    ).status_code == 403
    assert (
        await client.post(
            f"/counties/{world['other_county']}/festival-days", json=festival, headers=world.headers("bureau")
        )
    ).status_code == 404
    # Quota is 2 a week and two are booked: raise it to book the festival slot.
    r = await client.put(
        f"/schools/{world['school1']}/family-call-settings", json={"weekly_quota": 5}, headers=world.headers("admin1")
    )
    assert r.status_code == 200, r.text
    assert (await book(client, world, "family1", phone, sh(fri, "20:00"))).status_code == 201
    assert code(await book(client, world, "family1", phone, sh(fri, "21:00"))) == (422, "outside_hours")


async def test_an_idempotency_key_books_once_and_refuses_another_body(client, world, app, clock):
    phone, room = await family_world(client, world, app, clock)
    key = uuid.uuid4().hex
    first = await book(client, world, "family1", room, sh(TUE, "12:00"), key=key)
    again = await book(client, world, "family1", room, sh(TUE, "12:00"), key=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert code(await book(client, world, "family1", room, sh(TUE, "12:20"), key=key)) == (
        422,
        "idempotency_key_reused",
    )
    # The key is the account's own: another account's identical key is another request.
    r = await book(client, world, "admin1", room, sh(TUE, "12:20"), key=key)
    assert r.status_code == 201 and r.json()["id"] != first.json()["id"]
    mine = (await client.get("/me/family-calls", headers=world.headers("family1"))).json()
    assert len(mine["upcoming"]) == 2  # one by the family, one booked for it by the school


async def test_a_call_lives_its_life_and_keeps_its_history(client, world, app, clock):
    phone, room = await family_world(client, world, app, clock)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:  # the head teacher's mobile, for the reminders
        (await s.get_one(Account, world["teacher1"])).phone = "13700137011"
    r = await client.put(
        f"/schools/{world['school1']}/family-call-settings",
        json={
            "weekly_quota": 5,
            "requires_confirmation": True,
            "family_cancel_cutoff_minutes": 120,
            "reminder_lead_minutes": [60],
        },
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200, r.text
    call = (await book(client, world, "family1", phone, sh(TUE, "12:00"))).json()
    cid = call["id"]
    assert code(await client.post(f"/family-calls/{cid}/confirm", headers=world.headers("family1"))) == (
        403,
        "role_forbidden",
    )
    r = await client.post(f"/family-calls/{cid}/confirm", headers=world.headers("teacher1"))
    assert r.json()["status"] == "confirmed"
    assert code(await client.post(f"/family-calls/{cid}/confirm", headers=world.headers("teacher1"))) == (
        409,
        "wrong_status",
    )
    done = {"duration_minutes": 12, "note": "聊了期中考试", "brought_by": "李老师"}
    assert code(await client.post(f"/family-calls/{cid}/complete", json=done, headers=world.headers("teacher1"))) == (
        409,
        "not_started",
    )
    last = (
        await client.get(f"/children/{world['family1_child']}/last-family-call", headers=world.headers("teacher1"))
    ).json()
    assert last["call_id"] is None
    await move(app, world, clock, instant(TUE, "12:16"))
    r = await client.post(f"/family-calls/{cid}/complete", json=done, headers=world.headers("teacher1"))
    assert r.status_code == 200 and r.json()["status"] == "completed" and r.json()["brought_by"] == "李老师"
    assert [e["kind"] for e in r.json()["events"]] == ["booked", "confirmed", "completed"]
    last = (
        await client.get(f"/children/{world['family1_child']}/last-family-call", headers=world.headers("family1"))
    ).json()
    assert last["call_id"] == cid and last["duration_minutes"] == 12

    # Missed by the child.
    await move(app, world, clock, instant(TUE, "10:00"))
    missed = (await book(client, world, "family1", phone, sh(TUE, "18:00"))).json()
    await move(app, world, clock, instant(TUE, "18:30"))
    r = await client.post(
        f"/family-calls/{missed['id']}/missed", json={"missed_by": "child"}, headers=world.headers("teacher1")
    )
    assert r.json()["missed_by"] == "child"

    # The family cancels up to two hours before, not after; the quota comes back.
    await move(app, world, clock, instant(TUE, "10:00"))
    wed = TUE + timedelta(days=1)
    later = (await book(client, world, "family1", phone, sh(wed, "12:00"))).json()
    await move(app, world, clock, instant(wed, "10:01"))
    assert code(
        await client.post(f"/family-calls/{later['id']}/cancel", json={}, headers=world.headers("family1"))
    ) == (409, "past_cutoff")
    assert code(
        await client.post(f"/family-calls/{later['id']}/cancel", json={}, headers=world.headers("teacher1"))
    ) == (422, "reason_required")
    r = await client.post(
        f"/family-calls/{later['id']}/cancel", json={"reason": "线路检修"}, headers=world.headers("teacher1")
    )
    assert r.json()["status"] == "cancelled" and r.json()["cancelled_by"] == "school"
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        messages = (
            await s.execute(
                sa.select(OutboundMessage.dedupe_key, OutboundMessage.status, OutboundMessage.body).where(
                    OutboundMessage.subject_id == uuid.UUID(later["id"])
                )
            )
        ).all()
    # The 60-minute reminders (family and head teacher) are cancelled unsent; the family is told at once.
    by_key = {key.split(":")[0] + ":" + key.split(":")[-1]: (status, body) for key, status, body in messages}
    assert by_key["call-reminder:family"][0] == by_key["call-reminder:teacher"][0] == "cancelled"
    assert by_key[f"call-cancelled:{later['id']}"][0] == "pending"
    assert "学校取消了您" in by_key[f"call-cancelled:{later['id']}"][1]
    assert all("刘小明" not in body for _, _, body in messages)

    # Rescheduling keeps the old call, closed and pointing at the new one.
    await move(app, world, clock, instant(TUE, "10:00"))
    first = (await book(client, world, "family1", room, sh(wed, "18:00"))).json()
    r = await client.post(
        f"/family-calls/{first['id']}/reschedule",
        json={"starts_at": sh(wed, "18:20")},
        headers=world.headers("family1"),
    )
    assert r.status_code == 201, r.text
    moved = r.json()
    assert moved["rescheduled_from"] == first["id"] and moved["starts_at"] != first["starts_at"]
    old = (await client.get(f"/family-calls/{first['id']}", headers=world.headers("family1"))).json()
    assert old["status"] == "cancelled" and old["rescheduled_to"] == moved["id"]
    assert [e["kind"] for e in old["events"]] == ["booked", "rescheduled"]
    # A refused new time changes nothing.
    assert code(
        await client.post(
            f"/family-calls/{moved['id']}/reschedule",
            json={"starts_at": sh(wed, "18:10")},
            headers=world.headers("family1"),
        )
    ) == (422, "not_a_slot")
    assert (await client.get(f"/family-calls/{moved['id']}", headers=world.headers("family1"))).json()["status"] == (
        "booked"
    )

    log = (
        await client.get(
            f"/schools/{world['school1']}/family-calls", params={"limit": 2}, headers=world.headers("admin1")
        )
    ).json()
    assert log["count"] == 5 and len(log["data"]) == 2
    assert (
        await client.get(f"/schools/{world['school1']}/family-calls", headers=world.headers("admin2"))
    ).status_code == 404
    assert (await client.get(f"/family-calls/{cid}", headers=world.headers("family2"))).status_code == 404
    assert (await client.get(f"/family-calls/{cid}", headers=world.headers("teacher2"))).status_code == 404


async def add_family(app: FastAPI, world: World, now: datetime, n: int) -> tuple[str, str]:
    """Another child of class 3(1) with a bound father: (child id, token)."""
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        child = Child(
            school_id=world["school1"],
            class_id=world["class11"],
            name=f"学生{n}",
            sex=Sex.male,
            birth_date=date(2016, 1, 1),
        )
        account = Account(role=Role.family, display_name=f"家长{n}")
        s.add_all([child, account])
        await s.flush()
        guardian = Guardian(name=f"家长{n}", phone=f"139{n:08d}", account_id=account.id)
        s.add(guardian)
        await s.flush()
        s.add(ChildGuardian(child_id=child.id, guardian_id=guardian.id, role=GuardianRole.parent_away, relation="父亲"))
        await s.flush()
        return str(child.id), await login_token(s, app, account, now)


async def test_the_demo_school_has_a_family_phone_a_video_room_and_calls_booked(app, system_session):
    from api.demo.context import demo_id
    from api.demo.seed import seed_demo
    from api.models.family_calls import CallLine, FamilyCall

    await seed_demo(system_session, app.state.passwords)
    await system_session.commit()
    lines = (await system_session.execute(sa.select(CallLine.name, CallLine.capacity))).all()
    assert sorted(lines) == [("亲情电话", 1), ("亲情视频室", 3)]
    calls = (await system_session.execute(sa.select(FamilyCall.child_id, FamilyCall.status))).all()
    assert len(calls) == 3 and len({c for c, _ in calls}) == 3 and {s for _, s in calls} == {"booked"}
    await seed_demo(system_session, app.state.passwords)  # again: nothing more
    await system_session.commit()
    assert (await system_session.execute(sa.select(sa.func.count()).select_from(FamilyCall))).scalar_one() == 3
    for key in ("family-phone", "video-room"):
        assert await system_session.get(CallLine, demo_id(f"call-line-{key}")) is not None
