"""A family sees the family view of its own children everywhere it can reach — never the staff file with the
school's rating of its own care or the teachers' notes — and head teachers invite the families of their class."""

from api.db import scoped_session
from api.models.children import Child, GuardianshipRating
from api.models.organisations import TeachingAssignment
from api.scoping import SYSTEM
from tests.test_family_binding import bearer, bind, invite, invite_code, link, make_child, siblings_with_father

# What the school writes about a child and its family; none of it is for the family's eyes.
STAFF_FILE = {
    "guardianship_rating": GuardianshipRating.poor,
    "notes": "祖母常打牌不管孩子-保密",
    "character": "内向易怒-保密",
    "habits": "常迟到-保密",
    "interests": "画画-保密",
    "study_notes": "数学落后两年-保密",
    "guardian_relationship": "与父亲关系紧张-保密",
    "parent_contact_frequency": "半年一次-保密",
}
STAFF_ONLY_KEYS = {*STAFF_FILE, "status_reason", "household_registration", "flags", "missing", "complete"}


async def write_staff_file(app, child_id):
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        child = await s.get(Child, child_id)
        for key, value in STAFF_FILE.items():
            setattr(child, key, value)


def assert_family_view(body):
    assert not STAFF_ONLY_KEYS & set(body), STAFF_ONLY_KEYS & set(body)
    text = str(body)
    assert "保密" not in text and "'poor'" not in text  # every staff-file value, under any key


async def test_a_family_reading_the_child_file_gets_the_family_view(client, world, app, fake):
    elder, younger, father = await siblings_with_father(client, world, app)
    await write_staff_file(app, elder)
    headers = bearer(await bind(client, await invite_code(client, world, elder, father)))

    r = await client.get(f"/children/{elder}", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["detail"] == "family"
    assert_family_view(body)
    own = (await client.get(f"/me/children/{elder}", headers=headers)).json()
    assert {k: v for k, v in body.items() if k != "detail"} == own
    assert own["head_teacher_name"] == "李老师" and own["relation"] == "父亲"

    # Staff still get the full file, rating and notes included.
    staff = (await client.get(f"/children/{elder}", headers=world.headers("admin1"))).json()
    assert staff["detail"] == "full" and staff["guardianship_rating"] == "poor"
    assert staff["notes"] == STAFF_FILE["notes"]


async def test_every_endpoint_a_family_reaches_gives_only_the_family_view(client, world, app, fake):
    elder, younger, father = await siblings_with_father(client, world, app)
    await write_staff_file(app, elder)
    await write_staff_file(app, younger)
    headers = bearer(await bind(client, await invite_code(client, world, elder, father)))

    listed = await client.get("/me/children", headers=headers)
    assert listed.status_code == 200 and len(listed.json()) == 2
    for item in listed.json():
        assert_family_view(item)
    for child in (elder, younger):
        for url in (f"/children/{child}", f"/me/children/{child}"):
            r = await client.get(url, headers=headers)
            assert r.status_code == 200, (url, r.text)
            assert_family_view(r.json())
        # The staff side of a child stays closed: history, guardians, contact card, invites.
        for url in (f"/children/{child}/history", f"/children/{child}/guardians", f"/children/{child}/contact-card"):
            r = await client.get(url, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden", url

    mine = await client.get("/me/guardian", headers=headers)
    assert mine.status_code == 200
    # The school's assessment of how the family brings the child up is not the family's record to read.
    assert "upbringing" not in mine.json()
    assert mine.json()["id"] == father


async def test_a_family_reading_another_child_gets_404(client, world, app, fake):
    elder, _, father = await siblings_with_father(client, world, app)
    stranger = await make_child(app, world, name="刘浩然")
    headers = bearer(await bind(client, await invite_code(client, world, elder, father)))
    r = await client.get(f"/children/{stranger}", headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "child_not_found"


async def test_a_head_teacher_invites_the_families_of_their_own_class(client, world, app, fake):
    elder, younger, father = await siblings_with_father(client, world, app)  # elder: class 11, younger: 12
    r = await invite(client, world, elder, father, who="teacher1")  # teacher1 heads class 11
    assert r.status_code == 201, r.text
    assert r.json()["guardian_id"] == father and r.json()["code"]
    assert (await bind(client, r.json()["code"])).status_code == 200

    # teacher1 does not head class 12: not even for a family with a child in class 11 too.
    grandma = await link(
        client, world, younger, role="entrusted_guardian", relation="祖母", guardian={"name": "王桂兰"}
    )
    r = await invite(client, world, younger, grandma["guardian_id"], who="teacher1")
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_head_teacher"
    assert (await invite(client, world, younger, grandma["guardian_id"], who="teacher1b")).status_code == 201


async def test_a_subject_teacher_or_a_teacher_of_another_school_cannot_invite(client, world, app, fake):
    elder, _, father = await siblings_with_father(client, world, app)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        s.add(TeachingAssignment(class_id=world["class11"], account_id=world["teacher1b"]))
    r = await invite(client, world, elder, father, who="teacher1b")
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_head_teacher"
    r = await invite(client, world, elder, father, who="teacher2")
    assert r.status_code == 404
