"""Care records: dated today or before, corrected by their author within the window (every version kept),
amended with a reason after it, never deleted; each school's records hash-chained with the head kept apart,
so a row edited or deleted by SQL is caught and named; counselling for counsellors and school admins only;
scope and the audit of reads."""

import asyncio
from datetime import timedelta

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from api.models.accounts import Account
from api.models.audit import AuditEntry
from api.models.care import CareRecord
from tests.factories import login_token
from tests.live import LiveServer
from tests.test_completeness import make_child

TALK = {"place": "心理咨询室", "topics": "想念在外打工的妈妈", "mood": "low", "follow_up_needed": True}


async def child_in(app, session, world, klass="class11", school="school1"):
    child = await make_child(app, session, world[school], world[klass])
    await session.commit()
    return str(child.id)


async def headers_now(app, session, world, who, clock):
    """A token issued at the test clock's present (the world's tokens expire when the clock moves on)."""
    account = await session.get(Account, world[who])
    token = await login_token(session, app, account, clock.now())
    await session.commit()
    return {"Authorization": f"Bearer {token}"}


async def record(client, child, headers, kind="talk", content=None, occurred_on="2026-11-24", expect=201):
    body = {"kind": kind, "occurred_on": occurred_on, "content": content or TALK}
    r = await client.post(f"/children/{child}/care-records", json=body, headers=headers)
    assert r.status_code == expect, r.text
    return r.json()


async def verify(client, world, who="admin1", school="school1"):
    r = await client.get(f"/schools/{world[school]}/care-records/verify", headers=world.headers(who))
    assert r.status_code == 200, r.text
    return r.json()


async def tamper(session, *statements):
    """As the database's superuser, past the triggers (replica mode skips them), as an intruder would."""
    await session.execute(text("SET LOCAL session_replication_role = replica"))
    for statement, params in statements:
        await session.execute(text(statement), params)
    await session.commit()


async def test_a_talk_record_card_is_kept_and_chained(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    made = await record(client, child, world.headers("teacher1"))
    assert made["kind_label"] == "谈心" and made["version"] == 1 and made["author_name"] == "李老师"
    assert made["content"] == {**TALK, "mood_note": None, "follow_up": None}
    assert made["editable_until"] == "2026-11-25T02:00:00Z" and made["versions"] == [] and made["amendments"] == []
    report = await verify(client, world)
    assert report["intact"] and report["links"] == 1 and report["head_seq"] == 1 and report["first_break"] is None


async def test_a_record_is_dated_today_or_before_in_beijing_time(client, world, app, system_session, clock):
    child = await child_in(app, system_session, world)
    # 23:30 on 24 November in Beijing is still the 24th there, though already the 25th nowhere else matters.
    clock.set(clock.now().replace(hour=15, minute=30))
    h = await headers_now(app, system_session, world, "teacher1", clock)
    await record(client, child, h, occurred_on="2026-11-24")
    future = await record(client, child, h, occurred_on="2026-11-25", expect=422)
    assert future["error"]["code"] == "occurred_in_future"
    clock.advance(timedelta(hours=1))  # 00:30 on the 25th in Beijing
    h = await headers_now(app, system_session, world, "teacher1", clock)
    await record(client, child, h, occurred_on="2026-11-25")
    wrong = await record(client, child, h, kind="aid", content={"amount_fen": 0, "source": "donation"}, expect=422)
    assert wrong["error"]["code"] == "invalid_content"
    assert [f["loc"] for f in wrong["error"]["fields"]] == [["body", "content", "amount_fen"]]


async def test_the_author_corrects_within_the_window_then_only_amends(client, world, app, system_session, clock):
    child = await child_in(app, system_session, world)
    made = await record(client, child, world.headers("teacher1"))
    url = f"/care-records/{made['id']}"
    corrected = {**TALK, "mood": "fair", "mood_note": "谈完后好些了"}

    clock.advance(timedelta(hours=23, minutes=59))
    h1 = await headers_now(app, system_session, world, "teacher1", clock)
    other = await headers_now(app, system_session, world, "admin1", clock)
    r = await client.put(url, json={"content": corrected}, headers=other)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_author")
    r = await client.put(url, json={"content": TALK}, headers=h1)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "nothing_changed")
    r = await client.put(url, json={"content": corrected, "occurred_on": "2026-11-23"}, headers=h1)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 2 and body["content"]["mood"] == "fair" and body["occurred_on"] == "2026-11-23"
    assert [(v["version"], v["content"]["mood"], v["occurred_on"]) for v in body["versions"]] == [
        (1, "low", "2026-11-24")
    ]

    clock.advance(timedelta(minutes=2))  # 24 h and 1 min after it was written
    h1 = await headers_now(app, system_session, world, "teacher1", clock)
    r = await client.put(url, json={"content": TALK}, headers=h1)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "edit_window_closed")
    r = await client.post(f"{url}/amendments", json={"reason": "补充家长反馈", "text": "妈妈答应春节回家"}, headers=h1)
    assert r.status_code == 201, r.text
    assert [(a["reason"], a["author_name"]) for a in r.json()["amendments"]] == [("补充家长反馈", "李老师")]
    assert r.json()["amendment_count"] == 1 and r.json()["version"] == 2
    r = await client.post(f"{url}/amendments", json={"reason": " ", "text": "x"}, headers=h1)
    assert r.status_code == 422

    # One event is one row, however often it was corrected or amended.
    rows = await system_session.execute(
        select(func.count()).select_from(CareRecord).where(CareRecord.child_id == child)
    )
    assert rows.scalar_one() == 1
    bureau = await headers_now(app, system_session, world, "bureau", clock)
    r = await client.get(f"/schools/{world['school1']}/care-records/verify", headers=bureau)
    assert r.json()["intact"] and r.json()["links"] == 3


async def test_a_schools_own_edit_window(client, world, app, system_session, clock):
    r = await client.put(
        f"/schools/{world['school1']}/care-settings", json={"edit_window_minutes": 60}, headers=world.headers("admin1")
    )
    assert r.status_code == 200
    child = await child_in(app, system_session, world)
    made = await record(client, child, world.headers("teacher1"))
    assert made["editable_until"] == "2026-11-24T03:00:00Z"
    clock.advance(timedelta(minutes=61))
    h = await headers_now(app, system_session, world, "teacher1", clock)
    r = await client.put(f"/care-records/{made['id']}", json={"content": {**TALK, "mood": "good"}}, headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "edit_window_closed")


async def test_records_are_never_deleted(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    made = await record(client, child, world.headers("teacher1"))
    r = await client.delete(f"/care-records/{made['id']}", headers=world.headers("admin1"))
    assert r.status_code == 405
    for statement in (
        "DELETE FROM care_record",
        "UPDATE care_record SET row_hash = repeat('0', 64)",
        "UPDATE care_record SET author_id = (SELECT id FROM account WHERE username = 'admin1')",
        "TRUNCATE care_record CASCADE",
    ):
        try:
            async with system_session.begin_nested():
                await system_session.execute(text(statement))
        except DBAPIError as exc:
            assert "never" in str(exc), exc
        else:
            raise AssertionError(f"{statement} was allowed")
    await system_session.rollback()
    assert (await system_session.execute(select(func.count()).select_from(CareRecord))).scalar_one() == 1


async def test_the_chain_names_a_row_edited_by_sql(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    made = [await record(client, child, world.headers("teacher1"), content={**TALK, "place": p}) for p in "ABC"]
    assert (await verify(client, world))["intact"]
    await tamper(
        system_session,
        (
            "UPDATE care_record SET content = jsonb_set(content, '{mood}', '\"very_good\"') WHERE id = :id",
            {"id": made[1]["id"]},
        ),
    )
    report = await verify(client, world)
    assert not report["intact"]
    broken = report["first_break"]
    assert (broken["seq"], broken["table"], broken["row_id"], broken["problem"]) == (
        2,
        "care_record",
        made[1]["id"],
        "content_changed",
    )


async def test_the_chain_catches_the_current_content_of_a_corrected_record_edited(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    made = await record(client, child, world.headers("teacher1"))
    r = await client.put(
        f"/care-records/{made['id']}", json={"content": {**TALK, "mood": "fair"}}, headers=world.headers("teacher1")
    )
    assert r.status_code == 200
    await tamper(
        system_session,
        (
            "UPDATE care_record SET content = jsonb_set(content, '{mood}', '\"good\"') WHERE id = :id",
            {"id": made["id"]},
        ),
    )
    broken = (await verify(client, world))["first_break"]
    assert (broken["seq"], broken["table"], broken["problem"]) == (2, "care_record_version", "replacement_changed")


async def test_the_chain_catches_a_deleted_row_in_the_middle_and_at_the_end(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    made = [await record(client, child, world.headers("teacher1"), content={**TALK, "place": p}) for p in "ABCD"]
    await tamper(system_session, ("DELETE FROM care_record WHERE id = :id", {"id": made[3]["id"]}))
    broken = (await verify(client, world))["first_break"]
    assert (broken["seq"], broken["problem"]) == (None, "head_mismatch")
    assert "4" in broken["message"] and "3" in broken["message"]
    await tamper(system_session, ("DELETE FROM care_record WHERE id = :id", {"id": made[1]["id"]}))
    broken = (await verify(client, world))["first_break"]
    assert (broken["seq"], broken["row_id"], broken["problem"]) == (3, made[2]["id"], "missing_link")


async def test_concurrent_records_of_one_school_make_one_unbroken_chain(live_url, client, world, app, system_session):
    children = [await child_in(app, system_session, world) for _ in range(4)]
    server = LiveServer.__new__(LiveServer)
    server.base_url = live_url
    async with server.client() as c:

        async def write(i):
            body = {"kind": "talk", "occurred_on": "2026-11-24", "content": {**TALK, "place": f"教室{i}"}}
            who = "teacher1" if i % 2 else "admin1"
            r = await c.post(f"/children/{children[i % 4]}/care-records", json=body, headers=world.headers(who))
            return r.status_code

        assert await asyncio.gather(*(write(i) for i in range(16))) == [201] * 16
    seqs = (await system_session.execute(select(CareRecord.chain_seq).order_by(CareRecord.chain_seq))).scalars().all()
    assert seqs == list(range(1, 17))
    report = await verify(client, world)
    assert report["intact"] and report["links"] == 16


async def test_counselling_records_are_for_counsellors_and_school_admins(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    counselling = {"summary": "考试焦虑, 失眠", "follow_up_needed": True}
    refused = await record(
        client, child, world.headers("teacher1"), kind="counselling", content=counselling, expect=403
    )
    assert refused["error"]["code"] == "counselling_only"
    made = await record(client, child, world.headers("admin1"), kind="counselling", content=counselling)
    talk = await record(client, child, world.headers("teacher1"))

    def ids(r):
        return [x["id"] for x in r.json()["data"]]

    listing = f"/children/{child}/care-records"
    for who in ("teacher1", "teacher1b", "bureau", "official1"):
        assert ids(await client.get(listing, headers=world.headers(who))) == [talk["id"]], who
        r = await client.get(f"/care-records/{made['id']}", headers=world.headers(who))
        assert (r.status_code, r.json()["error"]["code"]) == (404, "care_record_not_found"), who
    assert set(ids(await client.get(listing, headers=world.headers("admin1")))) == {made["id"], talk["id"]}

    # The school admin makes teacher1b the school's counsellor.
    r = await client.put(
        f"/accounts/{world['teacher1b']}/counsellor", json={"is_counsellor": True}, headers=world.headers("admin1")
    )
    assert r.status_code == 200 and r.json() == {"is_counsellor": True}
    r = await client.put(
        f"/accounts/{world['teacher2']}/counsellor", json={"is_counsellor": True}, headers=world.headers("admin1")
    )
    assert r.status_code == 404
    r = await client.get(f"/care-records/{made['id']}", headers=world.headers("teacher1b"))
    assert r.status_code == 200 and r.json()["content"]["summary"] == "考试焦虑, 失眠"
    r = await client.get(listing, params={"kind": "counselling"}, headers=world.headers("teacher1b"))
    assert ids(r) == [made["id"]]
    await record(client, child, world.headers("teacher1b"), kind="counselling", content=counselling)


async def test_records_of_a_child_of_another_school_are_not_found(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    made = await record(client, child, world.headers("teacher1"))
    for who in ("teacher2", "admin2", "admin3", "other_bureau", "official2"):
        assert (await client.get(f"/care-records/{made['id']}", headers=world.headers(who))).status_code == 404, who
        r = await client.get(f"/children/{child}/care-records", headers=world.headers(who))
        assert r.status_code == 404, who
    r = await client.post(
        f"/children/{child}/care-records",
        json={"kind": "talk", "occurred_on": "2026-11-24", "content": TALK},
        headers=world.headers("teacher2"),
    )
    assert r.status_code == 404
    r = await client.post(
        f"/care-records/{made['id']}/amendments", json={"reason": "x", "text": "y"}, headers=world.headers("admin2")
    )
    assert r.status_code == 404
    assert (await verify(client, world, who="admin1"))["links"] == 1
    for who, status in (("admin2", 404), ("teacher1", 403), ("other_bureau", 404)):
        r = await client.get(f"/schools/{world['school1']}/care-records/verify", headers=world.headers(who))
        assert r.status_code == status, who


async def test_a_transferred_childs_records_go_with_the_child_and_stay_in_the_old_schools_chain(
    client, world, app, system_session
):
    child = await child_in(app, system_session, world)
    made = await record(client, child, world.headers("teacher1"))
    r = await client.post(
        f"/children/{child}/transfer",
        json={"to_school_id": str(world["school2"]), "reason": "随祖父母迁居"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 201
    assert (await client.get(f"/care-records/{made['id']}", headers=world.headers("teacher1"))).status_code == 404
    r = await client.get(f"/care-records/{made['id']}", headers=world.headers("admin2"))
    assert r.status_code == 200 and r.json()["author_name"] == "李老师"
    # The new school's admin amends it: the amendment is a link of the chain the record belongs to.
    r = await client.post(
        f"/care-records/{made['id']}/amendments",
        json={"reason": "转入后补充", "text": "已与新班主任交接"},
        headers=world.headers("admin2"),
    )
    assert r.status_code == 201, r.text
    report = await verify(client, world)
    assert report["intact"] and report["links"] == 2
    assert (await verify(client, world, who="admin2", school="school2"))["links"] == 0


async def test_reading_a_records_content_is_audited_and_the_log_keeps_no_content(client, world, app, system_session):
    child = await child_in(app, system_session, world)
    made = await record(client, child, world.headers("teacher1"))
    assert (await client.get(f"/care-records/{made['id']}", headers=world.headers("bureau"))).status_code == 200
    assert (await client.get(f"/children/{child}/care-records", headers=world.headers("teacher1b"))).status_code == 200
    entries = (
        (
            await system_session.execute(
                select(AuditEntry).where(AuditEntry.action.like("care_record%")).order_by(AuditEntry.id)
            )
        )
        .scalars()
        .all()
    )
    reads = [(e.action, e.account_id, e.resource_id, e.school_id) for e in entries if e.action != "care_record.create"]
    assert ("care_record.read", world["bureau"], made["id"], world["school1"]) in reads
    assert ("care_record.list", world["teacher1b"], child, world["school1"]) in reads
    written = (
        (await system_session.execute(select(AuditEntry).where(AuditEntry.resource_type == "care_record")))
        .scalars()
        .all()
    )
    creates = [e for e in written if e.action == "care_record.create"]
    assert len(creates) == 1
    assert "想念" not in str(creates[0].changes) and creates[0].changes["content"] == "***"
