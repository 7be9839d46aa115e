"""`serve --demo`: the demo county has proxy parents and three months of care work, some kept up and some let
slip, chained so that the chain verifies; the main school's plan for the term is under way, with activities;
each school's enrolment is recorded; the bureau's statistics have figures; seeding twice adds nothing."""

import time
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from api.demo.care import care_history
from api.demo.seed import DEMO_PASSWORD, seed_demo
from api.models.care import CareChainHead, CareKind, CarePairing, CareRecord, CareSetting
from api.models.children import Child
from api.models.enrolment import SchoolEnrolment
from api.models.plan import Activity, ActivityParticipant, CarePlan, CarePlanItem, CarePlanMember


@pytest.fixture
async def demo(app, clock, system_session):
    ctx = await seed_demo(system_session, app.state.passwords, now=clock.now())
    await system_session.commit()
    return ctx


async def login(client, username):
    r = await client.post("/auth/login", json={"username": username, "password": DEMO_PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def counts(session):
    return {
        model.__tablename__: (await session.execute(select(func.count()).select_from(model))).scalar_one()
        for model in (
            CarePairing,
            CareRecord,
            CareSetting,
            CareChainHead,
            CarePlan,
            CarePlanItem,
            CarePlanMember,
            Activity,
            ActivityParticipant,
            SchoolEnrolment,
        )  # fmt: skip
    }


async def test_most_left_behind_children_have_a_proxy_parent_of_their_school(demo, system_session):
    left_behind = (await system_session.execute(select(Child).where(Child.is_left_behind))).scalars().all()
    pairings = (await system_session.execute(select(CarePairing))).scalars().all()
    by_child = {p.child_id: p for p in pairings}
    assert len(by_child) == len(pairings)  # one proxy parent each
    assert 0.7 * len(left_behind) <= len(pairings) < len(left_behind)  # most, not all: the unpaired list shows some
    schools = {c.id: c.school_id for c in left_behind}
    assert all(p.school_id == schools[p.child_id] and p.ended_on is None for p in pairings)
    assert {p.staff_id for p in pairings} >= {demo.accounts[t] for t in ("teacher-li", "teacher-wang", "teacher-zhao")}


async def test_the_teacher_has_work_done_and_work_overdue(client, demo):
    headers = await login(client, "teacher-li")
    todo = (await client.get("/care/todo", headers=headers)).json()
    overdue = [i for i in todo["items"] if i["status"] == "overdue"]
    assert overdue and {i["kind"] for i in overdue} >= {"talk", "guardian_contact"}
    today = todo["today"]
    r = await client.get(
        f"/schools/{demo.school_ids[0]}/care/status",
        params={"starts_on": today[:8] + "01", "ends_on": today, "group": "teacher"},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    [mine] = [row for row in r.json()["rows"] if row["key"] == str(demo.accounts["teacher-li"])]
    kinds = {k["kind"]: k for k in mine["kinds"]}
    assert kinds["talk"]["done"] > 0 and kinds["talk"]["overdue"] + kinds["guardian_contact"]["overdue"] > 0


async def test_the_care_chain_of_every_demo_school_verifies(client, demo, system_session):
    headers = await login(client, "shiqiao-admin")
    report = (await client.get(f"/schools/{demo.school_ids[0]}/care-records/verify", headers=headers)).json()
    links = (
        await system_session.execute(select(func.count()).where(CareRecord.school_id == demo.school_ids[0]))
    ).scalar_one()
    assert report["intact"] and report["first_break"] is None and report["links"] == report["head_seq"] == links > 0
    for school_id, admin in zip(demo.school_ids[1:], ("shiqiao2-admin", "liuhe-admin"), strict=True):
        r = await client.get(f"/schools/{school_id}/care-records/verify", headers=await login(client, admin))
        assert r.json()["intact"] and r.json()["links"] > 0


async def test_a_record_added_after_the_seed_extends_the_chain(client, demo, system_session):
    headers = await login(client, "teacher-li")
    child_id = (
        await system_session.execute(
            select(CarePairing.child_id).where(CarePairing.staff_id == demo.accounts["teacher-li"]).limit(1)
        )
    ).scalar_one()
    todo = (await client.get("/care/todo", headers=headers)).json()
    content = {"place": "教室", "topics": "聊天", "mood": "good"}
    body = {"kind": "talk", "occurred_on": todo["today"], "content": content}
    r = await client.post(f"/children/{child_id}/care-records", json=body, headers=headers)
    assert r.status_code == 201, r.text
    admin = await login(client, "shiqiao-admin")
    report = (await client.get(f"/schools/{demo.school_ids[0]}/care-records/verify", headers=admin)).json()
    assert report["intact"] and report["links"] == report["head_seq"]


async def test_the_bureau_sees_left_behind_pairing_and_talk_figures(client, demo):
    headers = await login(client, "bureau")
    r = await client.get("/stats/table", params={"level": "school", "period": "month"}, headers=headers)
    assert r.status_code == 200, r.text
    total = r.json()["total"]["cells"]
    assert total["left_behind"]["value"] > 0
    assert total["paired"]["value"] > 0
    talks = total["care_talk_rate"]
    assert talks["numerator"] > 0 and 0 < talks["value"] < 1  # talks done, and some children's overdue


async def test_seeding_twice_adds_nothing(app, clock, demo, system_session):
    before = await counts(system_session)
    heads = (await system_session.execute(select(CareChainHead.school_id, CareChainHead.head_hash))).all()
    started = time.perf_counter()
    await seed_demo(system_session, app.state.passwords, now=clock.now() + timedelta(days=3))
    await system_session.commit()
    assert time.perf_counter() - started < 5
    assert await counts(system_session) == before
    assert (await system_session.execute(select(CareChainHead.school_id, CareChainHead.head_hash))).all() == heads
    assert before["care_record"] > 1000 and before["care_plan"] == 1 and before["school_enrolment"] == 6


def test_a_child_whose_care_slipped_has_nothing_in_the_last_five_weeks():
    today = date(2026, 12, 1)
    kept = care_history(today, slipped=False, n=0)
    slipped = care_history(today, slipped=True, n=0)
    assert max(day for _, day in kept) == today and all(day <= today for _, day in kept)
    assert max(day for _, day in slipped) <= today - timedelta(days=35)
    assert {kind for kind, _ in kept} == {CareKind.talk, CareKind.home_visit, CareKind.guardian_contact,
                                          CareKind.parent_contact}  # fmt: skip


async def test_the_main_school_plan_is_under_way(client, demo):
    headers = await login(client, "shiqiao-admin")
    [summary] = (await client.get(f"/schools/{demo.school_ids[0]}/plans", headers=headers)).json()
    assert summary["template_key"] == "autumn_term"
    plan = (await client.get(f"/plans/{summary['id']}", headers=headers)).json()
    progress = plan["progress"]
    assert progress["done"] > 0 and progress["late"] >= 1 and progress["dropped"] == 1 and progress["planned"] > 0
    [dropped] = [i for i in plan["items"] if i["progress"] == "dropped"]
    assert dropped["dropped_reason"]
    linked = [i for i in plan["items"] if i["fulfilled_by"] is not None]
    assert linked and all(i["progress"] == "done" for i in linked)
    assert [m for m in plan["leading_group"] if m["position"] == "leader"]
    activities = (await client.get(f"/schools/{demo.school_ids[0]}/activities", headers=headers)).json()["data"]
    kinds = {a["kind"] for a in activities}
    assert {"contest", "lecture_law", "class_meeting"} <= kinds
    for linked_item in linked:
        view = (await client.get(f"/activities/{linked_item['fulfilled_by']['id']}", headers=headers)).json()
        assert view["plan_item_id"] == linked_item["id"] and view["children"] > 0 and view["participants"]


async def test_every_demo_school_has_its_enrolment_for_this_term(client, demo):
    for school_id, admin in zip(demo.school_ids, ("shiqiao-admin", "shiqiao2-admin", "liuhe-admin"), strict=True):
        r = await client.get(f"/schools/{school_id}/enrolment/2026-2027-1", headers=await login(client, admin))
        assert r.status_code == 200, r.text
        assert r.json()["pupils"] > 0 and r.json()["boarders"] > 0
