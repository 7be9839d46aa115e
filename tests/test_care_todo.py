"""The teacher's first screen and the reports on the rhythm of care work, through the API.

The test clock is Tuesday 24 November 2026, 10:00 in Shanghai. Three left-behind children of class 3(1) (head
teacher 李老师, teacher1) whose files exist since 20 August; no school calendar (every day counts) unless a
test enters one; the default rules (谈心 monthly, 监护人沟通 monthly, 亲情电话 weekly; strict: fortnightly)."""

import asyncio
import uuid
from datetime import UTC, date, datetime

import httpx
import pytest
import sqlalchemy as sa

from api.models.audit import AuditEntry
from api.models.care_rhythm import Cadence, SchoolTerm
from api.models.children import Child, Sex
from api.models.family_calls import CallStatus
from api.services.care.calendar import Calendar, periods
from tests.care_rhythm_support import add_call_line, add_family_call, add_incident
from tests.held import rows_held_open, waiting_on_locks

CREATED = datetime(2026, 8, 20, 2, 0, tzinfo=UTC)


async def make_children(system_session, world, *names_flags):
    ids = {}
    for name, klass, flags in names_flags:
        child = Child(
            school_id=world["school1"] if klass != "class21" else world["school2"],
            class_id=world[klass],
            name=name,
            sex=Sex.female,
            birth_date=date(2016, 5, 1),
            created_at=CREATED,
            **flags,
        )
        system_session.add(child)
        await system_session.flush()
        ids[name] = str(child.id)
    await system_session.commit()
    return ids


async def record(client, world, who, child_id, kind, on, **content):
    bodies = {
        "talk": {"place": "教室", "topics": "学习与生活", "mood": "good"},
        "home_visit": {"met": "祖母", "living_conditions": "整洁", "guardian_situation": "身体尚可"},
        "guardian_contact": {"channel": "phone", "summary": "沟通近况"},
        "parent_contact": {"channel": "video", "summary": "与妈妈视频"},
        "counselling": {"summary": "情绪疏导"},
    }
    body = {"kind": kind, "occurred_on": on, "content": {**bodies[kind], **content}}
    r = await client.post(f"/children/{child_id}/care-records", json=body, headers=world.headers(who))
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
async def kids(world, system_session, client):
    ids = await make_children(
        system_session,
        world,
        ("甲", "class11", {}),
        ("乙", "class11", {"special_hardship": True}),
        ("丙", "class11", {}),
    )
    await record(client, world, "teacher1", ids["甲"], "talk", "2026-10-10")
    await record(client, world, "teacher1", ids["乙"], "talk", "2026-11-03")
    return ids


def items_of(body, child_id):
    return {i["kind"]: i for i in body["items"] if i["child_id"] == child_id}


async def test_what_must_i_do_this_week(client, world, kids):
    r = await client.get("/care/todo", headers=world.headers("teacher1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["today"] == "2026-11-24"
    jia = items_of(body, kids["甲"])
    # November's talk is due on the 30th (6 days) — October's was done on the 10th
    assert (jia["talk"]["status"], jia["talk"]["days"], jia["talk"]["period"]) == ("due", 6, "2026-11")
    assert jia["talk"]["last_done_on"] == "2026-10-10"
    # guardian contact never done: overdue since August's (31 Aug, the file exists since the 20th), 3 missed
    assert (jia["guardian_contact"]["status"], jia["guardian_contact"]["due_on"]) == ("overdue", "2026-08-31")
    assert jia["guardian_contact"]["days"] == 85 and jia["guardian_contact"]["missed"] == 3
    assert jia["guardian_contact"]["last_done_on"] is None
    # most urgent first: the longest overdue, then what is due soonest
    ranks = [(i["status"] != "overdue", -i["days"] if i["status"] == "overdue" else i["days"]) for i in body["items"]]
    assert ranks == sorted(ranks)
    assert {i["child_name"] for i in body["items"]} == {"甲", "乙", "丙"}
    # a teacher heads no staff: nothing of others'
    assert body["staff"] == []


async def test_reading_the_todo_is_audited_with_the_children_named(client, world, kids, system_session):
    r = await client.get("/care/todo", headers=world.headers("teacher1"))
    assert r.status_code == 200
    entry = (
        await system_session.execute(
            sa.select(AuditEntry).where(
                AuditEntry.action == "care.todo.read", AuditEntry.account_id == world["teacher1"]
            )
        )
    ).scalar_one()
    assert set(entry.changes["child_ids"]) == set(kids.values()) and entry.school_id == world["school1"]


async def test_another_schools_teacher_sees_none_of_it(client, world, kids):
    r = await client.get("/care/todo", headers=world.headers("teacher2"))
    assert r.status_code == 200
    assert all(i["child_id"] not in kids.values() for i in r.json()["items"])
    r = await client.get(
        f"/schools/{world['school1']}/care/status",
        params={"starts_on": "2026-11-01", "ends_on": "2026-11-30"},
        headers=world.headers("teacher2"),
    )
    assert r.status_code == 404
    r = await client.get("/care/todo", headers=world.headers("bureau"))
    assert r.status_code == 403  # the to-do is a school's staff's


async def test_a_proxy_parent_gets_the_child_and_the_head_teacher_sees_who_is_behind(client, world, kids):
    r = await client.get("/care/todo", headers=world.headers("teacher1b"))
    assert not [i for i in r.json()["items"] if i["child_id"] == kids["丙"]]
    r = await client.post(
        f"/children/{kids['丙']}/care-pairings",
        json={"kind": "proxy_parent", "staff_id": str(world["teacher1b"]), "started_on": "2026-09-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201, r.text
    r = await client.get("/care/todo", headers=world.headers("teacher1b"))
    mine = items_of(r.json(), kids["丙"])
    assert mine["guardian_contact"]["teacher_id"] == str(world["teacher1b"])
    # the head teacher of 3(1): 丙's overdue items under 王老师's name
    r = await client.get("/care/todo", headers=world.headers("teacher1"))
    staff = {s["teacher_name"]: s for s in r.json()["staff"]}
    assert set(staff) == {"王老师"} and {i["child_id"] for i in staff["王老师"]["items"]} == {kids["丙"]}
    assert all(i["status"] == "overdue" for i in staff["王老师"]["items"])
    # the school admin: everyone's overdue items, by teacher
    r = await client.get("/care/todo", headers=world.headers("admin1"))
    staff = {s["teacher_name"]: s["overdue"] for s in r.json()["staff"]}
    assert staff["王老师"] >= 2 and staff["李老师"] >= 4


async def test_special_children_and_recent_incidents_follow_the_strict_cadence(client, world, kids, system_session):
    await add_incident(
        system_session,
        world=world,
        school="school1",
        child_id=kids["丙"],
        at=datetime(2026, 11, 10, 3, 0, tzinfo=UTC),
        reporter="teacher1",
    )
    await system_session.commit()
    r = await client.get(
        f"/schools/{world['school1']}/care/status",
        params={"starts_on": "2026-11-01", "ends_on": "2026-11-30", "group": "child"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200, r.text
    talks = {row["label"]: next(k for k in row["kinds"] if k["kind"] == "talk") for row in r.json()["rows"]}
    fortnights = len(periods(Cadence.fortnightly, Calendar(), date(2026, 11, 1), date(2026, 11, 30)))
    assert fortnights >= 2
    total = {name: k["done"] + k["due"] + k["overdue"] for name, k in talks.items()}
    assert total["甲"] == 1  # monthly
    assert total["乙"] == fortnights  # 特困
    assert total["丙"] == fortnights  # an incident on 10 November
    assert talks["乙"]["done"] == 1


async def test_status_by_class_teacher_and_school(client, world, kids):
    params = {"starts_on": "2026-09-01", "ends_on": "2026-11-30"}
    # the longest overdue talk: 乙's (特困, fortnightly) first fortnight due in September
    first_fortnight = periods(Cadence.fortnightly, Calendar(), date(2026, 9, 1), date(2026, 11, 30))[0]
    longest = (date(2026, 11, 24) - first_fortnight.due_on).days
    for group, key in (
        ("class", str(world["class11"])),
        ("teacher", str(world["teacher1"])),
        ("school", str(world["school1"])),
    ):
        r = await client.get(
            f"/schools/{world['school1']}/care/status",
            params={**params, "group": group},
            headers=world.headers("admin1"),
        )
        assert r.status_code == 200, r.text
        rows = {row["key"]: row for row in r.json()["rows"]}
        assert key in rows and rows[key]["children"] >= 3
        talk = next(k for k in rows[key]["kinds"] if k["kind"] == "talk")
        assert talk["done"] == 2 and talk["max_overdue_days"] == longest
    r = await client.get(
        f"/schools/{world['school1']}/care/status",
        params={"starts_on": "2026-11-30", "ends_on": "2026-11-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "span_reversed"


async def test_rules_are_the_schools_own(client, world, kids, system_session):
    r = await client.get(f"/schools/{world['school1']}/care-rules", headers=world.headers("teacher1"))
    assert r.status_code == 200
    rules = {x["kind"]: x for x in r.json()}
    assert rules["talk"]["cadence"] == "monthly" and rules["talk"]["is_default"]
    assert rules["home_visit"]["cadence"] == "term_points" and rules["family_call"]["cadence"] == "weekly"
    body = {"kind": "talk", "cadence": "weekly"}
    r = await client.put(f"/schools/{world['school1']}/care-rules", json=body, headers=world.headers("teacher1"))
    assert r.status_code == 403
    r = await client.put(f"/schools/{world['school1']}/care-rules", json=body, headers=world.headers("admin2"))
    assert r.status_code == 404
    r = await client.put(f"/schools/{world['school1']}/care-rules", json=body, headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    talk = next(x for x in r.json() if x["kind"] == "talk")
    assert (talk["cadence"], talk["strict_cadence"], talk["is_default"]) == ("weekly", "weekly", False)
    r = await client.get("/care/todo", headers=world.headers("teacher1"))
    assert items_of(r.json(), kids["甲"])["talk"]["period"].startswith("2026-W")
    r = await client.post(
        f"/schools/{world['school1']}/care-rules/reset", params={"kind": "talk"}, headers=world.headers("admin1")
    )
    assert next(x for x in r.json() if x["kind"] == "talk")["is_default"]
    # every change is in the audit log, filed under the school, by the admin who made it
    entries = (
        await system_session.execute(
            sa.select(AuditEntry.action, AuditEntry.account_id, AuditEntry.school_id)
            .where(AuditEntry.resource_type == "care_rule")
            .order_by(AuditEntry.id)
        )
    ).all()
    assert [e.action for e in entries] == ["care_rule.create", "care_rule.delete"]
    assert {(e.account_id, e.school_id) for e in entries} == {(world["admin1"], world["school1"])}


async def test_the_calendar_pauses_rules_in_holidays_and_refuses_overlapping_terms(client, world, kids):
    school = world["school1"]
    term = {"name": "2026年秋季学期", "starts_on": "2026-09-01", "ends_on": "2027-01-20"}
    r = await client.post(f"/schools/{school}/terms", json=term, headers=world.headers("admin1"))
    assert r.status_code == 201, r.text
    overlapping = {"name": "重复", "starts_on": "2027-01-20", "ends_on": "2027-02-01"}
    r = await client.post(f"/schools/{school}/terms", json=overlapping, headers=world.headers("admin1"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "term_overlap"
    r = await client.post(
        f"/schools/{school}/terms",
        json={"name": "x", "starts_on": "2027-02-01", "ends_on": "2027-01-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 422
    # a holiday over all of November: no talk is asked in November, and the home visits now have windows
    holiday = {"name": "停课", "starts_on": "2026-11-01", "ends_on": "2026-11-30"}
    r = await client.post(f"/schools/{school}/holidays", json=holiday, headers=world.headers("admin1"))
    assert r.status_code == 201
    r = await client.get(f"/schools/{school}/calendar", headers=world.headers("teacher1"))
    assert [t["name"] for t in r.json()["terms"]] == ["2026年秋季学期"] and len(r.json()["holidays"]) == 1
    r = await client.get(
        f"/schools/{school}/care/status",
        params={"starts_on": "2026-11-01", "ends_on": "2026-12-31", "group": "child"},
        headers=world.headers("admin1"),
    )
    jia = {k["kind"]: k for k in next(row for row in r.json()["rows"] if row["label"] == "甲")["kinds"]}
    total = {kind: k["done"] + k["due"] + k["overdue"] for kind, k in jia.items()}
    assert total["talk"] == 1 and total["guardian_contact"] == 1  # December only: November is paused
    assert total["family_call"] == 4  # weeks due in December: 30 Nov–6 Dec to 21–27 Dec (28 Dec–3 Jan is January's)
    assert total["home_visit"] == 1  # 期中 of the term: 18 Oct – 3 Dec
    r = await client.get(f"/schools/{school}/calendar", headers=world.headers("teacher2"))
    assert r.status_code == 404


async def test_overlapping_terms_added_at_once_one_is_kept_and_the_other_told_why(live_url, app, client, world):
    """Two admins entering the same term, their checks meeting in the index (see tests/held.py): one term, and
    a 409 for the other, never a deadlock's 503."""
    url = f"{live_url}/schools/{world['school1']}/terms"
    headers = world.headers("admin1")
    held = SchoolTerm(school_id=world["school1"], name="另一位管理员正在保存", starts_on=date(2026, 10, 1),
                      ends_on=date(2026, 10, 31))  # fmt: skip
    body = {"name": "2026年秋季学期", "starts_on": "2026-09-01", "ends_on": "2027-01-20"}
    async with httpx.AsyncClient(timeout=30) as a, httpx.AsyncClient(timeout=30) as b:
        async with rows_held_open(app, [held]):
            answers = asyncio.gather(a.post(url, json=body, headers=headers), b.post(url, json=body, headers=headers))
            await waiting_on_locks(app, 2)
        answers = await answers
    assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
    assert next(r for r in answers if r.status_code == 409).json()["error"]["code"] == "term_overlap"
    r = await client.get(f"/schools/{world['school1']}/calendar", headers=headers)
    assert [t["name"] for t in r.json()["terms"]] == ["2026年秋季学期"]


async def test_coverage_per_school_and_class(client, world, kids):
    r = await client.post(
        f"/children/{kids['甲']}/care-pairings",
        json={"kind": "proxy_parent", "staff_id": str(world["teacher1"]), "started_on": "2026-09-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201
    params = {"starts_on": "2026-10-01", "ends_on": "2026-10-31"}
    r = await client.get("/care/coverage", params=params, headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    school = next(x for x in rows if x["class_id"] is None)
    klass = next(x for x in rows if x["class_id"] == str(world["class11"]))
    assert school["school_id"] == str(world["school1"]) and {x["school_id"] for x in rows} == {school["school_id"]}
    assert klass["children"] == 3 and klass["paired"] == 1 and klass["special"] == 1
    assert klass["paired_rate"] == round(1 / 3, 4)
    talk = next(k for k in klass["kinds"] if k["kind"] == "talk")
    # October: 甲 monthly (done on the 10th), 乙 and 丙 — 乙 fortnightly (strict), none done in October
    october_fortnights = len(periods(Cadence.fortnightly, Calendar(), date(2026, 10, 1), date(2026, 10, 31)))
    assert talk["expected"] == 1 + october_fortnights + 1 and talk["done"] == 1
    # the bureau reads its county's schools; another county's none; a school admin of another school: 404
    r = await client.get("/care/coverage", params=params, headers=world.headers("bureau"))
    assert {x["school_id"] for x in r.json()["rows"]} >= {str(world["school1"])}
    r = await client.get("/care/coverage", params=params, headers=world.headers("other_bureau"))
    assert r.json()["rows"] == []
    r = await client.get(
        "/care/coverage", params={**params, "school_id": str(world["school1"])}, headers=world.headers("admin2")
    )
    assert r.status_code == 404
    r = await client.get("/care/coverage", params=params, headers=world.headers("teacher1"))
    assert r.status_code == 403


async def test_timeline_pages_filters_and_hides_counselling(client, world, kids, system_session, app):
    child = kids["甲"]
    await record(client, world, "teacher1", child, "home_visit", "2026-11-02")
    await record(client, world, "admin1", child, "counselling", "2026-11-05")
    await record(client, world, "teacher1", child, "parent_contact", "2026-11-20")
    r = await client.post(
        f"/children/{child}/care-pairings",
        json={"kind": "proxy_parent", "staff_id": str(world["teacher1b"]), "started_on": "2026-09-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201
    await add_incident(
        system_session,
        world=world,
        school="school1",
        child_id=child,
        at=datetime(2026, 11, 11, 1, 0, tzinfo=UTC),
        reporter="teacher1",
    )
    line = await add_call_line(system_session, world["school1"])
    for day, status in ((21, CallStatus.completed), (22, CallStatus.missed), (27, CallStatus.booked)):
        await add_family_call(
            system_session,
            line_id=line,
            school_id=world["school1"],
            child_id=uuid.UUID(child),
            booked_by=world["teacher1"],
            at=datetime(2026, 11, day, 11, 0, tzinfo=UTC),
            status=status,
        )
    await system_session.commit()
    activity = {
        "kind": "lecture_law",
        "title": "法制教育讲座",
        "held_on": "2026-11-18",
        "place": "学校多功能室",
        "organiser": "guan_gong_wei",
        "child_ids": [child],
    }
    r = await client.post(f"/schools/{world['school1']}/activities", json=activity, headers=world.headers("admin1"))
    assert r.status_code == 201, r.text
    activity_id = r.json()["id"]

    async def all_pages(who, **params):
        seen, cursor = [], None
        while True:
            q = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
            r = await client.get(f"/children/{child}/timeline", params=q, headers=world.headers(who))
            assert r.status_code == 200, r.text
            seen.extend(r.json()["data"])
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return seen

    admin = await all_pages("admin1")
    kinds = [e["kind"] for e in admin]
    assert {"care_record", "pairing", "incident", "family_call", "activity"} <= set(kinds)
    # the activity the child took part in, on its day, with its kind
    [took_part] = [e for e in admin if e["kind"] == "activity"]
    assert (took_part["ref_id"], took_part["day"]) == (activity_id, "2026-11-18")
    assert took_part["label"].startswith("关爱活动: ")
    # the calls that took place or were missed; the one still booked is not something that happened
    assert sorted(e["label"] for e in admin if e["kind"] == "family_call") == ["亲情电话: 已通话", "亲情电话: 未接通"]
    assert len({(e["kind"], e["ref_id"]) for e in admin}) == len(admin)  # no entry twice across pages
    keys = [(e["day"], e["at"]) for e in admin]
    assert keys == sorted(keys, reverse=True)
    assert "心理咨询" in [e["label"] for e in admin]
    teacher = await all_pages("teacher1")
    assert "心理咨询" not in [e["label"] for e in teacher]
    assert len(teacher) == len(admin) - 1
    # the proxy parent (another class's teacher) reads it without the archive changes; a stranger does not
    proxy = await all_pages("teacher1b")
    assert "archive" not in {e["kind"] for e in proxy} and "pairing" in {e["kind"] for e in proxy}
    only = await all_pages("teacher1", kind="incident")
    assert [e["kind"] for e in only] == ["incident"] and only[0]["label"].startswith("突发事件")
    r = await client.get(f"/children/{kids['乙']}/timeline", headers=world.headers("teacher1b"))
    assert r.status_code == 403
    r = await client.get(f"/children/{child}/timeline", headers=world.headers("teacher2"))
    assert r.status_code == 404
    r = await client.get(
        f"/children/{child}/timeline", params={"cursor": "not-a-cursor"}, headers=world.headers("admin1")
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_cursor"
    reads = (
        await system_session.execute(
            sa.select(sa.func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "child.timeline.read", AuditEntry.resource_id == child)
        )
    ).scalar_one()
    assert reads >= 5
