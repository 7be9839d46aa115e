"""工作总结 through the API: its figures against a count by hand on a small dataset, the Word document, one
submission only, scope (another school, the bureau's list) and audit."""

import asyncio
import io

import docx
import httpx
from sqlalchemy import func, select

from api.models.audit import AuditEntry
from api.models.children import Child, ChildStatus
from tests.test_plan import activity_body, make_children, new_activity, new_plan


async def _draft(client, world, body, who="admin1", school="school1"):
    r = await client.post(f"/schools/{world[school]}/summaries", json=body, headers=world.headers(who))
    assert r.status_code == 201, r.text
    return r.json()


async def test_the_summary_counts_what_the_records_hold(client, world, app, system_session):
    kids = await make_children(app, world, left_behind=(True, True, False))
    plan = await new_plan(client, world)
    items = plan["items"]
    r = await client.post(
        f"/plan-items/{items[0]['id']}/progress",
        json={"state": "dropped", "reason": "合并到十月"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200, r.text
    activity = (await new_activity(client, world, activity_body(kids, plan_item_id=items[1]["id"]))).json()
    await new_activity(client, world, activity_body(kids[:1], held_on="2026-10-15", title="拔河比赛"))
    for kind in ("talk", "talk", "home_visit"):
        body = {
            "kind": kind,
            "occurred_on": "2026-11-20",
            "content": {"place": "教室", "topics": "学习", "mood": "good"},
        }
        if kind == "home_visit":
            body["content"] = {"met": "祖母", "living_conditions": "砖房", "guardian_situation": "祖母身体好"}
        r = await client.post(f"/children/{kids[0]}/care-records", json=body, headers=world.headers("admin1"))
        assert r.status_code == 201, r.text
    summary = await _draft(client, world, {"plan_id": plan["id"], "highlights": "结对帮扶全覆盖"})
    assert (summary["starts_on"], summary["ends_on"], summary["status"]) == ("2026-09-01", "2027-01-20", "draft")
    f = summary["figures"]

    # The count by hand: the school's enrolled children and left-behind ones, straight from the table.
    school = world["school1"]
    enrolled = (Child.school_id == school, Child.status == ChildStatus.enrolled)
    on_file = (await system_session.execute(select(func.count()).select_from(Child).where(*enrolled))).scalar_one()
    left_behind = (
        await system_session.execute(select(func.count()).select_from(Child).where(*enrolled, Child.is_left_behind))
    ).scalar_one()
    assert f["children"]["on_file"] == on_file and f["children"]["left_behind"] == left_behind
    assert left_behind >= 2 and f["children"]["files_complete"] <= left_behind
    assert (f["care"]["talks"], f["care"]["home_visits"], f["care"]["guardian_contacts"]) == (2, 1, 0)
    # Two activities, 3 + 1 places, of which 2 + 1 went to left-behind children.
    assert f["activities"] == {"activities": 2, "places": 4, "left_behind_places": 3, "priority_share": 0.75}
    assert f["family_calls_completed"] == 0
    assert f["incidents"]["incidents"] == 0 and f["incidents"]["steps"] == 0
    p = f["plan"]
    assert p["items"] == len(items)
    assert p["progress"]["dropped"] == 1 and p["dropped"][0]["dropped_reason"] == "合并到十月"
    assert p["progress"]["done"] == 1 and p["done"][0]["title"] == items[1]["title"]
    # On 2026-11-24 the items of September and October not done are late; November's are still planned.
    late = [i for i in items[2:] if i["month"] < "2026-11"]
    assert p["progress"]["late"] == len(late) == len(p["late"])
    assert p["progress"]["planned"] == len(items) - 2 - len(late)
    assert activity["plan_item_id"] == items[1]["id"]

    # The Word document opens and holds the figures and the leader's text.
    r = await client.get(f"/summaries/{summary['id']}/document", headers=world.headers("admin1"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.openxml")
    document = docx.Document(io.BytesIO(r.content))
    text = "\n".join(p.text for p in document.paragraphs)
    cells = {row.cells[0].text: row.cells[1].text for row in document.tables[0].rows}
    assert summary["title"] in text and "结对帮扶全覆盖" in text and "合并到十月" in text
    assert cells["谈心"] == "2次" and cells["家访"] == "1次"
    assert cells["关爱活动"] == "2次，参与4人次" and cells["三个优先（留守儿童占活动名额）"] == "3人次（75.0%）"
    assert cells["在册留守儿童"] == f"{left_behind}人"


async def test_a_summary_is_submitted_once_and_then_frozen(client, world, app, clock, system_session):
    kids = await make_children(app, world)
    summary = await _draft(client, world, {"starts_on": "2026-09-01", "ends_on": "2027-01-20"})
    r = await client.post(
        f"/schools/{world['school1']}/summaries",
        json={"starts_on": "2026-09-01", "ends_on": "2027-01-20"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "summary_exists"
    r = await client.patch(
        f"/summaries/{summary['id']}", json={"problems": "家访次数不足"}, headers=world.headers("admin1")
    )
    assert r.status_code == 200 and r.json()["problems"] == "家访次数不足"
    r = await client.post(f"/summaries/{summary['id']}/submit", headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    submitted = r.json()
    assert submitted["status"] == "submitted" and submitted["submitted_by_id"] == str(world["admin1"])
    assert submitted["figures"]["activities"]["activities"] == 0
    r = await client.post(f"/summaries/{summary['id']}/submit", headers=world.headers("admin1"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "summary_submitted"
    r = await client.patch(f"/summaries/{summary['id']}", json={"problems": "x"}, headers=world.headers("admin1"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "summary_submitted"
    # Work recorded after submission does not change what the bureau reads.
    await new_activity(client, world, activity_body(kids))
    r = await client.get(f"/summaries/{summary['id']}", headers=world.headers("bureau"))
    assert r.status_code == 200 and r.json()["figures"] == submitted["figures"]

    entries = (
        (await system_session.execute(select(AuditEntry).where(AuditEntry.resource_type == "term_summary")))
        .scalars()
        .all()
    )
    actions = [(e.action, e.account_id) for e in entries]
    assert ("term_summary.create", world["admin1"]) in actions
    update = [e for e in entries if e.action == "term_summary.update"]
    assert any(e.changes.get("status") == {"old": "draft", "new": "submitted"} for e in update)
    await client.get(f"/summaries/{summary['id']}/document", headers=world.headers("bureau"))
    exports = (
        (await system_session.execute(select(AuditEntry).where(AuditEntry.action == "term_summary.export")))
        .scalars()
        .all()
    )
    assert [e.account_id for e in exports] == [world["bureau"]]


async def test_scope_the_school_its_own_the_bureau_its_countys_submissions(client, world, app):
    draft = await _draft(client, world, {"starts_on": "2026-09-01", "ends_on": "2027-01-20"})
    for who in ("admin2", "teacher2", "other_bureau"):
        r = await client.get(f"/summaries/{draft['id']}", headers=world.headers(who))
        assert r.status_code == 404 and r.json()["error"]["code"] == "summary_not_found", who
    r = await client.post(f"/summaries/{draft['id']}/submit", headers=world.headers("admin2"))
    assert r.status_code == 404
    # A draft is the school's own: the bureau neither reads it nor counts it as submitted.
    assert (await client.get(f"/summaries/{draft['id']}", headers=world.headers("teacher1"))).status_code == 200
    assert (await client.get(f"/summaries/{draft['id']}", headers=world.headers("bureau"))).status_code == 404
    term = {"starts_on": "2026-09-01", "ends_on": "2027-01-20"}
    report = (await client.get("/summary-submissions", params=term, headers=world.headers("bureau"))).json()
    rows = {r["school_id"]: r for r in report["rows"]}
    assert str(world["school1"]) in rows and report["submitted"] == 0
    assert (await client.post(f"/summaries/{draft['id']}/submit", headers=world.headers("admin1"))).status_code == 200
    report = (await client.get("/summary-submissions", params=term, headers=world.headers("bureau"))).json()
    rows = {r["school_id"]: r for r in report["rows"]}
    assert rows[str(world["school1"])]["submitted"] and rows[str(world["school1"])]["summary_id"] == draft["id"]
    assert report["submitted"] == 1 and report["schools"] == len(rows)
    other = (await client.get("/summary-submissions", params=term, headers=world.headers("other_bureau"))).json()
    assert str(world["school1"]) not in {r["school_id"] for r in other["rows"]}
    r = await client.post(f"/summaries/{draft['id']}/submit", headers=world.headers("bureau"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden"
    r = await client.get(
        "/summary-submissions",
        params={"starts_on": "2027-01-20", "ends_on": "2026-09-01"},
        headers=world.headers("bureau"),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "span_reversed"


async def test_two_submits_at_once_through_a_real_server_one_is_refused(live_url, client, world):
    summary = await _draft(client, world, {"starts_on": "2026-09-01", "ends_on": "2027-01-20"})
    url = f"{live_url}/summaries/{summary['id']}/submit"
    headers = world.headers("admin1")
    async with httpx.AsyncClient(timeout=30) as a, httpx.AsyncClient(timeout=30) as b:
        answers = await asyncio.gather(a.post(url, headers=headers), b.post(url, headers=headers))
    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 409)
    assert refused.json()["error"]["code"] == "summary_submitted"
