"""动态管理: lives change and the file follows — transfer, parents home, graduation, leaving, re-enrolment,
the end-of-year promotion of whole classes — each with a reason and a date, never a deletion, all in the
history."""

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from api.models.accounts import Account, Role
from api.models.children import Child, ChildEvent, ChildEventKind, ChildStatus
from api.models.guardians import ChildGuardian
from tests.factories import login_token
from tests.test_children import create, id_number
from tests.test_completeness import make_child


async def new_class(client, world, grade, name="1班", who="admin1", school="school1", head=None):
    body = {"grade": grade, "name": name}
    if head:
        body["head_teacher_id"] = str(world[head])
    r = await client.post(f"/schools/{world[school]}/classes", json=body, headers=world.headers(who))
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def headers_at(app, session, world, who, now):
    """A fresh token for ``who`` after the test clock has moved past the world's tokens."""
    account = await session.get(Account, world[who])
    token = await login_token(session, app, account, now)
    await session.commit()
    return {"Authorization": f"Bearer {token}"}


async def events_of(session, child_id):
    rows = await session.execute(
        select(ChildEvent).where(ChildEvent.child_id == child_id).order_by(ChildEvent.recorded_at, ChildEvent.kind)
    )
    return rows.scalars().all()


# ---- transfer -----------------------------------------------------------------------------------------------


async def test_a_transferred_file_follows_the_child_and_the_old_school_loses_access(client, world, system_session):
    child = await create(client, world)
    cid = child["id"]
    r = await client.post(
        f"/children/{cid}/transfer",
        json={"to_school_id": str(world["school2"]), "reason": "随祖父母迁居柳河乡", "effective_on": "2026-11-20"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201, r.text
    event = r.json()
    assert event["kind"] == "transferred" and event["effective_on"] == "2026-11-20"
    assert (event["from_school_id"], event["to_school_id"]) == (str(world["school1"]), str(world["school2"]))
    assert event["from_class_id"] == str(world["class11"]) and event["reason"] == "随祖父母迁居柳河乡"

    for who in ("admin1", "teacher1"):
        assert (await client.get(f"/children/{cid}", headers=world.headers(who))).status_code == 404
        assert (await client.get("/children", headers=world.headers(who))).json()["count"] == 0
    r = await client.post(f"/children/{cid}/leave", json={"reason": "x"}, headers=world.headers("admin1"))
    assert r.status_code == 404

    r = await client.get(f"/children/{cid}", headers=world.headers("admin2"))
    assert r.status_code == 200
    moved = r.json()
    assert moved["school_name"] == "柳河乡中心小学" and moved["class_id"] is None and moved["detail"] == "full"
    assert moved["home_address"] == child["home_address"] and moved["id_number_masked"] == child["id_number_masked"]
    # The history came along: the receiving school sees who opened the file and the transfer.
    r = await client.get(f"/children/{cid}/history", headers=world.headers("admin2"))
    actions = [h["action"] for h in r.json()]
    assert "child.create" in actions and "transferred" in actions and "enrolled" in actions
    assert (await client.get(f"/children/{cid}/history", headers=world.headers("admin1"))).status_code == 404
    # The receiving school places the child in a class.
    r = await client.patch(
        f"/children/{cid}", json={"class_id": str(world["class21"])}, headers=world.headers("admin2")
    )
    assert r.status_code == 200 and r.json()["class_label"] == "四年级1班"


async def test_a_transfer_keeps_the_childs_guardians(app, client, world, system_session):
    child = await make_child(app, system_session, world["school1"], world["class11"])
    await system_session.commit()
    r = await client.post(
        f"/children/{child.id}/transfer",
        json={"to_school_id": str(world["school3"]), "reason": "转学至白水县"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201, r.text
    links = (
        await system_session.execute(
            select(func.count())
            .select_from(ChildGuardian)
            .where(ChildGuardian.child_id == child.id, ChildGuardian.is_active)
        )
    ).scalar_one()
    assert links == 2
    body = (await client.get(f"/children/{child.id}", headers=world.headers("admin3"))).json()
    assert body["school_name"] == "白沙镇完小"
    # Still complete but for the class the new school has yet to choose.
    assert [m["code"] for m in body["missing"]] == ["missing_class"]
    assert (await client.get(f"/children/{child.id}", headers=world.headers("bureau"))).status_code == 404
    assert (await client.get(f"/children/{child.id}", headers=world.headers("other_bureau"))).status_code == 200


@pytest.mark.parametrize(
    ("who", "body", "status", "code"),
    [
        ("admin1", {"to_school_id": "00000000-0000-0000-0000-000000000000", "reason": "x"}, 404, "school_not_found"),
        ("admin1", {"to_school_id": "SCHOOL1", "reason": "x"}, 422, "transfer_same_school"),
        ("admin1", {"to_school_id": "SCHOOL2"}, 422, "validation_error"),
        ("admin1", {"to_school_id": "SCHOOL2", "reason": "  "}, 422, "validation_error"),
        (
            "admin1",
            {"to_school_id": "SCHOOL2", "reason": "x", "effective_on": "2026-11-25"},
            422,
            "effective_on_in_future",
        ),
        (
            "admin1",
            {"to_school_id": "SCHOOL2", "reason": "x", "effective_on": "2010-01-01"},
            422,
            "effective_on_before_birth",
        ),
        ("teacher1", {"to_school_id": "SCHOOL2", "reason": "x"}, 403, "role_forbidden"),
        ("bureau", {"to_school_id": "SCHOOL2", "reason": "x"}, 403, "role_forbidden"),
        ("admin2", {"to_school_id": "SCHOOL2", "reason": "x"}, 404, "child_not_found"),
    ],
)
async def test_transfers_that_cannot_be(client, world, who, body, status, code):
    child = await create(client, world)
    body = {k: str(world[v.lower()]) if v in ("SCHOOL1", "SCHOOL2") else v for k, v in body.items()}
    r = await client.post(f"/children/{child['id']}/transfer", json=body, headers=world.headers(who))
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


# ---- parents home and away --------------------------------------------------------------------------------


async def test_parents_coming_home_end_left_behind_status_and_the_rate_stops_counting_it(client, world, system_session):
    child = await create(client, world)
    cid = child["id"]
    r = await client.post(
        f"/children/{cid}/parents-returned", json={"reason": "父亲回乡办养殖场"}, headers=world.headers("teacher1b")
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_head_teacher"
    r = await client.post(
        f"/children/{cid}/parents-returned", json={"reason": "父亲回乡办养殖场"}, headers=world.headers("teacher1")
    )
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "parents_returned" and r.json()["effective_on"] == "2026-11-24"
    body = (await client.get(f"/children/{cid}", headers=world.headers("admin1"))).json()
    assert (body["is_left_behind"], body["parents_away"], body["left_behind_since"]) == (False, "none", None)
    rate = (
        await client.get(f"/schools/{world['school1']}/archive-completeness", headers=world.headers("admin1"))
    ).json()
    assert rate["left_behind"] == 0
    r = await client.post(
        f"/children/{cid}/parents-returned", json={"reason": "again"}, headers=world.headers("admin1")
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_left_behind"

    r = await client.post(
        f"/children/{cid}/became-left-behind",
        json={"reason": "母亲去东莞务工", "parents_away": "mother", "effective_on": "2026-11-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201, r.text
    body = (await client.get(f"/children/{cid}", headers=world.headers("admin1"))).json()
    assert (body["is_left_behind"], body["parents_away"], body["left_behind_since"]) == (True, "mother", "2026-11-01")
    r = await client.post(
        f"/children/{cid}/became-left-behind",
        json={"reason": "x", "parents_away": "both"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_left_behind"
    r = await client.post(f"/children/{cid}/parents-returned", json={"reason": "x"}, headers=world.headers("admin1"))
    assert r.status_code == 201
    r = await client.post(
        f"/children/{cid}/became-left-behind",
        json={"reason": "x", "parents_away": "none"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 422
    kinds = [e.kind for e in await events_of(system_session, cid)]
    assert kinds.count(ChildEventKind.parents_returned) == 2 and kinds.count(ChildEventKind.became_left_behind) == 1


async def test_dates_are_days_in_china_not_in_utc(app, client, world, clock, system_session):
    child = await create(client, world)
    # 01:00 on 25 November in Shanghai is still 24 November in UTC.
    clock.set(datetime(2026, 11, 24, 17, 0, tzinfo=UTC))
    headers = await headers_at(app, system_session, world, "admin1", clock.now())
    r = await client.post(
        f"/children/{child['id']}/parents-returned",
        json={"reason": "春节前返乡", "effective_on": "2026-11-25"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["recorded_at"].endswith("+08:00")
    r = await client.post(
        f"/children/{child['id']}/became-left-behind",
        json={"reason": "x", "parents_away": "both", "effective_on": "2026-11-26"},
        headers=headers,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "effective_on_in_future"


# ---- graduation, leaving, re-enrolment ----------------------------------------------------------------------


async def test_leaving_takes_the_child_off_the_roster_with_a_reason_and_nothing_is_deleted(
    client, world, system_session
):
    child = await create(client, world)
    cid = child["id"]
    r = await client.post(
        f"/children/{cid}/leave", json={"effective_on": "2026-11-01"}, headers=world.headers("admin1")
    )
    assert r.status_code == 422  # a reason is required
    r = await client.post(
        f"/children/{cid}/leave",
        json={"reason": "随父母到深圳就读", "effective_on": "2026-11-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201, r.text
    body = (await client.get(f"/children/{cid}", headers=world.headers("admin1"))).json()
    assert (body["status"], body["status_reason"], body["status_changed_on"]) == (
        "left",
        "随父母到深圳就读",
        "2026-11-01",
    )
    assert (await client.get("/children", headers=world.headers("admin1"))).json()["count"] == 0
    r = await client.get("/children", params={"status": "left"}, headers=world.headers("admin1"))
    assert [c["id"] for c in r.json()["data"]] == [cid]
    r = await client.post(f"/children/{cid}/leave", json={"reason": "again"}, headers=world.headers("admin1"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "child_not_enrolled"
    r = await client.post(
        f"/children/{cid}/transfer",
        json={"to_school_id": str(world["school2"]), "reason": "x"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 409

    r = await client.post(
        f"/children/{cid}/re-enrol",
        json={"reason": "返回原籍就读", "class_id": str(world["class12"])},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201, r.text
    body = (await client.get(f"/children/{cid}", headers=world.headers("admin1"))).json()
    assert (body["status"], body["class_label"]) == ("enrolled", "三年级2班")
    r = await client.post(f"/children/{cid}/re-enrol", json={"reason": "x"}, headers=world.headers("admin1"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "child_already_enrolled"
    assert (await system_session.get(Child, cid, populate_existing=True)) is not None
    assert [e.kind for e in await events_of(system_session, cid)] == [
        ChildEventKind.enrolled,
        ChildEventKind.left,
        ChildEventKind.re_enrolled,
    ]


async def test_graduation_needs_no_reason_and_only_school_admins_record_it(client, world):
    child = await create(client, world)
    r = await client.post(f"/children/{child['id']}/graduate", json={}, headers=world.headers("teacher1"))
    assert r.status_code == 403
    r = await client.post(f"/children/{child['id']}/graduate", json={}, headers=world.headers("admin1"))
    assert r.status_code == 201 and r.json()["reason"] == "毕业"
    body = (await client.get(f"/children/{child['id']}", headers=world.headers("admin1"))).json()
    assert body["status"] == "graduated"


# ---- history ----------------------------------------------------------------------------------------------


async def test_the_history_says_who_changed_which_field_when(client, world, clock):
    child = await create(client, world, who="teacher1")
    cid = child["id"]
    clock.advance(timedelta(minutes=5))
    await client.patch(
        f"/children/{cid}",
        json={"home_address": "青山县石桥镇桃花村1组", "id_number": id_number(date(2016, 3, 8), seed=11)},
        headers=world.headers("admin1"),
    )
    clock.advance(timedelta(minutes=5))
    await client.post(f"/children/{cid}/parents-returned", json={"reason": "父母返乡"}, headers=world.headers("admin1"))

    r = await client.get(f"/children/{cid}/history", headers=world.headers("teacher1"))
    assert r.status_code == 200, r.text
    history = r.json()
    # Audit rows carry the database's own time, events the injected clock: each kind is checked on its own.
    returned = next(h for h in history if h["action"] == "parents_returned")
    assert returned["source"] == "event" and returned["event"]["kind"] == "parents_returned"
    assert returned["actor_name"] == "石桥校长" and returned["event"]["reason"] == "父母返乡"
    events = [h["action"] for h in history if h["source"] == "event"]
    assert events == ["parents_returned", "enrolled"]
    update = next(
        h for h in history if h["action"] == "child.update" and any(c["field"] == "home_address" for c in h["changes"])
    )
    assert update["actor_name"] == "石桥校长"
    changes = {c["field"]: c for c in update["changes"]}
    assert changes["home_address"] == {
        "field": "home_address",
        "label": "家庭住址",
        "old": "青山县石桥镇白竹村3组",
        "new": "青山县石桥镇桃花村1组",
        "redacted": False,
    }
    assert changes["id_number"]["redacted"] is True and changes["id_number"]["old"] is None
    assert "id_number_index" not in changes and "updated_at" not in changes
    created = next(h for h in history if h["action"] == "child.create")
    assert created["actor_name"] == "李老师"
    assert {c["field"]: c["new"] for c in created["changes"]}["name"] == "张晓明"
    assert history == sorted(history, key=lambda h: h["at"], reverse=True)

    r = await client.get(f"/children/{cid}/history", headers=world.headers("teacher1b"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "detail_forbidden"


async def test_a_family_cannot_read_the_staff_history(app, client, world, system_session, clock):
    child = await create(client, world)
    account = Account(role=Role.family, display_name="家长")
    system_session.add(account)
    token = await login_token(system_session, app, account, clock.now())
    await system_session.commit()
    r = await client.get(f"/children/{child['id']}/history", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403


# ---- 每学年末交接: promotion ---------------------------------------------------------------------------------


async def test_a_class_moves_up_a_grade_in_one_operation(app, client, world, system_session):
    grade4 = await new_class(client, world, 4)
    moving = [await make_child(app, system_session, world["school1"], world["class11"]) for _ in range(3)]
    graduated = await make_child(app, system_session, world["school1"], world["class11"], status=ChildStatus.left)
    other = await make_child(app, system_session, world["school1"], world["class12"])
    await system_session.commit()

    r = await client.post(
        f"/schools/{world['school1']}/promotions",
        json={
            "classes": {str(world["class11"]): grade4},
            "effective_on": "2026-07-01",
            "head_teachers": {str(world["class11"]): str(world["teacher1"])},
        },
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["promoted"], result["graduated"], result["school_year"]) == (3, 0, "2025-2026")
    assert result["classes"] == [
        {
            "from_class_id": str(world["class11"]),
            "from_label": "三年级1班",
            "to_class_id": grade4,
            "to_label": "四年级1班",
            "created": False,
            "promoted": 3,
            "graduated": 0,
        }
    ]
    for child in moving:
        row = await system_session.get(Child, child.id, populate_existing=True)
        assert str(row.class_id) == grade4
        [event] = [e for e in await events_of(system_session, child.id) if e.kind == ChildEventKind.promoted]
        assert (str(event.to_class_id), event.from_class_id, event.effective_on) == (
            grade4,
            world["class11"],
            date(2026, 7, 1),
        )
    assert (await system_session.get(Child, graduated.id, populate_existing=True)).class_id == world["class11"]
    assert (await system_session.get(Child, other.id, populate_existing=True)).class_id == world["class12"]
    # The new head teacher sees the children in full.
    body = (await client.get(f"/children/{moving[0].id}", headers=world.headers("teacher1"))).json()
    assert body["detail"] == "full" and body["class_label"] == "四年级1班"

    # Running the same promotion again is refused: nobody moves a second time.
    r = await client.post(
        f"/schools/{world['school1']}/promotions",
        json={"classes": {str(world["class11"]): grade4}, "effective_on": "2026-07-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_promoted"
    assert "三年级1班" in r.json()["error"]["message"]
    assert str((await system_session.get(Child, moving[0].id, populate_existing=True)).class_id) == grade4


async def test_a_child_is_not_promoted_twice_in_one_school_year(app, client, world, system_session, clock):
    grade4 = await new_class(client, world, 4)
    grade5 = await new_class(client, world, 5)
    child = await make_child(app, system_session, world["school1"], world["class11"])
    await system_session.commit()
    url = f"/schools/{world['school1']}/promotions"
    r = await client.post(
        url,
        json={"classes": {str(world["class11"]): grade4}, "effective_on": "2026-09-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200 and r.json()["school_year"] == "2026-2027"
    r = await client.post(url, json={"classes": {grade4: grade5}}, headers=world.headers("admin1"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_promoted"
    assert str((await system_session.get(Child, child.id, populate_existing=True)).class_id) == grade4

    # A year later the class moves on again.
    clock.set(datetime(2027, 7, 2, 2, 0, tzinfo=UTC))
    headers = await headers_at(app, system_session, world, "admin1", clock.now())
    r = await client.post(url, json={"classes": {grade4: grade5}}, headers=headers)
    assert r.status_code == 409  # still the school year 2026-2027
    clock.set(datetime(2027, 9, 1, 2, 0, tzinfo=UTC))
    headers = await headers_at(app, system_session, world, "admin1", clock.now())
    r = await client.post(url, json={"classes": {grade4: grade5}}, headers=headers)
    assert r.status_code == 200 and r.json()["promoted"] == 1 and r.json()["school_year"] == "2027-2028"


async def test_the_whole_school_moves_up_and_the_last_grade_graduates(app, client, world, system_session):
    s1 = world["school1"]
    grade6 = await new_class(client, world, 6, head="teacher1b")
    grade4 = await new_class(client, world, 4)
    sixth = [await make_child(app, system_session, s1, grade6) for _ in range(2)]
    fourth = await make_child(app, system_session, s1, grade4)
    third = [await make_child(app, system_session, s1, world["class11"]) for _ in range(2)]
    third2 = await make_child(app, system_session, s1, world["class12"])
    await system_session.commit()

    # 三年级1班 cannot move into 四年级1班 while last year's fourth-graders are still there.
    r = await client.post(
        f"/schools/{s1}/promotions",
        json={"create_next_grade": [str(world["class11"])]},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "target_class_not_empty"

    r = await client.post(
        f"/schools/{s1}/promotions",
        json={"create_next_grade": [str(world["class11"]), str(world["class12"]), grade4, grade6]},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["promoted"], result["graduated"]) == (4, 2)
    by_label = {c["from_label"]: c for c in result["classes"]}
    assert list(by_label) == ["三年级1班", "三年级2班", "四年级1班", "六年级1班"]
    assert by_label["三年级1班"]["to_class_id"] == grade4 and by_label["三年级1班"]["created"] is False
    assert by_label["三年级2班"]["to_label"] == "四年级2班" and by_label["三年级2班"]["created"] is True
    assert by_label["四年级1班"]["to_label"] == "五年级1班" and by_label["四年级1班"]["created"] is True
    assert (by_label["六年级1班"]["to_class_id"], by_label["六年级1班"]["graduated"]) == (None, 2)

    for child in sixth:
        row = await system_session.get(Child, child.id, populate_existing=True)
        assert (row.status, row.class_id, row.status_reason) == (ChildStatus.graduated, row.class_id, "毕业")
        assert [e.kind for e in await events_of(system_session, child.id)] == [ChildEventKind.graduated]
    assert str((await system_session.get(Child, third[0].id, populate_existing=True)).class_id) == grade4
    assert (
        str((await system_session.get(Child, fourth.id, populate_existing=True)).class_id)
        == by_label["四年级1班"]["to_class_id"]
    )
    assert (
        str((await system_session.get(Child, third2.id, populate_existing=True)).class_id)
        == by_label["三年级2班"]["to_class_id"]
    )


async def test_a_promotion_is_all_or_nothing(app, client, world, system_session):
    grade4 = await new_class(client, world, 4)
    child = await make_child(app, system_session, world["school1"], world["class11"])
    await system_session.commit()
    r = await client.post(
        f"/schools/{world['school1']}/promotions",
        json={"classes": {str(world["class11"]): grade4, str(world["class21"]): grade4}},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "class_not_found"
    assert (await system_session.get(Child, child.id, populate_existing=True)).class_id == world["class11"]
    count = (
        await system_session.execute(
            select(func.count()).select_from(ChildEvent).where(ChildEvent.kind == ChildEventKind.promoted)
        )
    ).scalar_one()
    assert count == 0


@pytest.mark.parametrize(
    ("who", "body", "status", "code"),
    [
        ("admin1", {"classes": {"CLASS11": "CLASS12"}}, 422, "promotion_grade_mismatch"),
        ("admin1", {"classes": {"CLASS11": None}}, 422, "promotion_target_required"),
        ("admin1", {"classes": {"CLASS11": None}, "last_grade": 3}, 200, None),
        (
            "admin1",
            {"create_next_grade": ["CLASS11"], "last_grade": 3, "head_teachers": {"CLASS11": "TEACHER1"}},
            422,
            "head_teacher_invalid",
        ),
        (
            "admin1",
            {"create_next_grade": ["CLASS11"], "head_teachers": {"CLASS11": "TEACHER2"}},
            422,
            "head_teacher_invalid",
        ),
        ("admin1", {"create_next_grade": ["CLASS11"], "effective_on": "2026-12-01"}, 422, "effective_on_in_future"),
        ("admin1", {"create_next_grade": []}, 422, "validation_error"),
        ("admin1", {"classes": {}, "create_next_grade": ["CLASS11"]}, 422, "validation_error"),
        ("teacher1", {"create_next_grade": ["CLASS11"]}, 403, "role_forbidden"),
        ("admin2", {"create_next_grade": ["CLASS11"]}, 404, "school_not_found"),
    ],
)
async def test_promotions_that_cannot_be(client, world, who, body, status, code):
    def fill(value):
        if isinstance(value, dict):
            return {fill(k): fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, str) and value.isupper():
            return str(world[value.lower()])
        return value

    r = await client.post(f"/schools/{world['school1']}/promotions", json=fill(body), headers=world.headers(who))
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"]["code"] == code
