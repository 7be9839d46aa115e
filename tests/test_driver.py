"""Statements on the driver (api/driver.py): they run on the session's own connection, in its transaction,
under the principal's row-level security scope — whichever statement comes first in the transaction."""

import asyncio
import functools
import gc
import uuid
import weakref
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.responses import PlainTextResponse

from api import audit, driver
from api.db import scoped_session
from api.models.audit import AuditEntry
from api.models.children import Child
from api.models.organisations import School
from api.scoping import ANONYMOUS, SYSTEM, Principal, set_principal
from api.security import read_access_token
from api.services.auth import load_principal
from api.services.children.records import _FILE, _file_statement
from tests.factories import PASSWORD
from tests.objects import add_families
from tests.test_children import child_body

CHILD_SCHOOLS = driver.DriverStatement(sa.text("SELECT DISTINCT school_id FROM child"))
TRANSACTION_ID = driver.DriverStatement(sa.text("SELECT txid_current() AS id"))
SCHOOL_NAME = driver.DriverStatement(sa.select(School.name).where(School.id == sa.bindparam("id", type_=sa.Uuid())))


@pytest.fixture
async def families(app, world, clock):
    await add_families(app, world, clock.now())
    return world


async def _principal(app, world, who: str) -> Principal:
    claims = read_access_token(app.state.settings, world.tokens[who], app.state.clock.now())
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        return await load_principal(s, claims)


async def _schools_seen(app, principal: Principal) -> set[uuid.UUID]:
    # The driver's statement is the transaction's first: it must still be inside the scope.
    async with scoped_session(app.state.sessionmaker, principal) as s:
        return {row.school_id for row in await driver.fetch(s, CHILD_SCHOOLS)}


async def test_a_read_on_the_driver_sees_only_the_school_admins_school(app, families):
    world = families
    assert await _schools_seen(app, await _principal(app, world, "admin1")) == {world["school1"]}
    assert await _schools_seen(app, await _principal(app, world, "admin2")) == {world["school2"]}
    assert await _schools_seen(app, await _principal(app, world, "bureau")) == {world["school1"], world["school2"]}
    assert await _schools_seen(app, await _principal(app, world, "other_bureau")) == set()
    assert await _schools_seen(app, ANONYMOUS) == set()


async def test_a_read_on_the_driver_after_the_sign_in_look_up_is_in_the_callers_scope(app, families):
    world = families
    claims = read_access_token(app.state.settings, world.tokens["admin2"], app.state.clock.now())
    async with app.state.sessionmaker() as s:
        await set_principal(s, ANONYMOUS)
        await load_principal(s, claims)  # as a request does: the look-up itself sets the scope
        assert {row.school_id for row in await driver.fetch(s, CHILD_SCHOOLS)} == {world["school2"]}
        await s.rollback()


@pytest.mark.parametrize("who", ["admin1", "system"])
async def test_a_statement_on_the_driver_runs_in_the_sessions_transaction(app, families, who):
    principal = SYSTEM if who == "system" else await _principal(app, families, who)
    async with app.state.sessionmaker() as s:
        await set_principal(s, principal)
        first = (await driver.fetch_one(s, TRANSACTION_ID)).id  # the first statement of the transaction
        assert (await s.execute(sa.text("SELECT txid_current()"))).scalar_one() == first
        assert (await driver.fetch_one(s, TRANSACTION_ID)).id == first
        await s.commit()
        assert (await driver.fetch_one(s, TRANSACTION_ID)).id != first  # the next transaction


async def test_a_write_on_the_driver_is_rolled_back_with_the_session(app, world):
    school = world["school1"]
    rename = driver.DriverStatement(
        sa.update(School).where(School.id == sa.bindparam("id", type_=sa.Uuid())).values(name=sa.bindparam("name"))
    )
    async with app.state.sessionmaker() as s:
        await set_principal(s, SYSTEM)
        await driver.execute(s, rename, {"id": school, "name": "改名小学"})
        # The session sees the driver's write (one transaction), and the driver the session's flushes.
        assert (await s.execute(sa.select(School.name).where(School.id == school))).scalar_one() == "改名小学"
        await s.rollback()
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        assert (await driver.fetch_one(s, SCHOOL_NAME, {"id": school})).name != "改名小学"


async def test_rows_read_on_the_driver_are_the_rows_sqlalchemy_reads(app, families):
    world = families
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        child_id = (await s.execute(sa.select(Child.id).where(Child.school_id == world["school1"]))).scalars().first()
        # No entry written (not full for anyone): the same statement twice would write two.
        params = {"full_everyone": False, "full_classes": []} | audit.entry_params(
            s, action="child.read", resource_type="child"
        )
        ours = await driver.fetch_one(s, _FILE, params | {"child_id": child_id})
        theirs = (await s.execute(_file_statement(), params | {"child_id": child_id})).one()
        assert await driver.fetch_one(s, _FILE, params | {"child_id": uuid.uuid4()}) is None
    assert ours._fields == theirs._fields
    assert ours._mapping == dict(theirs._mapping)
    assert type(ours.status) is type(theirs.status) and type(ours.sex) is type(theirs.sex)  # enums, not str


RENAME = driver.DriverStatement(
    sa.update(School).where(School.id == sa.bindparam("id", type_=sa.Uuid())).values(name=sa.bindparam("name"))
)


async def _school_name(app, school: uuid.UUID) -> str:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        return (await driver.fetch_one(s, SCHOOL_NAME, {"id": school})).name


async def test_a_transaction_of_driver_statements_commits_on_the_driver(app, world):
    school = world["school1"]
    async with app.state.sessionmaker() as s:
        await set_principal(s, SYSTEM)
        first = (await driver.fetch_one(s, TRANSACTION_ID)).id
        await driver.execute(s, RENAME, {"id": school, "name": "驱动小学"})
        await driver.commit(s)  # nothing for the ORM: COMMIT on the driver
        # The next statement is in a new transaction (the committed one is not reused), still on the driver.
        assert (await driver.fetch_one(s, TRANSACTION_ID)).id != first
        assert (await s.execute(sa.text("SELECT txid_current()"))).scalar_one() != first
        await s.rollback()
    assert await _school_name(app, school) == "驱动小学"


async def test_a_transaction_with_orm_work_commits_through_the_session(app, world):
    school, other = world["school1"], world["school2"]
    async with app.state.sessionmaker() as s:
        await set_principal(s, SYSTEM)
        await driver.execute(s, RENAME, {"id": school, "name": "驱动小学"})
        (await s.get(School, other)).name = "会话小学"  # a change only the session's flush writes
        await driver.commit(s)
    assert await _school_name(app, school) == "驱动小学"
    assert await _school_name(app, other) == "会话小学"


async def test_a_failed_statement_leaves_nothing_for_the_driver_to_commit(app, world):
    school = world["school1"]
    async with app.state.sessionmaker() as s:
        await set_principal(s, SYSTEM)
        await driver.execute(s, RENAME, {"id": school, "name": "驱动小学"})
        await s.rollback()
        await driver.commit(s)  # after the rollback: a new, empty transaction, or none at all
    assert await _school_name(app, school) != "驱动小学"


async def test_a_session_that_ran_driver_statements_is_freed_without_the_garbage_collector(app, world):
    # The connection kept for the transaction must not tie the session into a reference cycle: under load every
    # request's session would wait for a collection (memory, and the collector's CPU).
    gc.collect()
    gc.disable()
    try:
        async with app.state.sessionmaker() as s:
            await set_principal(s, SYSTEM)
            await driver.fetch_one(s, TRANSACTION_ID)
            await driver.execute(s, RENAME, {"id": world["school1"], "name": "驱动小学"})
            await driver.fetch_one(s, TRANSACTION_ID)
            await driver.commit(s)
            session = weakref.ref(s.sync_session)
        del s
        assert session() is None
    finally:
        gc.enable()


# ---- a request's transaction without a session (driver.Transaction) ---------------------------------------


async def _schools_seen_without_a_session(app, principal: Principal) -> set[uuid.UUID]:
    transaction = driver.Transaction(app.state.engine)
    await set_principal(transaction, principal)
    try:
        return {row.school_id for row in await driver.fetch(transaction, CHILD_SCHOOLS)}
    finally:
        await transaction.end(commit=False)


async def test_a_transaction_without_a_session_is_in_the_bound_principals_scope(app, families):
    """Its first statement is not the sign-in look-up: the bound principal's scope is applied before it, as
    a session's transaction does — never a statement as the owner by default."""
    world = families
    seen = _schools_seen_without_a_session
    assert await seen(app, await _principal(app, world, "admin1")) == {world["school1"]}
    assert await seen(app, await _principal(app, world, "bureau")) == {world["school1"], world["school2"]}
    assert await seen(app, ANONYMOUS) == set()
    assert await seen(app, SYSTEM) >= {world["school1"], world["school2"]}


async def test_a_transaction_without_a_session_takes_the_scope_the_sign_in_look_up_sets(app, families):
    world = families
    claims = read_access_token(app.state.settings, world.tokens["admin2"], app.state.clock.now())
    transaction = driver.Transaction(app.state.engine)
    try:
        principal = await load_principal(transaction, claims)
        assert principal.school_id == world["school2"]
        assert {row.school_id for row in await driver.fetch(transaction, CHILD_SCHOOLS)} == {world["school2"]}
    finally:
        await transaction.end(commit=False)


async def test_a_transaction_without_a_session_commits_or_rolls_back_and_gives_its_connection_back(app, world):
    school = world["school1"]
    pool = app.state.engine.sync_engine.pool
    before = await _school_name(app, school)
    for commit in [False] * (2 * pool.size()) + [True]:
        transaction = driver.Transaction(app.state.engine)
        await set_principal(transaction, SYSTEM)
        await driver.execute(transaction, RENAME, {"id": school, "name": f"驱动小学 {commit}"})
        assert pool.checkedout() == 1
        await transaction.end(commit=commit)
        assert pool.checkedout() == 0
        assert await _school_name(app, school) == (f"驱动小学 {commit}" if commit else before)
    nothing = driver.Transaction(app.state.engine)
    await nothing.end(commit=True)  # never begun: nothing to end, no connection taken
    assert pool.checkedout() == 0


async def test_a_transaction_without_a_session_whose_connection_is_lost_drops_it(app, world):
    """The backend killed under it: the statement fails (503 in a request), the connection is not given back
    to the pool, and the next transaction works on a fresh one."""
    pool = app.state.engine.sync_engine.pool
    transaction = driver.Transaction(app.state.engine)
    await set_principal(transaction, SYSTEM)
    pid = (await driver.fetch_one(transaction, driver.DriverStatement(sa.text("SELECT pg_backend_pid() AS pid")))).pid
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        await s.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(Exception):  # noqa: B017 - asyncpg's error depends on when it saw the socket close
        await driver.fetch(transaction, CHILD_SCHOOLS)
    await transaction.end(commit=False)  # as the request's dependency does: the connection is dropped
    assert pool.checkedout() == 0
    assert await _school_name(app, world["school1"])  # the pool answers again
    again = driver.Transaction(app.state.engine)
    await set_principal(again, SYSTEM)
    assert (await driver.fetch_one(again, driver.DriverStatement(sa.text("SELECT pg_backend_pid() AS pid")))).pid != pid
    await again.end(commit=True)


# ---- a DriverRoute: a child's file, signed in and read on a driver transaction --------------------------


async def test_a_driver_route_signs_in_as_every_route_does_and_gives_its_connection_back(app, client, world, clock):
    """Signed in by the route itself (not a security dependency): no token, a bad token, an expired one and a
    logged-out session answer as on any route; each request, answered or refused, gives its connection back."""
    pool = app.state.engine.sync_engine.pool
    created = await client.post("/children", json=child_body(world), headers=world.headers("admin1"))
    file = f"/children/{created.json()['id']}"
    assert pool.checkedout() == 0

    async def answer(headers: dict[str, str]) -> tuple[int, str | None]:
        r = await client.get(file, headers=headers)
        assert pool.checkedout() == 0, "the request's connection was not given back"
        return r.status_code, (r.json().get("error") or {}).get("code") if r.status_code != 200 else None

    assert await answer(world.headers("admin1")) == (200, None)
    assert await answer({}) == (401, "unauthorized")
    assert await answer({"Authorization": "Basic abc"}) == (401, "unauthorized")
    assert await answer({"Authorization": "Bearer not-a-token"}) == (401, "token_invalid")
    login = await client.post("/auth/login", json={"username": "admin1", "password": PASSWORD})
    mine = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert await answer(mine) == (200, None)
    assert (await client.post("/auth/logout", headers=mine)).status_code == 204
    assert await answer(mine) == (401, "session_revoked")
    assert await answer(world.headers("admin2")) == (404, "child_not_found")  # another school's child
    clock.advance(timedelta(hours=3))
    assert await answer(world.headers("admin1")) == (401, "token_expired")


LOCK_WAITERS = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


LOCK_WAITERS = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


async def test_a_cancelled_driver_route_request_rolls_back_and_gives_its_connection_back(app, client, world):
    """The client goes away while the file's statement waits on a lock (its audit entry's table is locked): the
    request is cancelled mid-statement; its transaction still ends, nothing of it is written, and the pool gets
    its connection back."""
    pool = app.state.engine.sync_engine.pool
    created = await client.post("/children", json=child_body(world), headers=world.headers("admin1"))
    file = f"/children/{created.json()['id']}"
    async with app.state.engine.connect() as locker:
        await locker.execute(sa.text("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE"))
        request = asyncio.create_task(client.get(file, headers=world.headers("admin1")))
        for _ in range(100):
            await locker.execute(sa.text("SELECT pg_stat_clear_snapshot()"))  # the view is kept per transaction
            waiting = (await locker.execute(LOCK_WAITERS)).scalar_one()
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting, "the file's statement never waited on the lock"
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await locker.rollback()
    for _ in range(100):
        if pool.checkedout() == 0:
            break
        await asyncio.sleep(0.05)
    assert pool.checkedout() == 0, "the cancelled request's connection was not given back"
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        reads = await s.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.resource_id == created.json()["id"], AuditEntry.action == "child.read")
        )
    assert reads == 0  # rolled back with the read
    assert (await client.get(file, headers=world.headers("admin1"))).status_code == 200


# ---- a DriverRoute's lean handler ------------------------------------------------------------------------


async def test_a_driver_routes_bad_parameters_answer_the_422_of_any_route(app, client, world):
    """Path and query parameters are validated by FastAPI's own code into the same error as on a route with
    FastAPI's handler (the audit log's, here): the same code, the same field locations."""
    headers = world.headers("admin1")

    async def error(path: str) -> tuple[int, str, list[list[str | int]]]:
        r = await client.get(path, headers=headers)
        body = r.json()["error"]
        return r.status_code, body["code"], [f["loc"] for f in body["fields"]]

    assert await error("/children/not-a-uuid") == (422, "validation_error", [["path", "child_id"]])
    assert await error("/children?limit=0&offset=-1&status=nonsense") == (
        422,
        "validation_error",
        [["query", "status", 0], ["query", "offset"], ["query", "limit"]],
    )
    audit_log = await error("/audit?limit=0&offset=-1")  # FastAPI's own handler
    assert audit_log == (422, "validation_error", [["query", "offset"], ["query", "limit"]])


async def test_a_driver_routes_answer_is_the_json_fastapi_would_serialize(app, client, world):
    """The lean handler serializes the endpoint's model itself: byte for byte what FastAPI's serializer for the
    route's response model makes of the same answer."""
    from fastapi.routing import serialize_response
    from pydantic import TypeAdapter

    from api.deps import _model_classes
    from api.routers.children import router

    created = await client.post("/children", json=child_body(world), headers=world.headers("admin1"))
    routes = {(r.path, m): r for r in router.routes for m in r.methods}
    for who in ("admin1", "teacher1", "teacher2"):
        for path, url in (("/children/{child_id}", f"/children/{created.json()['id']}"), ("/children", "/children")):
            r = await client.get(url, headers=world.headers(who))
            assert r.status_code in (200, 404), r.text
            if r.status_code == 404:
                continue
            route = routes[(path, "GET")]
            content = TypeAdapter(route.response_model).validate_json(r.content)
            assert type(content) in _model_classes(route.response_model)  # serialized by the model itself
            fastapi = await serialize_response(field=route.response_field, response_content=content, dump_json=True)
            assert r.content == fastapi
            assert r.headers["content-type"] == "application/json"


def _endpoint_with_a_dependency():
    from fastapi import Depends

    async def dependency() -> int:
        return 1

    async def endpoint(n: int = Depends(dependency)) -> dict:
        return {}

    return endpoint


def _endpoint_with_a_body():
    from pydantic import BaseModel

    class Body(BaseModel):
        x: int

    async def endpoint(body: Body) -> dict:
        return {}

    return endpoint


def _endpoint_with_a_header():
    from fastapi import Header

    async def endpoint(x_thing: str = Header()) -> dict:
        return {}

    return endpoint


def _an_endpoint_it_takes():
    async def endpoint(n: int = 1) -> dict:
        return {}

    return endpoint


def _plain_def_endpoint():
    def endpoint() -> dict:
        return {}

    return endpoint


@pytest.mark.parametrize(
    ("make", "extra", "needs"),
    [
        (_endpoint_with_a_dependency, {}, "dependencies"),
        (_endpoint_with_a_body, {}, "a body"),
        (_endpoint_with_a_header, {}, "headers"),
        (_plain_def_endpoint, {}, "a thread"),
        (_an_endpoint_it_takes, {"response_model_exclude_none": True}, "a filtered response model"),
        (_an_endpoint_it_takes, {"response_class": PlainTextResponse}, "another response class"),
    ],
)
def test_a_driver_route_whose_endpoint_needs_more_than_its_lean_handler_gives_is_refused(make, extra, needs):
    from fastapi import APIRouter

    from api.deps import DriverRoute

    router = APIRouter()
    add = functools.partial(
        router.add_api_route, methods=["GET"], response_model=dict, route_class_override=DriverRoute
    )
    add("/fine", _an_endpoint_it_takes())
    with pytest.raises(TypeError, match=needs):
        add("/x", make(), **extra)
