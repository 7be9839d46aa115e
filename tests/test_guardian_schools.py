"""Where a guardian belongs, as row security reads it: the school of each link and the schools of each guardian
(migration 0019), kept by the database through every way the API changes them — a link added, a sibling
linked, a link ended, a child transferred — and the staff of a school seeing exactly the guardians of its
children."""

import asyncio
import uuid

import asyncpg
import httpx
import sqlalchemy as sa

from alembic import command
from api.db import scoped_session
from api.migrations import alembic_config
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


async def test_upgrading_fills_the_schools_and_marks_no_school_for_the_statistics(client, world, app, database_url):
    """Migration 0019 on a database with guardians: every link and guardian gets its schools, and the backfill
    (which changes no figure) leaves no statistics mark behind — else the refresher would renew every school."""
    child = await make_child(app, world, name="李浩然")
    grandma = (await added(client, world, child))["guardian_id"]
    cfg = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, cfg, "0018")
    try:
        async with scoped_session(app.state.sessionmaker, SYSTEM) as s:  # SYSTEM: the test clears every mark
            await s.execute(sa.text("DELETE FROM stats_dirty"))
    finally:
        await asyncio.to_thread(command.upgrade, cfg, "head")
    assert await _schools(app, grandma) == {world["school1"]}
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:  # SYSTEM: the test reads every mark
        assert (await s.execute(sa.text("SELECT count(*) FROM stats_dirty"))).scalar_one() == 0
        # The triggers are on again: a change marks its school.
        await s.execute(sa.text("UPDATE guardian SET updated_at = updated_at WHERE id = :id"), {"id": grandma})
        assert (await s.execute(sa.text("SELECT count(*) FROM stats_dirty"))).scalar_one() == 1


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


async def test_links_and_a_transfer_at_once_leave_every_school_counted(client, world, app, live_url):
    """Over real sockets, at once: a grandmother linked to eight more grandchildren while the first one moves
    to another school. Each writer locks the guardian before reading her links, so none leaves out the
    school another has just added."""
    headers = world.headers("admin1")
    for round_ in range(3):
        first = await make_child(app, world, name=f"张一{round_}")
        others = [await make_child(app, world, name=f"张{n}{round_}", klass="class12") for n in "二三四五六七八九"]
        grandma = (await added(client, world, first, guardian={"name": f"王桂{round_}", "phone": "13807391234"}))[
            "guardian_id"
        ]
        async with httpx.AsyncClient(base_url=live_url, timeout=60) as live:
            writes = [
                live.post(
                    f"/children/{child}/guardians",
                    json={"role": "entrusted_guardian", "relation": "祖母", "guardian_id": grandma},
                    headers=headers,
                )
                for child in others
            ]
            writes.append(
                live.post(
                    f"/children/{first}/transfer",
                    json={"to_school_id": str(world["school2"]), "reason": "随父母迁居"},
                    headers=headers,
                )
            )
            answers = await asyncio.gather(*writes)
        assert [r.status_code for r in answers] == [201] * 9, [r.text for r in answers]
        assert await _schools(app, grandma) == {world["school1"], world["school2"]}


async def _link_during_transfer(app, world, database_url, *, moving, linked, guardian=None) -> uuid.UUID:
    """A grandmother linked to ``moving``; on one connection ``moving`` is transferred to school 2 and, before
    that commits, on another she (or ``guardian``) is linked to ``linked``; then the transfer commits, and the
    link. Her id."""
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:  # SYSTEM: the test writes as the owner
        grandma = (
            await s.execute(sa.text("INSERT INTO guardian (id, name, created_at, updated_at) VALUES (gen_random_uuid(),"
                                    " '王桂兰', now(), now()) RETURNING id"))
        ).scalar_one()  # fmt: skip
        await s.execute(_LINK, {"child": moving, "guardian": grandma})
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    mover, linker = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await mover.execute("BEGIN")
        await mover.execute("UPDATE child SET school_id = $1, class_id = NULL WHERE id = $2", world["school2"], moving)
        await linker.execute("BEGIN")
        link = asyncio.create_task(linker.execute(_LINK_SQL, uuid.uuid4(), linked, guardian or grandma))
        await asyncio.sleep(0.3)
        await mover.execute("COMMIT")
        await link
        await linker.execute("COMMIT")
    finally:
        await mover.close()
        await linker.close()
    return grandma


async def test_a_link_written_while_a_transfer_holds_the_guardian_counts_the_transfers_school(app, world, database_url):
    """Two transactions on two connections, interleaved on purpose: a transfer has moved a grandchild (and so
    recomputed the grandmother's schools) but not committed, when a link to a grandchild of a third school is
    written. The link's recomputation waits for the guardian and then reads the links again: the school the
    transfer added stays, the one it left goes (recomputed from its own snapshot, it would put them back)."""
    first = await make_child(app, world, name="张子轩")
    other = await make_child(app, world, name="张梓涵", school="school3", klass=None)
    grandma = await _link_during_transfer(app, world, database_url, moving=first, linked=other)
    assert await _schools(app, grandma) == {world["school2"], world["school3"]}


async def test_a_link_to_a_child_being_transferred_takes_the_new_school(app, world, database_url):
    """The same interleaving with a second guardian link to the very child being transferred: the link waits
    for the child and takes its new school (read before the transfer commits, it would keep the old one)."""
    child = await make_child(app, world, name="张子轩")
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:  # SYSTEM: the test writes as the owner
        grandpa = (
            await s.execute(sa.text("INSERT INTO guardian (id, name, created_at, updated_at) VALUES (gen_random_uuid(),"
                                    " '张建国', now(), now()) RETURNING id"))
        ).scalar_one()  # fmt: skip
    grandma = await _link_during_transfer(app, world, database_url, moving=child, linked=child, guardian=grandpa)
    assert await _schools(app, grandpa) == {world["school2"]}
    assert await _schools(app, grandma) == {world["school2"]}


_LINK_SQL = (
    "INSERT INTO child_guardian (id, child_id, guardian_id, role, relation, contact_order, is_active, created_at)"
    " VALUES ($1, $2, $3, 'entrusted_guardian', '祖母', 1, true, now())"
)
_LINK = sa.text(
    "INSERT INTO child_guardian (id, child_id, guardian_id, role, relation, contact_order, is_active, created_at)"
    " VALUES (gen_random_uuid(), :child, :guardian, 'entrusted_guardian', '祖母', 1, true, now())"
)
