"""Every write is durable before its 2xx leaves, and a client reads its own write on its next request.

These go through a real uvicorn server on a loopback socket (``live_url``): the in-process ASGI transport
waits for whatever the app does after the response, so it would hide a commit that runs too late. The next
request goes on a fresh connection, as a browser or a second device may send it: uvicorn would hold a second
request on the same keep-alive connection until the first one's code after the response had finished.
"""

import uuid

import httpx
import pytest
import sqlalchemy as sa

from api.db import scoped_session
from api.models.audit import AuditEntry
from api.models.children import Child
from api.scoping import SYSTEM
from tests.factories import PASSWORD
from tests.test_children import child_body
from tests.test_escalation_support import escalation_settings


def fresh_connections(base_url: str, **kwargs: object) -> httpx.AsyncClient:
    """A client that opens a new connection for every request."""
    return httpx.AsyncClient(base_url=base_url, limits=httpx.Limits(max_keepalive_connections=0), **kwargs)


def plain_child(world, name: str) -> dict:
    return child_body(world, name=name, id_number=None, sex="male", birth_date="2016-03-08")


@pytest.fixture
def settings():
    return escalation_settings()


async def test_a_login_is_usable_by_the_very_next_request(live_url, world):
    async with fresh_connections(live_url) as c:
        for i in range(50):
            who = ("admin1", "teacher1", "bureau")[i % 3]
            r = await c.post("/auth/login", json={"username": who, "password": PASSWORD})
            assert r.status_code == 200, r.text
            me = await c.get("/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
            assert me.status_code == 200, f"try {i}: {me.status_code} {me.text}"
            assert me.json()["username"] == who


async def test_a_note_is_on_the_timeline_read_right_after(kit, live_url):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    headers = await kit.headers("teacher1")
    async with fresh_connections(live_url, headers=headers) as c:
        for i in range(40):
            note = f"第{i}次情况更新"
            r = await c.post(f"/incidents/{incident['id']}/updates", json={"note": note})
            assert r.status_code == 200, r.text
            t = await c.get(f"/incidents/{incident['id']}/timeline")
            notes = [e["detail"].get("note") for e in t.json()["entries"] if e["kind"] == "update"]
            assert note in notes, f"try {i}: the note just added is missing from the timeline"


async def _refuse_at_commit(session, name: str, sqlstate: str) -> None:
    """A deferred constraint trigger on ``child``: the insert succeeds, the COMMIT fails with ``sqlstate``."""
    await session.execute(
        sa.text(
            f"""
            CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.name = '{name}' THEN
                    RAISE EXCEPTION 'refused at commit' USING ERRCODE = '{sqlstate}';
                END IF;
                RETURN NULL;
            END $$
            """
        )
    )
    await session.execute(
        sa.text(
            "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON child"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()"
        )
    )


@pytest.mark.parametrize(
    ("sqlstate", "status", "code"),
    [
        ("40001", 503, "database_busy"),  # serialization failure: try again
        ("23514", 409, "conflict"),  # a deferred check: the data conflicts with what is there
    ],
)
async def test_a_write_whose_commit_fails_never_answers_2xx(app, world, live_url, sqlstate, status, code):
    name = "提交失败"
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        await _refuse_at_commit(s, name, sqlstate)
    async with httpx.AsyncClient(base_url=live_url, headers=world.headers("admin1")) as c:
        r = await c.post("/children", json=plain_child(world, name))
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code and err["request_id"] == r.headers["x-request-id"]
        if status == 503:
            assert int(r.headers["retry-after"]) >= 1
        # The same connection still serves: the failure did not drop it.
        again = await c.get("/children", params={"q": name})
        assert again.status_code == 200 and again.json()["count"] == 0
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        assert (await s.scalar(sa.select(sa.func.count()).select_from(Child).where(Child.name == name))) == 0


async def test_a_write_answered_2xx_is_there_when_the_answer_arrives(app, world, live_url):
    async with fresh_connections(live_url, headers=world.headers("admin1")) as c:
        for i in range(20):
            name = f"张{uuid.uuid4().hex[:4]}"
            r = await c.post("/children", json=plain_child(world, name))
            assert r.status_code == 201, r.text
            async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
                assert await s.get(Child, uuid.UUID(r.json()["id"])) is not None, f"try {i}"


async def test_a_read_of_a_file_is_in_the_audit_log_when_the_answer_arrives(app, world, live_url):
    """A child's file is read on a driver transaction without a session (api/driver.py), its audit entry
    written by the read's own statement: committed before the answer leaves, like a session's."""
    async with fresh_connections(live_url, headers=world.headers("admin1")) as c:
        created = await c.post("/children", json=plain_child(world, "李读档"))
        assert created.status_code == 201, created.text
        child_id = created.json()["id"]
        for i in range(20):
            r = await c.get(f"/children/{child_id}")
            assert r.status_code == 200, r.text
            async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
                entry = await s.scalar(sa.select(AuditEntry).where(AuditEntry.request_id == r.headers["x-request-id"]))
            assert entry is not None, f"try {i}: the read's entry is not there when its answer arrived"
            assert (entry.action, entry.resource_id) == ("child.read", child_id)
