"""Where a guardian belongs, as row security reads it: the school of each link and the schools of each guardian
(migration 0019), kept by the database through every way the API changes them — a link added, a sibling
linked, a link ended, a child transferred — and the staff of a school seeing exactly the guardians of its
children."""

import uuid

import sqlalchemy as sa

from api.db import scoped_session
from api.scoping import SYSTEM
from tests.test_guardians import added, make_child

# Every link whose school is not its child's, and every guardian whose schools are not those of its links.
_DRIFT = sa.text(
    "SELECT 'link', cg.id FROM child_guardian cg JOIN child c ON c.id = cg.child_id"
    " WHERE cg.school_id IS DISTINCT FROM c.school_id"
    " UNION ALL SELECT 'guardian', g.id FROM guardian g"
    " WHERE g.school_ids IS DISTINCT FROM ARRAY("
    "SELECT DISTINCT cg.school_id FROM child_guardian cg WHERE cg.guardian_id = g.id ORDER BY 1)"
)
_SCHOOLS = sa.text("SELECT school_ids FROM guardian WHERE id = :id")


async def _schools(app, guardian_id) -> set[uuid.UUID]:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:  # SYSTEM: the test reads what is stored
        assert (await s.execute(_DRIFT)).all() == []
        return set((await s.execute(_SCHOOLS, {"id": guardian_id})).scalar_one())


async def _sees(client, world, who, guardian_id) -> bool:
    r = await client.get(f"/guardians/{guardian_id}", headers=world.headers(who))
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


async def test_a_guardians_schools_follow_links_and_transfers(client, world, app):
    elder = await make_child(app, world, name="张子轩")
    younger = await make_child(app, world, name="张梓涵", klass="class12")
    grandma = (await added(client, world, elder))["guardian_id"]
    assert await _schools(app, grandma) == {world["school1"]}
    assert await _sees(client, world, "admin1", grandma)
    assert not await _sees(client, world, "admin2", grandma)

    # A sibling linked to the grandmother on file: still one school.
    link = (await added(client, world, younger, guardian=None, guardian_id=grandma))["id"]
    assert await _schools(app, grandma) == {world["school1"]}

    # The younger moves to another school: the grandmother now belongs to both, and both schools see her.
    r = await client.post(
        f"/children/{younger}/transfer",
        json={"to_school_id": str(world["school2"]), "reason": "随父母迁居"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201, r.text
    assert await _schools(app, grandma) == {world["school1"], world["school2"]}
    assert await _sees(client, world, "admin1", grandma)
    assert await _sees(client, world, "admin2", grandma)
    r = await client.get(f"/children/{younger}/guardians", headers=world.headers("admin2"))
    assert r.status_code == 200 and [x["guardian_id"] for x in r.json()] == [grandma]

    # The elder leaves for the other county: the first school loses sight of her, the third gains it.
    r = await client.post(
        f"/children/{elder}/transfer",
        json={"to_school_id": str(world["school3"]), "reason": "转学至白水县"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201, r.text
    assert await _schools(app, grandma) == {world["school2"], world["school3"]}
    assert not await _sees(client, world, "admin1", grandma)
    assert await _sees(client, world, "admin2", grandma) and await _sees(client, world, "admin3", grandma)

    # An ended link stays on file, and so does the school it gives (as the policy read it before: any link).
    r = await client.post(
        f"/children/{younger}/guardians/{link}/end", json={"reason": "不再监护"}, headers=world.headers("admin2")
    )
    assert r.status_code == 200, r.text
    assert await _schools(app, grandma) == {world["school2"], world["school3"]}
    assert await _sees(client, world, "admin2", grandma)


async def test_a_new_guardian_belongs_to_the_school_of_the_child_it_is_filed_for(client, world, app):
    child = await make_child(app, world, school="school2", klass="class21")
    father = (
        await added(
            client,
            world,
            child,
            who="admin2",
            role="parent_away",
            relation="父亲",
            guardian={"name": "张伟", "phone": "13907390001"},
        )
    )["guardian_id"]
    assert await _schools(app, father) == {world["school2"]}
    assert await _sees(client, world, "admin2", father)
    assert not await _sees(client, world, "admin1", father)
