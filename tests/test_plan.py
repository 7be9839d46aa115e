"""工作计划 and 关爱活动 through the API: a plan from the typical plan, its progress across month ends in
Asia/Shanghai, activities that fulfil its items, 三个优先, a child's activities, scope and audit."""

import asyncio
from datetime import UTC, date, datetime

import httpx
import pytest
from sqlalchemy import select

from api.db import scoped_session
from api.models.accounts import Account
from api.models.audit import AuditEntry
from api.models.children import Child, Sex
from api.models.plan import CarePlan, PlanPeriod
from api.scoping import SYSTEM
from tests.factories import login_token
from tests.held import rows_held_open, waiting_on_locks
from tests.objects import add_families

AUTUMN = {"name": "2026年秋季学期关爱留守儿童工作计划", "starts_on": "2026-09-01", "ends_on": "2027-01-20"}


async def make_children(app, world, school="school1", klass="class11", left_behind=(True, True, False)):
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        children = [
            Child(
                school_id=world[school],
                class_id=world[klass],
                name=f"学生{i}",
                sex=Sex.female if i % 2 else Sex.male,
                birth_date=date(2016, 5, 1 + i),
                is_left_behind=lb,
            )
            for i, lb in enumerate(left_behind)
        ]
        s.add_all(children)
        await s.flush()
        return [str(c.id) for c in children]


async def new_plan(client, world, who="admin1", school="school1", **overrides):
    body = {**AUTUMN, "template": "autumn_term", **overrides}
    r = await client.post(f"/schools/{world[school]}/plans", json=body, headers=world.headers(who))
    assert r.status_code == 201, r.text
    return r.json()


def activity_body(child_ids, **overrides):
    body = {
        "kind": "lecture_law",
        "title": "留守儿童法制教育讲座",
        "held_on": "2026-11-20",
        "place": "学校多功能室",
        "organiser": "guan_gong_wei",
        "organiser_name": "县关工委",
        "child_ids": child_ids,
        "adult_count": 2,
        "adult_names": "张法官, 李老师",
        "outcome": "学生了解了基本的法律常识",
    }
    body.update(overrides)
    return body


async def new_activity(client, world, body, who="admin1", school="school1"):
    return await client.post(f"/schools/{world[school]}/activities", json=body, headers=world.headers(who))


def item_titled(plan, title):
    return next(i for i in plan["items"] if i["title"] == title)


# ---- the plan ------------------------------------------------------------------------------------------


async def test_a_school_starts_from_the_typical_autumn_plan_and_sees_what_is_late(client, world):
    # The clock: 2026-11-24 10:00 in Shanghai.
    leading_group = [
        {"position": "leader", "account_id": str(world["admin1"]), "duty": "全面负责关爱留守儿童工作"},
        {"position": "member", "account_id": str(world["teacher1"]), "duty": "三年级留守儿童档案与谈心"},
        {"position": "member", "name": "王主任", "affiliation": "白竹村委会", "duty": "联系在外务工家长"},
    ]
    plan = await new_plan(client, world, leading_group=leading_group)
    assert plan["template_key"] == "autumn_term" and "建档率达100%" in plan["goals"]
    assert [m["position_label"] for m in plan["leading_group"]] == ["组长", "成员", "成员"]
    assert plan["leading_group"][0]["name"] == "石桥校长"  # the account's name
    months = [i["month"] for i in plan["items"]]
    assert months == sorted(months) and set(months) == {"2026-09", "2026-10", "2026-11", "2026-12", "2027-01"}
    phone = item_titled(plan, "开通留守儿童亲情电话")
    assert phone["source"] == "000 篇6 九月" and phone["kind"] == "family_phone" and phone["owner_name"]
    # September and October have ended in Shanghai; November has not.
    late = {i["month"] for i in plan["items"] if i["progress"] == "late"}
    assert late == {"2026-09", "2026-10"}
    counts = plan["progress"]
    assert counts["late"] == sum(1 for i in plan["items"] if i["month"] in ("2026-09", "2026-10"))
    assert counts["planned"] + counts["late"] == len(plan["items"]) and counts["done"] == 0


@pytest.mark.parametrize(
    ("now", "november_late"),
    [
        (datetime(2026, 11, 30, 15, 59, tzinfo=UTC), False),  # 23:59 on the 30th in Shanghai
        (datetime(2026, 11, 30, 16, 0, tzinfo=UTC), True),  # 00:00 on 1 December in Shanghai
    ],
)
async def test_november_items_turn_late_at_midnight_shanghai_time(client, world, app, clock, now, november_late):
    plan = await new_plan(client, world)
    clock.set(now)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:  # a token of the new day
        token = await login_token(s, app, await s.get_one(Account, world["teacher1"]), now)
    r = await client.get(f"/plans/{plan['id']}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    november = [i for i in r.json()["items"] if i["month"] == "2026-11"]
    assert november and all((i["progress"] == "late") is november_late for i in november)


async def test_plans_of_a_school_never_overlap_and_a_template_must_fit(client, world):
    await new_plan(client, world)
    r = await client.post(
        f"/schools/{world['school1']}/plans",
        json={**AUTUMN, "name": "另一个计划", "starts_on": "2027-01-01", "ends_on": "2027-03-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "plan_overlaps"
    r = await client.post(
        f"/schools/{world['school1']}/plans",
        json={"name": "春季", "starts_on": "2027-09-01", "ends_on": "2027-12-31", "template": "spring_term"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "plan_template_does_not_fit"
    # Another school may have its plan for the same term.
    await new_plan(client, world, who="admin2", school="school2")


async def test_the_leading_group_has_one_leader_and_staff_of_the_school(client, world):
    plan = await new_plan(client, world, leading_group=[{"position": "leader", "account_id": str(world["admin1"])}])
    url = f"/plans/{plan['id']}/members"
    r = await client.post(url, json={"position": "leader", "name": "刘副校长"}, headers=world.headers("admin1"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "plan_one_leader"
    r = await client.post(url, json={"account_id": str(world["teacher2"])}, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "plan_account_not_staff"
    r = await client.post(url, json={"position": "deputy", "name": "刘副校长"}, headers=world.headers("admin1"))
    assert r.status_code == 201
    r = await client.delete(f"/plan-members/{r.json()['id']}", headers=world.headers("admin1"))
    assert r.status_code == 204


async def test_a_school_edits_its_plan_items(client, world):
    plan = await new_plan(client, world)
    url = f"/plans/{plan['id']}/items"
    body = {"month": "2027-02", "title": "寒假家访", "kind": "home_visit_talk"}
    r = await client.post(url, json=body, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "plan_item_month_outside_plan"
    body.update(month="2026-12", owner_account_id=str(world["teacher1"]))
    r = await client.post(url, json=body, headers=world.headers("admin1"))
    assert r.status_code == 201 and r.json()["progress"] == "planned"
    item = r.json()
    r = await client.patch(f"/plan-items/{item['id']}", json={"month": "2027-01"}, headers=world.headers("admin1"))
    assert r.status_code == 200 and r.json()["month"] == "2027-01"
    # A planned item may go; done work stays.
    tug = item_titled(plan, "举行留守儿童拔河比赛")
    r = await client.delete(f"/plan-items/{tug['id']}", headers=world.headers("admin1"))
    assert r.status_code == 204
    # The plan's dates cannot leave an item outside.
    r = await client.patch(f"/plans/{plan['id']}", json={"starts_on": "2026-10-01"}, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "plan_items_outside_dates"


async def test_progress_by_note_by_reason_and_by_the_items_owner(client, world):
    plan = await new_plan(client, world)
    update = item_titled(plan, "留守儿童信息更新，建立本学期留守儿童信息管理库")
    url = f"/plan-items/{update['id']}/progress"
    r = await client.post(url, json={"state": "done"}, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "plan_item_done_needs_note"
    r = await client.post(
        url, json={"state": "done", "note": "全校122名留守儿童档案已更新"}, headers=world.headers("admin1")
    )
    assert r.status_code == 200 and r.json()["progress"] == "done" and r.json()["done_on"] == "2026-11-24"

    tug = item_titled(plan, "举行留守儿童拔河比赛")
    r = await client.post(
        f"/plan-items/{tug['id']}/progress", json={"state": "dropped"}, headers=world.headers("admin1")
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "plan_item_drop_needs_reason"
    r = await client.post(
        f"/plan-items/{tug['id']}/progress",
        json={"state": "dropped", "reason": "操场施工"},
        headers=world.headers("admin1"),
    )
    assert r.json()["progress"] == "dropped" and r.json()["dropped_reason"] == "操场施工"

    # A teacher records the progress of the item they own — and of no other.
    talks = item_titled(plan, "期中家访")
    r = await client.patch(
        f"/plan-items/{talks['id']}", json={"owner_account_id": str(world["teacher1"])}, headers=world.headers("admin1")
    )
    assert r.status_code == 200
    done = {"state": "done", "note": "三年级1班期中家访完成"}
    r = await client.post(f"/plan-items/{talks['id']}/progress", json=done, headers=world.headers("teacher1b"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "plan_item_not_yours"
    r = await client.post(f"/plan-items/{talks['id']}/progress", json=done, headers=world.headers("teacher1"))
    assert r.status_code == 200 and r.json()["progress"] == "done"
    # Teachers cannot edit the item itself.
    r = await client.patch(f"/plan-items/{talks['id']}", json={"title": "x"}, headers=world.headers("teacher1"))
    assert r.status_code == 403


# ---- activities ----------------------------------------------------------------------------------------


async def test_an_activity_fulfils_its_plan_item_and_unlinking_makes_it_late_again(client, world, app):
    kids = await make_children(app, world)
    plan = await new_plan(client, world)
    lecture = item_titled(plan, "开展留守儿童法制教育讲座")
    r = await new_activity(client, world, activity_body(kids, plan_item_id=lecture["id"]))
    assert r.status_code == 201, r.text
    activity = r.json()
    assert activity["children"] == 3 and activity["left_behind_children"] == 2
    assert activity["plan_item_id"] == lecture["id"] and activity["organiser_label"] == "关工委"
    plan = (await client.get(f"/plans/{plan['id']}", headers=world.headers("admin1"))).json()
    item = item_titled(plan, "开展留守儿童法制教育讲座")
    assert item["progress"] == "done" and item["done_on"] == "2026-11-20"
    assert item["fulfilled_by"] == {"kind": "activity", "id": activity["id"]}

    # One activity per item.
    r = await new_activity(client, world, activity_body(kids[:1], plan_item_id=lecture["id"]))
    assert r.status_code == 409 and r.json()["error"]["code"] == "plan_item_already_fulfilled"
    # The item's progress changes only through its activity.
    r = await client.post(
        f"/plan-items/{lecture['id']}/progress", json={"state": "planned"}, headers=world.headers("admin1")
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "plan_item_linked"

    # Re-link to an October item: the November lecture is planned again, October's is done.
    tug = item_titled(plan, "举行留守儿童拔河比赛")
    r = await client.patch(
        f"/activities/{activity['id']}", json={"plan_item_id": tug["id"]}, headers=world.headers("admin1")
    )
    assert r.status_code == 200
    plan = (await client.get(f"/plans/{plan['id']}", headers=world.headers("admin1"))).json()
    assert item_titled(plan, "开展留守儿童法制教育讲座")["progress"] == "planned"
    assert item_titled(plan, "举行留守儿童拔河比赛")["progress"] == "done"
    # Unlinked: October has passed, so its item is late again.
    r = await client.patch(
        f"/activities/{activity['id']}", json={"plan_item_id": None}, headers=world.headers("admin1")
    )
    plan = (await client.get(f"/plans/{plan['id']}", headers=world.headers("admin1"))).json()
    assert item_titled(plan, "举行留守儿童拔河比赛")["progress"] == "late"


async def test_an_item_marked_done_by_an_existing_activity(client, world, app):
    kids = await make_children(app, world)
    plan = await new_plan(client, world)
    activity = (await new_activity(client, world, activity_body(kids, kind="class_meeting", title="主题班会"))).json()
    item = item_titled(plan, "留守儿童主题班会活动")
    link = {"state": "done", "fulfilled_by": {"kind": "activity", "id": activity["id"]}}
    r = await client.post(f"/plan-items/{item['id']}/progress", json=link, headers=world.headers("admin1"))
    assert r.status_code == 200 and r.json()["fulfilled_by"]["id"] == activity["id"]
    r = await client.get(f"/activities/{activity['id']}", headers=world.headers("admin1"))
    assert r.json()["plan_item_id"] == item["id"]


async def test_activity_validation(client, world, app):
    kids = await make_children(app, world)
    other = await make_children(app, world, school="school2", klass="class21", left_behind=(True,))
    r = await new_activity(client, world, activity_body(kids, held_on="2026-11-25"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "activity_in_future"
    r = await new_activity(client, world, activity_body([kids[0], other[0]]))
    error = r.json()["error"]
    assert r.status_code == 422 and error["code"] == "activity_child_not_in_school"
    assert error["fields"][0]["loc"] == ["child_ids", 1]
    r = await new_activity(client, world, activity_body([kids[0], kids[1], kids[0]]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "activity_duplicate_child"
    r = await new_activity(client, world, activity_body(kids, class_id=str(world["class21"])))
    assert r.status_code == 422 and r.json()["error"]["code"] == "activity_class_not_in_school"
    # Today (in Shanghai) is fine, and a child who is not left-behind takes part too.
    r = await new_activity(client, world, activity_body(kids, held_on="2026-11-24"))
    assert r.status_code == 201


async def test_three_priorities_share_of_places_per_school_and_term(client, world, app):
    kids = await make_children(app, world, left_behind=(True, True, True, False))
    kids2 = await make_children(app, world, school="school2", klass="class21", left_behind=(False, True))
    assert (await new_activity(client, world, activity_body(kids))).status_code == 201  # 3 of 4
    assert (await new_activity(client, world, activity_body(kids[2:], held_on="2026-10-09"))).status_code == 201
    # Before the term: not counted.
    assert (await new_activity(client, world, activity_body(kids[:1], held_on="2026-06-01"))).status_code == 201
    r = await new_activity(client, world, activity_body(kids2), who="admin2", school="school2")
    assert r.status_code == 201
    term = {"starts_on": "2026-09-01", "ends_on": "2027-01-20"}
    r = await client.get("/activity-priority", params=term, headers=world.headers("admin1"))
    assert r.status_code == 200
    assert [
        (s["school_name"], s["activities"], s["places"], s["left_behind_places"], s["share"]) for s in r.json()
    ] == [("石桥镇中心小学", 2, 6, 4, 0.6667)]
    r = await client.get("/activity-priority", params=term, headers=world.headers("bureau"))
    by_school = {s["school_name"]: (s["places"], s["left_behind_places"], s["share"]) for s in r.json()}
    assert by_school == {"石桥镇中心小学": (6, 4, 0.6667), "柳河乡中心小学": (2, 1, 0.5)}
    r = await client.get("/activity-priority", params=term, headers=world.headers("other_bureau"))
    assert [(s["school_name"], s["places"], s["share"]) for s in r.json()] == [("白沙镇完小", 0, None)]


async def test_a_childs_activities_newest_first_paged_and_audited(client, world, app, system_session):
    kids = await make_children(app, world)
    for day in ("2026-09-10", "2026-10-15", "2026-11-20"):
        r = await new_activity(client, world, activity_body(kids[:1], held_on=day, title=f"活动{day}"))
        assert r.status_code == 201
    r = await client.get(f"/children/{kids[0]}/activities", params={"limit": 2}, headers=world.headers("teacher1"))
    assert r.status_code == 200
    page = r.json()
    assert page["count"] == 3 and [a["held_on"] for a in page["data"]] == ["2026-11-20", "2026-10-15"]
    assert page["data"][0]["left_behind"] is True
    r = await client.get(f"/children/{kids[0]}/activities", headers=world.headers("teacher2"))
    assert r.status_code == 404
    reads = (
        (
            await system_session.execute(
                select(AuditEntry).where(
                    AuditEntry.action == "child.activities.read", AuditEntry.resource_id == kids[0]
                )
            )
        )
        .scalars()
        .all()
    )
    assert [e.account_id for e in reads] == [world["teacher1"]]


# ---- scope and audit -----------------------------------------------------------------------------------


async def test_another_school_sees_nothing_and_the_bureau_reads_but_cannot_write(client, world, app, clock):
    kids = await make_children(app, world)
    plan = await new_plan(client, world)
    activity = (await new_activity(client, world, activity_body(kids))).json()
    item = plan["items"][0]
    for who in ("admin2", "teacher2", "official2", "other_bureau"):
        for url in (f"/plans/{plan['id']}", f"/activities/{activity['id']}"):
            r = await client.get(url, headers=world.headers(who))
            assert r.status_code == 404, (who, url, r.text)
    r = await client.patch(f"/plans/{plan['id']}", json={"goals": "x"}, headers=world.headers("admin2"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "plan_not_found"
    r = await client.post(
        f"/schools/{world['school1']}/activities", json=activity_body([]), headers=world.headers("admin2")
    )
    assert r.status_code == 404
    for who in ("bureau", "official1", "teacher1b"):
        assert (await client.get(f"/plans/{plan['id']}", headers=world.headers(who))).status_code == 200
        assert (await client.get(f"/activities/{activity['id']}", headers=world.headers(who))).status_code == 200
        r = await client.get(f"/schools/{world['school1']}/activities", headers=world.headers(who))
        assert r.json()["count"] == 1
    for who in ("bureau", "official1"):
        r = await client.patch(f"/plans/{plan['id']}", json={"goals": "x"}, headers=world.headers(who))
        assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden"
        r = await client.post(
            f"/plan-items/{item['id']}/progress", json={"state": "dropped", "reason": "x"}, headers=world.headers(who)
        )
        assert r.status_code == 403
    await add_families(app, world, clock.now())
    for who in ("family1", "family2"):  # families see none of it, not even their child's activities
        for url in (f"/plans/{plan['id']}", f"/activities/{activity['id']}", f"/children/{kids[0]}/activities"):
            r = await client.get(url, headers=world.headers(who))
            assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden"


async def test_every_write_is_audited(client, world, app, system_session):
    kids = await make_children(app, world)
    plan = await new_plan(client, world, leading_group=[{"position": "leader", "account_id": str(world["admin1"])}])
    item = plan["items"][0]
    await client.post(
        f"/plan-items/{item['id']}/progress",
        json={"state": "dropped", "reason": "合并到十月"},
        headers=world.headers("admin1"),
    )
    activity = (await new_activity(client, world, activity_body(kids))).json()
    entries = (await system_session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
    actions = [(e.action, e.account_id, e.school_id) for e in entries if e.resource_type != "login_session"]
    assert ("care_plan.create", world["admin1"], world["school1"]) in actions
    assert ("care_plan_member.create", world["admin1"], world["school1"]) in actions
    assert sum(1 for a in actions if a[0] == "care_plan_item.create") == len(plan["items"])
    assert ("activity.create", world["admin1"], world["school1"]) in actions
    assert sum(1 for a in actions if a[0] == "activity_participant.create") == len(kids)
    dropped = next(e for e in entries if e.action == "care_plan_item.update" and e.resource_id == item["id"])
    assert dropped.changes["state"] == {"old": "planned", "new": "dropped"}
    assert any(e.resource_id == activity["id"] for e in entries if e.action == "activity.create")


# ---- races through a real server -----------------------------------------------------------------------


async def test_two_activities_racing_for_one_plan_item_one_wins(live_url, client, world, app):
    kids = await make_children(app, world)
    plan = await new_plan(client, world)
    item = item_titled(plan, "开展留守儿童法制教育讲座")
    url = f"{live_url}/schools/{world['school1']}/activities"
    headers = world.headers("admin1")
    async with httpx.AsyncClient(timeout=30) as a, httpx.AsyncClient(timeout=30) as b:
        answers = await asyncio.gather(
            *(
                c.post(url, json=activity_body(kids, plan_item_id=item["id"], title=f"讲座{i}"), headers=headers)
                for i, c in enumerate((a, b, a, b))
            )
        )
    codes = sorted(r.status_code for r in answers)
    assert codes == [201, 409, 409, 409], [r.text for r in answers]
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {"plan_item_already_fulfilled"}
    winner = next(r.json() for r in answers if r.status_code == 201)
    plan = (await client.get(f"/plans/{plan['id']}", headers=headers)).json()
    assert item_titled(plan, "开展留守儿童法制教育讲座")["fulfilled_by"] == {"kind": "activity", "id": winner["id"]}


async def test_two_overlapping_plans_created_at_once_one_is_refused(live_url, client, world):
    url = f"{live_url}/schools/{world['school1']}/plans"
    headers = world.headers("admin1")
    bodies = [{**AUTUMN, "name": f"计划{i}", "template": "autumn_term"} for i in range(3)]
    async with httpx.AsyncClient(timeout=30) as a, httpx.AsyncClient(timeout=30) as b:
        answers = await asyncio.gather(
            *(c.post(url, json=body, headers=headers) for c, body in zip((a, b, a), bodies, strict=True))
        )
    assert sorted(r.status_code for r in answers) == [201, 409, 409], [r.text for r in answers]
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {"plan_overlaps"}
    r = await client.get(f"/schools/{world['school1']}/plans", headers=headers)
    assert len(r.json()) == 1


def held_plan(world, starts_on: date, ends_on: date) -> CarePlan:
    return CarePlan(
        school_id=world["school1"],
        name="另一位管理员正在保存",
        period=PlanPeriod.term,
        starts_on=starts_on,
        ends_on=ends_on,
    )


async def test_plans_whose_checks_meet_in_the_index_one_is_saved_and_one_refused(live_url, app, client, world):
    """The two saves check the constraint at the same instant (see tests/held.py): a 201 and a 409, never a
    deadlock's 503."""
    url = f"{live_url}/schools/{world['school1']}/plans"
    headers = world.headers("admin1")
    async with httpx.AsyncClient(timeout=30) as a, httpx.AsyncClient(timeout=30) as b:
        async with rows_held_open(app, [held_plan(world, date(2026, 10, 1), date(2026, 10, 31))]):
            answers = asyncio.gather(
                *(c.post(url, json={**AUTUMN, "name": f"计划{i}"}, headers=headers) for i, c in enumerate((a, b)))
            )
            await waiting_on_locks(app, 2)
        answers = await answers
    assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
    assert next(r for r in answers if r.status_code == 409).json()["error"]["code"] == "plan_overlaps"


async def test_two_plans_moved_onto_each_other_at_once_one_move_is_refused(live_url, app, client, world):
    """Each move alone fits (to 25 October; from 20 October); made together they overlap."""
    headers = world.headers("admin1")
    first = await new_plan(client, world, template=None, starts_on="2026-09-01", ends_on="2026-10-10")
    second = await new_plan(client, world, template=None, name="第二个", starts_on="2026-11-01", ends_on="2026-12-31")
    async with httpx.AsyncClient(timeout=30) as a, httpx.AsyncClient(timeout=30) as b:
        async with rows_held_open(app, [held_plan(world, date(2026, 10, 21), date(2026, 10, 22))]):
            answers = asyncio.gather(
                a.patch(f"{live_url}/plans/{first['id']}", json={"ends_on": "2026-10-25"}, headers=headers),
                b.patch(f"{live_url}/plans/{second['id']}", json={"starts_on": "2026-10-20"}, headers=headers),
            )
            await waiting_on_locks(app, 2)
        answers = await answers
    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
    assert next(r for r in answers if r.status_code == 409).json()["error"]["code"] == "plan_overlaps"


async def test_two_moves_each_onto_the_other_plan_are_both_refused(live_url, client, world):
    """Each move overlaps the other plan where it stands: both are refused, with the reason, every time (the
    old rows being replaced are what the checks meet, so without a queue this deadlocked on every try)."""
    headers = world.headers("admin1")
    first = await new_plan(client, world, template=None, starts_on="2026-09-01", ends_on="2026-10-31")
    second = await new_plan(client, world, template=None, name="第二个", starts_on="2026-11-01", ends_on="2026-12-31")
    async with httpx.AsyncClient(timeout=30) as a, httpx.AsyncClient(timeout=30) as b:
        answers = await asyncio.gather(
            a.patch(f"{live_url}/plans/{first['id']}", json={"ends_on": "2026-11-15"}, headers=headers),
            b.patch(f"{live_url}/plans/{second['id']}", json={"starts_on": "2026-10-15"}, headers=headers),
        )
    assert [r.status_code for r in answers] == [409, 409], [r.text for r in answers]
    assert {r.json()["error"]["code"] for r in answers} == {"plan_overlaps"}
    plans = (await client.get(f"/schools/{world['school1']}/plans", headers=headers)).json()
    assert sorted((p["starts_on"], p["ends_on"]) for p in plans) == [
        ("2026-09-01", "2026-10-31"),
        ("2026-11-01", "2026-12-31"),
    ]


async def test_correcting_an_activity_the_list_of_children_and_removing_it(client, world, app, system_session):
    kids = await make_children(app, world, left_behind=(True, False, True))
    plan = await new_plan(client, world)
    item = item_titled(plan, "开展留守儿童法制教育讲座")
    activity = (await new_activity(client, world, activity_body(kids[:2], plan_item_id=item["id"]))).json()
    url = f"/activities/{activity['id']}"
    r = await client.patch(
        url, json={"child_ids": [kids[1], kids[2]], "held_on": "2026-11-21"}, headers=world.headers("admin1")
    )
    assert r.status_code == 200
    view = r.json()
    assert sorted(p["child_id"] for p in view["participants"]) == sorted(kids[1:])
    assert view["children"] == 2 and view["left_behind_children"] == 1 and view["held_on"] == "2026-11-21"
    r = await client.patch(url, json={"held_on": "2026-11-25"}, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "activity_in_future"
    r = await client.patch(url, json={"child_ids": [kids[0], kids[0]]}, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "activity_duplicate_child"
    plan_now = (await client.get(f"/plans/{plan['id']}", headers=world.headers("admin1"))).json()
    assert item_titled(plan_now, "开展留守儿童法制教育讲座")["done_on"] == "2026-11-21"
    r = await client.get(f"/children/{kids[0]}/activities", headers=world.headers("admin1"))
    assert r.json()["count"] == 0

    # A plan with work done against it stays; the activity may go, and its item is planned again.
    r = await client.delete(f"/plans/{plan['id']}", headers=world.headers("admin1"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "plan_not_deletable"
    assert (await client.delete(url, headers=world.headers("teacher1"))).status_code == 403
    assert (await client.delete(url, headers=world.headers("admin1"))).status_code == 204
    assert (await client.get(url, headers=world.headers("admin1"))).status_code == 404
    plan_now = (await client.get(f"/plans/{plan['id']}", headers=world.headers("admin1"))).json()
    assert item_titled(plan_now, "开展留守儿童法制教育讲座")["progress"] == "planned"
    assert (await client.delete(f"/plans/{plan['id']}", headers=world.headers("admin1"))).status_code == 204
    assert (await client.get(f"/plans/{plan['id']}", headers=world.headers("admin1"))).status_code == 404

    entries = (await system_session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
    removed = next(e for e in entries if e.action == "activity.participants_removed")
    assert removed.changes == {"child_ids": [kids[0]]}
    gone = next(e for e in entries if e.action == "activity.removed")
    assert gone.resource_id == activity["id"] and sorted(gone.changes["child_ids"]) == sorted(kids[1:])
    assert sum(1 for e in entries if e.action == "care_plan_item.delete") == len(plan["items"])
    assert any(e.action == "care_plan.delete" and e.resource_id == plan["id"] for e in entries)
