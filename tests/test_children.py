"""一人一档: opening, reading and correcting a child's file — validated, scoped, at the right level of detail,
and audited."""

import random
from datetime import date, timedelta

import pytest
from sqlalchemy import select, text

from api.demo import people as demo_people
from api.idcard import Sex, compute_check_digit
from api.models.accounts import Account, Role
from api.models.audit import AuditEntry
from api.models.children import Child, ChildEvent, ChildEventKind
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from tests.factories import login_token

FULL_ONLY = ("id_number_masked", "home_address", "health", "notes", "birth_date", "character", "study_notes")


def id_number(born: date, sex: Sex = Sex.male, seed: int = 1) -> str:
    return demo_people.id_number(random.Random(seed), born, sex)


def with_bad_check_digit(number: str) -> str:
    wrong = "0" if compute_check_digit(number[:17]) != "0" else "1"
    return number[:17] + wrong


def child_body(world, **overrides):
    body = {
        "class_id": str(world["class11"]),
        "name": "张晓明",
        "id_number": id_number(date(2016, 3, 8)),
        "home_address": "青山县石桥镇白竹村3组",
        "health": "健康，对青霉素过敏",
        "parents_away": "both",
        "left_behind_since": "2019-02-01",
        "guardianship_rating": "fairly_good",
        "character": "内向，爱画画",
        "notes": "奶奶腿脚不便",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def create(client, world, who="admin1", **overrides):
    r = await client.post("/children", json=child_body(world, **overrides), headers=world.headers(who))
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_school_admin_opens_a_file_and_the_id_number_gives_sex_and_birth_date(client, world, system_session):
    number = id_number(date(2016, 3, 8), Sex.female, seed=7)
    child = await create(client, world, id_number=number, name="曾雨桐")
    assert child["detail"] == "full"
    assert child["sex"] == "female" and child["birth_date"] == "2016-03-08" and child["age"] == 10
    assert child["id_number_masked"] == number[:4] + "*" * 10 + number[-4:]
    assert "id_number" not in child
    assert child["class_label"] == "三年级1班" and child["school_name"] == "石桥镇中心小学"
    assert child["is_left_behind"] is True and child["status"] == "enrolled"

    row = await system_session.get(Child, child["id"])
    assert row.name_pinyin == "zengyutong" and row.name_initials == "zyt"
    assert number not in row.id_number_cipher and row.id_number_index
    events = (await system_session.execute(select(ChildEvent).where(ChildEvent.child_id == row.id))).scalars().all()
    assert [(e.kind, e.effective_on) for e in events] == [(ChildEventKind.enrolled, date(2026, 11, 24))]


async def test_the_id_number_never_reaches_the_audit_log(client, world, system_session):
    number = id_number(date(2015, 5, 1))
    child = await create(client, world, id_number=number)
    await client.patch(
        f"/children/{child['id']}",
        json={"id_number": id_number(date(2015, 5, 1), seed=9)},
        headers=world.headers("admin1"),
    )
    dump = (await system_session.execute(text("SELECT string_agg(changes::text, ' ') FROM audit_log"))).scalar_one()
    assert number not in dump and number[:17] not in dump
    assert "id_number_cipher" in dump  # logged as changed, without the value


async def test_a_malformed_id_number_is_refused_with_the_validators_code(client, world):
    good = id_number(date(2016, 3, 8))
    r = await client.post(
        "/children", json=child_body(world, id_number=with_bad_check_digit(good)), headers=world.headers("admin1")
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "id_number_check_digit" and "校验位" in err["message"]
    assert err["fields"][0]["loc"] == ["id_number"]
    r = await client.post(
        "/children", json=child_body(world, id_number="43052420160308"), headers=world.headers("admin1")
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "id_number_format"


async def test_the_same_id_number_cannot_open_a_second_file_even_in_another_school(client, world):
    number = id_number(date(2016, 3, 8))
    await create(client, world, id_number=number)
    r = await client.post(
        "/children",
        json=child_body(world, id_number=number, class_id=str(world["class21"]), name="张小明"),
        headers=world.headers("admin2"),
    )
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "child_duplicate_id_number" and "转学" in err["message"]
    assert "石桥" not in err["message"]  # the other school is not revealed


async def test_birth_dates_must_be_plausible_and_agree_with_the_id_number(client, world):
    r = await client.post(
        "/children",
        json=child_body(world, id_number=None, sex="male", birth_date="2027-01-01"),
        headers=world.headers("admin1"),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "birth_date_in_future"
    r = await client.post(
        "/children",
        json=child_body(world, birth_date="2016-03-09"),  # the ID number says 2016-03-08
        headers=world.headers("admin1"),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "id_number_birth_date_mismatch"
    r = await client.post("/children", json=child_body(world, sex="female"), headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "id_number_sex_mismatch"
    r = await client.post("/children", json=child_body(world, id_number=None), headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "sex_required"
    r = await client.post(
        "/children", json=child_body(world, left_behind_since="2010-01-01"), headers=world.headers("admin1")
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "left_behind_since_before_birth"


async def test_a_file_without_an_id_number_can_be_opened_and_is_incomplete(client, world):
    child = await create(client, world, id_number=None, sex="male", birth_date="2016-03-08")
    assert child["id_number_masked"] is None
    assert "missing_id_number" in [m["code"] for m in child["missing"]] and child["complete"] is False


async def test_a_class_of_another_school_is_not_found(client, world):
    r = await client.post(
        "/children", json=child_body(world, class_id=str(world["class21"])), headers=world.headers("admin1")
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "class_not_found"
    r = await client.post(
        "/children",
        json=child_body(world, school_id=str(world["school1"]), class_id=str(world["class21"])),
        headers=world.headers("platform"),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "class_not_in_school"


async def test_a_file_cannot_be_opened_in_a_school_outside_ones_scope(client, world):
    r = await client.post(
        "/children",
        json=child_body(world, school_id=str(world["school2"]), class_id=None),
        headers=world.headers("admin1"),
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "school_not_found"
    r = await client.post("/children", json=child_body(world), headers=world.headers("bureau"))
    assert r.status_code == 403


async def test_a_head_teacher_opens_files_only_in_their_own_class(client, world):
    child = await create(client, world, who="teacher1")
    assert child["class_id"] == str(world["class11"])
    r = await client.post(
        "/children", json=child_body(world, class_id=str(world["class12"])), headers=world.headers("teacher1")
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_head_teacher"
    r = await client.patch(f"/children/{child['id']}", json={"notes": "x"}, headers=world.headers("teacher1b"))
    assert r.status_code == 403


@pytest.mark.parametrize("who", ["admin1", "teacher1", "bureau", "official1", "platform"])
async def test_those_who_look_after_the_child_see_the_full_file(client, world, who):
    child = await create(client, world)
    r = await client.get(f"/children/{child['id']}", headers=world.headers(who))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["detail"] == "full"
    assert body["home_address"] == "青山县石桥镇白竹村3组" and body["id_number_masked"].startswith("4305")


async def test_a_teacher_of_another_class_sees_the_basic_view_only(client, world, system_session):
    child = await create(client, world)
    r = await client.get(f"/children/{child['id']}", headers=world.headers("teacher1b"))
    assert r.status_code == 200
    body = r.json()
    assert body["detail"] == "basic"
    assert body["name"] == "张晓明" and body["class_label"] == "三年级1班" and body["sex"] == "male"
    assert "complete" in body and "flags" in body
    for key in FULL_ONLY:
        assert key not in body, key
    reads = (await system_session.execute(select(AuditEntry).where(AuditEntry.action == "child.read"))).scalars().all()
    assert reads == []  # only reads of the full file are recorded


async def test_every_full_read_is_audited(client, world, system_session):
    child = await create(client, world)
    await client.get(f"/children/{child['id']}", headers=world.headers("teacher1"))
    await client.get(f"/children/{child['id']}", headers=world.headers("bureau"))
    reads = (
        (
            await system_session.execute(
                select(AuditEntry).where(AuditEntry.action == "child.read").order_by(AuditEntry.id)
            )
        )
        .scalars()
        .all()
    )
    assert [(e.account_id, e.resource_id) for e in reads] == [
        (world["teacher1"], child["id"]),
        (world["bureau"], child["id"]),
    ]
    assert all(e.school_id == world["school1"] and e.county_id == world["county"] for e in reads)


@pytest.mark.parametrize("who", ["admin2", "teacher2", "official2", "other_bureau", "admin3"])
async def test_two_schools_never_see_each_others_children(client, world, who):
    child = await create(client, world)
    r = await client.get(f"/children/{child['id']}", headers=world.headers(who))
    assert r.status_code == 404 and r.json()["error"]["code"] == "child_not_found"
    r = await client.get("/children", headers=world.headers(who))
    assert r.status_code == 200 and r.json()["count"] == 0
    r = await client.patch(f"/children/{child['id']}", json={"notes": "x"}, headers=world.headers(who))
    assert r.status_code in (403, 404)


async def test_only_a_school_admin_may_reveal_the_full_id_number_and_it_is_audited(client, world, system_session):
    number = id_number(date(2016, 3, 8), seed=3)
    child = await create(client, world, id_number=number)
    url = f"/children/{child['id']}/reveal-id-number"
    for who, status in (("teacher1", 403), ("bureau", 403), ("platform", 403), ("admin2", 404)):
        r = await client.post(url, headers=world.headers(who))
        assert r.status_code == status, who
    r = await client.post(url, headers=world.headers("admin1"))
    assert r.status_code == 200 and r.json()["id_number"] == number
    entries = (
        (await system_session.execute(select(AuditEntry).where(AuditEntry.action == "child.reveal_id_number")))
        .scalars()
        .all()
    )
    assert [(e.account_id, e.resource_id) for e in entries] == [(world["admin1"], child["id"])]
    assert number not in str(entries[0].changes)


async def test_a_family_sees_only_their_own_child_and_in_the_family_view(app, client, world, system_session, clock):
    own = await create(client, world)
    other = await create(client, world, id_number=id_number(date(2016, 4, 1), seed=2), name="李子轩")
    account = Account(role=Role.family, display_name="张建国")
    system_session.add(account)
    await system_session.flush()
    grandpa = Guardian(name="张建国", phone="13812345678", account_id=account.id)
    system_session.add(grandpa)
    await system_session.flush()
    system_session.add(
        ChildGuardian(child_id=own["id"], guardian_id=grandpa.id, role=GuardianRole.entrusted_guardian, relation="祖父")
    )
    token = await login_token(system_session, app, account, clock.now())
    await system_session.commit()
    headers = {"Authorization": f"Bearer {token}"}

    r = await client.get(f"/children/{own['id']}", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["detail"] == "family" and body["name"] == "张晓明" and body["class_label"] == "三年级1班"
    assert body["id_number_masked"] == own["id_number_masked"] and body["relation"] == "祖父"
    assert "notes" not in body and "guardianship_rating" not in body
    r = await client.get(f"/children/{other['id']}", headers=headers)
    assert r.status_code == 404
    assert (await client.get("/children", headers=headers)).status_code == 403
    assert (await client.post(f"/children/{own['id']}/reveal-id-number", headers=headers)).status_code == 403
    assert (await client.patch(f"/children/{own['id']}", json={"notes": "x"}, headers=headers)).status_code == 403


async def test_an_update_changes_only_what_is_sent_and_sets_updated_at(client, world, clock):
    child = await create(client, world)
    clock.advance(timedelta(minutes=10))
    r = await client.patch(
        f"/children/{child['id']}",
        json={"name": "张晓敏", "home_address": "  青山县石桥镇桃花村1组 ", "special_hardship": True, "health": None},
        headers=world.headers("teacher1"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "张晓敏" and body["home_address"] == "青山县石桥镇桃花村1组"
    assert body["health"] is None and body["flags"] == ["special_hardship"]
    assert body["notes"] == "奶奶腿脚不便" and body["character"] == "内向，爱画画"
    assert body["updated_at"] > child["updated_at"]
    r = await client.get("/children", params={"q": "xiaomin"}, headers=world.headers("admin1"))
    assert [c["name"] for c in r.json()["data"]] == ["张晓敏"]


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        ({"parents_away": "none"}, "use_lifecycle_endpoint"),
        ({"sex": "female"}, "id_number_sex_mismatch"),
        ({"birth_date": "2016-03-09"}, "id_number_birth_date_mismatch"),
        ({"name": "  "}, "validation_error"),
        ({"birth_date": None}, "validation_error"),
        ({"left_behind_since": "2030-01-01"}, "left_behind_since_in_future"),
        ({"class_id": "00000000-0000-0000-0000-000000000000"}, "class_not_found"),
        ({"status": "left"}, "validation_error"),
        ({"school_id": "00000000-0000-0000-0000-000000000000"}, "validation_error"),
    ],
)
async def test_updates_that_would_break_the_file_are_refused(client, world, patch, code):
    child = await create(client, world)
    r = await client.patch(f"/children/{child['id']}", json=patch, headers=world.headers("admin1"))
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == code, r.text


async def test_a_new_id_number_brings_its_birth_date_and_a_duplicate_is_refused(client, world):
    first = await create(client, world)
    second = await create(client, world, id_number=id_number(date(2015, 1, 2), seed=4), name="李浩然")
    r = await client.patch(
        f"/children/{second['id']}", json={"id_number": id_number(date(2016, 3, 8))}, headers=world.headers("admin1")
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "child_duplicate_id_number"
    fixed = id_number(date(2015, 1, 3), Sex.female, seed=5)
    r = await client.patch(f"/children/{second['id']}", json={"id_number": fixed}, headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    assert r.json()["birth_date"] == "2015-01-03" and r.json()["sex"] == "female"
    r = await client.patch(
        f"/children/{first['id']}", json={"id_number": first_number()}, headers=world.headers("admin1")
    )
    assert r.status_code == 200  # its own number again is not a duplicate


def first_number() -> str:
    return id_number(date(2016, 3, 8))


async def test_changing_class_is_recorded_as_an_event(client, world, system_session):
    child = await create(client, world)
    r = await client.patch(
        f"/children/{child['id']}", json={"class_id": str(world["class12"])}, headers=world.headers("admin1")
    )
    assert r.status_code == 200 and r.json()["class_label"] == "三年级2班"
    kinds = (
        await system_session.execute(
            select(ChildEvent.kind, ChildEvent.from_class_id, ChildEvent.to_class_id).where(
                ChildEvent.child_id == child["id"], ChildEvent.kind == ChildEventKind.class_changed
            )
        )
    ).all()
    assert kinds == [(ChildEventKind.class_changed, world["class11"], world["class12"])]


async def test_a_subject_teacher_of_the_class_sees_the_full_file_but_cannot_edit_it(client, world):
    child = await create(client, world)
    assert (await client.get(f"/children/{child['id']}", headers=world.headers("teacher1b"))).json()[
        "detail"
    ] == "basic"
    r = await client.put(f"/classes/{world['class11']}/teachers/{world['teacher1b']}", headers=world.headers("admin1"))
    assert r.status_code == 204, r.text
    body = (await client.get(f"/children/{child['id']}", headers=world.headers("teacher1b"))).json()
    assert body["detail"] == "full" and body["health"] == "健康，对青霉素过敏"
    r = await client.patch(f"/children/{child['id']}", json={"notes": "x"}, headers=world.headers("teacher1b"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_head_teacher"
