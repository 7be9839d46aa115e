"""The audit log: every write is recorded with who, what, when, from where; each sees only their part."""

import asyncpg
import pytest
import sqlalchemy as sa

from api import audit, driver
from api.db import scoped_session
from api.driver import driver_connection
from api.models.audit import AuditEntry
from api.models.organisations import SchoolClass
from api.scoping import SYSTEM, set_principal
from tests.statements import sent_statements, work_of


async def test_a_write_is_logged_with_actor_changes_address_and_request_id(client, world):
    r = await client.patch(f"/classes/{world['class11']}", json={"name": "一班"}, headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    request_id = r.headers["x-request-id"]
    log = (await client.get("/audit", params={"resource_type": "class"}, headers=world.headers("admin1"))).json()
    entry = next(e for e in log["data"] if e["request_id"] == request_id)
    assert entry["action"] == "class.update"
    assert entry["account_id"] == str(world["admin1"]) and entry["role"] == "school_admin"
    assert entry["resource_id"] == str(world["class11"])
    assert entry["changes"] == {"name": {"old": "1班", "new": "一班"}}
    assert entry["client_ip"] == "203.0.113.7"
    assert entry["school_id"] == str(world["school1"])


async def test_secrets_are_logged_as_changed_without_their_values(client, world):
    r = await client.post(
        "/accounts",
        headers=world.headers("admin1"),
        json={
            "role": "teacher",
            "display_name": "孙老师",
            "username": "sun",
            "password": "a long enough password",
            "school_id": str(world["school1"]),
        },
    )
    assert r.status_code == 201, r.text
    log = (await client.get("/audit", params={"action": "account.create"}, headers=world.headers("admin1"))).json()
    changes = log["data"][0]["changes"]
    assert changes["display_name"] == "孙老师"
    assert changes["password_hash"] == "***"
    assert "a long enough password" not in str(log)


async def test_school_admins_read_only_their_schools_log(client, world):
    await client.patch(f"/classes/{world['class21']}", json={"name": "甲班"}, headers=world.headers("admin2"))
    mine = (await client.get("/audit", headers=world.headers("admin1"))).json()
    assert all(e["school_id"] == str(world["school1"]) for e in mine["data"])
    theirs = (await client.get("/audit", headers=world.headers("admin2"))).json()
    assert any(e["action"] == "class.update" for e in theirs["data"])
    r = await client.get("/audit", params={"school_id": str(world["school2"])}, headers=world.headers("admin1"))
    assert r.json()["count"] == 0


async def test_the_county_bureau_reads_its_county_and_teachers_read_nothing(client, world):
    await client.patch(f"/classes/{world['class21']}", json={"name": "甲班"}, headers=world.headers("admin2"))
    county = (await client.get("/audit", headers=world.headers("bureau"))).json()
    assert any(e["action"] == "class.update" for e in county["data"])
    other = (await client.get("/audit", headers=world.headers("other_bureau"))).json()
    assert not any(e["action"] == "class.update" for e in other["data"])
    assert (await client.get("/audit", headers=world.headers("teacher1"))).status_code == 403


async def test_logins_are_audited(client, world):
    from tests.factories import PASSWORD

    await client.post("/auth/login", json={"username": "teacher1", "password": PASSWORD})
    log = (await client.get("/audit", params={"action": "auth.login"}, headers=world.headers("admin1"))).json()
    assert log["count"] == 1 and log["data"][0]["changes"] == {"method": "password"}


async def test_writes_to_guardians_show_in_the_schools_log_though_guardians_have_no_school(client, world, app):
    from tests.test_guardians import added, make_child

    child = await make_child(app, world)
    link = await added(client, world, child)
    log = (await client.get("/audit", headers=world.headers("admin1"))).json()["data"]
    actions = {e["action"] for e in log}
    assert {"guardian.create", "child_guardian.create"} <= actions, actions
    assert all(e["school_id"] == str(world["school1"]) for e in log)
    r = await client.patch(
        f"/guardians/{link['guardian']['id'] if 'guardian' in link else link['guardian_id']}",
        json={"health": "良好"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200, r.text
    log = (await client.get("/audit", params={"action": "guardian.update"}, headers=world.headers("admin1"))).json()
    assert log["count"] == 1
    other = (await client.get("/audit", headers=world.headers("admin2"))).json()["data"]
    assert not any(e["action"].startswith("guardian") for e in other)


async def test_audit_times_come_from_the_app_clock(client, world, clock):
    r = await client.patch(f"/classes/{world['class11']}", json={"name": "一班"}, headers=world.headers("admin1"))
    log = (await client.get("/audit", params={"action": "class.update"}, headers=world.headers("admin1"))).json()
    assert log["data"][0]["at"].startswith(clock.now().isoformat()[:16]), (log["data"][0]["at"], r.status_code)


async def test_a_read_and_its_entry_cost_the_look_up_the_read_and_one_insert(app, client, world):
    # The entry goes in as a plain INSERT, its id from the column default: no nextval round trip first (the
    # unit of work needed the key back, and row security forbids most writers RETURNING it).
    params = {"class_id": str(world["class11"]), "limit": 20}
    # Once before counting: a fresh connection first looks up the types of what it reads (asyncpg, once).
    assert (await client.get("/children", params=params, headers=world.headers("admin1"))).status_code == 200
    with sent_statements(app) as statements:
        r = await client.get("/children", params=params, headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    work = work_of(statements)
    assert len(work) == 3, work  # the principal and its scope, the page, the audit entry
    assert sum(s.startswith("INSERT INTO audit_log") for s in work) == 1 and not any("nextval" in s for s in work)
    log = (await client.get("/audit", params={"action": "child.list"}, headers=world.headers("admin1"))).json()
    entry = next(e for e in log["data"] if e["request_id"] == r.headers["x-request-id"])
    assert entry["account_id"] == str(world["admin1"]) and entry["school_id"] == str(world["school1"])
    assert entry["changes"]["class_id"] == str(world["class11"]) and entry["id"] > 0


async def test_entries_made_before_a_write_and_by_it_keep_their_order(app, world):
    # One flush writes the entries recorded since the last one, then those of its own writes, in one batch.
    async with scoped_session(app.state.sessionmaker, SYSTEM) as session:
        audit.record(session, action="probe.first", resource_type="probe")
        klass = await session.get(SchoolClass, world["class11"])
        assert klass is not None
        klass.name = "一班"
        audit.record(session, action="probe.second", resource_type="probe")
    async with scoped_session(app.state.sessionmaker, SYSTEM) as session:
        actions = (
            (
                await session.execute(
                    sa.select(AuditEntry.action)
                    .where(sa.or_(AuditEntry.resource_type == "probe", AuditEntry.action == "class.update"))
                    .order_by(AuditEntry.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["probe.first", "probe.second", "class.update"]


async def test_a_username_already_taken_in_any_case_is_refused_with_the_reason(client, world):
    body = {"role": "teacher", "display_name": "孙老师", "password": "a long enough password",
            "school_id": str(world["school1"])}  # fmt: skip
    r = await client.post("/accounts", headers=world.headers("admin1"), json={**body, "username": "sun"})
    assert r.status_code == 201, r.text
    logged = (await client.get("/audit", params={"action": "account.create"}, headers=world.headers("admin1"))).json()
    r = await client.post("/accounts", headers=world.headers("admin1"), json={**body, "username": "Sun"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "username_taken", r.text
    log = (await client.get("/audit", params={"action": "account.create"}, headers=world.headers("admin1"))).json()
    assert log["count"] == logged["count"]  # nothing was made


async def test_entries_left_for_the_commit_of_driver_statements_are_written_on_the_driver_in_order(app, world):
    # A transaction of driver statements whose only pending objects are audit entries commits on the driver:
    # the entries go out there (no ORM flush), in the order recorded, a detail of None as JSON null as the
    # ORM writes it; and a failing entry fails the commit, taking the transaction's writes with it.
    probe = f"probe-{world['school1']}"
    async with app.state.sessionmaker() as session:
        await set_principal(session, SYSTEM)
        raw = await driver_connection(session)
        await raw.execute("UPDATE school_class SET name = '一班' WHERE id = $1", world["class11"])
        for n in range(3):
            audit.record(session, action=f"probe.{n}", resource_type=probe, detail={"n": n} if n else None)
        through_the_orm: list[str] = []

        def seen(_conn, _cursor, statement, *_args):
            through_the_orm.append(statement)

        sa.event.listen(app.state.engine.sync_engine, "before_cursor_execute", seen)
        try:
            await driver.commit(session)
        finally:
            sa.event.remove(app.state.engine.sync_engine, "before_cursor_execute", seen)
    assert through_the_orm == []
    async with scoped_session(app.state.sessionmaker, SYSTEM) as session:
        rows = (
            await session.execute(
                sa.text(
                    "SELECT action, changes IS NULL, changes FROM audit_log WHERE resource_type = :probe ORDER BY id"
                ),
                {"probe": probe},
            )
        ).all()
        assert [tuple(r) for r in rows] == [
            ("probe.0", False, None),
            ("probe.1", False, {"n": 1}),
            ("probe.2", False, {"n": 2}),
        ]
        assert (await session.get(SchoolClass, world["class11"])).name == "一班"

    async with app.state.sessionmaker() as session:
        await set_principal(session, SYSTEM)
        raw = await driver_connection(session)
        await raw.execute("UPDATE school_class SET name = '二班' WHERE id = $1", world["class11"])
        audit.record(session, action="x" * 500, resource_type=probe)  # longer than the column
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await driver.commit(session)
        await session.rollback()
    async with scoped_session(app.state.sessionmaker, SYSTEM) as session:
        assert (await session.get(SchoolClass, world["class11"])).name == "一班"
        count = "SELECT count(*) FROM audit_log WHERE resource_type = :probe"
        assert (await session.execute(sa.text(count), {"probe": probe})).scalar_one() == 3
