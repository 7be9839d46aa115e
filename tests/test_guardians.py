"""Guardians: one person stored once, linked to each child they care for, called in a fixed order."""

import uuid
from datetime import date

from sqlalchemy import func, select

from api.db import scoped_session
from api.models.audit import AuditEntry
from api.models.children import Child, ChildStatus, Sex
from api.models.guardians import ChildGuardian, Guardian
from api.scoping import SYSTEM

GRANDMOTHER = {"name": "王桂兰", "phone": "13807391234", "age": 66, "health": "高血压", "address": "石门村3组"}


async def make_child(app, world, *, school="school1", klass="class11", name="张子轩", **fields) -> uuid.UUID:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        child = Child(
            school_id=world[school],
            class_id=world[klass] if klass else None,
            name=name,
            sex=fields.pop("sex", Sex.male),
            birth_date=fields.pop("birth_date", date(2016, 5, 1)),
            **fields,
        )
        s.add(child)
        await s.flush()
        return child.id


async def add(client, world, child_id, *, who="admin1", role="entrusted_guardian", relation="祖母", **body):
    body.setdefault("guardian", dict(GRANDMOTHER))
    r = await client.post(
        f"/children/{child_id}/guardians",
        json={"role": role, "relation": relation, **body},
        headers=world.headers(who),
    )
    return r


async def added(client, world, child_id, **kw):
    r = await add(client, world, child_id, **kw)
    assert r.status_code == 201, r.text
    return r.json()


async def listing(client, world, child_id, who="admin1"):
    r = await client.get(f"/children/{child_id}/guardians", headers=world.headers(who))
    assert r.status_code == 200, r.text
    return r.json()


def person(name, phone, **fields):
    return {"name": name, "phone": phone, **fields}


async def test_a_head_teacher_records_a_parent_working_away_with_work_and_a_normalised_phone(client, world, app):
    child = await make_child(app, world)
    body = await added(
        client,
        world,
        child,
        who="teacher1",
        role="parent_away",
        relation="父亲",
        guardian=person(
            "张伟",
            "+86 138-0739-8888",
            age=36,
            work_city="东莞",
            employer="东莞市宏达电子有限公司",
            employer_address="东莞市长安镇",
            trade="电子厂流水线",
        ),
    )
    g = body["guardian"]
    assert body["reused"] is False and body["role_label"] == "在外务工家长" and body["contact_order"] == 1
    assert g["phone"] == "13807398888"
    assert g["birth_year"] == 1990 and g["age"] == 36
    assert (g["work_city"], g["employer"], g["trade"]) == ("东莞", "东莞市宏达电子有限公司", "电子厂流水线")
    assert body["since"] is None  # unknown unless the form says since when


async def test_landlines_are_kept_with_area_code_and_extension(client, world, app):
    child = await make_child(app, world)
    body = await added(client, world, child, guardian=person("刘建国", "（0739）522 1234 转 12"))
    assert body["guardian"]["phone"] == "0739-5221234-12"


async def test_phone_numbers_that_cannot_be_dialled_are_refused_with_the_validators_code(client, world, app):
    child = await make_child(app, world)
    for phone, code in [
        ("1380739123", "phone_format"),  # ten digits
        ("12345678901", "phone_format"),  # no such mobile prefix
        ("5221234", "phone_area_code"),  # a landline without its area code
        ("电话13807391234", "phone_format"),
    ]:
        r = await add(client, world, child, guardian=person("王桂兰", phone))
        assert r.status_code == 422, (phone, r.text)
        err = r.json()["error"]
        assert err["code"] == code, phone
        assert err["fields"][0]["loc"] == ["phone"]
    r = await add(client, world, child, guardian=person("王桂兰", "13807391234", phone_alt="0739-12"))
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["loc"] == ["phone_alt"]
    assert await listing(client, world, child) == []


async def test_the_same_grandmother_for_two_siblings_is_stored_once(client, world, app, system_session):
    elder = await make_child(app, world, name="张子轩")
    younger = await make_child(app, world, klass="class12", name="张梓涵", sex=Sex.female)
    first = await added(client, world, elder)
    # The younger one's head teacher types the same number differently and adds what she knows.
    second = await added(
        client,
        world,
        younger,
        guardian={"name": "王 桂兰", "phone": "138 0739 1234", "education": "小学", "health": "糖尿病"},
    )
    assert second["reused"] is True
    assert second["guardian_id"] == first["guardian_id"]
    # Blanks are filled in; what the school already knew is not overwritten.
    assert second["guardian"]["education"] == "小学" and second["guardian"]["health"] == "高血压"
    count = await system_session.scalar(select(func.count()).select_from(Guardian).where(Guardian.name == "王桂兰"))
    assert count == 1


async def test_a_different_person_sharing_the_house_phone_is_a_new_record(client, world, app):
    elder = await make_child(app, world, name="张子轩")
    younger = await make_child(app, world, name="张梓涵")
    grandma = await added(client, world, elder)
    grandpa = await added(client, world, younger, relation="祖父", guardian=person("张建国", GRANDMOTHER["phone"]))
    assert grandpa["reused"] is False and grandpa["guardian_id"] != grandma["guardian_id"]


async def test_the_same_name_and_phone_in_another_school_is_not_merged(client, world, app):
    here = await make_child(app, world)
    there = await make_child(app, world, school="school2", klass="class21")
    a = await added(client, world, here)
    b = await added(client, world, there, who="admin2")
    assert b["reused"] is False and b["guardian_id"] != a["guardian_id"]


async def test_a_sibling_is_linked_to_a_guardian_on_file_and_only_once(client, world, app):
    elder = await make_child(app, world)
    younger = await make_child(app, world, name="张梓涵")
    g = (await added(client, world, elder))["guardian_id"]
    body = await added(client, world, younger, guardian=None, guardian_id=g)
    assert body["guardian_id"] == g and body["guardian"]["name"] == "王桂兰"
    r = await add(client, world, younger, guardian=None, guardian_id=g)
    assert r.status_code == 409 and r.json()["error"]["code"] == "guardian_already_linked"
    r = await add(client, world, younger, guardian=None)
    assert r.status_code == 422  # neither a person nor an id
    r = await add(client, world, younger, guardian_id=g)
    assert r.status_code == 422  # both


async def test_a_guardian_of_another_school_cannot_be_linked(client, world, app):
    there = await make_child(app, world, school="school2", klass="class21")
    g = (await added(client, world, there, who="admin2"))["guardian_id"]
    here = await make_child(app, world)
    r = await add(client, world, here, guardian=None, guardian_id=g)
    assert r.status_code == 404 and r.json()["error"]["code"] == "guardian_not_found"


async def test_guardians_are_listed_in_call_order_and_a_new_first_contact_moves_the_others_down(client, world, app):
    child = await make_child(app, world)
    await added(client, world, child)
    await added(client, world, child, role="parent_away", relation="父亲", guardian=person("张伟", "13907390001"))
    await added(
        client,
        world,
        child,
        role="parent_away",
        relation="母亲",
        contact_order=1,
        guardian=person("李丽", "13907390002"),
    )
    rows = await listing(client, world, child)
    assert [(r["relation"], r["contact_order"]) for r in rows] == [("母亲", 1), ("祖母", 2), ("父亲", 3)]


async def test_reordering_sets_orders_one_to_n_and_must_name_every_active_guardian(client, world, app):
    child = await make_child(app, world)
    a = (await added(client, world, child))["id"]
    b = (await added(client, world, child, relation="祖父", guardian=person("张建国", "13907390003")))["id"]
    c = (await added(client, world, child, relation="母亲", guardian=person("李丽", "13907390002")))["id"]
    r = await client.put(
        f"/children/{child}/contact-order", json={"link_ids": [c, a, b]}, headers=world.headers("teacher1")
    )
    assert r.status_code == 200, r.text
    assert [(x["id"], x["contact_order"]) for x in r.json()] == [(c, 1), (a, 2), (b, 3)]
    for wrong in ([c, a], [c, a, b, b], [c, a, str(uuid.uuid4())]):
        r = await client.put(
            f"/children/{child}/contact-order", json={"link_ids": wrong}, headers=world.headers("teacher1")
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "contact_order_mismatch", wrong
    assert [x["id"] for x in await listing(client, world, child)] == [c, a, b]


async def test_ending_a_link_keeps_it_on_file_and_closes_up_the_call_order(client, world, app, system_session):
    child = await make_child(app, world)
    grandma = (await added(client, world, child))["id"]
    father = (
        await added(client, world, child, role="parent_away", relation="父亲", guardian=person("张伟", "13907390001"))
    )["id"]
    r = await client.post(
        f"/children/{child}/guardians/{grandma}/end",
        json={"reason": "去世", "until": "2026-11-20"},
        headers=world.headers("teacher1"),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["is_active"], r.json()["until"], r.json()["end_reason"]) == (False, "2026-11-20", "去世")
    rows = await listing(client, world, child)
    assert [(x["id"], x["is_active"], x["contact_order"]) for x in rows][0] == (father, True, 1)
    assert rows[1]["id"] == grandma and rows[1]["is_active"] is False
    assert await system_session.get(ChildGuardian, uuid.UUID(grandma)) is not None

    r = await client.post(
        f"/children/{child}/guardians/{grandma}/end", json={"reason": "去世"}, headers=world.headers("admin1")
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "guardian_link_ended"
    r = await client.post(
        f"/children/{child}/guardians/{father}/end",
        json={"reason": "返乡", "until": "2027-01-01"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "until_in_future"
    r = await client.post(f"/children/{child}/guardians/{father}/end", json={}, headers=world.headers("admin1"))
    assert r.status_code == 422  # a reason is required

    entry = (
        await system_session.execute(
            select(AuditEntry).where(AuditEntry.action == "child_guardian.update", AuditEntry.resource_id == grandma)
        )
    ).scalar_one()
    assert entry.changes["is_active"] == {"old": True, "new": False}
    assert entry.account_id == world["teacher1"]


async def test_a_link_is_patched_and_an_ended_one_restored_at_the_end_of_the_order(client, world, app):
    child = await make_child(app, world)
    grandma = (await added(client, world, child))["id"]
    father = (
        await added(client, world, child, role="parent_away", relation="父亲", guardian=person("张伟", "13907390001"))
    )["id"]
    url = f"/children/{child}/guardians"
    r = await client.patch(
        f"{url}/{father}", json={"contact_order": 1, "relation": "爸爸"}, headers=world.headers("admin1")
    )
    assert r.status_code == 200 and (r.json()["contact_order"], r.json()["relation"]) == (1, "爸爸")
    r = await client.patch(f"{url}/{grandma}", json={"is_active": False}, headers=world.headers("admin1"))
    assert r.json()["is_active"] is False and r.json()["until"] == "2026-11-24"
    r = await client.patch(f"{url}/{grandma}", json={"contact_order": 1}, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "guardian_link_ended"
    r = await client.patch(f"{url}/{grandma}", json={"is_active": True}, headers=world.headers("admin1"))
    assert (r.json()["is_active"], r.json()["until"], r.json()["contact_order"]) == (True, None, 2)
    r = await client.patch(f"{url}/{grandma}", json={"role": None}, headers=world.headers("admin1"))
    assert r.status_code == 422
    r = await client.patch(f"{url}/{uuid.uuid4()}", json={"relation": "外婆"}, headers=world.headers("admin1"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "guardian_link_not_found"


async def test_only_admins_and_the_childs_own_teachers_write(client, world, app):
    child = await make_child(app, world)  # in class11, headed by teacher1
    r = await add(client, world, child, who="teacher1b")
    assert r.status_code == 403 and r.json()["error"]["code"] == "guardian_write_forbidden"
    for who in ("bureau", "official1"):
        r = await add(client, world, child, who=who)
        assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden"
    link = await added(client, world, child, who="teacher1")
    r = await client.patch(
        f"/guardians/{link['guardian_id']}", json={"health": "良好"}, headers=world.headers("teacher1b")
    )
    assert r.status_code == 403
    r = await client.post(
        f"/children/{child}/guardians/{link['id']}/end", json={"reason": "x"}, headers=world.headers("teacher1b")
    )
    assert r.status_code == 403


async def test_a_child_of_another_school_is_not_found(client, world, app):
    child = await make_child(app, world)
    await added(client, world, child)
    for who in ("admin2", "teacher2", "other_bureau", "official2"):
        r = await client.get(f"/children/{child}/guardians", headers=world.headers(who))
        assert r.status_code == 404, who
    r = await add(client, world, child, who="admin2")
    assert r.status_code == 404 and r.json()["error"]["code"] == "child_not_found"


async def test_teachers_of_other_classes_see_masked_phones_and_no_personal_details(client, world, app):
    child = await make_child(app, world)
    await added(client, world, child)
    (row,) = await listing(client, world, child, who="teacher1b")
    assert row["full_detail"] is False
    assert row["guardian"]["phone"] == "138****1234"
    assert row["guardian"]["address"] is None and row["guardian"]["health"] is None
    # As for the child's own file: the class's teachers, the school's admins, the bureau and the township.
    for who in ("teacher1", "admin1", "bureau", "official1"):
        (row,) = await listing(client, world, child, who=who)
        assert row["full_detail"] is True and row["guardian"]["phone"] == "13807391234", who


async def test_full_reads_of_the_guardian_list_are_audited(client, world, app, system_session):
    child = await make_child(app, world)
    await added(client, world, child)
    await listing(client, world, child, who="teacher1")
    entry = (
        await system_session.execute(select(AuditEntry).where(AuditEntry.action == "child_guardians.read"))
    ).scalar_one()
    assert entry.resource_id == str(child) and entry.school_id == world["school1"]


async def test_a_guardian_record_is_corrected_once_for_all_their_children(client, world, app):
    elder = await make_child(app, world)
    younger = await make_child(app, world, name="张梓涵", klass="class12")
    g = (await added(client, world, elder))["guardian_id"]
    await added(client, world, younger, guardian=None, guardian_id=g)
    r = await client.patch(
        f"/guardians/{g}", json={"phone": "0739 5221234", "health": None}, headers=world.headers("teacher1b")
    )
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == "0739-5221234" and r.json()["health"] is None
    (row,) = await listing(client, world, elder)
    assert row["guardian"]["phone"] == "0739-5221234"
    r = await client.patch(f"/guardians/{g}", json={"phone": "12345"}, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "phone_format"
    r = await client.patch(f"/guardians/{g}", json={"name": None}, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "name_required"
    r = await client.patch(f"/guardians/{g}", json={"age": 60, "birth_year": 1966}, headers=world.headers("admin1"))
    assert r.status_code == 422
    r = await client.patch(f"/guardians/{g}", json={"birth_year": 2030}, headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "birth_year_invalid"

    detail = (await client.get(f"/guardians/{g}", headers=world.headers("admin1"))).json()
    assert {c["child_name"] for c in detail["children"]} == {"张子轩", "张梓涵"}


async def test_children_who_left_keep_their_guardians_on_file(client, world, app):
    child = await make_child(app, world, status=ChildStatus.left)
    await added(client, world, child)
    assert len(await listing(client, world, child)) == 1
