"""教师履职 — duties per teacher over a span, against an independent count by hand.

The test clock is Tuesday 24 November 2026 (Shanghai); no school calendar, so every day is a school day and the
term rule (home visits 期初/期中/期末) asks nothing of ordinary children. The default rules: 谈心 and 监护人沟通
monthly (strict: fortnightly), 家访 per term third (strict: monthly), 亲情电话 weekly. The span is October 2026.

Periods due in October, counted by hand from the calendar:
  monthly     — October (due 31 Oct): 1
  fortnightly — 21 Sep–4 Oct and 5–18 Oct (19 Oct–1 Nov is due in November): 2
  weekly      — weeks ending 4, 11, 18, 25 Oct (26 Oct–1 Nov is due in November): 4

The children (files since 20 August, all left behind):
  甲 — class 3(1), ordinary: teacher1 (李老师) answers as head teacher;
  乙 — class 3(1), 特困 (strict): teacher1b (王老师) answers as its proxy parent (代理家长);
  丙 — class 3(2), ordinary: teacher1b answers as head teacher.
"""

import io
from datetime import UTC, date, datetime

import openpyxl
import pytest
import sqlalchemy as sa

from api.models.audit import AuditEntry
from api.models.children import Child, Sex

OCTOBER = {"from": "2026-10-01", "to": "2026-10-31"}
CREATED = datetime(2026, 8, 20, 2, 0, tzinfo=UTC)
BODIES = {
    "talk": {"place": "教室", "topics": "学习与生活", "mood": "good"},
    "home_visit": {"met": "祖母", "living_conditions": "整洁", "guardian_situation": "身体尚可"},
    "guardian_contact": {"channel": "phone", "summary": "沟通近况"},
    "parent_contact": {"channel": "video", "summary": "与妈妈视频"},
}


async def _record(client, world, who, child_id, kind, on):
    body = {"kind": kind, "occurred_on": on, "content": BODIES[kind]}
    r = await client.post(f"/children/{child_id}/care-records", json=body, headers=world.headers(who))
    assert r.status_code == 201, r.text


async def _post(client, world, path, body, who="admin1"):
    r = await client.post(path, json=body, headers=world.headers(who))
    assert r.status_code in (200, 201), r.text
    return r.json()


@pytest.fixture
async def dataset(world, system_session, client):
    ids = {}
    for name, klass, flags in (
        ("甲", "class11", {}),
        ("乙", "class11", {"special_hardship": True}),
        ("丙", "class12", {}),
    ):
        child = Child(
            school_id=world["school1"],
            class_id=world[klass],
            name=name,
            sex=Sex.female,
            birth_date=date(2016, 5, 1),
            created_at=CREATED,
            is_left_behind=True,
            **flags,
        )
        system_session.add(child)
        await system_session.flush()
        ids[name] = str(child.id)
    await system_session.commit()
    pairing = {"kind": "proxy_parent", "staff_id": str(world["teacher1b"])}
    await _post(client, world, f"/children/{ids['乙']}/care-pairings", pairing)
    # teacher1: 甲's October talk and guardian contact, one video call (week 5–11 Oct), and a talk with 乙 in the
    # fortnight 5–18 Oct (kept for 乙, whom teacher1b answers for); a talk in November is outside the span.
    await _record(client, world, "teacher1", ids["甲"], "talk", "2026-10-10")
    await _record(client, world, "teacher1", ids["甲"], "guardian_contact", "2026-10-15")
    await _record(client, world, "teacher1", ids["甲"], "parent_contact", "2026-10-06")
    await _record(client, world, "teacher1", ids["乙"], "talk", "2026-10-08")
    await _record(client, world, "teacher1", ids["甲"], "talk", "2026-11-03")
    # teacher1b: 乙's October home visit (strict: monthly).
    await _record(client, world, "teacher1b", ids["乙"], "home_visit", "2026-10-12")
    plan = await _post(
        client,
        world,
        f"/schools/{world['school1']}/plans",
        {"name": "2026年秋季学期关爱留守儿童工作计划", "starts_on": "2026-09-01", "ends_on": "2027-01-20"},
    )
    items = {}
    for key, month, owner in (
        ("t1_done", "2026-10", "teacher1"),
        ("t1_late", "2026-10", "teacher1"),
        ("t1b_dropped", "2026-10", "teacher1b"),
        ("t1b_november", "2026-11", "teacher1b"),  # its month is not over: planned
        ("t1_september", "2026-09", "teacher1"),  # before the span: not counted
    ):
        body = {
            "month": month,
            "title": f"家访谈心 {key}",
            "kind": "home_visit_talk",
            "owner_account_id": str(world[owner]),
        }
        items[key] = (await _post(client, world, f"/plans/{plan['id']}/items", body))["id"]
    await _post(
        client,
        world,
        f"/plan-items/{items['t1_done']}/progress",
        {"state": "done", "done_on": "2026-10-20", "note": "完成"},
        "teacher1",
    )
    await _post(client, world, f"/plan-items/{items['t1b_dropped']}/progress", {"state": "dropped", "reason": "改期"})
    for held_on in ("2026-10-20", "2026-11-20"):
        body = {
            "kind": "lecture_law",
            "title": "法制教育讲座",
            "held_on": held_on,
            "place": "学校多功能室",
            "organiser": "guan_gong_wei",
            "child_ids": [ids["甲"]],
        }
        await _post(client, world, f"/schools/{world['school1']}/activities", body)
    return {"children": ids, "plan_id": plan["id"]}


def _rules(row):
    return {r["kind"]: (r["expected"], r["done"], r["rate"]) for r in row["rules"]}


def _records(row):
    return {r["kind"]: r["count"] for r in row["records"]}


async def _get(client, world, who, params, suffix=""):
    return await client.get(
        f"/schools/{world['school1']}/teacher-duties{suffix}", params=params, headers=world.headers(who)
    )


async def test_duties_per_teacher_against_a_count_by_hand(client, world, dataset):
    r = await _get(client, world, "admin1", OCTOBER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["starts_on"], body["ends_on"], body["judged_until"]) == ("2026-10-01", "2026-10-31", "2026-10-31")
    rows = {row["teacher_id"]: row for row in body["rows"]}
    # Every active staff member of school 1 has a row; nobody from another school.
    assert set(rows) == {str(world[k]) for k in ("admin1", "teacher1", "teacher1b")}

    t1 = rows[str(world["teacher1"])]
    assert t1["teacher_name"] == "李老师" and t1["children"] == 1  # 甲
    assert _rules(t1) == {
        "talk": (1, 1, 1.0),
        "home_visit": (0, 0, None),  # no terms entered: an ordinary child has no term thirds
        "guardian_contact": (1, 1, 1.0),
        "family_call": (4, 1, 0.25),
    }
    assert _records(t1) == {"talk": 2, "guardian_contact": 1, "parent_contact": 1} and t1["records_total"] == 4
    assert t1["plan_items"] == {"total": 2, "planned": 0, "done": 1, "late": 1, "dropped": 0}
    assert t1["activities"] == 0

    t1b = rows[str(world["teacher1b"])]
    assert t1b["teacher_name"] == "王老师" and t1b["children"] == 2  # 乙 (proxy parent), 丙 (head teacher)
    assert _rules(t1b) == {
        "talk": (3, 1, 0.3333),  # 乙 two fortnights (one kept by teacher1's talk on 8 Oct) + 丙 October
        "home_visit": (1, 1, 1.0),  # 乙 October (strict: monthly)
        "guardian_contact": (3, 0, 0.0),  # 乙 two fortnights + 丙 October
        "family_call": (8, 0, 0.0),  # four weeks each
    }
    assert _records(t1b) == {"home_visit": 1} and t1b["records_total"] == 1
    # The November item lies outside the span.
    assert t1b["plan_items"] == {"total": 1, "planned": 0, "done": 0, "late": 0, "dropped": 1}

    admin = rows[str(world["admin1"])]
    assert admin["children"] == 0 and admin["records_total"] == 0 and admin["activities"] == 1  # 20 Oct only
    assert all(e == 0 and d == 0 and rate is None for e, d, rate in _rules(admin).values())

    # Summed over teachers, the rules' figures are the school's coverage for the same span.
    coverage = await client.get(
        "/care/coverage",
        params={"starts_on": "2026-10-01", "ends_on": "2026-10-31", "school_id": str(world["school1"])},
        headers=world.headers("admin1"),
    )
    school_row = next(row for row in coverage.json()["rows"] if row["class_id"] is None)
    for kind in school_row["kinds"]:
        summed = [_rules(row)[kind["kind"]] for row in body["rows"]]
        assert (sum(e for e, _, _ in summed), sum(d for _, d, _ in summed)) == (kind["expected"], kind["done"])


async def test_the_xlsx_holds_the_same_figures(client, world, dataset, system_session):
    r = await _get(client, world, "admin1", OCTOBER, ".xlsx")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats-officedocument.spreadsheetml")
    assert "attachment" in r.headers["content-disposition"]
    sheet = openpyxl.load_workbook(io.BytesIO(r.content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == "石桥镇中心小学 教师履职情况 2026-10-01 至 2026-10-31"
    header = rows[2]
    assert header[:3] == ("教师", "身份", "负责儿童")
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows[3:]}
    assert set(table) == {"李老师", "王老师", "石桥校长"}
    li, wang = table["李老师"], table["王老师"]
    assert (li["负责儿童"], li["谈心应做"], li["谈心已做"], li["谈心完成率"]) == (1, 1, 1, "100.0%")
    assert (li["亲情电话应做"], li["亲情电话已做"], li["亲情电话完成率"]) == (4, 1, "25.0%")
    assert (li["家访应做"], li["家访完成率"]) == (0, "—")
    assert (li["记录合计"], li["谈心记录"], li["计划事项"], li["已完成"], li["逾期"]) == (4, 2, 2, 1, 1)
    assert (wang["负责儿童"], wang["谈心应做"], wang["谈心已做"], wang["监护人沟通应做"]) == (2, 3, 1, 3)
    assert (wang["家访应做"], wang["家访已做"], wang["已取消"], wang["关爱活动"]) == (1, 1, 1, 0)
    assert table["石桥校长"]["关爱活动"] == 1
    entry = (
        await system_session.execute(
            sa.select(AuditEntry).where(
                AuditEntry.action == "teacher_duties.export", AuditEntry.account_id == world["admin1"]
            )
        )
    ).scalar_one()
    assert entry.school_id == world["school1"] and entry.changes == {
        "from": "2026-10-01",
        "to": "2026-10-31",
        "teachers": 3,
    }


async def test_a_teacher_reads_only_their_own_row(client, world, dataset):
    for who in ("teacher1", "teacher1b"):
        r = await _get(client, world, who, OCTOBER)
        assert r.status_code == 200, r.text
        assert [row["teacher_id"] for row in r.json()["rows"]] == [str(world[who])]
    sheet = openpyxl.load_workbook(io.BytesIO((await _get(client, world, "teacher1", OCTOBER, ".xlsx")).content)).active
    assert [row[0] for row in sheet.iter_rows(min_row=4, values_only=True)] == ["李老师"]


async def test_scope(client, world, dataset):
    for who in ("bureau", "official1", "platform"):
        r = await _get(client, world, who, OCTOBER)
        assert r.status_code == 200, (who, r.text)
        assert len(r.json()["rows"]) == 3
    for who in ("admin2", "teacher2", "other_bureau", "official2"):
        for suffix in ("", ".xlsx"):
            r = await _get(client, world, who, OCTOBER, suffix)
            assert (r.status_code, r.json()["error"]["code"]) == (404, "school_not_found"), (who, suffix, r.text[:300])


async def test_a_plan_gives_the_span(client, world, dataset):
    r = await _get(client, world, "admin1", {"plan_id": dataset["plan_id"]})
    assert r.status_code == 200, r.text
    body = r.json()
    # The plan runs 1 Sep – 20 Jan; rules are judged up to yesterday, every owned item counts (Sep one late).
    assert (body["starts_on"], body["ends_on"], body["judged_until"]) == ("2026-09-01", "2027-01-20", "2026-11-23")
    t1 = next(row for row in body["rows"] if row["teacher_id"] == str(world["teacher1"]))
    assert t1["plan_items"] == {"total": 3, "planned": 0, "done": 1, "late": 2, "dropped": 0}
    assert t1["records_total"] == 5
    r = await client.get(
        f"/schools/{world['school2']}/teacher-duties",
        params={"plan_id": dataset["plan_id"]},
        headers=world.headers("admin2"),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (404, "plan_not_found")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "2026-10-31", "to": "2026-10-01"}, "span_reversed"),
        ({"from": "2025-01-01", "to": "2026-10-01"}, "span_too_long"),
        ({"from": "2026-10-01"}, "duties_span_required"),
        ({}, "duties_span_required"),
        ({**OCTOBER, "plan_id": "00000000-0000-4000-8000-000000000000"}, "duties_span_ambiguous"),
    ],
)
async def test_bad_spans_are_refused_with_a_code(client, world, params, code):
    for suffix in ("", ".xlsx"):
        r = await _get(client, world, "admin1", params, suffix)
        assert (r.status_code, r.json()["error"]["code"]) == (422, code), r.text


async def test_a_malformed_date_is_a_validation_error(client, world):
    r = await _get(client, world, "admin1", {"from": "2026-13-01", "to": "2026-10-31"})
    assert r.status_code == 422 and r.json()["error"]["code"]
