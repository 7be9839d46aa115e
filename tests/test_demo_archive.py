"""`serve --demo`: the demo schools get a few hundred realistic children with guardians, some files
deliberately incomplete; seeding is deterministic and can run twice."""

import re
from collections import Counter
from datetime import date

import pytest
from sqlalchemy import func, select

from api.demo.archive import INCOMPLETE_SHARE, grade_of, plan_archive
from api.demo.seed import DEMO_PASSWORD, seed_demo
from api.idcard import validate_id_number
from api.models.children import Child, ChildEvent, ChildEventKind, MissingItem
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.organisations import SchoolClass
from api.services import identity
from api.services.completeness import area_completeness, is_valid_phone

CHINESE_NAME = re.compile(r"[\u4e00-\u9fff]{2,4}")


@pytest.fixture
async def demo(app, system_session):
    ctx = await seed_demo(system_session, app.state.passwords)
    await system_session.commit()
    return ctx


async def table_counts(session):
    return {
        model.__tablename__: (await session.execute(select(func.count()).select_from(model))).scalar_one()
        for model in (Child, Guardian, ChildGuardian, ChildEvent)
    }


async def test_the_demo_schools_get_a_few_hundred_children_in_every_class(demo, system_session):
    children = (await system_session.execute(select(Child))).scalars().all()
    assert 250 <= len(children) <= 450
    classes = {c.id: c for c in (await system_session.execute(select(SchoolClass))).scalars()}
    per_class = Counter(c.class_id for c in children)
    assert set(per_class) == {c for ids in demo.class_ids.values() for c in ids}
    assert min(per_class.values()) >= 8
    for child in children:
        assert CHINESE_NAME.fullmatch(child.name), child.name
        assert grade_of(child.birth_date) == classes[child.class_id].grade  # ages fit the grades
        assert child.school_id == classes[child.class_id].school_id
        assert child.name_initials and child.name_pinyin


async def test_demo_id_numbers_are_valid_and_belong_to_the_child(app, demo, system_session):
    children = (await system_session.execute(select(Child).where(Child.id_number_cipher.is_not(None)))).scalars().all()
    assert len(children) > 200
    for child in children:
        number = identity.reveal_id_number(app.state.cipher, child.id_number_cipher)
        parsed = validate_id_number(number, today=date(2026, 11, 24))
        assert parsed.birth_date == child.birth_date and parsed.sex.value == child.sex.value
        assert child.id_number_masked == number[:4] + "*" * 10 + number[-4:]


async def test_every_child_has_guardians_and_siblings_share_them(demo, system_session):
    links = (await system_session.execute(select(ChildGuardian, Guardian).join(Guardian))).all()
    by_child = Counter(link.child_id for link, _ in links)
    assert len(by_child) == (await table_counts(system_session))["child"]
    assert min(by_child.values()) >= 2
    roles = Counter(link.role for link, _ in links)
    assert roles[GuardianRole.entrusted_guardian] > 200 and roles[GuardianRole.parent_away] > 200
    shared = Counter(link.guardian_id for link, _ in links if link.role == GuardianRole.entrusted_guardian)
    assert any(n >= 2 for n in shared.values())  # a grandmother looking after two grandchildren, stored once
    phones = [g.phone for _, g in links if g.phone]
    assert all(is_valid_phone(p) for p in phones)
    assert any(p.startswith("0739-") for p in phones)  # some elderly guardians have only the house phone


async def test_a_share_of_demo_files_is_incomplete_in_every_way_the_rule_names(demo, system_session):
    stats = await area_completeness(system_session)
    share = stats.incomplete / stats.left_behind
    assert INCOMPLETE_SHARE - 0.07 <= share <= INCOMPLETE_SHARE + 0.10, share
    shown = {item for item, n in stats.missing.items() if n}
    assert shown >= {
        MissingItem.missing_id_number,
        MissingItem.missing_home_address,
        MissingItem.missing_entrusted_guardian,
        MissingItem.missing_entrusted_guardian_phone,
        MissingItem.missing_parent_away_phone,
        MissingItem.missing_guardianship_rating,
        MissingItem.missing_left_behind_since,
    }
    assert all(s.left_behind > 0 and s.rate is not None and s.rate < 1 for s in stats.schools)


async def test_some_demo_children_have_special_situations_and_some_parents_came_home(demo, system_session):
    children = (await system_session.execute(select(Child))).scalars().all()
    assert sum(c.special_hardship for c in children) >= 5
    assert sum(c.struggling_learner for c in children) >= 10
    returned = [c for c in children if not c.is_left_behind]
    assert 3 <= len(returned) <= 40
    events = (
        await system_session.execute(
            select(ChildEvent.child_id).where(ChildEvent.kind == ChildEventKind.parents_returned)
        )
    ).scalars()
    assert set(events) == {c.id for c in returned}


async def test_seeding_twice_changes_nothing(app, demo, system_session):
    before = await table_counts(system_session)
    names = sorted((await system_session.execute(select(Child.name))).scalars())
    await seed_demo(system_session, app.state.passwords)
    await system_session.commit()
    assert await table_counts(system_session) == before
    assert sorted((await system_session.execute(select(Child.name))).scalars()) == names


def test_the_plan_is_the_same_every_time():
    classes = {demo_school: [(c, grade) for c, grade in zip(ids, (1, 2, 3, 4, 5, 6), strict=True)]
               for demo_school, ids in {"a": ["a1", "a2", "a3", "a4", "a5", "a6"]}.items()}  # fmt: skip
    first, second = plan_archive(classes), plan_archive(classes)
    assert [(c.key, c.person, c.class_id) for c in first.children] == [
        (c.key, c.person, c.class_id) for c in second.children
    ]
    assert first.guardians == second.guardians
    assert [c.person for c in plan_archive(classes, seed=1).children] != [c.person for c in first.children]


async def test_the_demo_school_admin_finds_the_incomplete_files(client, demo):
    r = await client.post("/auth/login", json={"username": "shiqiao-admin", "password": DEMO_PASSWORD})
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    rate = (await client.get(f"/schools/{demo.school_ids[0]}/archive-completeness", headers=headers)).json()
    listed = await client.get("/children", params={"complete": "false", "left_behind": "true"}, headers=headers)
    assert listed.json()["count"] == rate["incomplete"] > 0
    [first] = (await client.get("/children", params={"limit": 1}, headers=headers)).json()["data"]
    detail = (await client.get(f"/children/{first['id']}", headers=headers)).json()
    assert detail["detail"] == "full" and detail["character"] and detail["household_registration"].startswith("湖南省")
