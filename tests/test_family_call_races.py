"""亲情电话 under concurrency, through a real server over sockets: 200 parents pressing the same slot at once get
exactly one success per booth and clear 409s, never a 500; one family firing many bookings at once stays within
its weekly quota; retries with one Idempotency-Key book once.
"""

import asyncio
import uuid
from datetime import date, datetime

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from api.db import scoped_session
from api.models.accounts import Account, LoginSession, Role
from api.models.children import Child, Sex
from api.models.family_calls import LIVE_STATUSES, FamilyCall, FamilyCallQuota
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.scoping import SYSTEM
from api.security import issue_access_token
from tests.factories import World
from tests.test_family_calls import TUE, family_world, sh

PARENTS = 200


async def many_families(app: FastAPI, world: World, now: datetime, n: int) -> list[tuple[str, str]]:
    """``n`` children of class 3(1), each with a father bound to the mini-program: [(child id, token)]."""
    out: list[tuple[str, str]] = []
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        rows = []
        for i in range(n):
            child = Child(
                school_id=world["school1"],
                class_id=world["class11"],
                name=f"学生{i}",
                sex=Sex.male,
                birth_date=date(2016, 1, 1),
            )
            account = Account(role=Role.family, display_name=f"家长{i}")
            rows.append((child, account))
            s.add_all([child, account])
        await s.flush()
        sessions = []
        for i, (child, account) in enumerate(rows):
            guardian = Guardian(name=f"家长{i}", phone=f"139{i:08d}", account_id=account.id)
            s.add(guardian)
            await s.flush()
            s.add(
                ChildGuardian(
                    child_id=child.id, guardian_id=guardian.id, role=GuardianRole.parent_away, relation="父亲"
                )
            )
            login = LoginSession(account_id=account.id, method="wechat", created_at=now)
            s.add(login)
            sessions.append((child, account, login))
        await s.flush()
        for child, account, login in sessions:
            token = issue_access_token(
                app.state.settings, account_id=account.id, session_id=login.id, role="family", now=now
            )
            out.append((str(child.id), token))
    return out


async def press_at_once(live_url: str, requests: list[tuple[str, dict, dict]]) -> list[httpx.Response]:
    """Send every request at the same moment, each on its own connection."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=live_url, timeout=120, limits=limits) as c:
        gate = asyncio.Event()

        async def one(path: str, body: dict, headers: dict) -> httpx.Response:
            await gate.wait()
            return await c.post(path, json=body, headers=headers)

        tasks = [asyncio.create_task(one(*r)) for r in requests]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks)


def tally(responses: list[httpx.Response]) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = {}
    for r in responses:
        key = (r.status_code, "" if r.status_code < 300 else r.json()["error"]["code"])
        out[key] = out.get(key, 0) + 1
    return out


async def live_calls(app: FastAPI, line: str) -> list[tuple[str, int]]:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        rows = await s.execute(
            sa.select(FamilyCall.child_id, FamilyCall.booth).where(
                FamilyCall.line_id == uuid.UUID(line),
                FamilyCall.status.in_(LIVE_STATUSES),  # type: ignore[attr-defined]
            )
        )
        return [(str(c), b) for c, b in rows]


async def test_200_parents_pressing_one_phone_slot_get_one_call_and_199_clear_refusals(
    client, world, app, clock, live_url
):
    phone, room = await family_world(client, world, app, clock)
    families = await many_families(app, world, clock.now(), PARENTS)
    start = sh(TUE, "12:20")
    requests = [
        ("/family-calls", {"child_id": child, "line_id": phone, "starts_at": start}, {"Authorization": f"Bearer {t}"})
        for child, t in families
    ]
    responses = await press_at_once(live_url, requests)
    assert tally(responses) == {(201, ""): 1, (409, "slot_taken"): PARENTS - 1}
    winner = next(r.json() for r in responses if r.status_code == 201)
    assert await live_calls(app, phone) == [(winner["child_id"], 1)]


async def test_200_parents_pressing_one_video_room_slot_fill_each_booth_once(client, world, app, clock, live_url):
    phone, room = await family_world(client, world, app, clock)
    families = await many_families(app, world, clock.now(), PARENTS)
    start = sh(TUE, "18:00")
    requests = [
        ("/family-calls", {"child_id": child, "line_id": room, "starts_at": start}, {"Authorization": f"Bearer {t}"})
        for child, t in families
    ]
    responses = await press_at_once(live_url, requests)
    assert tally(responses) == {(201, ""): 3, (409, "slot_taken"): PARENTS - 3}
    assert sorted(b for _, b in await live_calls(app, room)) == [1, 2, 3]
    # The slot is full for everyone now.
    slots = (
        await client.get(
            f"/call-lines/{room}/slots",
            params={"since": "2026-11-24", "until": "2026-11-24"},
            headers=world.headers("admin1"),
        )
    ).json()
    assert sh(TUE, "18:00") not in {s["starts_at"] for s in slots}
    assert all(s["free"] == 3 for s in slots)


async def test_one_family_booking_many_slots_at_once_stays_within_its_quota(client, world, app, clock, live_url):
    phone, room = await family_world(client, world, app, clock)  # quota: 2 calls a week
    child = str(world["family1_child"])
    headers = world.headers("family1")
    days = [TUE, date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)]
    starts = [sh(d, t) for d in days for t in ("12:00", "12:40", "18:00")]
    requests = [
        ("/family-calls", {"child_id": child, "line_id": line, "starts_at": s}, headers)
        for s in starts
        for line in (phone, room)
    ]
    responses = await press_at_once(live_url, requests)
    counts = tally(responses)
    assert counts[(201, "")] == 2 and (500, "internal_error") not in counts
    assert set(counts) <= {(201, ""), (409, "quota_reached"), (409, "child_busy")}
    assert len(await live_calls(app, phone)) + len(await live_calls(app, room)) == 2
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        assert (await s.execute(sa.select(FamilyCallQuota.count))).scalars().all() == [2]


async def test_retries_with_one_idempotency_key_at_once_book_one_call(client, world, app, clock, live_url):
    phone, room = await family_world(client, world, app, clock)
    headers = {**world.headers("family1"), "Idempotency-Key": uuid.uuid4().hex}
    body = {"child_id": str(world["family1_child"]), "line_id": room, "starts_at": sh(TUE, "12:40")}
    responses = await press_at_once(live_url, [("/family-calls", body, headers)] * 20)
    assert tally(responses) == {(201, ""): 20}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 19
    assert len(await live_calls(app, room)) == 1
