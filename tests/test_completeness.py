"""一人一档 completeness: a file is complete or says exactly what it lacks; 建档率 counts the same rule."""

import random
import uuid
from datetime import date

import pytest

from api.demo import people as demo_people
from api.models.children import Child, ChildStatus, GuardianshipRating, MissingItem, ParentsAway, Sex
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.services import identity
from api.services.completeness import LinkFacts, is_valid_phone, link_facts, missing_by_child, missing_items

M = MissingItem


async def make_child(app, session, school_id, class_id=None, *, links=None, seed=None, **overrides):
    """A complete left-behind file (unless ``overrides`` say otherwise), written straight to the database.

    ``links``: (role, phone, phone_alt, is_active) per guardian; default an entrusted grandmother and a father
    working away, both with mobiles."""
    rng = random.Random(seed if seed is not None else uuid.uuid4().int)
    born = demo_people.birth_date(rng, 2015, 2019)
    stored = identity.store_id_number(app.state.cipher, demo_people.id_number(rng, born, Sex.male))
    name = overrides.pop("name", demo_people.child_name(rng, "刘", sex=Sex.male))
    pinyin, initials = identity.name_keys(name)
    values = {
        "school_id": school_id,
        "class_id": class_id,
        "name": name,
        "name_pinyin": pinyin,
        "name_initials": initials,
        "sex": Sex.male,
        "birth_date": born,
        "id_number_cipher": stored.cipher,
        "id_number_index": stored.index,
        "id_number_masked": stored.masked,
        "home_address": demo_people.address(rng),
        "parents_away": ParentsAway.both,
        "left_behind_since": date(2020, 2, 1),
        "guardianship_rating": GuardianshipRating.good,
    }
    values.update(overrides)
    child = Child(**values)
    session.add(child)
    await session.flush()
    if links is None:
        links = [
            (GuardianRole.entrusted_guardian, demo_people.mobile(rng), None, True),
            (GuardianRole.parent_away, demo_people.mobile(rng), None, True),
        ]
    for order, (role, phone, phone_alt, active) in enumerate(links, start=1):
        guardian = Guardian(name=f"监护人{order}", phone=phone, phone_alt=phone_alt)
        session.add(guardian)
        await session.flush()
        session.add(
            ChildGuardian(
                child_id=child.id,
                guardian_id=guardian.id,
                role=role,
                relation="祖母" if role == GuardianRole.entrusted_guardian else "父亲",
                contact_order=order,
                is_active=active,
            )
        )
    await session.flush()
    return child


EG, PA = GuardianRole.entrusted_guardian, GuardianRole.parent_away
MOBILE, LANDLINE = "13812345678", "0739-5221234"

CASES = [
    ("a complete file", {}, []),
    (
        "no ID number",
        {"id_number_cipher": None, "id_number_index": None, "id_number_masked": None},
        [M.missing_id_number],
    ),
    ("no address", {"home_address": None}, [M.missing_home_address]),
    ("a blank address", {"home_address": " \u3000 "}, [M.missing_home_address]),
    ("no class", {"class_id": None}, [M.missing_class]),
    ("no guardianship rating", {"guardianship_rating": None}, [M.missing_guardianship_rating]),
    ("no date since when", {"left_behind_since": None}, [M.missing_left_behind_since]),
    ("no entrusted guardian", {"links": [(PA, MOBILE, None, True)]}, [M.missing_entrusted_guardian]),
    (
        "an entrusted guardian without a phone",
        {"links": [(EG, None, None, True), (PA, MOBILE, None, True)]},
        [M.missing_entrusted_guardian_phone],
    ),
    (
        "an entrusted guardian whose number cannot be dialled",
        {"links": [(EG, "12345", "5221234", True), (PA, MOBILE, None, True)]},
        [M.missing_entrusted_guardian_phone],
    ),
    (
        "an entrusted guardian reachable on the house phone (备用电话)",
        {"links": [(EG, None, LANDLINE, True), (PA, MOBILE, None, True)]},
        [],
    ),
    (
        "an entrusted guardian whose care has ended",
        {"links": [(EG, MOBILE, None, False), (PA, MOBILE, None, True)]},
        [M.missing_entrusted_guardian],
    ),
    ("no parent working away on file", {"links": [(EG, MOBILE, None, True)]}, [M.missing_parent_away]),
    (
        "a parent working away without a phone",
        {"links": [(EG, MOBILE, None, True), (PA, None, None, True)]},
        [M.missing_parent_away_phone],
    ),
    (
        "one of two parents away has a phone",
        {"links": [(EG, MOBILE, None, True), (PA, None, None, True), (PA, "0755-86001234-123", None, True)]},
        [],
    ),
    ("only the father away, on file", {"parents_away": ParentsAway.father}, []),
    (
        "no guardians at all",
        {"links": []},
        [M.missing_entrusted_guardian, M.missing_parent_away],
    ),
    (
        "a child who is no longer left-behind needs no guardians on file",
        {
            "links": [],
            "is_left_behind": False,
            "parents_away": ParentsAway.none,
            "guardianship_rating": None,
            "left_behind_since": None,
        },
        [],
    ),
    (
        "several things at once, in a stable order",
        {"home_address": "", "guardianship_rating": None, "class_id": None, "links": [(PA, MOBILE, None, True)]},
        [M.missing_home_address, M.missing_class, M.missing_entrusted_guardian, M.missing_guardianship_rating],
    ),
]


@pytest.mark.parametrize(("case", "overrides", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_a_file_lists_exactly_what_it_lacks(app, client, world, system_session, case, overrides, expected):
    child = await make_child(app, system_session, world["school1"], **{"class_id": world["class11"], **overrides})
    await system_session.commit()
    r = await client.get(f"/children/{child.id}", headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["code"] for m in body["missing"]] == [e.value for e in expected]
    assert body["complete"] is (not expected)
    assert (await missing_by_child(system_session, [child.id]))[child.id] == expected


async def test_missing_items_have_chinese_labels(app, client, world, system_session):
    child = await make_child(app, system_session, world["school1"], world["class11"], links=[(PA, MOBILE, None, True)])
    await system_session.commit()
    body = (await client.get(f"/children/{child.id}", headers=world.headers("teacher1b"))).json()
    assert body["detail"] == "basic"  # the basic view still says what is missing
    assert body["missing"] == [{"code": "missing_entrusted_guardian", "label": "缺少委托监护人"}]


def test_valid_phones_are_the_normalised_forms_of_api_phones():
    from api.phones import normalize_phone

    rng = random.Random(5)
    for raw in ["138 1234 5678", "+86 138-1234-5678", "0739-5221234", "(010) 6512 3456", "0731 8456 7890 转 123"]:
        assert is_valid_phone(normalize_phone(raw).normalized), raw
    for _ in range(200):
        assert is_valid_phone(demo_people.mobile(rng)) and is_valid_phone(demo_people.landline(rng))
    for bad in [None, "", "12345", "1381234567", "5221234", "0739-0221234", "138123456789", "13812345678\n"]:
        assert not is_valid_phone(bad), bad


async def test_the_sql_form_and_the_pure_function_agree_on_a_varied_county(app, world, system_session):
    """Hundreds of files with every combination of gaps: the SQL that counts 建档率 and filters lists must
    say exactly what the function that detail pages use says."""
    rng = random.Random(20261124)
    phones = [None, None, "", "12345", MOBILE, LANDLINE, "0739-5221234-12", "021-65123456", "13812345678 "]
    classes = [world["class11"], world["class12"], None]
    children = []
    for _ in range(300):
        links = [
            (rng.choice([EG, PA, GuardianRole.parent_home, GuardianRole.other_contact]), rng.choice(phones),
             rng.choice(phones), rng.random() < 0.8)
            for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))
        ]  # fmt: skip
        left_behind = rng.random() < 0.85
        overrides = {
            "class_id": rng.choice(classes),
            "home_address": rng.choice([None, "", " ", "\u3000", "白竹村3组", " 白竹村 "]),
            "is_left_behind": left_behind,
            "parents_away": rng.choice(list(ParentsAway)) if left_behind else ParentsAway.none,
            "guardianship_rating": rng.choice([None, GuardianshipRating.good, GuardianshipRating.none]),
            "left_behind_since": rng.choice([None, date(2021, 3, 1)]),
            "status": rng.choice([ChildStatus.enrolled] * 4 + [ChildStatus.graduated, ChildStatus.left]),
        }
        if rng.random() < 0.2:
            overrides.update(id_number_cipher=None, id_number_index=None, id_number_masked=None)
        child = await make_child(app, system_session, world["school1"], seed=rng.random(), links=links, **overrides)
        children.append((child, [LinkFacts(role, active, phone, alt) for role, phone, alt, active in links]))

    sql = await missing_by_child(system_session, [c.id for c, _ in children])
    expected = {c.id: missing_items(c, facts) for c, facts in children}
    assert sql == expected
    # The variety is real: every item is missing somewhere, and some files are complete.
    seen = {item for items in expected.values() for item in items}
    assert seen == set(MissingItem) - {M.missing_birth_date}
    assert any(not items for items in expected.values())

    # And the rates count the same rule: enrolled left-behind children only.
    from api.services.completeness import school_completeness

    stats = await school_completeness(system_session, school_id=world["school1"])
    counted = [c for c, _ in children if c.status == ChildStatus.enrolled and c.is_left_behind]
    assert stats.left_behind == len(counted)
    assert stats.complete == sum(1 for c in counted if not expected[c.id])
    for item in MissingItem:
        assert stats.missing[item] == sum(1 for c in counted if item in expected[c.id]), item
    for row in stats.classes:
        in_class = [c for c in counted if c.class_id == row.class_id]
        assert row.left_behind == len(in_class) and row.complete == sum(1 for c in in_class if not expected[c.id])


async def test_link_facts_read_the_guardian_and_the_link(app, world, system_session):
    child = await make_child(app, system_session, world["school1"], world["class11"])
    link = ChildGuardian(child_id=child.id, guardian_id=uuid.uuid4(), role=EG, relation="祖母", is_active=False)
    facts = link_facts(link, Guardian(name="王桂英", phone=None, phone_alt=LANDLINE))
    assert facts == LinkFacts(role=EG, is_active=False, phone=None, phone_alt=LANDLINE)


async def test_the_school_rate_counts_enrolled_left_behind_children_per_class(app, client, world, system_session):
    s1, c11, c12 = world["school1"], world["class11"], world["class12"]
    for _ in range(3):
        await make_child(app, system_session, s1, c11)
    await make_child(app, system_session, s1, c11, home_address=None)
    await make_child(app, system_session, s1, c12, links=[(PA, MOBILE, None, True)])
    await make_child(app, system_session, s1, None)
    # Not counted: graduated, left, no longer left-behind, another school.
    await make_child(app, system_session, s1, c11, status=ChildStatus.graduated, home_address=None)
    await make_child(app, system_session, s1, c11, status=ChildStatus.left)
    await make_child(
        app, system_session, s1, c12, is_left_behind=False, parents_away=ParentsAway.none, links=[], home_address=None
    )
    await make_child(app, system_session, world["school2"], world["class21"], home_address=None)
    await system_session.commit()

    r = await client.get(f"/schools/{s1}/archive-completeness", headers=world.headers("teacher1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["left_behind"], body["complete"], body["incomplete"]) == (6, 3, 3)
    assert body["rate"] == 0.5
    assert body["missing"]["missing_home_address"] == 1
    assert body["missing"]["missing_entrusted_guardian"] == 1 and body["missing"]["missing_class"] == 1
    classes = {c["class_label"]: c for c in body["classes"]}
    assert (classes["三年级1班"]["left_behind"], classes["三年级1班"]["complete"]) == (4, 3)
    assert classes["三年级1班"]["rate"] == 0.75
    assert (classes["三年级2班"]["left_behind"], classes["三年级2班"]["rate"]) == (1, 0.0)
    assert classes[None]["left_behind"] == 1 and classes[None]["class_id"] is None

    # The same rule lists the files themselves.
    r = await client.get(
        "/children",
        params={"school_id": str(s1), "left_behind": "true", "complete": "false"},
        headers=world.headers("admin1"),
    )
    listed = r.json()
    assert listed["count"] == body["incomplete"] == 3
    assert all(c["complete"] is False and c["missing"] for c in listed["data"])
    r = await client.get(
        "/children", params={"complete": "true", "left_behind": "true"}, headers=world.headers("admin1")
    )
    assert r.json()["count"] == body["complete"]


async def test_a_school_without_left_behind_children_has_no_rate(client, world):
    r = await client.get(f"/schools/{world['school2']}/archive-completeness", headers=world.headers("admin2"))
    assert r.status_code == 200
    body = r.json()
    assert (body["left_behind"], body["rate"]) == (0, None)
    assert [(c["class_label"], c["left_behind"], c["rate"]) for c in body["classes"]] == [("四年级1班", 0, None)]


async def test_completeness_of_another_school_is_not_found(client, world):
    r = await client.get(f"/schools/{world['school1']}/archive-completeness", headers=world.headers("admin2"))
    assert r.status_code == 404


async def test_the_bureau_sees_the_rate_of_every_school_of_its_county(app, client, world, system_session):
    await make_child(app, system_session, world["school1"], world["class11"])
    await make_child(app, system_session, world["school1"], world["class11"], home_address=None)
    await make_child(app, system_session, world["school2"], world["class21"])
    await make_child(app, system_session, world["school3"], None)
    await system_session.commit()

    r = await client.get("/archive-completeness", headers=world.headers("bureau"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(s["school_name"], s["left_behind"], s["complete"]) for s in body["schools"]] == [
        ("柳河乡中心小学", 1, 1),
        ("石桥镇中心小学", 2, 1),
    ]
    assert (body["left_behind"], body["complete"], body["rate"]) == (3, 2, 0.6667)

    r = await client.get("/archive-completeness", headers=world.headers("official1"))
    assert [s["school_name"] for s in r.json()["schools"]] == ["石桥镇中心小学"]
    assert r.json()["left_behind"] == 2
    r = await client.get(
        "/archive-completeness", params={"township_id": str(world["township2"])}, headers=world.headers("bureau")
    )
    assert [s["school_name"] for s in r.json()["schools"]] == ["柳河乡中心小学"] and r.json()["left_behind"] == 1
    assert (await client.get("/archive-completeness", headers=world.headers("teacher1"))).status_code == 403
