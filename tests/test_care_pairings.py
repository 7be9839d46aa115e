"""结对帮扶: one proxy parent per child, caps per proxy parent and mentor held under real concurrency, study
buddies from the school's own pupils, ends with a reason — by hand, or by themselves when the child transfers,
graduates or leaves, or the teacher leaves the school — help plans and progress notes, and scope."""

import asyncio
from datetime import date

from sqlalchemy import select

from api.models.accounts import Account, Role
from api.models.care import CarePairing, PairingEndReason
from tests.factories import login_token
from tests.live import LiveServer
from tests.test_completeness import make_child


async def child_in(app, session, world, klass="class11", school="school1", **overrides):
    child = await make_child(app, session, world[school], world[klass], **overrides)
    await session.commit()
    return str(child.id)


async def staff(session, world, name, role=Role.teacher, school="school1"):
    school_id = world[school]
    county, township = world["county"], world["township1" if school == "school1" else "township2"]
    account = Account(role=role, display_name=name, county_id=county, township_id=township, school_id=school_id)
    session.add(account)
    await session.commit()
    return str(account.id)


async def pair(client, world, child_id, who="admin1", expect=201, **body):
    r = await client.post(f"/children/{child_id}/care-pairings", json=body, headers=world.headers(who))
    assert r.status_code == expect, r.text
    return r.json()


async def test_a_child_has_one_active_proxy_parent_and_a_new_one_after_the_first_ends(
    client, world, app, system_session
):
    child = await child_in(app, system_session, world)
    first = await pair(client, world, child, kind="proxy_parent", staff_id=str(world["teacher1"]))
    assert first["kind_label"] == "代理家长" and first["staff_name"] == "李老师" and first["active"]
    assert first["started_on"] == "2026-11-24"

    again = await pair(client, world, child, expect=409, kind="proxy_parent", staff_id=str(world["teacher1b"]))
    assert again["error"]["code"] == "proxy_parent_exists"

    r = await client.post(
        f"/care-pairings/{first['id']}/end",
        json={"reason": "reassigned", "note": "李老师调任毕业班"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["end_reason"] == "reassigned" and r.json()["ended_on"] == "2026-11-24" and not r.json()["active"]
    second = await pair(client, world, child, kind="proxy_parent", staff_id=str(world["teacher1b"]))
    listed = (await client.get(f"/children/{child}/care-pairings", headers=world.headers("teacher1"))).json()
    assert [(p["id"], p["active"]) for p in listed] == [(second["id"], True), (first["id"], False)]


async def test_a_pairing_ends_once_with_a_reason_the_archive_does_not_own(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    p = await pair(client, world, child, kind="proxy_parent", staff_id=str(world["teacher1"]))
    url, h = f"/care-pairings/{p['id']}/end", world.headers("admin1")
    for body, code in (
        ({"reason": "transferred"}, "reason_from_archive"),
        ({"reason": "completed", "ended_on": "2026-11-25"}, "ended_in_future"),
        ({"reason": "completed", "ended_on": "2026-11-01"}, "ended_before_start"),
        ({"reason": "bored"}, "validation_error"),
    ):
        r = await client.post(url, json=body, headers=h)
        assert (r.status_code, r.json()["error"]["code"]) == (422, code), r.text
    assert (await client.post(url, json={"reason": "completed"}, headers=h)).status_code == 200
    r = await client.post(url, json={"reason": "completed"}, headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "pairing_ended")


async def test_who_may_pair_the_head_teacher_of_the_class_yes_another_teacher_no(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    body = {"kind": "proxy_parent", "staff_id": str(world["teacher1b"])}
    refused = await pair(client, world, child, who="teacher1b", expect=403, **body)
    assert refused["error"]["code"] == "not_head_teacher"
    await pair(client, world, child, who="teacher1", **body)


async def test_the_partner_must_fit_the_kind(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    other_school = await child_in(app, system_session, world, klass="class21", school="school2")
    classmate = await child_in(app, system_session, world)
    cases = [
        ({"kind": "proxy_parent"}, "staff_required"),
        ({"kind": "proxy_parent", "staff_id": str(world["teacher2"])}, "staff_not_in_school"),
        ({"kind": "proxy_parent", "staff_id": str(world["bureau"])}, "staff_not_in_school"),
        (
            {"kind": "proxy_parent", "staff_id": str(world["teacher1"]), "buddy_child_id": classmate},
            "partner_not_of_kind",
        ),
        ({"kind": "study_buddy"}, "buddy_required"),
        ({"kind": "study_buddy", "buddy_child_id": child}, "self_pairing"),
        ({"kind": "study_buddy", "buddy_child_id": other_school}, "buddy_not_in_school"),
        (
            {"kind": "study_buddy", "buddy_child_id": classmate, "staff_id": str(world["teacher1"])},
            "partner_not_of_kind",
        ),
        ({"kind": "mentor"}, "mentor_required"),
        ({"kind": "mentor", "outside_name": "王建国", "outside_phone": "12345"}, "phone_format"),
        ({"kind": "proxy_parent", "staff_id": str(world["teacher1"]), "started_on": "2026-11-25"}, "started_in_future"),
    ]
    for body, code in cases:
        r = await client.post(f"/children/{child}/care-pairings", json=body, headers=world.headers("admin1"))
        assert (r.status_code, r.json()["error"]["code"]) == (422, code), (body, r.text)
    buddy = await pair(client, world, child, kind="study_buddy", buddy_child_id=classmate)
    assert buddy["kind_label"] == "学习伙伴" and buddy["buddy_child_id"] == classmate and buddy["buddy_name"]
    again = await pair(client, world, child, expect=409, kind="study_buddy", buddy_child_id=classmate)
    assert again["error"]["code"] == "already_paired"
    mentor = await pair(client, world, child, kind="mentor", outside_name="王建国", outside_phone="+86 138-0013-8000")
    assert mentor["outside_phone"] == "13800138000" and mentor["staff_id"] is None


async def test_a_mentor_takes_two_children_by_default_an_outside_mentor_counted_by_phone(
    client, world, app, system_session
):
    children = [await child_in(app, system_session, world) for _ in range(3)]
    for child in children[:2]:
        await pair(client, world, child, kind="mentor", staff_id=str(world["teacher1b"]))
    third = await pair(client, world, children[2], expect=409, kind="mentor", staff_id=str(world["teacher1b"]))
    assert third["error"]["code"] == "pairing_cap_reached"
    for child in children[:2]:
        await pair(client, world, child, kind="mentor", outside_name="王建国", outside_phone="13800138000")
    # The same person written another way is the same mentor.
    third = await pair(
        client, world, children[2], expect=409, kind="mentor", outside_name="王 建国", outside_phone="138 0013 8000"
    )
    assert third["error"]["code"] == "pairing_cap_reached"


async def test_the_proxy_parent_cap_is_the_schools_own(client, world, app, system_session):
    r = await client.get(f"/schools/{world['school1']}/care-settings", headers=world.headers("teacher1"))
    assert r.json() == {
        "school_id": str(world["school1"]),
        "proxy_parent_cap": 5,
        "mentor_cap": 2,
        "edit_window_minutes": 1440,
    }
    r = await client.put(
        f"/schools/{world['school1']}/care-settings", json={"proxy_parent_cap": 2}, headers=world.headers("admin1")
    )
    assert r.status_code == 200 and r.json()["proxy_parent_cap"] == 2 and r.json()["mentor_cap"] == 2
    refused = await client.put(
        f"/schools/{world['school1']}/care-settings", json={"proxy_parent_cap": 2}, headers=world.headers("teacher1")
    )
    assert refused.status_code == 403
    r = await client.put(
        f"/schools/{world['school1']}/care-settings", json={"proxy_parent_cap": 0}, headers=world.headers("admin1")
    )
    assert r.status_code == 422
    children = [await child_in(app, system_session, world) for _ in range(3)]
    for child in children[:2]:
        await pair(client, world, child, kind="proxy_parent", staff_id=str(world["teacher1b"]))
    r = await pair(client, world, children[2], expect=409, kind="proxy_parent", staff_id=str(world["teacher1b"]))
    assert r["error"]["code"] == "pairing_cap_reached" and "2" in r["error"]["message"]


async def test_caps_and_one_proxy_parent_hold_under_truly_concurrent_requests(live_url, world, app, system_session):
    """Twelve children paired with one proxy parent at once through a real server: exactly the cap (5) get
    one; and eight teachers made proxy parent of one child at once: exactly one is."""
    children = [await child_in(app, system_session, world) for _ in range(12)]
    teacher = str(world["teacher1b"])
    server = LiveServer.__new__(LiveServer)
    server.base_url = live_url
    async with server.client() as c:

        async def attempt(child_id, staff_id):
            r = await c.post(
                f"/children/{child_id}/care-pairings",
                json={"kind": "proxy_parent", "staff_id": staff_id},
                headers=world.headers("admin1"),
            )
            return r.status_code, r.json().get("error", {}).get("code")

        results = await asyncio.gather(*(attempt(child, teacher) for child in children))
        assert sorted(results, key=str).count((201, None)) == 5, results
        assert all(r == (409, "pairing_cap_reached") for r in results if r[0] != 201), results

        lone = await child_in(app, system_session, world)
        teachers = [await staff(system_session, world, f"教师{i}") for i in range(8)]
        results = await asyncio.gather(*(attempt(lone, t) for t in teachers))
        assert results.count((201, None)) == 1, results
        assert all(r == (409, "proxy_parent_exists") for r in results if r[0] != 201), results
    active = (
        (
            await system_session.execute(
                select(CarePairing).where(CarePairing.staff_id == world["teacher1b"], CarePairing.ended_on.is_(None))
            )
        )
        .scalars()
        .all()
    )
    assert len(active) == 5


async def test_a_child_who_transfers_graduates_or_leaves_has_their_pairings_ended_with_that_reason(
    client, world, app, system_session
):
    h = world.headers("admin1")
    ends = {}
    for how, path, body in (
        (
            "transferred",
            "transfer",
            {"to_school_id": str(world["school2"]), "reason": "随父母迁居", "effective_on": "2026-11-20"},
        ),
        ("graduated", "graduate", {"effective_on": "2026-11-20"}),
        ("left_school", "leave", {"reason": "随父母外出", "effective_on": "2026-11-20"}),
    ):
        child = await child_in(app, system_session, world)
        buddy_of = await child_in(app, system_session, world)
        proxy = await pair(
            client, world, child, kind="proxy_parent", staff_id=str(world["teacher1"]), started_on="2026-09-01"
        )
        # The leaving child is someone else's study buddy: that pairing ends too.
        as_buddy = await pair(client, world, buddy_of, kind="study_buddy", buddy_child_id=child)
        r = await client.post(f"/children/{child}/{path}", json=body, headers=h)
        assert r.status_code == 201, r.text
        for pairing_id in (proxy["id"], as_buddy["id"]):
            row = await system_session.get(CarePairing, pairing_id, populate_existing=True)
            ends[(how, pairing_id == proxy["id"])] = (row.end_reason, row.ended_on, row.ended_by_id)
    assert {k: v[1] for k, v in ends.items() if k[1]} == {
        (how, True): date(2026, 11, 20) for how in ("transferred", "graduated", "left_school")
    }
    for (how, _), (reason, ended_on, by) in ends.items():
        # On the event's date; never before the pairing started (the buddy pairing began today).
        assert reason == PairingEndReason(how) and ended_on in (date(2026, 11, 20), date(2026, 11, 24))
        assert by == world["admin1"]


async def test_a_pairing_ends_in_the_same_transaction_as_the_transfer(client, world, app, system_session):
    """A transfer refused by the archive (same school) leaves the pairing as it was: the end is part of the
    transfer's own transaction, not a later step."""
    child = await child_in(app, system_session, world)
    p = await pair(client, world, child, kind="proxy_parent", staff_id=str(world["teacher1"]))
    r = await client.post(
        f"/children/{child}/transfer",
        json={"to_school_id": str(world["school1"]), "reason": "x"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 422
    row = await system_session.get(CarePairing, p["id"])
    assert row.ended_on is None


async def test_a_teacher_who_leaves_the_school_leaves_their_children_unpaired_at_once(
    client, world, app, system_session
):
    teacher = await staff(system_session, world, "周老师")
    paired = [await child_in(app, system_session, world, name=n) for n in ("刘一", "刘二")]
    for child in paired:
        await pair(client, world, child, kind="proxy_parent", staff_id=teacher)
    url = f"/schools/{world['school1']}/unpaired-children"
    before = (await client.get(url, headers=world.headers("teacher1"))).json()
    assert not {c["child_id"] for c in before["data"]} & set(paired)

    r = await client.post(f"/accounts/{teacher}/deactivate", headers=world.headers("admin1"))
    assert r.status_code == 200, r.text

    after = (await client.get(url, headers=world.headers("teacher1"))).json()
    unpaired = {c["child_id"]: c for c in after["data"]}
    assert set(paired) <= set(unpaired)
    assert all(unpaired[c]["last_end_reason"] == "staff_left" for c in paired)
    assert after["count"] == before["count"] + 2
    # And they may be paired again at once.
    await pair(client, world, paired[0], kind="proxy_parent", staff_id=str(world["teacher1"]))
    # A deactivated account cannot be made a proxy parent.
    r = await pair(client, world, paired[1], expect=422, kind="proxy_parent", staff_id=teacher)
    assert r["error"]["code"] == "staff_not_in_school"


async def test_a_help_plan_and_progress_notes_by_the_paired_teacher(client, world, app, system_session, clock):
    child = await child_in(app, system_session, world, klass="class12")
    p = await pair(client, world, child, kind="proxy_parent", staff_id=str(world["teacher1"]))
    plan = {
        "goals": "提高数学成绩",
        "content": "每周两次辅导",
        "schedule": "周二、周四放学后",
        "milestones": [{"due_on": "2026-12-31", "description": "单元测验及格"}],
    }
    # teacher1 is the proxy parent (not the head teacher of 3(2)); teacher2 is of another school.
    r = await client.put(f"/care-pairings/{p['id']}/plan", json=plan, headers=world.headers("teacher1"))
    assert r.status_code == 200, r.text
    assert r.json()["plan"]["milestones"] == [
        {"due_on": "2026-12-31", "description": "单元测验及格", "achieved_on": None}
    ]
    assert (
        await client.put(f"/care-pairings/{p['id']}/plan", json=plan, headers=world.headers("teacher2"))
    ).status_code == 404
    r = await client.post(
        f"/care-pairings/{p['id']}/progress-notes",
        json={"text": "数学测验78分, 提高15分"},
        headers=world.headers("teacher1"),
    )
    assert r.status_code == 201, r.text
    notes = r.json()["progress_notes"]
    assert [(n["noted_on"], n["author_name"]) for n in notes] == [("2026-11-24", "李老师")]
    r = await client.post(
        f"/care-pairings/{p['id']}/progress-notes",
        json={"text": "x", "noted_on": "2026-11-01"},
        headers=world.headers("teacher1"),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "noted_outside_pairing")
    # Another teacher of the school, neither paired nor the head teacher of 3(2), may read, not write.
    r = await client.put(f"/care-pairings/{p['id']}/plan", json=plan, headers=world.headers("teacher1b"))
    assert r.status_code == 200  # teacher1b heads 3(2), the child's class
    outsider = await staff(system_session, world, "孙老师")
    token = await login_token(system_session, app, await system_session.get(Account, outsider), clock.now())
    await system_session.commit()
    r = await client.put(f"/care-pairings/{p['id']}/plan", json=plan, headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_pairing_writer")
    r = await client.get(f"/care-pairings/{p['id']}", headers=world.headers("teacher1b"))
    assert r.status_code == 200 and r.json()["plan"]["goals"] == "提高数学成绩"


async def test_pairings_of_another_school_are_not_found(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    p = await pair(client, world, child, kind="proxy_parent", staff_id=str(world["teacher1"]))
    for who in ("teacher2", "admin2", "admin3"):
        assert (await client.get(f"/care-pairings/{p['id']}", headers=world.headers(who))).status_code == 404
        assert (await client.get(f"/children/{child}/care-pairings", headers=world.headers(who))).status_code == 404
    listed = await client.get(f"/schools/{world['school1']}/care-pairings", headers=world.headers("bureau"))
    assert [x["id"] for x in listed.json()["data"]] == [p["id"]]
    r = await client.get(f"/schools/{world['school1']}/care-pairings", headers=world.headers("teacher2"))
    assert r.status_code == 404
