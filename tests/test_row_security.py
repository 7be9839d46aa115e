"""Row-level security: PostgreSQL itself limits every statement — ORM, Core, raw SQL — to the caller's scope.

The policies are declared beside the models (``row_security`` in api/models/*.py) and frozen in migration
0008; the database must hold exactly the declared ones, and every table must have decided to be scoped or
say why not.
"""

import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import api.models  # noqa: F401  (every table on the metadata)
from api.db import scoped_session
from api.main import create_app
from api.migrations import upgrade_to_head
from api.models.accounts import Role
from api.models.children import Child
from api.models.row_security import APP_ROLE, PLATFORM_ROLE, POLICIES, UNSCOPED, create_statements
from api.scoping import ANONYMOUS, SYSTEM, Principal, as_system, get_principal, set_principal
from api.security import read_access_token
from api.services.auth import load_principal
from tests.factories import build_world
from tests.objects import add_families
from tests.statements import sent_statements, work_of

CHILD_NAMES = sa.text("SELECT name, school_id FROM child ORDER BY name")


def test_every_table_is_scoped_or_says_why_not():
    tables = set(SQLModel.metadata.tables)
    undecided = tables - set(POLICIES) - set(UNSCOPED)
    assert not undecided, f"declare row_security(...) or unscoped(..., why) for {sorted(undecided)}"
    assert not set(POLICIES) & set(UNSCOPED)
    assert set(POLICIES) | set(UNSCOPED) <= tables, "a declaration names no table"
    assert all(why.strip() for why in UNSCOPED.values())


def test_a_new_table_that_decides_nothing_is_caught():
    metadata = sa.MetaData()
    for table in SQLModel.metadata.tables.values():
        table.to_metadata(metadata)
    sa.Table("home_visit_photo", metadata, sa.Column("id", sa.Uuid, primary_key=True))
    assert set(metadata.tables) - set(POLICIES) - set(UNSCOPED) == {"home_visit_photo"}


_LIVE_POLICIES = sa.text(
    "SELECT tablename, policyname, permissive, roles::text[] AS roles, cmd, qual, with_check"
    " FROM pg_policies WHERE schemaname = 'public' ORDER BY tablename, policyname"
)
_ROW_SECURITY = sa.text(
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relrowsecurity ORDER BY 1"
)


def _rows(rows) -> set[tuple]:
    return {tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in rows}


async def test_the_database_holds_exactly_the_declared_policies(database_url):
    """The migrated database against the declarations, both as PostgreSQL prints them: the declared policies
    are created in place of the live ones inside a transaction that is rolled back."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            live = (await conn.execute(_LIVE_POLICIES)).all()
            live_rls = (await conn.execute(_ROW_SECURITY)).scalars().all()
            for table, name in {(r.tablename, r.policyname) for r in live}:
                await conn.execute(sa.text(f"DROP POLICY {name} ON {table}"))
            for table in live_rls:
                await conn.execute(sa.text(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"))
            for table, policies in POLICIES.items():
                for statement in create_statements(table, policies):
                    await conn.execute(sa.text(statement))
            declared = (await conn.execute(_LIVE_POLICIES)).all()
            declared_rls = (await conn.execute(_ROW_SECURITY)).scalars().all()
            await conn.rollback()
    finally:
        await engine.dispose()
    assert live_rls == declared_rls == sorted(POLICIES)
    missing = _rows(declared) - _rows(live)
    extra = _rows(live) - _rows(declared)
    assert not missing and not extra, f"write a migration: declared but not live {missing}; live only {extra}"


async def test_the_app_roles_own_nothing_and_cannot_bypass_row_security(app):
    async with app.state.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text("SELECT rolname, rolbypassrls, rolcanlogin, rolsuper FROM pg_roles WHERE rolname = ANY(:r)"),
                {"r": [APP_ROLE, PLATFORM_ROLE]},
            )
        ).all()
        owned = await conn.scalar(
            sa.text("SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = ANY(:r)"),
            {"r": [APP_ROLE, PLATFORM_ROLE]},
        )
    assert sorted(r.rolname for r in rows) == sorted([APP_ROLE, PLATFORM_ROLE])
    assert not any(r.rolbypassrls or r.rolcanlogin or r.rolsuper for r in rows)
    assert owned == 0


async def _principal(app, world, who: str) -> Principal:
    claims = read_access_token(app.state.settings, world.tokens[who], app.state.clock.now())
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        return await load_principal(s, claims)


@pytest.fixture
async def families(app, world, clock):
    await add_families(app, world, clock.now())
    return world


async def _as(app, principal: Principal, statement, params=None):
    async with scoped_session(app.state.sessionmaker, principal) as s:
        return (await s.execute(statement, params or {})).all()


async def test_raw_sql_sees_only_the_callers_school(app, families):
    world = families
    admin1 = await _principal(app, world, "admin1")
    assert await _as(app, admin1, CHILD_NAMES) == [("刘小明", world["school1"])]
    bureau = await _principal(app, world, "bureau")
    assert {r.school_id for r in await _as(app, bureau, CHILD_NAMES)} == {world["school1"], world["school2"]}
    other_bureau = await _principal(app, world, "other_bureau")
    assert await _as(app, other_bureau, CHILD_NAMES) == []


async def test_raw_sql_of_a_teacher_of_another_school_sees_nothing_of_this_one(app, families):
    world = families
    teacher2 = await _principal(app, world, "teacher2")
    rows = await _as(
        app, teacher2, sa.text("SELECT school_id FROM child WHERE school_id = :s"), {"s": world["school1"]}
    )
    assert rows == []
    assert await _as(app, teacher2, sa.text("SELECT count(*) FROM child_guardian")) == [(1,)]  # school 2's own


async def test_anonymous_sees_no_scoped_row(app, families):
    for statement in ("SELECT count(*) FROM child", "SELECT count(*) FROM school", "SELECT count(*) FROM account"):
        assert await _as(app, ANONYMOUS, sa.text(statement)) == [(0,)]
    async with app.state.sessionmaker() as s:  # a session nobody bound: anonymous too
        assert (await s.execute(sa.text("SELECT count(*) FROM child"))).scalar_one() == 0
        assert (await s.execute(sa.text("SELECT current_user"))).scalar_one() == APP_ROLE


async def test_a_family_sees_its_own_child_and_that_childs_school(app, families):
    world = families
    family1 = await _principal(app, world, "family1")
    assert family1.guardian_ids == {world["family1_guardian"]}
    assert await _as(app, family1, CHILD_NAMES) == [("刘小明", world["school1"])]
    assert await _as(app, family1, sa.text("SELECT id FROM school")) == [(world["school1"],)]
    assert await _as(app, family1, sa.text("SELECT count(*) FROM child_event")) == [(0,)]
    assert await _as(app, family1, sa.text("SELECT id FROM account")) == [(world["family1"],)]


async def test_a_core_update_cannot_touch_another_schools_child(app, families):
    world = families
    admin1 = await _principal(app, world, "admin1")
    async with scoped_session(app.state.sessionmaker, admin1) as s:
        other = await s.execute(sa.update(Child).where(Child.id == world["family2_child"]).values(name="改名"))
        assert other.rowcount == 0
        own = await s.execute(sa.update(Child).where(Child.id == world["family1_child"]).values(name="刘小明"))
        assert own.rowcount == 1
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        assert (await s.get(Child, world["family2_child"])).name == "陈可欣"
    # Nor move one of its own children out of its scope.
    with pytest.raises(DBAPIError, match="row-level security"):
        async with scoped_session(app.state.sessionmaker, admin1) as s:
            await s.execute(
                sa.update(Child).where(Child.id == world["family1_child"]).values(school_id=world["school2"])
            )


async def test_as_system_crosses_scope_for_its_block_only(app, families):
    world = families
    admin1 = await _principal(app, world, "admin1")
    count = sa.text("SELECT count(*) FROM child")
    async with scoped_session(app.state.sessionmaker, admin1) as s:
        assert (await s.execute(count)).scalar_one() == 1
        async with as_system(s):
            assert (await s.execute(count)).scalar_one() == 2
            assert get_principal(s) == admin1  # still in the caller's name for the audit log
        assert (await s.execute(count)).scalar_one() == 1
        with pytest.raises(RuntimeError):
            async with as_system(s):
                raise RuntimeError("a failure inside the block")
        assert (await s.execute(count)).scalar_one() == 1  # the caller's scope is back after a failure too


async def test_switching_principal_inside_a_transaction_changes_the_scope(app, families):
    world = families
    admin1, admin2 = await _principal(app, world, "admin1"), await _principal(app, world, "admin2")
    names = sa.text("SELECT name FROM child")
    async with scoped_session(app.state.sessionmaker, admin1) as s:
        assert (await s.execute(names)).scalars().all() == ["刘小明"]
        await set_principal(s, admin2)
        assert (await s.execute(names)).scalars().all() == ["陈可欣"]
        await set_principal(s, SYSTEM)
        assert len((await s.execute(names)).scalars().all()) == 2


async def test_a_revoked_session_sets_no_scope(app, world):
    claims = read_access_token(app.state.settings, world.tokens["admin1"], app.state.clock.now())
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        await s.execute(sa.text("UPDATE login_session SET revoked_at = now() WHERE id = :i"), {"i": claims.session_id})
    async with app.state.sessionmaker() as s:
        with pytest.raises(Exception, match="session revoked"):
            await load_principal(s, claims)
        assert get_principal(s) == ANONYMOUS
        assert (await s.execute(sa.text("SELECT count(*) FROM school"))).scalar_one() == 0
        await s.rollback()


async def test_a_platform_admin_sees_every_row_without_bypassing_row_security(app, families):
    world = families
    platform = await _principal(app, world, "platform")
    rows = await _as(app, platform, sa.text("SELECT current_user, count(*) FROM child GROUP BY 1"))
    assert rows == [(PLATFORM_ROLE, 2)]
    assert platform.role == Role.platform_admin


async def test_an_owner_that_is_not_a_superuser_gets_the_same_limits(pg, settings, clock):
    """As with a DATABASE_URL user that owns the schema but is no superuser: migrating and serving as that
    owner, a request is still limited by the policies (SET ROLE to a role that owns nothing)."""
    suffix = uuid.uuid4().hex[:10]
    owner, database = f"liushou_owner_{suffix}", f"liushou_t_{suffix}"
    admin = await pg.connect()
    try:
        await admin.execute(f"CREATE ROLE {owner} LOGIN NOSUPERUSER CREATEROLE PASSWORD 'owner-pw'")
        await admin.execute(f'CREATE DATABASE "{database}" OWNER {owner}')
        # The roles already exist on this server (another database made them): the administrator's one step.
        await admin.execute(f"GRANT {APP_ROLE}, {PLATFORM_ROLE} TO {owner}")
        if pg.socket:
            url = f"postgresql+asyncpg://{owner}:owner-pw@/{database}?host={quote(pg.socket, safe='/')}"
        else:
            parts = urlsplit(pg.url(database))
            host = parts.netloc.rsplit("@", 1)[-1]
            url = urlunsplit((parts.scheme, f"{owner}:owner-pw@{host}", parts.path, parts.query, ""))
        await upgrade_to_head(url)
        application = create_app(settings, clock=clock, database_url=url, migrate=False)
        async with application.router.lifespan_context(application):
            world = await build_world(application, clock.now())
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                r = await client.get("/schools", headers=world.headers("admin1"))
                assert [s["id"] for s in r.json()["data"]] == [str(world["school1"])]
            async with scoped_session(application.state.sessionmaker, SYSTEM) as s:
                who = (
                    await s.execute(sa.text("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user"))
                ).one()
                assert who == (owner, False)
            async with application.state.sessionmaker() as s:
                assert (await s.execute(sa.text("SELECT count(*) FROM school"))).scalar_one() == 0
    finally:
        await pg.drop(database)
        await admin.execute(f"DROP ROLE IF EXISTS {owner}")
        await admin.close()


async def test_a_request_checks_its_token_and_sets_its_scope_in_one_round_trip(app, client, world):
    # Once before counting: a fresh connection first looks up the types of what it reads (asyncpg, once).
    assert (await client.get("/auth/me", headers=world.headers("teacher1"))).status_code == 200
    with sent_statements(app) as statements:
        r = await client.get("/auth/me", headers=world.headers("teacher1"))
    assert r.status_code == 200 and r.json()["id"] == str(world["teacher1"])
    work = work_of(statements)
    assert len(work) == 2, work  # the look-up, then the account itself (as the teacher)
    [look_up] = [s for s in work if "login_session" in s]
    assert "set_config('role'" in look_up and "teaching_assignment" in look_up
